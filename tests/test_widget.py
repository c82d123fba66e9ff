"""The embeddable widget (web/src/widget/, site/widget.js) on two real origins.

Origin A (http://127.0.0.1:<port>): the dev server (LiveServer with CORS for origin B)
serving a test site with widget.js, the engine's Worker and built models (the tiny random
Llama "tiny-chat" and the tiny Stable Diffusion "tiny-sd"). Origin B (http://localhost:<port>):
a stdlib server sending host pages with the strict CSP of docs/WIDGET.md in its header. The
host pages embed the widget with the README snippet; nothing of the widget is on origin B.

* a message typed into <webkiln-chat> streams a reply equal to the engine's greedy output
  for the same messages (tiny model here; the real default model in the last test);
* <webkiln-image> on the same page makes the engine's image for the same seed, pixel for pixel;
* the host's CSS does not change the widget's computed styles, nor the widget the host's;
  the documented custom properties and ::part() names do;
* the app's hostile-markdown corpus (tests/test_chat_ui.py) rendered by the widget runs
  and loads nothing;
* two widgets of one model: one Worker, each model file downloaded once;
* the bubble layout opens and closes by keyboard, focus returns to the launcher;
* failures (unknown model, models-url 404 or without CORS, a manifest of another format, a
  bad attribute) show in the widget and fire webkiln-error; under a storage quota too small
  for the model it still works and nothing is marked cached;
* the backend attribute: "auto" runs the CPU backend on SwiftShader (a fallback adapter) and
  where there is no WebGPU at all, "webgpu" insists (and is refused, named, without WebGPU);
  the card and the status say which backend runs and why;
* Stop ends a reply early (finish_reason "abort", a prefix of the full greedy reply), reset() clears it;
* site/widget-demo.html works (both layouts);
* screenshots of both layouts (test-artifacts/widget-*.png) and timings
  (test-artifacts/widget-timings.json).
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from conftest import ARTIFACTS, CHROMIUM, LiveServer
from conftest_models import smollm2_gguf  # noqa: F401  (session fixture)
from conftest_tiny import tiny_llama  # noqa: F401  (session fixture)
from test_chat_browser import chat_site  # noqa: F401  (session fixture)
from test_chat_ui import CHECK_DOM, HOSTILE

pytest.importorskip("torch")
pytest.importorskip("diffusers")
from PIL import Image  # noqa: E402

from test_engine_images import MODEL as IMAGE_MODEL  # noqa: E402
from test_engine_images import SIZE as IMAGE_SIZE  # noqa: E402
from test_engine_images import tiny  # noqa: E402,F401  (module fixture: the tiny diffusers pipeline)

CHAT_MODEL = "tiny-chat"
TIMEOUT = 180_000  # tiny models: load and shader compilation on SwiftShader
REAL_TIMEOUT = 420_000  # the default model: ~120 MB, prefill ~50 s, ~1 s a token
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1100, "height": 760}


def widget_csp(widget_origin: str) -> str:
    """The minimal host CSP of docs/WIDGET.md ("Content-Security-Policy"), for a widget on `widget_origin`."""
    return (f"default-src 'none'; script-src {widget_origin} 'wasm-unsafe-eval'; worker-src {widget_origin} blob:; "
            f"connect-src {widget_origin}; img-src blob:")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HostServer:
    """Origin B: serves the host pages put in `pages` (path -> (html, csp)), each with its CSP header."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.origin = f"http://localhost:{self.port}"
        self.pages: dict[str, tuple[str, str]] = {}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802  (http.server's name)
                found = pages.get(self.path.split("?")[0])
                if found is None:
                    self.send_error(404)
                    return
                body, csp = found
                data = body.encode()
                self.send_response(200)
                content_type = "text/css" if self.path.endswith(".css") else "text/html; charset=utf-8"
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                if csp:
                    self.send_header("Content-Security-Policy", csp)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "HostServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def page(self, path: str, body: str, csp: str, head: str = "") -> str:
        """Puts a host page at `path`; returns its URL."""
        self.pages[path] = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>host page</title>"
                            f"{head}</head><body>{body}</body></html>", csp)
        return self.origin + path


def snippet(widget_origin: str, attrs: str, tag: str = "webkiln-chat") -> str:
    """The README's snippet: the module script from the widget's origin, then the element."""
    return (f'<script type="module" src="{widget_origin}/widget.js"></script>\n'
            f"<{tag} {attrs}></{tag}>")


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def widget_site(tmp_path_factory, tiny_llama, tiny, test_site):  # noqa: F811
    """Origin A's root: the test site with tiny-chat and tiny-sd in models/, and models-bad/:
    the same chat model with a manifest of another format version."""
    from webkiln.cli import build_web_main
    from webkiln.package.chat_build import build_chat_model
    from webkiln.sources import load_source
    from webkiln.toolchain.link import LinkMode

    root = tmp_path_factory.mktemp("widget-site")
    shutil.copytree(test_site, root, dirs_exist_ok=True)
    build_chat_model(load_source(tiny_llama.folder), root / "models", "q4f32", model_id=CHAT_MODEL,
                     link_mode=LinkMode.FAST, log=lambda _: None)
    _, _, folder = tiny
    assert build_web_main(["--model", str(folder), "--quantization", "f32", "--fast-link", "--id", IMAGE_MODEL,
                           "--size", str(IMAGE_SIZE), "--out", str(root / "models")]) == 0
    bad = root / "models-bad"
    shutil.copytree(root / "models" / CHAT_MODEL, bad / CHAT_MODEL)
    manifest = json.loads((bad / CHAT_MODEL / "manifest.json").read_text())
    manifest["format"] = 999
    (bad / CHAT_MODEL / "manifest.json").write_text(json.dumps(manifest))
    index = json.loads((root / "models" / "index.json").read_text())
    index["models"] = [m for m in index["models"] if m["id"] == CHAT_MODEL]
    (bad / "index.json").write_text(json.dumps(index))
    return root


@pytest.fixture(scope="module")
def host():
    with HostServer() as server:
        yield server


@pytest.fixture(scope="module")
def origin_a(widget_site, host):
    with LiveServer(widget_site, cors_origins=[host.origin]) as server:
        yield server


class Watch:
    """What a page does: errors, console errors, CSP violations, dialogs, every request."""

    def __init__(self, context, page) -> None:
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        self.console_warnings: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        page.on("console", lambda m: (self.console_errors if m.type == "error" else self.console_warnings).append(m.text))
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        context.on("request", lambda r: self.requests.append(r.url))

    def csp_violations(self) -> list[str]:
        return [m for m in self.console_errors if "Content Security Policy" in m]


@pytest.fixture
def context(browser):
    context = browser.new_context(viewport=DESKTOP)
    yield context
    context.close()


def open_host(context, url: str, before=None) -> tuple[object, Watch]:
    page = context.new_page()
    if before:
        before(page)
    watch = Watch(context, page)
    # Record every widget event from the start (bubbling and composed: the document sees them).
    page.add_init_script("""(() => {
        window.widgetEvents = [];
        for (const type of ['webkiln-ready', 'webkiln-progress', 'webkiln-reply', 'webkiln-error']) {
            document.addEventListener(type, (e) => window.widgetEvents.push(
                {type, id: e.target.id, detail: type === 'webkiln-progress' ? {stage: e.detail.stage} : e.detail,
                 t: performance.now()}));
        }
    })()""")
    page.goto(url)
    page.wait_for_function("() => !!(customElements.get('webkiln-chat') && customElements.get('webkiln-image'))")
    return page, watch


def events(page, type_: str, element_id: str | None = None) -> list[dict]:
    return page.evaluate("([t, id]) => window.widgetEvents.filter((e) => e.type === t && (id === null || e.id === id))",
                         [type_, element_id])


def wait_event(page, type_: str, element_id: str, count: int = 1, timeout: int = TIMEOUT) -> dict:
    page.wait_for_function(
        "([t, id, n]) => window.widgetEvents.filter((e) => (e.type === t || e.type === 'webkiln-error') && e.id === id).length >= n",
        arg=[type_, element_id, count], timeout=timeout)
    found = events(page, type_, element_id)
    errors = events(page, "webkiln-error", element_id)
    assert len(found) >= count, errors
    return found[count - 1]


def shadow(page, element_id: str, script: str, arg=None):
    """Runs `script` (a function of the element's shadow root and arg) in the page."""
    return page.evaluate(f"([id, arg]) => ({script})(document.getElementById(id).shadowRoot, arg)", [element_id, arg])


def watch_stream(page, element_id: str) -> None:
    """Records each text the newest assistant message shows while the reply streams, with its time."""
    shadow(page, element_id, """(root) => {
        window.streamed = [];
        new MutationObserver(() => {
            const msgs = root.querySelectorAll('.msg.assistant:not(.greeting)');
            const last = msgs[msgs.length - 1];
            const text = last ? last.textContent : '';
            if (text && window.streamed.at(-1)?.text !== text) window.streamed.push({text, t: performance.now()});
        }).observe(root, {subtree: true, childList: true, characterData: true});
    }""")


def type_message(page, element_id: str, text: str) -> None:
    """Keyboard only: focus the widget's text box, type, press Enter."""
    box = page.locator(f"#{element_id} textarea")
    box.focus()
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def engine_greedy(page, element_id: str, messages: list[dict], max_tokens: int) -> str:
    return page.evaluate("""async ([id, messages, n]) => {
        const r = await document.getElementById(id).engine.chat.completions.create({messages, temperature: 0, max_tokens: n});
        return r.choices[0].message.content;
    }""", [element_id, messages, max_tokens])


def record_timings(name: str, values: dict[str, float]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "widget-timings.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = {k: round(v) for k, v in values.items()}
    path.write_text(json.dumps(data, indent=2))


def chat_and_time(page, element_id: str, prompt: str, timeout: int) -> dict:
    """Types `prompt`; returns ms from the interaction to ready and to the first token, and the reply."""
    watch_stream(page, element_id)
    start = page.evaluate("() => performance.now()")
    type_message(page, element_id, prompt)
    reply = wait_event(page, "webkiln-reply", element_id, timeout=timeout)
    ready = events(page, "webkiln-ready", element_id)[0]["t"]
    streamed = page.evaluate("() => window.streamed")
    return {"ready_ms": ready - start, "first_token_ms": streamed[0]["t"] - start, "reply": reply,
            "streamed": streamed}


# --- chat and image -------------------------------------------------------------------------


def test_chat_under_strict_csp_streams_the_engines_greedy_reply(context, origin_a, host):
    system, prompt, n = "You are a terse assistant.", "Hello there, widget!", 16
    # backend="webgpu": the reply must be seen arriving in steps; on the CPU backend the tiny
    # model writes all 16 tokens within one frame (the CPU path: test_no_webgpu, test_backend_attribute).
    url = host.page("/chat.html", snippet(origin_a.url, f'id="chat" model="{CHAT_MODEL}" system-prompt="{system}" '
                                                        f'temperature="0" max-tokens="{n}" backend="webgpu"'), widget_csp(origin_a.url))
    page, watch = open_host(context, url)
    # Nothing is downloaded before the first interaction; the card says what would be.
    page.wait_for_function("() => document.getElementById('chat').shadowRoot.querySelector('[part=download-size]')")
    info = shadow(page, "chat", "(r) => r.querySelector('.info').textContent")
    assert CHAT_MODEL in info and "download" in info
    assert "runs on webgpu-f32: WebGPU on " in info, info
    assert not [u for u in watch.requests if "/models/tiny-chat/" in u and not u.endswith("manifest.json")]
    assert events(page, "webkiln-ready") == []
    # Not even the engine's Worker (several MB) starts before the first interaction.
    assert page.workers == [] and not [u for u in watch.requests if "engine-worker.js" in u]

    cold = chat_and_time(page, "chat", prompt, TIMEOUT)
    text = cold["reply"]["detail"]["text"]
    messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
    assert text == engine_greedy(page, "chat", messages, n)
    assert cold["reply"]["detail"]["usage"]["completion_tokens"] >= 1
    # element.messages: the conversation (the system prompt is the attribute's, not a turn).
    assert page.evaluate("() => document.getElementById('chat').messages") == messages[1:] + [
        {"role": "assistant", "content": text}]
    assert len(cold["streamed"]) >= 2, cold["streamed"]  # shown in steps, not all at once
    assert events(page, "webkiln-progress", "chat")
    assert shadow(page, "chat", "(r) => [r.querySelector('[role=log]') !== null, r.querySelector('[role=status]').textContent]")[1]
    # widget.js, the Worker and the model all came from origin A; the page only from B.
    assert all(u.startswith((origin_a.url, host.origin, "blob:")) for u in watch.requests), watch.requests
    assert not [u for u in watch.requests if u.startswith(host.origin) and u != url]
    assert watch.page_errors == [] and watch.csp_violations() == [] and watch.console_errors == []

    # Warm: a new page in the same context takes the model from the cache.
    page.close()
    page, watch = open_host(context, url)
    page.wait_for_function("() => document.getElementById('chat').shadowRoot.querySelector('[part=download-size]')")
    warm = chat_and_time(page, "chat", prompt, TIMEOUT)
    assert warm["reply"]["detail"]["text"] == text
    assert not [u for u in watch.requests if "/models/tiny-chat/" in u and u.endswith(".bin")]
    record_timings("tiny-chat", {"cold_ready_ms": cold["ready_ms"], "cold_first_token_ms": cold["first_token_ms"],
                                 "warm_ready_ms": warm["ready_ms"], "warm_first_token_ms": warm["first_token_ms"]})


def test_image_widget_makes_the_engines_image(context, origin_a, host):
    seed, steps = 7, 2
    body = (snippet(origin_a.url, f'id="chat" model="{CHAT_MODEL}"') + "\n"
            f'<webkiln-image id="img" model="{IMAGE_MODEL}" seed="{seed}" steps="{steps}" guidance="5" '
            f'size="{IMAGE_SIZE}x{IMAGE_SIZE}"></webkiln-image>')
    page, watch = open_host(context, host.page("/image.html", body, widget_csp(origin_a.url)))
    page.wait_for_function("() => document.getElementById('img').shadowRoot.querySelector('[part=download-size]')")
    box = page.locator("#img input")
    box.focus()
    page.keyboard.type("a red cat")
    page.keyboard.press("Enter")
    reply = wait_event(page, "webkiln-reply", "img", timeout=TIMEOUT)["detail"]
    assert reply["usage"]["extra"]["seed"] == seed and reply["usage"]["extra"]["steps"] == steps
    expected = page.evaluate("""async ([seed, steps, size]) => {
        const r = await document.getElementById('img').engine.images.generate({prompt: 'a red cat', seed, steps,
            guidance_scale: 5, size, response_format: 'b64_json'});
        return r.data[0].b64_json;
    }""", [seed, steps, f"{IMAGE_SIZE}x{IMAGE_SIZE}"])
    assert reply["b64_json"] == expected
    # What the widget shows is that PNG's pixels.
    shown = shadow(page, "img", """async (r) => {
        const img = r.querySelector('img[part=image]');
        await img.decode();
        const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
        const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        return Array.from(g.getImageData(0, 0, c.width, c.height).data);
    }""")
    png = np.asarray(Image.open(io.BytesIO(base64.b64decode(expected))).convert("RGBA")).reshape(-1)
    assert np.array_equal(np.array(shown, dtype=np.uint8), png)
    # Only the image widget's engine runs: the chat widget beside it, never used, started no Worker.
    assert len(page.workers) == 1
    assert page.evaluate("() => document.getElementById('chat').loadedModel") is None
    # Then the chat widget: its own Worker (the engine holds one model), the image model stays loaded.
    type_message(page, "chat", "hi")
    assert wait_event(page, "webkiln-reply", "chat")["detail"]["text"]
    assert len(page.workers) == 2
    assert page.evaluate("async () => (await document.getElementById('img').engine.loadedModel()).id") == IMAGE_MODEL
    assert watch.page_errors == [] and watch.csp_violations() == []


# --- isolation ------------------------------------------------------------------------------

HOSTILE_CSS = "* { color: red !important; font-size: 40px; line-height: 3; font-family: serif; } button { display: none }"
PROBED = ["color", "font-size", "font-family", "line-height", "display", "background-color", "padding-top",
          "border-top-width", "width", "height"]
HOST_BODY = '<h1 id="h">Host heading</h1><p id="p">Host text <button id="b">Host button</button></p>'


def widget_styles(page) -> dict:
    return page.evaluate("""(props) => {
        const out = {};
        for (const id of ['chat', 'bubble']) {
            const root = document.getElementById(id).shadowRoot;
            for (const sel of ['.root', '.header', '.info', 'button[part=load-button]', '.log', 'textarea', 'button[part=send-button]', '.status', '.launcher']) {
                const el = root.querySelector(sel); const cs = getComputedStyle(el);
                out[id + ' ' + sel] = Object.fromEntries(props.map((p) => [p, cs.getPropertyValue(p)]));
            }
        }
        return out;
    }""", PROBED)


def host_styles(page) -> dict:
    return page.evaluate("""(props) => Object.fromEntries(['h', 'p', 'b'].map((id) => [id,
        Object.fromEntries(props.map((p) => [p, getComputedStyle(document.getElementById(id)).getPropertyValue(p)]))]))""",
                         PROBED)


def test_host_css_and_widget_css_do_not_mix(context, origin_a, host):
    widgets = snippet(origin_a.url, f'id="chat" model="{CHAT_MODEL}"') + \
        f'<webkiln-chat id="bubble" layout="bubble" model="{CHAT_MODEL}"></webkiln-chat>'
    # The host's own stylesheet needs its own origin in style-src: the widget needs nothing there.
    csp = widget_csp(origin_a.url) + "; style-src 'self'"
    host.pages["/hostile.css"] = (HOSTILE_CSS, "")
    plain, _ = open_host(context, host.page("/plain.html", HOST_BODY + widgets, csp))
    styled, watch = open_host(context, host.page("/styled.html", HOST_BODY + widgets, csp,
                                                 head='<link rel="stylesheet" href="/hostile.css">'))
    for page in (plain, styled):
        page.wait_for_function("() => document.getElementById('chat').shadowRoot.querySelector('[part=download-size]')")
    # The host's CSS did apply to the host (the check can fail).
    assert host_styles(styled)["b"]["display"] == "none" and host_styles(styled)["p"]["color"] == "rgb(255, 0, 0)"
    assert widget_styles(styled) == widget_styles(plain)
    assert styled.locator("#chat button[part=load-button]").is_visible()
    # The widget changes nothing of the host: the same host elements without any widget.
    bare, _ = open_host(context, host.page("/bare.html", HOST_BODY + f'<script type="module" src="{origin_a.url}/widget.js"></script>',
                                           csp, head='<link rel="stylesheet" href="/hostile.css">'))
    assert host_styles(bare) == host_styles(styled)
    assert watch.csp_violations() == []


THEME_CSS = ("#chat { --webkiln-accent: rgb(1, 2, 3); --webkiln-font-size: 11px; }\n"
             "#chat::part(send-button) { border-radius: 0px; }\n"
             "#chat::part(user-message) { padding-top: 17px; }")


def test_theming_by_custom_properties_and_parts(context, origin_a, host):
    host.pages["/theme.css"] = (THEME_CSS, "")
    page, watch = open_host(context, host.page("/theme.html", snippet(origin_a.url, f'id="chat" model="{CHAT_MODEL}" max-tokens="2"'),
                                               widget_csp(origin_a.url) + "; style-src 'self'",
                                               head='<link rel="stylesheet" href="/theme.css">'))
    page.wait_for_function("() => document.getElementById('chat').shadowRoot.querySelector('[part=download-size]')")
    send = shadow(page, "chat", """(r) => { const cs = getComputedStyle(r.querySelector('[part=send-button]'));
        return [cs.backgroundColor, cs.borderTopLeftRadius, getComputedStyle(r.querySelector('.root')).fontSize]; }""")
    assert send == ["rgb(1, 2, 3)", "0px", "11px"]
    type_message(page, "chat", "hi")
    wait_event(page, "webkiln-reply", "chat")
    assert shadow(page, "chat", "(r) => getComputedStyle(r.querySelector('.msg.user')).paddingTop") == "17px"
    assert watch.csp_violations() == []


def test_hostile_markdown_runs_and_loads_nothing(context, origin_a, host):
    # The greeting is rendered as an assistant message, through the same StreamingMarkdown /
    # renderMarkdownInto path (ui/markdown.ts) as every reply.
    greeting = "\n\n".join(HOSTILE).replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    page, watch = open_host(context, host.page("/hostile.html", snippet(origin_a.url, f'id="chat" model="{CHAT_MODEL}" greeting="{greeting}"'),
                                               widget_csp(origin_a.url)))
    page.wait_for_function("() => document.getElementById('chat').shadowRoot.querySelector('.greeting p')")
    assert shadow(page, "chat", "(r) => r.querySelector('.greeting').textContent.length") > 100
    shadow(page, "chat", """(r) => { for (const el of r.querySelectorAll('.greeting *'))
        for (const t of ['mouseover', 'focus', 'load', 'error', 'toggle', 'animationstart']) el.dispatchEvent(new Event(t)); }""")
    # CHECK_DOM (the app test's check) is a function's source: Playwright runs it on the widget's log.
    log = page.evaluate_handle("(id) => document.getElementById(id).shadowRoot.querySelector('.log')", "chat")
    assert log.evaluate(CHECK_DOM) == []
    assert "<script>window.pwned = 1</script>" in shadow(page, "chat", "(r) => r.querySelector('.greeting').textContent")
    page.wait_for_timeout(500)
    assert page.evaluate("() => window.pwned") is None
    assert watch.dialogs == []
    foreign = [u for u in watch.requests if not u.startswith((origin_a.url, host.origin, "blob:"))]
    assert foreign == [], foreign
    assert watch.page_errors == []


# --- sharing ----------------------------------------------------------------------------------


def test_two_widgets_share_one_worker_and_one_download(context, origin_a, host):
    body = snippet(origin_a.url, f'id="one" model="{CHAT_MODEL}" temperature="0" max-tokens="4"') + \
        f'<webkiln-chat id="two" model="{CHAT_MODEL}" temperature="0" max-tokens="4"></webkiln-chat>'
    page, watch = open_host(context, host.page("/two.html", body, widget_csp(origin_a.url)))
    type_message(page, "one", "first")
    wait_event(page, "webkiln-reply", "one")
    type_message(page, "two", "second")
    wait_event(page, "webkiln-reply", "two")
    assert len(events(page, "webkiln-ready", "two")) == 1
    files = [u for u in watch.requests if f"/models/{CHAT_MODEL}/" in u and not u.endswith("manifest.json")]
    assert files, watch.requests
    assert len(files) == len(set(files)), files  # each file of the model fetched once for both widgets
    assert len(page.workers) == 1
    assert sum(u.endswith("/assets/engine-worker.js") for u in watch.requests) == 1


# --- keyboard, layouts, screenshots -----------------------------------------------------------


def active_part(page, element_id: str) -> str | None:
    return page.evaluate("""(id) => { const el = document.getElementById(id);
        if (document.activeElement !== el) return null;
        const a = el.shadowRoot.activeElement; return a ? a.getAttribute('part') : null; }""", element_id)


def test_bubble_opens_and_closes_by_keyboard(browser, origin_a, host):
    body = ('<p>Host content <a id="before" href="#x">a host link</a></p>' +
            snippet(origin_a.url, f'id="bubble" layout="bubble" model="{CHAT_MODEL}" greeting="Hi! Ask me anything."'))
    url = host.page("/bubble.html", body, widget_csp(origin_a.url))
    for viewport, name in [(DESKTOP, "desktop"), (PHONE, "phone")]:
        context = browser.new_context(viewport=viewport, device_scale_factor=1)
        try:
            page, watch = open_host(context, url)
            page.wait_for_function("() => document.getElementById('bubble').shadowRoot.querySelector('[part=download-size]')")
            assert not page.locator("#bubble .panel").is_visible()
            page.focus("#before")
            page.keyboard.press("Tab")
            assert active_part(page, "bubble") == "launcher"
            assert page.locator("#bubble [part=launcher]").get_attribute("aria-expanded") == "false"
            page.keyboard.press("Enter")
            assert page.locator("#bubble .panel").is_visible()
            assert active_part(page, "bubble") == "input"
            assert page.locator("#bubble [part=launcher]").get_attribute("aria-expanded") == "true"
            assert page.locator("#bubble [part=panel]").get_attribute("role") == "dialog"
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"widget-bubble-{name}.png"))
            # Tab order inside the panel: input, then Send.
            page.keyboard.press("Tab")
            assert active_part(page, "bubble") == "send-button"
            page.keyboard.press("Escape")
            assert not page.locator("#bubble .panel").is_visible()
            assert active_part(page, "bubble") == "launcher"
            page.keyboard.press(" ")
            assert page.locator("#bubble .panel").is_visible()
            # The close button (reached by Shift+Tab from the input) closes it too.
            page.locator("#bubble [part=close]").focus()
            page.keyboard.press("Enter")
            assert not page.locator("#bubble .panel").is_visible()
            assert active_part(page, "bubble") == "launcher"
            if name == "phone":
                width = page.evaluate("() => document.getElementById('bubble').shadowRoot.querySelector('.root').getBoundingClientRect().width")
                assert width <= PHONE["width"]
            assert watch.page_errors == []
        finally:
            context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_inline_screenshot(browser, origin_a, host, scheme):
    body = ('<main><h2>My blog</h2><p>Ask the blog\'s assistant:</p>' +
            snippet(origin_a.url, f'id="chat" model="{CHAT_MODEL}" theme="{scheme}" temperature="0" max-tokens="12" '
                                  'greeting="Hello! I answer questions about **this blog**."') + "</main>")
    context = browser.new_context(viewport={"width": 640, "height": 640}, device_scale_factor=1, color_scheme=scheme)
    try:
        page, _ = open_host(context, host.page(f"/inline-{scheme}.html", body, widget_csp(origin_a.url)))
        page.wait_for_function("() => document.getElementById('chat').shadowRoot.querySelector('[part=download-size]')")
        type_message(page, "chat", "What is this blog about?")
        wait_event(page, "webkiln-reply", "chat")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"widget-inline-{scheme}.png"))
        bg = shadow(page, "chat", "(r) => getComputedStyle(r.querySelector('.root')).backgroundColor")
        assert bg == ("rgb(255, 255, 255)" if scheme == "light" else "rgb(23, 25, 28)")
    finally:
        context.close()


# --- failures ---------------------------------------------------------------------------------


def error_of(page, element_id: str, timeout: int = TIMEOUT) -> tuple[dict, str]:
    page.wait_for_function("(id) => window.widgetEvents.some((e) => e.type === 'webkiln-error' && e.id === id)",
                           arg=element_id, timeout=timeout)
    detail = events(page, "webkiln-error", element_id)[0]["detail"]
    shown = shadow(page, element_id, "(r) => r.querySelector('[part=error]').hidden ? '' : r.querySelector('[part=error]').textContent")
    return detail, shown


def assert_host_alive(page, watch: Watch) -> None:
    assert page.evaluate("() => { const p = document.createElement('p'); p.id = 'alive'; document.body.append(p); return 1 + 1; }") == 2
    assert watch.page_errors == []


def test_errors_show_in_the_widget_and_fire_events(context, origin_a, host, widget_site):
    csp = widget_csp(origin_a.url)
    # Unknown model id: named, with what the index has.
    page, watch = open_host(context, host.page("/e-unknown.html", snippet(origin_a.url, 'id="w" model="no-such-model"'), csp))
    detail, shown = error_of(page, "w")
    assert detail["name"] == "ModelLoadError" and "no-such-model" in detail["message"] and CHAT_MODEL in detail["message"]
    assert detail["message"] in shown
    assert_host_alive(page, watch)

    # models-url that 404s.
    page, watch = open_host(context, host.page("/e-404.html", snippet(origin_a.url, f'id="w" model="{CHAT_MODEL}" models-url="{origin_a.url}/nowhere/"'), csp))
    detail, shown = error_of(page, "w")
    assert detail["name"] == "NetworkError" and "404" in detail["message"] and "/nowhere/index.json" in detail["message"], detail
    assert detail["message"] in shown
    assert_host_alive(page, watch)

    # A manifest of another format version: refused on load, naming both versions.
    page, watch = open_host(context, host.page("/e-format.html", snippet(origin_a.url, f'id="w" model="{CHAT_MODEL}" models-url="{origin_a.url}/models-bad/"'), csp))
    page.wait_for_function("() => document.getElementById('w').shadowRoot.querySelector('[part=download-size]')")
    page.locator("#w button[part=load-button]").click()
    detail, shown = error_of(page, "w")
    assert detail["name"] == "ModelLoadError" and "999" in detail["message"], detail
    assert detail["message"] in shown
    assert page.evaluate("async () => (await document.getElementById('w').engine.cache.list()).filter((c) => c.complete).length") == 0
    assert_host_alive(page, watch)

    # Bad attribute values: reported in the element and the console, the default used.
    page, watch = open_host(context, host.page("/e-attr.html", snippet(origin_a.url, f'id="w" model="{CHAT_MODEL}" temperature="hot" layout="sideways" backend="gpu"'), csp))
    page.wait_for_function("(id) => window.widgetEvents.filter((e) => e.type === 'webkiln-error' && e.id === id).length >= 3", arg="w")
    names = [e["detail"]["message"] for e in events(page, "webkiln-error", "w")]
    assert any("temperature" in m and '"hot"' in m for m in names) and any("layout" in m and "sideways" in m for m in names), names
    assert any('backend: "gpu" must be one of "auto", "webgpu", "wasm-cpu"' in m for m in names), names
    shown = shadow(page, "w", "(r) => r.querySelector('[part=error]').textContent")
    assert "temperature" in shown and "layout" in shown and "backend" in shown
    assert any("temperature" in m for m in watch.console_errors) and any("layout" in m for m in watch.console_errors)
    assert page.evaluate("() => [document.getElementById('w').temperature, document.getElementById('w').layout, document.getElementById('w').backend]") == [0.7, "inline", "auto"]
    page.evaluate("() => { document.getElementById('w').temperature = 0.2; }")
    assert page.evaluate("() => document.getElementById('w').getAttribute('temperature')") == "0.2"
    assert_host_alive(page, watch)

    # Image attributes the model does not allow: more steps than its max_steps, another size.
    page, watch = open_host(context, host.page("/e-img.html", snippet(origin_a.url, f'id="w" model="{IMAGE_MODEL}" steps="500" size="64x64"', "webkiln-image"), csp))
    page.wait_for_function("(id) => window.widgetEvents.filter((e) => e.type === 'webkiln-error' && e.id === id).length >= 2", arg="w")
    messages = [e["detail"]["message"] for e in events(page, "webkiln-error", "w")]
    assert any("steps" in m and "max_steps" in m for m in messages), messages
    assert any("size" in m and f"{IMAGE_SIZE}x{IMAGE_SIZE}" in m for m in messages), messages
    assert page.evaluate("() => [document.getElementById('w').steps, document.getElementById('w').size]") == [None, None]
    assert_host_alive(page, watch)

    # A host CSP without the widget's origin in worker-src: the Worker cannot start, and the message says why.
    page, watch = open_host(context, host.page("/e-worker.html", snippet(origin_a.url, f'id="w" model="{CHAT_MODEL}"'),
                                               csp.replace(f"worker-src {origin_a.url} blob:", "worker-src blob:")))
    page.wait_for_function("() => document.getElementById('w').shadowRoot.querySelector('[part=download-size]')")
    page.locator("#w button[part=load-button]").click()
    detail, shown = error_of(page, "w")
    assert detail["name"] == "EngineCrashedError" and f"worker-src {origin_a.url} blob:" in detail["message"], detail
    assert detail["message"] in shown
    assert_host_alive(page, watch)


def test_models_url_without_cors(context, origin_a, host, widget_site):
    # A third origin that sends no CORS headers; the host allowed it in connect-src, so only CORS refuses it.
    with LiveServer(widget_site) as plain:
        csp = widget_csp(origin_a.url).replace(f"connect-src {origin_a.url}", f"connect-src {origin_a.url} {plain.url.replace('127.0.0.1', 'localhost')}")
        other = plain.url.replace("127.0.0.1", "localhost")
        page, watch = open_host(context, host.page("/e-cors.html", snippet(origin_a.url, f'id="w" model="{CHAT_MODEL}" models-url="{other}/models/"'), csp))
        detail, shown = error_of(page, "w")
        assert detail["name"] == "NetworkError" and f"{other}/models/index.json" in detail["message"], detail
        assert detail["message"] in shown
        assert_host_alive(page, watch)


def test_storage_quota(context, origin_a, host):
    """A real quota (Chromium's, set over CDP) too small for any file. Chromium keeps reporting
    its default quota to navigator.storage.estimate() under this override, so the engine's
    up-front StorageQuotaError check does not fire; every cache write fails instead. The widget
    must still work (files used from the network), and nothing may be marked cached."""
    url = host.page("/e-quota.html", snippet(origin_a.url, f'id="w" model="{CHAT_MODEL}" temperature="0" max-tokens="4"'),
                    widget_csp(origin_a.url))
    page, watch = open_host(context, url, before=lambda page: context.new_cdp_session(page).send(
        "Storage.overrideQuotaForOrigin", {"origin": host.origin, "quotaSize": 1000}))
    type_message(page, "w", "hello")
    reply = wait_event(page, "webkiln-reply", "w")
    assert reply["detail"]["usage"]["completion_tokens"] >= 1
    assert any("QuotaExceededError" in m for m in [*watch.console_errors, *watch.console_warnings]), watch.console_warnings
    cached = page.evaluate("async () => (await document.getElementById('w').engine.cache.list())")
    assert [c for c in cached if c["complete"] or c["cachedBytes"] > 0] == [], cached
    assert events(page, "webkiln-error", "w") == []
    assert_host_alive(page, watch)


def test_no_webgpu(browser, origin_a, host, widget_site):
    """No WebGPU adapter (a Chromium started without --enable-unsafe-webgpu, page and Worker
    alike): the chat model runs on its CPU backend, said before and after loading; backend="webgpu"
    is refused once, named; an image model without a CPU backend says it needs WebGPU."""
    plain = browser.browser_type.launch(executable_path=CHROMIUM, args=["--disable-quic"])
    try:
        context = plain.new_context()
        body = (snippet(origin_a.url, f'id="w" model="{CHAT_MODEL}" temperature="0" max-tokens="6"') + "\n"
                f'<webkiln-chat id="g" model="{CHAT_MODEL}" backend="webgpu"></webkiln-chat>\n'
                f'<webkiln-image id="img" model="{IMAGE_MODEL}" autoload="manual"></webkiln-image>')
        page, watch = open_host(context, host.page("/e-gpu.html", body, widget_csp(origin_a.url)))
        for element in ("w", "g", "img"):
            page.wait_for_function("(id) => document.getElementById(id).shadowRoot.querySelector('[part=fit]')", arg=element)
        fit = lambda element: shadow(page, element, "(r) => r.querySelector('[part=fit]').textContent")  # noqa: E731
        assert "runs on wasm-cpu: no WebGPU here (no GPU adapter was returned), so the CPU" in fit("w"), fit("w")
        assert "WebGPU is not available in this browser (no GPU adapter was returned)" in fit("g"), fit("g")
        image_backends = json.loads((widget_site / "models" / IMAGE_MODEL / "manifest.json").read_text())["backends"]
        if any(b["device"] == "cpu" for b in image_backends.values()):
            assert "runs on wasm-cpu" in fit("img"), fit("img")
        else:
            assert "needs WebGPU (no GPU adapter was returned): this model has no CPU backend" in fit("img"), fit("img")

        page.evaluate("() => document.getElementById('w').load()")
        status = shadow(page, "w", "(r) => r.querySelector('[part=status]').textContent")
        assert f"{CHAT_MODEL} ready on wasm-cpu: no WebGPU here (no GPU adapter was returned), so the CPU" in status, status
        assert page.evaluate("() => document.getElementById('w').loadedModel.device") == "cpu"
        type_message(page, "w", "hello")
        reply = wait_event(page, "webkiln-reply", "w")
        assert reply["detail"]["text"] == engine_greedy(page, "w", [{"role": "user", "content": "hello"}], 6)
        assert events(page, "webkiln-error", "w") == []

        type_message(page, "g", "hello")
        detail, shown = error_of(page, "g")
        assert detail["name"] == "WebGPUUnavailableError", detail
        assert detail["message"] in shown
        assert len(events(page, "webkiln-error", "g")) == 1  # the failed load, reported once (not again by send)
        assert page.evaluate("() => document.getElementById('g').messages") == []
        assert_host_alive(page, watch)
    finally:
        plain.close()


def test_backend_attribute(context, origin_a, host):
    """On SwiftShader (a fallback adapter): no attribute runs wasm-cpu and says why;
    backend="webgpu" runs webgpu-f32, on an engine of its own (one engine holds one model),
    and gives the same greedy reply; changing the attribute rebinds the element."""
    attrs = f'model="{CHAT_MODEL}" temperature="0" max-tokens="8"'
    body = (snippet(origin_a.url, f'id="cpu" {attrs}') + "\n"
            f'<webkiln-chat id="gpu" {attrs} backend="webgpu"></webkiln-chat>')
    page, watch = open_host(context, host.page("/backend.html", body, widget_csp(origin_a.url)))
    page.wait_for_function("() => document.getElementById('gpu').shadowRoot.querySelector('[part=fit]')")
    fit = shadow(page, "gpu", "(r) => r.querySelector('[part=fit]').textContent")
    assert "runs on webgpu-f32: WebGPU on " in fit, fit
    replies = {}
    for element, backend in (("cpu", "wasm-cpu"), ("gpu", "webgpu-f32")):
        loaded = page.evaluate("(id) => document.getElementById(id).load()", element)
        assert loaded["backend"] == backend, loaded
        status = shadow(page, element, "(r) => r.querySelector('[part=status]').textContent")
        assert status == f"{CHAT_MODEL} ready on {backend}: {loaded['backendReason']}", status
        if backend == "wasm-cpu":
            assert "is a CPU fallback" in status
        type_message(page, element, "hello world")
        replies[element] = wait_event(page, "webkiln-reply", element)["detail"]["text"]
    assert replies["cpu"] and replies["cpu"] == replies["gpu"]
    assert len(page.workers) == 2  # one engine per model and backend
    assert page.evaluate("() => document.getElementById('gpu').backend") == "webgpu"
    # A new value: the element rebinds (the card describes the new choice; nothing loads by itself).
    page.evaluate("() => { document.getElementById('gpu').backend = 'wasm-cpu'; }")
    assert page.evaluate("() => document.getElementById('gpu').getAttribute('backend')") == "wasm-cpu"
    page.wait_for_function("() => document.getElementById('gpu').shadowRoot.querySelector('[part=fit]')"
                           "?.textContent.includes('the CPU backend was requested')")
    assert page.evaluate("() => document.getElementById('gpu').loadedModel") is None
    assert watch.page_errors == [] and watch.csp_violations() == []


# --- the real default model -------------------------------------------------------------------


def test_readme_snippet_on_the_default_model(browser, chat_site, host, tmp_path):  # noqa: F811
    root, model_dir = chat_site
    model, prompt, n = model_dir.name, "What is the capital of France?", 6
    with LiveServer(root, cors_origins=[host.origin]) as a:
        context = browser.new_context(viewport=DESKTOP)
        try:
            url = host.page("/real.html", snippet(a.url, f'id="chat" model="{model}" system-prompt="You answer questions about this blog." '
                                                         f'temperature="0" max-tokens="{n}"'), widget_csp(a.url))
            page, watch = open_host(context, url)
            page.wait_for_function("() => document.getElementById('chat').shadowRoot.querySelector('[part=download-size]')")
            cold = chat_and_time(page, "chat", prompt, REAL_TIMEOUT)
            text = cold["reply"]["detail"]["text"]
            messages = [{"role": "system", "content": "You answer questions about this blog."}, {"role": "user", "content": prompt}]
            assert text and text == engine_greedy(page, "chat", messages, n)
            assert watch.csp_violations() == [] and watch.page_errors == []
            page.close()
            page, watch = open_host(context, url)
            page.wait_for_function("() => document.getElementById('chat').shadowRoot.querySelector('[part=download-size]')")
            warm = chat_and_time(page, "chat", prompt, REAL_TIMEOUT)
            assert warm["reply"]["detail"]["text"] == text
            record_timings(model, {"cold_ready_ms": cold["ready_ms"], "cold_first_token_ms": cold["first_token_ms"],
                                   "warm_ready_ms": warm["ready_ms"], "warm_first_token_ms": warm["first_token_ms"]})
        finally:
            context.close()


def test_demo_page(browser, origin_a):
    """site/widget-demo.html (same origin as widget.js, its own meta CSP): both layouts work."""
    context = browser.new_context(viewport={"width": 900, "height": 900}, device_scale_factor=1)
    try:
        page, watch = open_host(context, f"{origin_a.url}/widget-demo.html")
        page.wait_for_function("() => document.querySelectorAll('webkiln-chat, webkiln-image').length === 3 && "
                               "[...document.querySelectorAll('webkiln-chat, webkiln-image')].every((e) => e.modelInfo)")
        ids = page.evaluate("() => [...document.querySelectorAll('webkiln-chat, webkiln-image')].map((e) => e.modelInfo.id)")
        assert ids == [CHAT_MODEL, IMAGE_MODEL, CHAT_MODEL]
        page.locator("webkiln-chat[layout=bubble] [part=launcher]").focus()
        page.keyboard.press("Enter")
        page.keyboard.type("Hi")
        page.keyboard.press("Enter")
        page.wait_for_function("() => window.widgetEvents.some((e) => e.type === 'webkiln-reply' || e.type === 'webkiln-error')",
                               timeout=TIMEOUT)
        assert [e["type"] for e in page.evaluate("() => window.widgetEvents") if e["type"] == "webkiln-error"] == []
        # The inline chat follows the bubble's load of the same model: ready too, nothing downloaded twice.
        page.wait_for_function("() => window.widgetEvents.filter((e) => e.type === 'webkiln-ready').length === 2")
        assert page.evaluate("() => document.querySelector('webkiln-chat').loadedModel.id") == CHAT_MODEL
        assert page.evaluate("() => document.querySelector('webkiln-image').loadedModel") is None
        files = [u for u in watch.requests if f"/models/{CHAT_MODEL}/" in u and not u.endswith("manifest.json")]
        assert files and len(files) == len(set(files)), files
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "widget-demo.png"), full_page=True)
        assert len(page.workers) == 1  # one for both chat widgets; the unused image widget starts none
        assert watch.page_errors == [] and watch.csp_violations() == []
    finally:
        context.close()


def test_stop_keeps_the_partial_reply(context, origin_a, host):
    n, prompt = 400, "Tell me a long story."
    # backend="webgpu": the tiny model on the CPU writes 400 tokens in about half a second, too
    # soon for a key press to land reliably (Stop on the CPU: test_cpu_backend_ui.py, default model).
    page, watch = open_host(context, host.page("/stop.html", snippet(origin_a.url, f'id="chat" model="{CHAT_MODEL}" temperature="0" max-tokens="{n}" backend="webgpu"'),
                                               widget_csp(origin_a.url)))
    page.wait_for_function("() => document.getElementById('chat').shadowRoot.querySelector('[part=download-size]')")
    page.evaluate("() => document.getElementById('chat').load()")
    full = page.evaluate("""async ([messages, n]) => {
        const r = await document.getElementById('chat').engine.chat.completions.create({messages, temperature: 0, max_tokens: n});
        return [r.choices[0].message.content, r.choices[0].finish_reason];
    }""", [[{"role": "user", "content": prompt}], n])
    assert full[1] == "length"  # the setup: this reply runs to max-tokens, so only Stop can end it early
    watch_stream(page, "chat")
    type_message(page, "chat", prompt)
    page.wait_for_function("() => window.streamed.length > 0", timeout=TIMEOUT)
    stop = page.locator("#chat [part=stop-button]")
    assert stop.is_visible() and not page.locator("#chat [part=send-button]").is_visible()
    stop.focus()
    page.keyboard.press("Enter")
    reply = wait_event(page, "webkiln-reply", "chat")["detail"]
    assert reply["finish_reason"] == "abort"
    assert 0 < len(reply["text"]) < len(full[0]) and full[0].startswith(reply["text"])
    assert shadow(page, "chat", "(r) => r.querySelector('[part=status]').textContent").startswith("Stopped")
    assert page.locator("#chat [part=send-button]").is_visible() and not stop.is_visible()
    assert page.evaluate("() => document.getElementById('chat').messages.length") == 2
    # reset() clears the conversation.
    page.evaluate("() => document.getElementById('chat').reset()")
    assert page.evaluate("() => document.getElementById('chat').messages") == []
    assert shadow(page, "chat", "(r) => r.querySelectorAll('.msg').length") == 0
    assert watch.page_errors == []

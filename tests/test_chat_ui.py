"""The chat app (site/index.html, web/src/app/): streaming replies that equal the
engine's own output, stop / regenerate / edit, conversations that survive a reload,
settings, sanitized markdown (hostile model output never runs or loads anything),
the model picker and cache panel, themes and the phone layout (screenshots under
test-artifacts/), and, on the real default model, "Paris"."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from conftest import ARTIFACTS, LiveServer
from conftest_models import smollm2_gguf  # noqa: F401  (session fixture)
from conftest_tiny import tiny_llama  # noqa: F401  (session fixture)
from test_chat_browser import chat_site  # noqa: F401  (session fixture)

LOAD_TIMEOUT = 300_000  # ~120 MB and shader compilation on SwiftShader
REPLY_TIMEOUT = 300_000  # generous: the default model on wasm-cpu (Automatic here), or on CPU-emulated WebGPU
TINY_TIMEOUT = 120_000
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


# --- fixtures and helpers -----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_site(tmp_path_factory, tiny_llama, test_site):  # noqa: F811
    """A copy of site/ with the tiny random Llama (ChatML template) as its only model."""
    from webkiln.package.chat_build import build_chat_model
    from webkiln.sources import load_source
    from webkiln.toolchain.link import LinkMode

    root = tmp_path_factory.mktemp("ui-site")
    shutil.copytree(test_site, root, dirs_exist_ok=True)
    build_chat_model(load_source(tiny_llama.folder), root / "models", "q4f32", model_id="tiny-chat",
                     link_mode=LinkMode.FAST, log=lambda _: None)
    return root


@pytest.fixture(scope="module")
def tiny_server(tiny_site):
    with LiveServer(tiny_site) as server:
        yield server


@pytest.fixture
def app(browser, tiny_server):
    """A fresh browser context (empty IndexedDB and localStorage) on the tiny site, model loaded."""
    context = browser.new_context(bypass_csp=True, viewport=DESKTOP)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{tiny_server.url}/index.html")
    wait_loaded(page)
    yield page
    context.close()
    assert errors == []


def wait_loaded(page, timeout: int = TINY_TIMEOUT) -> None:
    page.wait_for_function("window.webkilnApp !== undefined")
    page.evaluate("() => window.webkilnApp.ready")
    page.wait_for_function("!document.getElementById('prompt').disabled", timeout=timeout)
    assert "ready" in page.inner_text("#status"), page.inner_text("#status")


def set_settings(page, **values: str) -> None:
    if not page.is_visible("#temperature"):
        page.click(".settings summary")
    for name, value in values.items():
        page.fill(f"#{name}", value)


def replies(page) -> int:
    return page.locator(".msg.assistant").count()


def wait_reply_done(page, before: int, timeout: int = TINY_TIMEOUT) -> None:
    page.wait_for_function(
        """(n) => document.querySelectorAll('.msg.assistant').length > n
               && !document.querySelector('.msg.assistant.pending')
               && !document.getElementById('send').disabled""",
        arg=before, timeout=timeout)


def send(page, text: str, timeout: int = TINY_TIMEOUT) -> None:
    before = replies(page)
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")
    wait_reply_done(page, before, timeout)


def app_messages(page) -> list[dict]:
    return page.evaluate("() => window.webkilnApp.messages()")


def engine_reply(page, messages: list[dict], max_tokens: int) -> str:
    """The engine's own reply to the same request, without the app."""
    return page.evaluate(
        """async ([messages, n]) => {
            const r = await window.webkilnApp.engine.chat.completions.create({messages, temperature: 0, max_tokens: n});
            return r.choices[0].message.content;
        }""", [messages, max_tokens])


def rendered_text(page, markdown: str) -> str:
    """The text the app's markdown renderer makes of `markdown` (as shown in a message)."""
    return page.evaluate(
        """(md) => { const d = document.createElement('div'); d.innerHTML = window.webkilnApp.renderMarkdown(md);
                     return d.textContent; }""", markdown)


def shown_text(page, selector: str) -> str:
    """A message's text without the code blocks' header bars."""
    return page.evaluate(
        """(sel) => { const c = document.querySelector(sel).cloneNode(true);
                      c.querySelectorAll('.code-bar').forEach((b) => b.remove()); return c.textContent; }""", selector)


# --- chatting --------------------------------------------------------------------------


def use_webgpu(page) -> None:
    """Settings → Backend → WebGPU, and wait for the reload. For tests that must see a reply
    while it is being written (partial states, Stop mid-stream): on the CPU backend the tiny
    model writes its whole reply within a frame or two, before a click can land; WebGPU on
    SwiftShader takes long enough. (Stop on the CPU backend: tests/test_cpu_backend_ui.py, on
    the default model.)"""
    if not page.is_visible("#backend"):
        page.click(".settings summary")
    page.select_option("#backend", "webgpu")
    page.wait_for_function("document.getElementById('status').textContent.includes('is ready on webgpu-f32')",
                           timeout=TINY_TIMEOUT)
    wait_loaded(page)


def test_reply_streams_and_equals_the_engine(app):
    use_webgpu(app)
    set_settings(app, **{"system-prompt": "You are a terse assistant.", "temperature": "0", "max-tokens": "40"})
    # Record every state the reply's text goes through while it streams.
    app.evaluate("""() => {
        window.states = [];
        new MutationObserver(() => {
            const t = document.querySelector('.msg.assistant .text');
            if (t) window.states.push(t.textContent);
        }).observe(document.getElementById('chat'), {subtree: true, childList: true, characterData: true});
    }""")
    send(app, "hello world, how are you today?")

    messages = app_messages(app)
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == "hello world, how are you today?"
    assert app.inner_text(".msg.user .text") == "hello world, how are you today?"
    reply = messages[1]["content"]
    assert reply

    # Token by token: the text went through at least two distinct partial states.
    final = shown_text(app, ".msg.assistant .text")
    states = app.evaluate("() => window.states")
    partial = {s for s in states if s and s != final}
    assert len(partial) >= 2, states

    # Same messages (system prompt included) straight to the engine: the same reply.
    request = [{"role": "system", "content": "You are a terse assistant."}, messages[0]]
    assert engine_reply(app, request, 40) == reply
    assert final == rendered_text(app, reply)
    assert app.get_attribute(".msg.assistant", "data-raw") == reply

    stats = app.inner_text(".msg.assistant .stats")
    assert re.search(r"\d+ tokens · [\d.]+ tokens/s · prompt \d+ tokens", stats), stats
    # Settings persist in localStorage.
    saved = json.loads(app.evaluate("() => localStorage.getItem('webkiln.settings')"))
    assert saved == {"systemPrompt": "You are a terse assistant.", "temperature": 0, "topP": None, "maxTokens": 40,
                     "seed": None, "backend": "webgpu"}


def test_stop_regenerate_and_edit_last(app):
    use_webgpu(app)
    set_settings(app, temperature="0", **{"max-tokens": "300"})

    # Stop mid-stream with the button.
    app.fill("#prompt", "the quick brown fox")
    app.press("#prompt", "Enter")
    app.wait_for_function("document.querySelector('.msg.assistant .text')?.textContent.length > 0",
                          timeout=TINY_TIMEOUT)
    app.click("#stop")
    wait_reply_done(app, 0)
    stats = app.inner_text(".msg.assistant .stats")
    assert "stopped" in stats, stats
    stopped = app_messages(app)[1]["content"]
    assert stopped
    assert int(re.match(r"(\d+) tokens", stats).group(1)) < 300

    # Regenerate: the last reply is replaced (temperature 0: the same beginning), not added to.
    app.evaluate("() => { document.querySelector('.msg.assistant').dataset.old = '1'; }")
    set_settings(app, **{"max-tokens": "12"})
    app.click("#regenerate")
    app.wait_for_function("!document.querySelector('.msg.assistant[data-old]')")
    wait_reply_done(app, 0)
    messages = app_messages(app)
    assert [m["role"] for m in messages] == ["user", "assistant"]
    regenerated = messages[1]["content"]
    assert regenerated == engine_reply(app, [messages[0]], 12)
    assert "tokens/s" in app.inner_text(".msg.assistant .stats")

    # Escape stops too.
    set_settings(app, **{"max-tokens": "300"})
    app.click("#regenerate")
    app.wait_for_function("document.querySelector('.msg.assistant.pending .text')?.textContent.length > 0",
                          timeout=TINY_TIMEOUT)
    app.keyboard.press("Escape")
    wait_reply_done(app, 0)
    assert "stopped" in app.inner_text(".msg.assistant .stats")

    # Edit last: the last exchange goes back into the box; Escape puts it back.
    set_settings(app, **{"max-tokens": "12"})
    app.click("#edit-last")
    assert app.input_value("#prompt") == "the quick brown fox"
    assert app.locator(".msg").count() == 0
    app.keyboard.press("Escape")
    assert app.locator(".msg").count() == 2 and app.input_value("#prompt") == ""
    # ... and Enter sends the edited text instead.
    app.click("#edit-last")
    app.fill("#prompt", "hello world")
    app.press("#prompt", "Enter")
    wait_reply_done(app, 0)
    messages = app_messages(app)
    assert [m["content"] for m in messages][:1] == ["hello world"] and len(messages) == 2
    assert app.inner_text(".msg.user .text") == "hello world"
    assert messages[1]["content"] == engine_reply(app, [messages[0]], 12)


def test_keyboard(app):
    app.focus("#prompt")
    app.keyboard.type("line one")
    app.keyboard.press("Shift+Enter")
    app.keyboard.type("line two")
    assert app.input_value("#prompt") == "line one\nline two"
    assert app.locator(".msg").count() == 0
    # Controls have names for screen readers.
    for selector in ["#prompt", "#send", "#stop", "#theme-toggle", "#regenerate", "#edit-last"]:
        assert app.get_attribute(selector, "aria-label"), selector
    # The theme toggle flips the theme and remembers it.
    before = app.evaluate("() => document.documentElement.dataset.theme")
    app.click("#theme-toggle")
    after = app.evaluate("() => document.documentElement.dataset.theme")
    assert {before, after} == {"light", "dark"}
    app.reload()
    wait_loaded(app)
    assert app.evaluate("() => document.documentElement.dataset.theme") == after


def test_conversations_survive_reload(app):
    set_settings(app, temperature="0", **{"max-tokens": "8", "seed": "7"})
    send(app, "What is the capital of France?")
    first = app_messages(app)
    app.click("#new-chat")
    assert app.locator(".msg").count() == 0
    send(app, "hello world")
    second = app_messages(app)

    app.reload()
    wait_loaded(app)
    # The most recent conversation is open; both are listed, newest first.
    assert app_messages(app) == second
    assert app.inner_text(".msg.user .text") == "hello world"
    titles = app.locator(".conversation-title").all_inner_texts()
    assert titles == ["hello world", "What is the capital of France?"]
    # Settings came back too.
    set_settings(app)
    assert app.input_value("#temperature") == "0" and app.input_value("#max-tokens") == "8"
    assert app.input_value("#seed") == "7"

    # Switch, then delete (two clicks: the first only arms the button).
    app.click(".conversation-item:nth-child(2) .conversation")
    app.wait_for_function("document.querySelector('.msg.user .text')?.textContent === 'What is the capital of France?'")
    assert app_messages(app) == first
    assert app.get_attribute(".conversation-item:nth-child(2) .conversation", "aria-current") == "true"
    delete = app.locator(".conversation-item:nth-child(2) .conversation-delete")
    delete.click()
    assert app.locator(".conversation-item").count() == 2
    delete.click()
    app.wait_for_function("document.querySelectorAll('.conversation-item').length === 1")
    assert app_messages(app) == second
    app.reload()
    wait_loaded(app)
    assert app.locator(".conversation-title").all_inner_texts() == ["hello world"]


def test_model_picker_and_cache_panel(app):
    assert app.eval_on_selector_all("#model-select option", "os => os.map((o) => o.value)") == ["tiny-chat"]
    info = app.inner_text("#model-info")
    # SwiftShader is a CPU fallback adapter: Automatic runs the CPU backend, and says so.
    assert "q4f32" in info and "download" in info and "runs on wasm-cpu" in info and "CPU fallback" in info
    app.click(".models-panel summary")
    card = app.inner_text(".model-card")
    assert app.get_attribute(".model-card", "data-model") == "tiny-chat"
    assert "q4f32" in card and "webgpu-f32: WebGPU; wasm-cpu: CPU (WebAssembly SIMD)" in card
    assert "loaded · wasm-cpu" in card and "running on wasm-cpu: the only WebGPU adapter" in card
    app.wait_for_function("document.querySelector('.model-card .cache-size').textContent.includes('cached')")
    assert "not cached" not in app.inner_text(".model-card .cache-size")
    assert "Using" in app.inner_text("#storage-usage")

    # Delete the cached files (two clicks), then all (nothing left: disabled).
    delete = app.locator(".model-card button.danger")
    delete.click()
    delete.click()
    app.wait_for_function("document.querySelector('.model-card .cache-size').textContent === 'not cached'")
    assert app.is_disabled("#cache-clear")
    # The loaded model keeps working; loading it again downloads it again, with progress.
    send(app, "hello")
    app.evaluate("""() => {
        window.seen = [];
        new MutationObserver(() => window.seen.push(document.getElementById('load-text').textContent))
            .observe(document.getElementById('load-progress'), {subtree: true, childList: true, characterData: true});
    }""")
    app.select_option("#model-select", "tiny-chat")
    app.dispatch_event("#model-select", "change")
    wait_loaded(app)
    seen = app.evaluate("() => window.seen")
    assert any(re.search(r"Downloading .+ of .+ · \d+/\d+ files", s) for s in seen), seen


def test_error_banner_names_the_error(app):
    app.evaluate("""() => {
        const e = window.webkilnApp.engine;
        e.chat.completions.create = async () => {
            const err = new Error('The GPU device was lost: test'); err.name = 'DeviceLostError'; throw err; };
    }""")
    app.fill("#prompt", "hello")
    app.press("#prompt", "Enter")
    app.wait_for_selector("#error:not([hidden])")
    assert app.inner_text("#error-name") == "DeviceLostError"
    assert "The GPU device was lost: test" in app.inner_text("#error-message")
    assert app.is_visible("#reload-model")
    # The failed turn keeps the question (for Regenerate) and no empty reply.
    assert [m["role"] for m in app_messages(app)] == ["user"]
    ARTIFACTS.mkdir(exist_ok=True)
    app.screenshot(path=str(ARTIFACTS / "chat-ui-error.png"))
    app.click("#reload-model")
    wait_loaded(app)
    assert app.is_hidden("#error")


# --- hostile model output ---------------------------------------------------------------

HOSTILE = [
    "<script>window.pwned = 1</script>",
    "<img src=x onerror=\"window.pwned = 2\">",
    '<img src="http://remote.invalid/a.png">',
    "![alt text](http://remote.invalid/b.png)",
    "![](x onerror=alert(1))",
    "[x](javascript:window.pwned=3)",
    "[y](  JaVaScRiPt:window.pwned=3)",
    "[z](java&#x09;script:window.pwned=3)",
    '<a href="javascript:window.pwned=3">j</a>',
    "<iframe src=\"http://remote.invalid/f\"></iframe>",
    "<iframe srcdoc=\"<script>parent.pwned = 4</script>\"></iframe>",
    '<a href="data:text/html,<script>alert(1)</script>">d</a>',
    "[d](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    '<div style="background:url(http://remote.invalid/c.png)">styled</div>',
    "<style>body { background: url(http://remote.invalid/d.png) }</style>",
    '<link rel="stylesheet" href="http://remote.invalid/s.css">',
    "<svg onload=\"window.pwned = 5\"><circle r=5 /></svg>",
    "<math><mtext><table><mglyph><style><img src=x onerror=\"window.pwned = 6\">",
    '<object data="http://remote.invalid/o"></object><embed src="http://remote.invalid/e">',
    '<video src="http://remote.invalid/v.mp4" poster="http://remote.invalid/p.png"></video>',
    '<form action="http://remote.invalid/"><button formaction="javascript:window.pwned=7">go</button></form>',
    '<meta http-equiv="refresh" content="0;url=http://remote.invalid/">',
    '<base href="http://remote.invalid/">',
    '<details open ontoggle="window.pwned = 8">x</details>',
    "`<img src=x onerror=window.pwned=9>` and ```html\n<script>window.pwned = 10</script>\n```",
    "| a | b |\n|---|---|\n| <img src=x onerror=window.pwned=11> | [t](javascript:window.pwned=12) |",
]

CHECK_DOM = """(root) => {
    const bad = [];
    for (const el of root.querySelectorAll('*')) {
        const tag = el.tagName.toLowerCase();
        if (['script', 'iframe', 'img', 'style', 'link', 'object', 'embed', 'video', 'audio', 'svg', 'math',
             'form', 'meta', 'base', 'source', 'picture'].includes(tag)) bad.push('tag ' + tag);
        for (const a of el.attributes) {
            if (a.name.startsWith('on') || a.name === 'style' || a.name === 'srcdoc' || a.name === 'src') bad.push(tag + ' ' + a.name);
        }
        const href = el.getAttribute('href');
        if (href !== null && !/^(https?:|mailto:|#)/i.test(href)) bad.push('href ' + href);
    }
    return bad;
}"""


def test_hostile_markdown_never_runs_or_loads(browser, tiny_server):
    context = browser.new_context(bypass_csp=True, viewport=DESKTOP)
    page = context.new_page()
    requests: list[str] = []
    dialogs: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    context.on("request", lambda r: requests.append(r.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        page.goto(f"{tiny_server.url}/index.html")
        page.wait_for_function("window.webkilnApp !== undefined")
        page.evaluate("() => window.webkilnApp.ready")

        # 1. The renderer itself, each input and all of them together, put into the page.
        page.evaluate("(inputs) => { window.rendered = inputs.map((s) => window.webkilnApp.renderMarkdown(s)); }",
                      HOSTILE + ["\n\n".join(HOSTILE)])
        page.evaluate("""() => {
            const box = document.createElement('div'); box.id = 'hostile';
            for (const html of window.rendered) { const d = document.createElement('div'); d.innerHTML = html; box.append(d); }
            document.body.append(box);
            for (const el of box.querySelectorAll('*')) {  // poke everything that could fire a handler
                for (const t of ['mouseover', 'focus', 'load', 'error', 'toggle', 'animationstart']) el.dispatchEvent(new Event(t));
            }
        }""")
        assert page.evaluate("(" + CHECK_DOM + ")(document.getElementById('hostile'))") == []
        html = " ".join(page.evaluate("() => window.rendered"))
        # Every tag that is not markdown's own arrives escaped (shown, never parsed).
        for tag in ["<script", "<img", "<iframe", "<style", "<svg", "<math", "<object", "<form", "<meta", "<base"]:
            assert tag not in html.lower(), tag
        # Raw HTML is shown as text, not dropped silently.
        assert "<script>window.pwned = 1</script>" in page.inner_text("#hostile")
        # Links open in a new tab without an opener; images became links.
        hrefs = page.eval_on_selector_all("#hostile a[href]", "as => as.map((a) => [a.href, a.target, a.rel])")
        assert ["http://remote.invalid/b.png", "_blank", "noopener noreferrer nofollow"] in [list(h) for h in hrefs]

        # 2. The real path: a stored conversation whose reply is all of it, shown by the chat view.
        page.evaluate("""async (content) => {
            const db = await new Promise((ok, ko) => { const r = indexedDB.open('webkiln-app', 1); r.onsuccess = () => ok(r.result); r.onerror = () => ko(r.error); });
            const now = Date.now();
            await new Promise((ok, ko) => {
                const tx = db.transaction('conversations', 'readwrite');
                tx.objectStore('conversations').put({id: 'hostile', title: 'hostile', created: now, updated: now + 1e6,
                    messages: [{role: 'user', content: '<img src=x onerror="window.pwned = 20">'}, {role: 'assistant', content}]});
                tx.oncomplete = ok; tx.onerror = () => ko(tx.error);
            });
            db.close();
        }""", "\n\n".join(HOSTILE))
        page.reload()
        page.wait_for_function("window.webkilnApp !== undefined")
        page.evaluate("() => window.webkilnApp.ready")
        page.wait_for_selector(".msg.assistant .text p")
        assert page.evaluate("(" + CHECK_DOM + ")(document.getElementById('chat'))") == []
        assert page.inner_text(".msg.user .text") == '<img src=x onerror="window.pwned = 20">'
        page.wait_for_timeout(500)
        assert page.evaluate("() => window.pwned") is None
        assert dialogs == []
        origin = tiny_server.url + "/"
        foreign = [u for u in requests if not u.startswith(origin)]
        assert foreign == [], foreign
    finally:
        context.close()


# --- looks: screenshots ---------------------------------------------------------------------

DEMO = [
    {"role": "user", "content": "How do I reverse a string in Python?"},
    {"role": "assistant", "content":
        "Use **slicing** with a step of `-1`:\n\n```python\ntext = \"webkiln\"\nprint(text[::-1])  # nlikbew\n```\n\n"
        "Other ways:\n\n1. `\"\".join(reversed(text))`\n2. a loop that prepends each character\n\n"
        "| Method | Speed |\n|---|---|\n| slicing | fastest |\n| `reversed` | fast |\n\n"
        "> Slicing makes a new string; Python strings are immutable.",
     "stats": {"model": "tiny-chat", "promptTokens": 31, "cachedPromptTokens": 0, "completionTokens": 87,
               "decodeTokensPerS": 42.5, "prefillTokensPerS": 610.2, "finishReason": "stop", "seconds": 2.4}},
    {"role": "user", "content": "Thanks! And in JavaScript?"},
    {"role": "assistant", "content": "Split, reverse, join:\n\n```js\n[...\"webkiln\"].reverse().join(\"\")\n```",
     "stats": {"model": "tiny-chat", "promptTokens": 132, "cachedPromptTokens": 118, "completionTokens": 24,
               "decodeTokensPerS": 44.1, "prefillTokensPerS": 580.0, "finishReason": "stop", "seconds": 0.7}},
]

SEED = """async ([messages]) => {
    const db = await new Promise((ok, ko) => { const r = indexedDB.open('webkiln-app', 1); r.onsuccess = () => ok(r.result); r.onerror = () => ko(r.error); });
    const now = Date.now();
    const convs = [
        {id: 'a', title: 'Reverse a string in Python', created: now, updated: now, messages},
        {id: 'b', title: 'Haiku about GPUs', created: now - 9e7, updated: now - 9e7, messages: []},
        {id: 'c', title: 'What is WebGPU?', created: now - 2e8, updated: now - 2e8, messages: []},
    ];
    await new Promise((ok, ko) => {
        const tx = db.transaction('conversations', 'readwrite');
        for (const c of convs) tx.objectStore('conversations').put(c);
        tx.oncomplete = ok; tx.onerror = () => ko(tx.error);
    });
    db.close();
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots(browser, tiny_server, scheme):
    ARTIFACTS.mkdir(exist_ok=True)
    for name, viewport in [("desktop", DESKTOP), ("phone", PHONE)]:
        context = browser.new_context(bypass_csp=True, viewport=viewport, color_scheme=scheme, device_scale_factor=1)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(f"{tiny_server.url}/index.html")
            wait_loaded(page)
            assert page.evaluate("() => document.documentElement.dataset.theme") == scheme
            # The empty chat (welcome screen).
            page.screenshot(path=str(ARTIFACTS / f"chat-ui-{name}-{scheme}-welcome.png"))
            page.evaluate(SEED, [DEMO])
            page.reload()
            wait_loaded(page)
            page.wait_for_selector(".code-block")
            assert page.locator(".msg").count() == 4
            if name == "desktop":
                page.click(".settings summary")
            page.screenshot(path=str(ARTIFACTS / f"chat-ui-{name}-{scheme}.png"))
            if name == "phone":
                # The sidebar is off-screen until the menu button opens it over the chat.
                assert not page.locator("#new-chat").is_visible() or page.evaluate(
                    "() => document.getElementById('sidebar').getBoundingClientRect().right <= 0")
                page.click("#sidebar-toggle")
                page.wait_for_timeout(300)
                assert page.evaluate("() => document.getElementById('sidebar').getBoundingClientRect().left") >= 0
                page.screenshot(path=str(ARTIFACTS / f"chat-ui-{name}-{scheme}-sidebar.png"))
                page.keyboard.press("Escape")
                page.wait_for_timeout(300)
                assert not page.evaluate("() => document.body.classList.contains('sidebar-open')")
            else:
                # Code blocks copy their code.
                context.grant_permissions(["clipboard-read", "clipboard-write"], origin=tiny_server.url)
                page.click(".code-block .copy-code")
                page.wait_for_function("document.querySelector('.copy-code').textContent === 'Copied'")
                assert page.evaluate("() => navigator.clipboard.readText()") == (
                    'text = "webkiln"\nprint(text[::-1])  # nlikbew\n')
                page.click(".models-panel summary")
                page.wait_for_selector(".model-card")
                page.screenshot(path=str(ARTIFACTS / f"chat-ui-{name}-{scheme}-models.png"))
            assert errors == []
        finally:
            context.close()


# --- the real default model ----------------------------------------------------------------


def test_chat_page_answers(browser, chat_site):  # noqa: F811
    root, model_dir = chat_site
    with LiveServer(root) as server:
        context = browser.new_context(bypass_csp=True, viewport=DESKTOP)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(f"{server.url}/index.html")
            # The model list comes from models/index.json; the first one loads by itself.
            page.wait_for_function("document.getElementById('model-select').options.length > 0")
            assert model_dir.name in page.eval_on_selector("#model-select", "s => s.value")
            assert "MB" in page.inner_text("#model-select")
            wait_loaded(page, LOAD_TIMEOUT)
            # SwiftShader is a fallback adapter: Automatic runs the CPU backend and says why.
            status = page.inner_text("#status")
            assert "is ready on wasm-cpu" in status and "is a CPU fallback" in status, status

            page.click(".settings summary")
            page.fill("#temperature", "0")
            page.fill("#max-tokens", "16")
            send(page, "What is the capital of France?", REPLY_TIMEOUT)

            assert page.inner_text(".msg.user .text") == "What is the capital of France?"
            reply = page.inner_text(".msg.assistant .text")
            assert "Paris" in reply, (reply, page.inner_text("#status"))
            assert re.search(r"[\d.]+ tokens/s", page.inner_text(".msg.assistant .stats"))
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "chat.png"), full_page=True)

            # New chat clears the conversation.
            page.click("#new-chat")
            assert page.locator(".msg").count() == 0
            assert errors == []
        finally:
            context.close()


def test_chat_page_without_models_says_how_to_build(browser, tiny_site, tmp_path):
    empty = tmp_path / "site"
    shutil.copytree(tiny_site, empty, ignore=shutil.ignore_patterns("models"))
    (empty / "models").mkdir()
    with LiveServer(empty) as server:
        context = browser.new_context(bypass_csp=True)
        page = context.new_page()
        try:
            page.goto(f"{server.url}/index.html")
            page.wait_for_function("document.getElementById('status').textContent.includes('No model is built yet')",
                                   timeout=30_000)
            assert "./scripts/serve.sh" in page.inner_text("#status")
            assert page.is_disabled("#send")
        finally:
            context.close()

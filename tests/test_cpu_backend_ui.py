"""The app (site/index.html) and the wasm-cpu backend: which backend runs, and why, as the
user sees it.

* Without WebGPU (Chromium started without --enable-unsafe-webgpu: navigator.gpu exists but
  no adapter comes back, in the page and in the engine's Worker alike, as on a Linux Chrome
  that keeps WebGPU off) the real default model loads on wasm-cpu, no error is shown, and
  a greedy reply is exactly transformers' text; the Images tab says its model needs WebGPU
  (unless the image model has a CPU backend: then it loads there), again without an error.
* With SwiftShader (a fallback adapter) "Automatic" picks wasm-cpu and the status line, the
  picker and the model card say so, naming the fallback adapter.
* The Backend setting (Settings, by its label) switches to WebGPU and back, the replies stay
  the greedy ones, and it is remembered after a reload; a setting that cannot run here
  keeps the loaded model and says why.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from conftest import ARTIFACTS, CHROMIUM, LiveServer
from conftest_models import smollm2_gguf  # noqa: F401  (session fixture)
from conftest_tiny import tiny_llama  # noqa: F401  (session fixture)
from test_chat_browser import chat_site  # noqa: F401  (session fixture)
from test_chat_ui import DESKTOP, LOAD_TIMEOUT, REPLY_TIMEOUT, TINY_TIMEOUT, app_messages, send, set_settings, wait_loaded

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from test_engine_images import MODEL as IMAGE_MODEL  # noqa: E402
from test_engine_images import SIZE as IMAGE_SIZE  # noqa: E402
from test_engine_images import tiny  # noqa: E402,F401  (module fixture: the tiny diffusers pipeline)

CHAT_MODEL = "tiny-chat"
FALLBACK_REASON = "is a CPU fallback, slower than the CPU backend"


@pytest.fixture(scope="module")
def cpu_site(tmp_path_factory, tiny_llama, tiny, test_site):  # noqa: F811
    """The test site with the tiny Llama (webgpu-f32 and wasm-cpu) and the tiny Stable
    Diffusion model (whatever backends build_web gives image models)."""
    from webkiln.cli import build_web_main
    from webkiln.package.chat_build import build_chat_model
    from webkiln.sources import load_source
    from webkiln.toolchain.link import LinkMode

    root = tmp_path_factory.mktemp("cpu-ui-site")
    shutil.copytree(test_site, root, dirs_exist_ok=True)
    build_chat_model(load_source(tiny_llama.folder), root / "models", "q4f32", model_id=CHAT_MODEL,
                     link_mode=LinkMode.FAST, log=lambda _: None)
    _, _, folder = tiny
    assert build_web_main(["--model", str(folder), "--quantization", "f32", "--fast-link", "--id", IMAGE_MODEL,
                           "--size", str(IMAGE_SIZE), "--out", str(root / "models")]) == 0
    return root


@pytest.fixture(scope="module")
def cpu_server(cpu_site):
    with LiveServer(cpu_site) as server:
        yield server


@pytest.fixture(scope="module")
def no_webgpu_browser(browser):
    """Chromium without --enable-unsafe-webgpu: requestAdapter() returns null (page and Worker)."""
    plain = browser.browser_type.launch(executable_path=CHROMIUM, args=["--disable-quic"])
    yield plain
    plain.close()


def open_app(browser_, url: str, context=None):
    context = context or browser_.new_context(bypass_csp=True, viewport=DESKTOP)
    page = context.new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(url)
    return context, page


def loaded_model(page) -> dict:
    return page.evaluate("() => window.webkilnApp.engine.loadedModel()")


def choose_backend(page, value: str) -> None:
    """Picks a Backend setting as a user does: the select found by its label."""
    if not page.is_visible("#backend"):
        page.click(".settings summary")
    page.get_by_label("Backend", exact=True).select_option(value)


def wait_ready_on(page, backend: str, timeout: int = TINY_TIMEOUT) -> str:
    page.wait_for_function(
        """(b) => document.getElementById('status').textContent.includes('is ready on ' + b)
                 && !document.getElementById('prompt').disabled""", arg=backend, timeout=timeout)
    return page.inner_text("#status")


# --- no WebGPU ------------------------------------------------------------------------------


def test_without_webgpu_the_default_model_chats_on_the_cpu(no_webgpu_browser, chat_site, smollm2_gguf):  # noqa: F811
    """The real app on the real default model where the browser gives no WebGPU adapter:
    it loads on wasm-cpu without an error, and the greedy reply is transformers' text."""
    from reference_lm import _load, greedy

    root, model_dir = chat_site
    prompt, n = "What is the capital of France?", 12
    with LiveServer(root) as server:
        context, page = open_app(no_webgpu_browser, f"{server.url}/index.html")
        try:
            assert page.evaluate("async () => navigator.gpu ? await navigator.gpu.requestAdapter() : null") is None
            started = time.monotonic()
            page.wait_for_function("window.webkilnApp !== undefined")
            # Before the load: the picker says what will run and why.
            page.wait_for_function("document.getElementById('model-info').textContent.includes('runs on wasm-cpu')")
            assert "no WebGPU here" in page.inner_text("#model-info")
            status = wait_ready_on(page, "wasm-cpu", LOAD_TIMEOUT)
            load_s = time.monotonic() - started
            assert "no WebGPU here (no GPU adapter was returned), so the CPU" in status, status
            assert page.is_hidden("#error"), page.inner_text("#error")
            info = loaded_model(page)
            assert info["id"] == model_dir.name and info["backend"] == "wasm-cpu" and info["device"] == "cpu"

            set_settings(page, temperature="0", **{"max-tokens": str(n)})
            started = time.monotonic()
            send(page, prompt, REPLY_TIMEOUT)
            reply_s = time.monotonic() - started
            ref = greedy(smollm2_gguf, prompt, n)
            stop = ref.tokens.index(2) if 2 in ref.tokens else len(ref.tokens)  # <|im_end|> ends the reply
            expected = _load(str(smollm2_gguf))[0].decode(ref.tokens[:stop])
            messages = app_messages(page)
            assert [m["role"] for m in messages] == ["user", "assistant"]
            assert messages[1]["content"] == expected, (messages[1]["content"], expected)
            assert "Paris" in page.inner_text(".msg.assistant .text")
            assert page.is_hidden("#error") and page.errors == []
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "chat-ui-no-webgpu.png"))
            (ARTIFACTS / "cpu-backend-ui-timings.json").write_text(json.dumps(
                {"model": model_dir.name, "backend": "wasm-cpu", "cold_load_s": round(load_s, 2),
                 "reply_s": round(reply_s, 2), "reply_tokens": stop}, indent=2))
        finally:
            context.close()


def test_without_webgpu_images_tab_and_a_webgpu_setting_say_why(no_webgpu_browser, cpu_server, cpu_site):
    """The Images tab's model needs WebGPU unless it has a CPU backend: a status line, not an
    error. Choosing WebGPU in Settings keeps the chat model on the CPU and says why."""
    context, page = open_app(no_webgpu_browser, f"{cpu_server.url}/index.html")
    try:
        status = wait_ready_on(page, "wasm-cpu")
        assert "no WebGPU here" in status and page.is_hidden("#error")

        image_manifest = json.loads((cpu_site / "models" / IMAGE_MODEL / "manifest.json").read_text())
        image_cpu = any(b["device"] == "cpu" for b in image_manifest["backends"].values())
        page.click("#tab-images")
        if image_cpu:
            page.wait_for_function("document.getElementById('image-status').textContent.includes('is ready on wasm-cpu')",
                                   timeout=TINY_TIMEOUT)
        else:
            page.wait_for_function("document.getElementById('image-status').textContent.includes('does not run here')")
            text = page.inner_text("#image-status")
            assert "needs WebGPU (no GPU adapter was returned): this model has no CPU backend" in text, text
            assert "needs WebGPU" in page.inner_text("#image-model-info")
            assert page.is_disabled("#image-generate")
        assert page.is_hidden("#error"), page.inner_text("#error")

        page.click("#tab-chat")
        wait_ready_on(page, "wasm-cpu")
        choose_backend(page, "webgpu")
        page.wait_for_function("document.getElementById('status').textContent.includes('WebGPU (GPU)')")
        status = page.inner_text("#status")
        assert "WebGPU is not available in this browser (no GPU adapter was returned)" in status, status
        assert "The model stays loaded as it was." in status
        assert page.evaluate("() => document.getElementById('status').classList.contains('error')")
        assert loaded_model(page)["backend"] == "wasm-cpu"
        set_settings(page, temperature="0", **{"max-tokens": "4"})
        send(page, "hello")  # still chats
        assert app_messages(page)[-1]["content"]
        assert page.errors == []
    finally:
        context.close()


# --- SwiftShader: auto picks the CPU; the setting switches -----------------------------------


def test_swiftshader_auto_runs_on_the_cpu_and_says_why(browser, cpu_server):
    context, page = open_app(browser, f"{cpu_server.url}/index.html")
    try:
        assert page.evaluate("async () => (await navigator.gpu.requestAdapter()).info.isFallbackAdapter") is True
        status = wait_ready_on(page, "wasm-cpu")
        assert FALLBACK_REASON in status and "swiftshader" in status.lower(), status
        assert "runs on wasm-cpu" in page.inner_text("#model-info") and FALLBACK_REASON in page.inner_text("#model-info")
        info = loaded_model(page)
        assert info["backend"] == "wasm-cpu" and info["device"] == "cpu" and FALLBACK_REASON in info["backendReason"]
        page.click(".models-panel summary")
        card = page.inner_text(f".model-card[data-model='{CHAT_MODEL}']")
        assert "loaded · wasm-cpu" in card and f"running on wasm-cpu: {info['backendReason']}" in card, card
        assert "webgpu-f32: WebGPU; wasm-cpu: CPU (WebAssembly SIMD)" in card
        # The image model's card: no CPU backend yet means WebGPU (SwiftShader), said as such.
        image = page.inner_text(f".model-card[data-model='{IMAGE_MODEL}']")
        assert "runs on " in image, image
        assert page.errors == []
    finally:
        context.close()


def test_backend_setting_switches_and_is_remembered(browser, cpu_server):
    context, page = open_app(browser, f"{cpu_server.url}/index.html")
    try:
        wait_ready_on(page, "wasm-cpu")
        # Keyboard: the select has its label and takes focus.
        page.click(".settings summary")
        page.get_by_label("Backend", exact=True).focus()
        assert page.evaluate("() => document.activeElement.id") == "backend"
        assert page.eval_on_selector_all("#backend option", "os => os.map((o) => [o.value, o.textContent])") == [
            ["auto", "Automatic (recommended)"], ["webgpu", "WebGPU (GPU)"], ["wasm-cpu", "CPU (WebAssembly)"]]
        # The same greedy request on both backends (the tiny model's reference has no near-ties).
        set_settings(page, **{"system-prompt": "You are terse.", "temperature": "0", "max-tokens": "12"})
        send(page, "hello world")
        cpu_reply = app_messages(page)[-1]["content"]
        assert cpu_reply

        choose_backend(page, "webgpu")
        status = wait_ready_on(page, "webgpu-f32")
        assert "is ready on webgpu-f32 — WebGPU on " in status and "swiftshader" in status.lower(), status
        info = loaded_model(page)
        assert info["backend"] == "webgpu-f32" and info["device"] == "webgpu"
        assert "runs on webgpu-f32" in page.inner_text("#model-info")
        page.click("#regenerate")
        page.wait_for_function("!document.querySelector('.msg.assistant.pending') && !document.getElementById('send').disabled",
                               timeout=TINY_TIMEOUT)
        assert app_messages(page)[-1]["content"] == cpu_reply

        # Remembered with the other settings, and used by the first load after a reload.
        saved = json.loads(page.evaluate("() => localStorage.getItem('webkiln.settings')"))
        assert saved["backend"] == "webgpu" and saved["temperature"] == 0
        page.reload()
        wait_ready_on(page, "webgpu-f32")
        assert page.eval_on_selector("#backend", "s => s.value") == "webgpu"
        assert loaded_model(page)["backend"] == "webgpu-f32"

        choose_backend(page, "wasm-cpu")
        status = wait_ready_on(page, "wasm-cpu")
        assert "the CPU backend was requested" in status, status
        choose_backend(page, "auto")
        status = wait_ready_on(page, "wasm-cpu")
        assert FALLBACK_REASON in status, status
        page.reload()
        wait_loaded(page)
        assert page.eval_on_selector("#backend", "s => s.value") == "auto"
        assert json.loads(page.evaluate("() => localStorage.getItem('webkiln.settings')"))["backend"] == "auto"

        # Reset to defaults puts the backend back to Automatic too (and reloads on it).
        choose_backend(page, "webgpu")
        wait_ready_on(page, "webgpu-f32")
        page.click("#settings-reset")
        wait_ready_on(page, "wasm-cpu")
        assert page.eval_on_selector("#backend", "s => s.value") == "auto"
        assert page.is_hidden("#error") and page.errors == []
    finally:
        context.close()


def test_stop_on_the_cpu_backend(browser, chat_site):  # noqa: F811
    """Stop during a reply of the default model on wasm-cpu ends it there: the engine's
    generation must give the Worker's event loop a turn between tokens, or the abort message
    waits until the whole reply is written (measured: 200 tokens, 4.8 s after the abort)."""
    import re

    root, _ = chat_site
    with LiveServer(root) as server:
        context, page = open_app(browser, f"{server.url}/index.html")
        try:
            wait_ready_on(page, "wasm-cpu", LOAD_TIMEOUT)
            set_settings(page, temperature="0", **{"max-tokens": "200"})
            page.fill("#prompt", "Write a long story about the sea.")
            page.press("#prompt", "Enter")
            page.wait_for_function("document.querySelector('.msg.assistant .text')?.textContent.length > 0",
                                   timeout=REPLY_TIMEOUT)
            page.click("#stop")
            page.wait_for_function("!document.querySelector('.msg.assistant.pending') && !document.getElementById('send').disabled",
                                   timeout=REPLY_TIMEOUT)
            stats = page.inner_text(".msg.assistant .stats")
            assert "stopped" in stats, stats
            assert int(re.match(r"(\d+) tokens", stats).group(1)) < 100, stats
            assert page.errors == []
        finally:
            context.close()

"""The chat page (site/index.html): lists the built models, loads the default one,
and answers a question in the browser; with no model built it says how to build one."""

from __future__ import annotations

import re
import shutil

from conftest import ARTIFACTS, LiveServer
from conftest_models import smollm2_gguf  # noqa: F401  (session fixture)
from test_chat_browser import chat_site  # noqa: F401  (session fixture)

LOAD_TIMEOUT = 300_000  # ~120 MB and shader compilation on SwiftShader
REPLY_TIMEOUT = 300_000  # prefill ~50 s, then ~0.5-1.5 s a token on CPU-emulated WebGPU


def test_chat_page_answers(browser, chat_site):  # noqa: F811
    root, model_dir = chat_site
    with LiveServer(root) as server:
        context = browser.new_context()
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(f"{server.url}/index.html")
            # The model list comes from models/index.json; the first one loads by itself.
            page.wait_for_function("document.getElementById('model-select').options.length > 0")
            assert model_dir.name in page.inner_text("#model-select")
            page.wait_for_function("!document.getElementById('prompt').disabled", timeout=LOAD_TIMEOUT)
            assert "ready" in page.inner_text("#status"), page.inner_text("#status")

            page.click(".settings summary")
            page.fill("#temperature", "0")
            page.fill("#max-tokens", "16")
            page.fill("#prompt", "What is the capital of France?")
            page.press("#prompt", "Enter")
            page.wait_for_function("document.getElementById('send').disabled")
            page.wait_for_function("!document.getElementById('send').disabled", timeout=REPLY_TIMEOUT)

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


def test_chat_page_without_models_says_how_to_build(browser, chat_site, tmp_path):  # noqa: F811
    root, _ = chat_site
    empty = tmp_path / "site"
    shutil.copytree(root, empty, ignore=shutil.ignore_patterns("models"))
    (empty / "models").mkdir()
    with LiveServer(empty) as server:
        context = browser.new_context()
        page = context.new_page()
        try:
            page.goto(f"{server.url}/index.html")
            page.wait_for_function("document.getElementById('status').textContent.includes('No model is built yet')",
                                   timeout=30_000)
            assert "./scripts/serve.sh" in page.inner_text("#status")
            assert page.is_disabled("#send")
        finally:
            context.close()

"""The Images tab of the app (site/index.html, web/src/app/images_view.ts, gallery.ts).

The tiny random Stable Diffusion pipeline of tests/test_engine_images.py (--size 16) is the
only model of a copy of site/. In headless Chromium (WebGPU on SwiftShader) the test
switches to Images (the tab is remembered), generates ONE image (2 steps, seed 7: the first
run on a fresh device spends about a minute compiling shaders), watches the per-step
progress, downloads the PNG and reads its A1111 "parameters" chunk with PIL, checks that
the gallery keeps the image across a reload, and takes desktop and phone screenshots
(test-artifacts/image-ui-*.png)."""

from __future__ import annotations

import io

import pytest

from conftest import ARTIFACTS, LiveServer

pytest.importorskip("torch")
pytest.importorskip("diffusers")
from PIL import Image  # noqa: E402

from test_engine_images import MODEL, SIZE, image_site, tiny  # noqa: E402,F401  (module fixtures)

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
LOAD_TIMEOUT = 180_000
GENERATE_TIMEOUT = 240_000  # shader compilation on a fresh SwiftShader device (~1 min) plus 2 steps
PROMPT = "a small red cat"
NEGATIVE = "blurry"


@pytest.fixture(scope="module")
def server(image_site):  # noqa: F811
    with LiveServer(image_site) as live:
        yield live


def _ready(page) -> None:
    page.wait_for_function("window.webkilnApp !== undefined")
    page.evaluate("() => window.webkilnApp.ready")


def test_images_tab_generates_downloads_and_keeps_the_gallery(browser, server, tmp_path):
    context = browser.new_context(bypass_csp=True, viewport=DESKTOP)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{server.url}/index.html")
        _ready(page)
        # Chat is the first tab; this site has no chat model.
        assert page.get_attribute("#tab-chat", "aria-selected") == "true"
        assert page.is_visible("#chat") and not page.is_visible("#images-view")

        # Keyboard: focus the Chat tab, ArrowRight selects Images.
        page.focus("#tab-chat")
        page.keyboard.press("ArrowRight")
        assert page.get_attribute("#tab-images", "aria-selected") == "true"
        assert page.is_visible("#images-view") and not page.is_visible("#chat")
        assert page.evaluate("() => document.activeElement.id") == "tab-images"

        # The image model loads with the shared load UI; its picker lists it with its size.
        page.wait_for_function("!document.getElementById('image-generate').disabled", timeout=LOAD_TIMEOUT)
        assert "ready" in page.inner_text("#image-status"), page.inner_text("#image-status")
        options = page.eval_on_selector_all("#image-model-select option", "os => os.map(o => o.value)")
        assert options == [MODEL]
        info = page.inner_text("#image-model-info")
        assert f"{SIZE}×{SIZE}" in info and "f32" in info, info
        assert page.input_value("#image-size") == f"{SIZE} × {SIZE}"
        assert page.input_value("#image-steps") != ""  # the model's default
        assert page.eval_on_selector_all("#image-scheduler option", "os => os.map(o => o.value)") == [
            "", "euler", "euler_a", "dpmpp_2m"]
        assert page.locator("#gallery .gallery-item").count() == 0

        page.fill("#image-prompt", PROMPT)
        page.fill("#image-negative", NEGATIVE)
        page.fill("#image-steps", "2")
        page.fill("#image-seed", "7")
        page.select_option("#image-scheduler", "euler")
        page.click("#image-generate")
        page.wait_for_function("!document.getElementById('image-stop').disabled", timeout=10_000)
        page.wait_for_function(
            "document.getElementById('image-progress').dataset.step === '2'", timeout=GENERATE_TIMEOUT)
        assert page.get_attribute("#image-progress", "data-total") == "2"
        page.wait_for_function(
            "(() => { const i = document.getElementById('image-result'); return !i.hidden && i.complete && i.naturalWidth > 0; })()",
            timeout=60_000)
        assert "step 2 of 2" in page.inner_text("#image-progress-text")
        assert page.evaluate("() => document.getElementById('image-result').naturalWidth") == SIZE
        assert page.is_disabled("#image-stop") and not page.is_disabled("#image-generate")
        assert "seed 7" in page.inner_text("#image-status").lower()
        assert "Seed 7" in page.inner_text("#image-meta")
        # Shown scaled up, pixelated.
        box = page.locator("#image-result").bounding_box()
        assert box and box["width"] >= 8 * SIZE
        assert page.evaluate("() => getComputedStyle(document.getElementById('image-result')).imageRendering") == "pixelated"

        # Download: the engine's PNG with its parameters chunk.
        assert page.get_attribute("#image-download", "download") == "webkiln-7.png"
        with page.expect_download() as download_info:
            page.click("#image-download")
        download = download_info.value
        assert download.suggested_filename == "webkiln-7.png"
        path = tmp_path / "download.png"
        download.save_as(path)
        image = Image.open(io.BytesIO(path.read_bytes()))
        image.load()
        assert image.size == (SIZE, SIZE)
        params = image.text["parameters"]
        assert PROMPT in params and f"Negative prompt: {NEGATIVE}" in params
        assert "Steps: 2" in params and "Seed: 7" in params and "Sampler: Euler," in params, params

        assert page.locator("#gallery .gallery-item").count() == 1
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "image-ui-desktop.png"), full_page=True)

        # After a reload: the Images tab is remembered and the gallery still has the image.
        page.reload()
        _ready(page)
        assert page.get_attribute("#tab-images", "aria-selected") == "true"
        page.wait_for_function("document.querySelectorAll('#gallery .gallery-item').length === 1", timeout=10_000)
        page.click("#gallery .gallery-item .gallery-view")
        page.wait_for_function(
            "(() => { const i = document.getElementById('image-result'); return !i.hidden && i.complete && i.naturalWidth > 0; })()",
            timeout=10_000)
        assert "Seed 7" in page.inner_text("#image-meta")
        assert page.get_attribute("#image-download", "download") == "webkiln-7.png"

        page.wait_for_function("!document.getElementById('image-generate').disabled", timeout=LOAD_TIMEOUT)
        page.set_viewport_size(PHONE)
        page.wait_for_timeout(300)
        page.screenshot(path=str(ARTIFACTS / "image-ui-phone.png"), full_page=False)
        page.locator("#image-result-box").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "image-ui-phone-result.png"), full_page=False)
        # Nothing spills sideways on a phone.
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")

        # Back to Chat (keyboard), then delete the image from the gallery.
        page.focus("#tab-images")
        page.keyboard.press("ArrowLeft")
        assert page.get_attribute("#tab-chat", "aria-selected") == "true" and page.is_visible("#chat")
        page.click("#tab-images")
        page.set_viewport_size(DESKTOP)
        page.hover("#gallery .gallery-item")
        page.click("#gallery .gallery-item .gallery-delete")
        page.wait_for_function("document.querySelectorAll('#gallery .gallery-item').length === 0", timeout=10_000)
        assert page.is_hidden("#image-result")
    finally:
        context.close()
    assert errors == []

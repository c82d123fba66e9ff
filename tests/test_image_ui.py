"""The Images tab of the app (site/index.html, web/src/app/images_view.ts, gallery.ts).

The tiny random Stable Diffusion pipeline of tests/test_engine_images.py (--size 16) is the
only model of a copy of site/. In headless Chromium (the app's default backend, "auto", runs
its CPU library here: the only WebGPU adapter is SwiftShader, a CPU fallback) the test
switches to Images (the tab is remembered), generates ONE image (2 steps, seed 7), watches the per-step
progress and the preview shown during the run, downloads the PNG and reads its A1111
"parameters" chunk with PIL, makes two more with Images = 2 (seeds 8 and 9, both in the
gallery), checks that the gallery keeps the images across a reload, takes desktop and
phone screenshots (test-artifacts/image-ui-*.png, also one of the panel), and finally finds the image model in
the Models & storage panel (labelled "Image") and deletes its cached files there."""

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
# Generous: were it WebGPU on SwiftShader, a fresh device compiles every shader first (~1 min).
GENERATE_TIMEOUT = 240_000
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
        assert page.input_value("#image-count") == "1"
        # Every preview the result area shows: its step, and that it is visible then.
        page.evaluate("""() => {
            window.previewSeen = [];
            const canvas = document.getElementById('image-preview');
            new MutationObserver(() => {
                if (canvas.dataset.step !== undefined && !canvas.hidden)
                    window.previewSeen.push({step: canvas.dataset.step, total: canvas.dataset.total,
                                             resultHidden: document.getElementById('image-result').hidden,
                                             width: canvas.width, rendering: getComputedStyle(canvas).imageRendering});
            }).observe(canvas, {attributes: true, attributeFilter: ['data-step', 'hidden']});
        }""")
        page.click("#image-generate")
        page.wait_for_function("!document.getElementById('image-stop').disabled", timeout=10_000)
        page.wait_for_function(
            "document.getElementById('image-progress').dataset.step === '2'", timeout=GENERATE_TIMEOUT)
        assert page.get_attribute("#image-progress", "data-total") == "2"
        page.wait_for_function(
            "(() => { const i = document.getElementById('image-result'); return !i.hidden && i.complete && i.naturalWidth > 0; })()",
            timeout=60_000)
        assert "step 2 of 2" in page.inner_text("#image-progress-text")
        # Previews (every step at this size) were shown in place of the result, then the final image replaced them.
        seen = page.evaluate("() => window.previewSeen")
        assert {"step": "1", "total": "2", "resultHidden": True, "width": SIZE, "rendering": "pixelated"} in seen, seen
        assert {p["step"] for p in seen} <= {"1", "2"}, seen
        assert page.is_hidden("#image-preview")
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

        # Two images in one run: seeds 8 and 9, both added to the gallery; progress counts over both.
        page.fill("#image-seed", "8")
        page.select_option("#image-count", "2")
        page.click("#image-generate")
        page.wait_for_function("document.querySelectorAll('#gallery .gallery-item').length === 3", timeout=GENERATE_TIMEOUT)
        page.wait_for_function("!document.getElementById('image-generate').disabled", timeout=10_000)
        assert page.get_attribute("#image-progress", "data-step") == "4"
        assert page.get_attribute("#image-progress", "data-total") == "4"
        assert "2 images" in page.inner_text("#image-status") and "seeds 8–9" in page.inner_text("#image-status")
        assert "Seed 8" in page.inner_text("#image-meta")
        labels = page.eval_on_selector_all("#gallery .gallery-item .gallery-view", "bs => bs.map(b => b.getAttribute('aria-label'))")
        assert [label.rsplit("(", 1)[1] for label in labels] == ["seed 8)", "seed 9)", "seed 7)"], labels
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "image-ui-desktop.png"), full_page=True)

        # After a reload: the Images tab is remembered and the gallery still has the image.
        page.reload()
        _ready(page)
        assert page.get_attribute("#tab-images", "aria-selected") == "true"
        page.wait_for_function("document.querySelectorAll('#gallery .gallery-item').length === 3", timeout=10_000)
        page.click("#gallery .gallery-item:last-child .gallery-view")
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
        for left in (2, 1, 0):
            page.hover("#gallery .gallery-item:last-child")
            page.click("#gallery .gallery-item:last-child .gallery-delete")
            page.wait_for_function(f"document.querySelectorAll('#gallery .gallery-item').length === {left}", timeout=10_000)
        assert page.is_hidden("#image-result")

        # The one Models & storage panel lists the image model, labelled, with its cached size and a Delete.
        cached = page.evaluate("async () => (await window.webkilnApp.engine.cache.list()).map(c => c.id)")
        assert MODEL in cached, cached
        page.click(".models-panel summary")
        card = page.locator(f'#model-list .model-card[data-model="{MODEL}"]')
        card.wait_for(state="visible", timeout=10_000)
        assert card.get_attribute("data-task") == "image"
        assert card.locator(".task-badge").inner_text() == "Image"
        page.wait_for_function(
            f"""(() => {{ const c = document.querySelector('#model-list .model-card[data-model="{MODEL}"] .cache-size');
                return c && c.textContent.includes('cached') && !c.textContent.includes('not cached'); }})()""",
            timeout=10_000)
        card.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "image-ui-models-panel.png"), full_page=False)
        delete = card.locator("button.danger")
        assert delete.is_enabled()
        delete.click()
        delete.click()  # confirm
        page.wait_for_function(
            f"""document.querySelector('#model-list .model-card[data-model="{MODEL}"] .cache-size').textContent === 'not cached'""",
            timeout=10_000)
        cached = page.evaluate("async () => (await window.webkilnApp.engine.cache.list()).map(c => c.id)")
        assert MODEL not in cached, cached
    finally:
        context.close()
    assert errors == []

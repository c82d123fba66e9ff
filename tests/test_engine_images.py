"""The engine's images.generate (web/src/engine, web/src/image/image_model.ts, png.ts) in
headless Chromium, through the Worker engine, on the backend "auto" picks: here the CPU
library (wasm-cpu), because the only WebGPU adapter is SwiftShader, a CPU fallback. (The
WebGPU path of the same engine has its own test against diffusers in
tests/test_default_image_model.py.)

The tiny fixed-seed random Stable Diffusion pipeline of tests/test_diffusion_native.py is
built with build_web (f32, fast link, --size 16: latents 8x8) into a copy of site/, loaded
with engine.loadModel() and run with images.generate():

* a 2-step Euler run with guidance and a negative prompt returns an OpenAI Images-shaped
  response whose PNG (decoded with PIL) equals diffusers' StableDiffusionPipeline output
  started from the same latents (webkiln.image_noise.GaussianNoise(seed)) within 2 per
  channel, with the A1111-style "parameters" text chunk; progress is reported per step;
* n=2 makes two different images with seeds s and s + 1 (each PNG's parameters chunk and
  usage.extra.seeds say so), progress counts over both, and the second equals an n=1 run
  with seed s + 1 pixel for pixel;
* previews (onPreview) arrive after every previewEvery-th step of each image and after its
  last step, with the documented step/total/index; an intermediate one equals the decode of
  diffusers' pred_original_sample at that step (within 2 per channel), the last one of each
  image is that image's pixels; aborting at the first preview stops the run;
* bad requests (n 0, 9, 1.5 or "2", a size other than the built one, an unknown
  scheduler, response_format "url", previewEvery 0) fail with InvalidRequestError naming
  the field; chat requests against the image model fail with ModelNotLoadedError saying
  it is an image model;
* a run aborted through its AbortSignal stops with an AbortError, and the next run works.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import time

import numpy as np
import pytest

from conftest import LiveServer

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from PIL import Image  # noqa: E402  (after the skips: diffusers brings PIL)

from test_diffusion_native import make_tiny_pipeline  # noqa: E402

SIZE = 16  # pixels; latents 8x8 (the tiny VAE upsamples twice)
LATENT = SIZE // 2
MODEL = "tiny-sd"
PROMPT = "a photo of the red cat"
NEGATIVE = "blurry, dark"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from webkiln.sources.diffusers_folder import load_diffusers_folder

    pipe, folder = make_tiny_pipeline(tmp_path_factory.mktemp("diffusion"))
    pipe.tokenizer.model_max_length = 77  # the locally written tokenizer leaves it "unbounded" (1e30)
    return pipe, load_diffusers_folder(folder), folder


@pytest.fixture(scope="module")
def image_site(tmp_path_factory, tiny, test_site):
    from webkiln.cli import build_web_main

    _, _, folder = tiny
    root = tmp_path_factory.mktemp("engine-images-site")
    shutil.copytree(test_site, root, dirs_exist_ok=True)
    code = build_web_main(["--model", str(folder), "--quantization", "f32", "--fast-link", "--id", MODEL,
                           "--size", str(SIZE), "--out", str(root / "models")])
    assert code == 0
    return root


@pytest.fixture(scope="module")
def page(browser, image_site):
    with LiveServer(image_site) as server:
        context = browser.new_context()
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server.url}/chat.html")
        page.wait_for_function("window.webkilnChat !== undefined")
        page.evaluate("""async () => {
            window.engines = {worker: window.webkilnChat.createEngine(), page: window.webkilnChat.createEngine({worker: false})};
        }""")
        yield page
        assert errors == []
        context.close()


# Loads only when another model (or none) is loaded: the tests share one load (on WebGPU/SwiftShader a
# fresh device would compile every shader again on first use, about a minute for this model).
LOAD = """async ([which, model]) => {
    const e = window.engines[which];
    const models = await e.listModels();
    const current = await e.loadedModel();
    const info = current && current.id === model ? current : await e.loadModel(model);
    return {models, info};
}"""

GENERATE = """async ([which, request, abortAfter]) => {
    const controller = new AbortController();
    const steps = [];
    try {
        const r = await window.engines[which].images.generate(request, {
            signal: controller.signal,
            onProgress: (step, total) => {
                steps.push([step, total]);
                if (abortAfter !== null && step >= abortAfter) controller.abort();
            },
        });
        return {response: r, steps, error: null};
    } catch (e) {
        return {response: null, steps, error: {name: e.name, message: e.message, param: e.param ?? null,
                                               typed: e instanceof Error && e.constructor.name === e.name}};
    }
}"""


def _reference(tiny, seed: int, steps: int, guidance: float, negative: str) -> np.ndarray:
    """diffusers' uint8 image (numpy_to_pil's rounding) from our initial latents, Euler."""
    from diffusers import EulerDiscreteScheduler
    from webkiln.image_noise import GaussianNoise

    pipe, loaded, _ = tiny
    original = pipe.scheduler
    # From scheduler_config.json as saved (what the manifest carries), as test_image_browser.py does.
    pipe.scheduler = EulerDiscreteScheduler.from_config(loaded.scheduler)
    try:
        latents = torch.from_numpy(GaussianNoise(seed).tensor((1, 4, LATENT, LATENT)))
        with torch.no_grad():
            out = pipe(PROMPT, negative_prompt=negative, height=SIZE, width=SIZE, num_inference_steps=steps,
                       guidance_scale=guidance, latents=latents, output_type="np")
    finally:
        pipe.scheduler = original
    return (out.images[0] * 255).round().astype(np.int32)


def _pngs(response: dict) -> list[Image.Image]:
    images = []
    for item in response["data"]:
        assert set(item) == {"b64_json"}
        data = base64.b64decode(item["b64_json"])
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        image = Image.open(io.BytesIO(data))
        image.load()
        images.append(image)
    return images


def _png(response: dict) -> Image.Image:
    (image,) = _pngs(response)
    return image


# The Worker engine only: the in-page one is the same LocalEngine.
@pytest.mark.parametrize("which", ["worker"])
def test_generate_matches_diffusers(page, tiny, which):
    got = page.evaluate(LOAD, [which, MODEL])
    model = next(m for m in got["models"] if m["id"] == MODEL)
    assert model["task"] == "image" and model["manifestUrl"].endswith(f"/models/{MODEL}/manifest.json")
    info = got["info"]
    assert info["id"] == MODEL and info["task"] == "image"
    # "auto" on a fallback adapter: the CPU library, and the engine says why.
    assert info["backend"] == "wasm-cpu" and info["device"] == "cpu", info
    assert "swiftshader" in info["backendReason"] and "CPU fallback" in info["backendReason"], info

    seed, steps, guidance = 1234, 2, 7.5
    request = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "n": 1, "size": f"{SIZE}x{SIZE}", "seed": seed,
               "steps": steps, "guidance_scale": guidance, "scheduler": "euler", "response_format": "b64_json"}
    r = page.evaluate(GENERATE, [which, request, None])
    assert r["error"] is None, r["error"]
    assert r["steps"] == [[i, steps] for i in range(1, steps + 1)]  # one progress callback per step
    response = r["response"]
    assert isinstance(response["created"], int) and abs(response["created"] - time.time()) < 600
    usage = response["usage"]
    extra = usage["extra"]
    assert extra["seed"] == seed and extra["steps"] == steps and extra["scheduler"] == "euler"
    assert extra["width"] == extra["height"] == SIZE and len(extra["step_ms"]) == steps
    assert usage["input_tokens"] == len(tiny[0].tokenizer(PROMPT).input_ids) - 2
    print(f"\n{which}: encode {extra['encode_ms']:.0f} ms, steps {extra['step_ms']} ms, "
          f"decode {extra['decode_ms']:.0f} ms, png {extra['png_ms']:.1f} ms, total {extra['total_ms']:.0f} ms")

    image = _png(response)
    assert image.size == (SIZE, SIZE) and image.mode == "RGB"
    assert image.text["parameters"] == (
        f"{PROMPT}\nNegative prompt: {NEGATIVE}\n"
        f"Steps: {steps}, Sampler: Euler, CFG scale: {guidance}, Seed: {seed}, Size: {SIZE}x{SIZE}, Model: {MODEL}")
    ours = np.asarray(image, dtype=np.int32)
    ref = _reference(tiny, seed, steps, guidance, NEGATIVE)
    err = int(np.abs(ours - ref).max())
    print(f"{which}: max |browser - diffusers| = {err} (of 255)")
    assert err <= 2
    assert ref.std() > 1  # not a flat image


def test_defaults_and_unicode_prompt(page, tiny):
    """No optional fields: the model's size, steps and guidance; the seed comes back; an
    Euler ancestral run's sampler is "Euler a"; a non-Latin-1 prompt goes into an iTXt chunk."""
    page.evaluate(LOAD, ["worker", MODEL])
    r = page.evaluate(GENERATE, ["worker", {"prompt": "un chat rouge ☕", "scheduler": "euler_a", "steps": 1,
                                            "seed": 5}, None])
    assert r["error"] is None, r["error"]
    image = _png(r["response"])
    params = image.text["parameters"]
    assert params.startswith("un chat rouge ☕\nSteps: 1, Sampler: Euler a, CFG scale: 7.5, Seed: 5, ")
    assert "Negative prompt" not in params
    r2 = page.evaluate(GENERATE, ["worker", {"prompt": PROMPT, "steps": 1}, None])
    assert r2["error"] is None, r2["error"]
    seed = r2["response"]["usage"]["extra"]["seed"]
    assert isinstance(seed, int) and f"Seed: {seed}," in _png(r2["response"]).text["parameters"]
    assert r2["response"]["usage"]["extra"]["scheduler"] == "euler"  # PNDM config: Euler is the fallback


@pytest.mark.parametrize("field,value", [("n", 0), ("n", 9), ("n", 1.5), ("n", "2"), ("size", "32x32"), ("size", "big"), ("scheduler", "ddim"),
                                         ("response_format", "url"), ("steps", 0), ("steps", 1000),
                                         ("guidance_scale", -1), ("seed", -3)])
def test_bad_requests_name_the_field(page, field, value):
    page.evaluate(LOAD, ["worker", MODEL])
    r = page.evaluate(GENERATE, ["worker", {"prompt": PROMPT, "steps": 1, field: value}, None])
    assert r["error"] is not None, r
    assert r["error"]["name"] == "InvalidRequestError" and r["error"]["typed"], r["error"]
    assert r["error"]["param"] == field and json.dumps(value).strip('"') in r["error"]["message"], r["error"]
    assert r["steps"] == []


def test_chat_against_an_image_model_is_a_typed_error(page):
    page.evaluate(LOAD, ["worker", MODEL])
    err = page.evaluate("""async () => {
        try { await window.engines.worker.chat.completions.create({messages: [{role: "user", content: "hi"}]}); return null; }
        catch (e) { return {name: e.name, message: e.message}; }
    }""")
    assert err is not None and err["name"] == "ModelNotLoadedError" and "image model" in err["message"], err


def test_abort_stops_the_run(page):
    page.evaluate(LOAD, ["worker", MODEL])
    r = page.evaluate(GENERATE, ["worker", {"prompt": PROMPT, "steps": 4, "seed": 7, "scheduler": "dpmpp_2m"}, 1])
    assert r["error"] is not None and r["error"]["name"] == "AbortError", r
    # The abort reaches the worker while it runs the next step; the step after that does not run.
    assert r["steps"][0] == [1, 4] and len(r["steps"]) < 4, r["steps"]
    # an already aborted signal: nothing runs
    aborted = page.evaluate("""async () => {
        const c = new AbortController(); c.abort();
        try { await window.engines.worker.images.generate({prompt: "x", steps: 1}, {signal: c.signal}); return null; }
        catch (e) { return e.name; }
    }""")
    assert aborted == "AbortError"
    # the engine is not left busy or broken
    again = page.evaluate(GENERATE, ["worker", {"prompt": PROMPT, "steps": 1, "seed": 7}, None])
    assert again["error"] is None, again["error"]


def test_n_images_use_consecutive_seeds(page):
    page.evaluate(LOAD, ["worker", MODEL])
    seed, steps = 11, 2
    base = {"prompt": PROMPT, "steps": steps, "scheduler": "euler", "guidance_scale": 7.5}
    r = page.evaluate(GENERATE, ["worker", {**base, "n": 2, "seed": seed}, None])
    assert r["error"] is None, r["error"]
    # Progress counts over both images: image i's step s is i * steps + s of 2 * steps.
    assert r["steps"] == [[i, 2 * steps] for i in range(1, 2 * steps + 1)]
    extra = r["response"]["usage"]["extra"]
    assert extra["seed"] == seed and extra["seeds"] == [seed, seed + 1] and extra["steps"] == steps
    assert len(extra["step_ms"]) == 2 * steps and extra["preview_ms"] == 0
    first, second = _pngs(r["response"])
    for image, s in ((first, seed), (second, seed + 1)):
        assert image.size == (SIZE, SIZE)
        assert f", Seed: {s}, " in image.text["parameters"], image.text["parameters"]
    a, b = np.asarray(first, dtype=np.int32), np.asarray(second, dtype=np.int32)
    assert np.abs(a - b).max() > 0  # different seeds, different images

    alone = page.evaluate(GENERATE, ["worker", {**base, "n": 1, "seed": seed + 1}, None])
    assert alone["error"] is None, alone["error"]
    assert alone["response"]["usage"]["extra"]["seeds"] == [seed + 1]
    assert np.array_equal(np.asarray(_png(alone["response"]), dtype=np.int32), b)


PREVIEW = """async ([which, request, previewEvery, abortAtPreview]) => {
    const controller = new AbortController();
    const steps = [];
    const previews = [];
    try {
        const r = await window.engines[which].images.generate(request, {
            signal: controller.signal,
            previewEvery: previewEvery ?? undefined,
            onProgress: (step, total) => steps.push([step, total]),
            onPreview: (p) => {
                previews.push({index: p.index, step: p.step, total: p.total, width: p.width, height: p.height,
                               isClamped: p.rgba instanceof Uint8ClampedArray, rgba: Array.from(p.rgba)});
                if (abortAtPreview) controller.abort();
            },
        });
        return {response: r, steps, previews, error: null};
    } catch (e) {
        return {response: null, steps, previews, error: {name: e.name, message: e.message, param: e.param ?? null}};
    }
}"""


def _rgba(image: Image.Image) -> list[int]:
    return list(np.asarray(image.convert("RGBA"), dtype=np.uint8).reshape(-1))


def _first_step_decodes(tiny, seed: int, steps: int, guidance: float) -> tuple[np.ndarray, np.ndarray]:
    """diffusers' uint8 RGB decodes after the first Euler-ancestral step (prompt PROMPT, no
    negative prompt): (of the predicted clean latents, pred_original_sample; of the latents)."""
    from diffusers import EulerAncestralDiscreteScheduler
    from webkiln.image_noise import GaussianNoise, initial_latents

    pipe, loaded, _ = tiny
    sched = EulerAncestralDiscreteScheduler.from_config(loaded.scheduler)
    sched.set_timesteps(steps)
    latents = torch.from_numpy(initial_latents(GaussianNoise(seed), (1, 4, LATENT, LATENT), sched.init_noise_sigma))
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(PROMPT, "cpu", 1, True, negative_prompt="")
        t = sched.timesteps[0]
        eps_uncond, eps_cond = pipe.unet(sched.scale_model_input(torch.cat([latents] * 2), t), t,
                                         encoder_hidden_states=torch.cat([uncond, cond])).sample.chunk(2)
        out = sched.step(eps_uncond + guidance * (eps_cond - eps_uncond), t, latents)

        def decode(x: torch.Tensor) -> np.ndarray:
            image = pipe.vae.decode(x / pipe.vae.config.scaling_factor).sample
            return ((image[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.int32)

        return decode(out.pred_original_sample), decode(out.prev_sample)


def test_previews_through_the_worker(page, tiny):
    page.evaluate(LOAD, ["worker", MODEL])
    request = {"prompt": PROMPT, "steps": 3, "seed": 21, "scheduler": "euler_a", "guidance_scale": 7.5}

    # Every step (the default at this size): 3 previews, the last one the image itself.
    r = page.evaluate(PREVIEW, ["worker", request, None, False])
    assert r["error"] is None, r["error"]
    assert [(p["index"], p["step"], p["total"]) for p in r["previews"]] == [(0, 1, 3), (0, 2, 3), (0, 3, 3)]
    for p in r["previews"]:
        assert p["width"] == p["height"] == SIZE and p["isClamped"] and len(p["rgba"]) == SIZE * SIZE * 4
        assert p["rgba"][3::4] == [255] * (SIZE * SIZE)
    final = _rgba(_png(r["response"]))
    assert r["previews"][-1]["rgba"] == final
    assert r["previews"][0]["rgba"] != final  # a step-1 preview is not the finished image
    # An intermediate preview decodes the predicted clean latents, not the noisy current ones.
    predicted, current = _first_step_decodes(tiny, 21, 3, 7.5)
    first = np.asarray(r["previews"][0]["rgba"], dtype=np.int32).reshape(SIZE, SIZE, 4)[..., :3]
    err = int(np.abs(first - predicted).max())
    print(f"\nstep-1 preview: max |browser - diffusers' pred_original_sample decode| = {err}, "
          f"vs the current latents' decode {int(np.abs(first - current).max())} (of 255)")
    assert err <= 2
    assert np.abs(predicted - current).max() > 10  # the two are told apart at this step
    assert r["response"]["usage"]["extra"]["preview_ms"] > 0  # two intermediate VAE decodes

    # n=2, previewEvery=2 of 3 steps: after steps 2 and 3 of each image (counted over both).
    r2 = page.evaluate(PREVIEW, ["worker", {**request, "n": 2}, 2, False])
    assert r2["error"] is None, r2["error"]
    assert [(p["index"], p["step"], p["total"]) for p in r2["previews"]] == [(0, 2, 6), (0, 3, 6), (1, 5, 6), (1, 6, 6)]
    images = _pngs(r2["response"])
    assert r2["previews"][1]["rgba"] == _rgba(images[0]) == final  # same seed, same image
    assert r2["previews"][3]["rgba"] == _rgba(images[1])
    assert r2["steps"] == [[i, 6] for i in range(1, 7)]

    # Aborting at the first preview stops the run.
    r3 = page.evaluate(PREVIEW, ["worker", {**request, "steps": 4}, 1, True])
    assert r3["error"] is not None and r3["error"]["name"] == "AbortError", r3["error"]
    assert len(r3["previews"]) == 1 and r3["previews"][0]["step"] == 1 and len(r3["steps"]) < 4

    bad = page.evaluate(PREVIEW, ["worker", request, 0, False])
    assert bad["error"] is not None and bad["error"]["name"] == "InvalidRequestError", bad
    assert bad["error"]["param"] == "previewEvery" and bad["previews"] == []

    # The engine is not left busy.
    again = page.evaluate(GENERATE, ["worker", {"prompt": PROMPT, "steps": 1, "seed": 3}, None])
    assert again["error"] is None, again["error"]

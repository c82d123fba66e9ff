"""web/src/image/pipeline.ts in headless Chromium against diffusers, on both backends: WebGPU
(SwiftShader here) and the CPU (wasm-cpu, WebAssembly SIMD), each its own run of every test.

The tiny fixed-seed random Stable Diffusion pipeline of tests/test_diffusion_native.py
(made by its make_tiny_pipeline) is compiled for webgpu and for wasm-cpu, component by
component (fast link, float32, latents 8x8 -> 16x16 images, UNet batch 2), and its
parameters written as one raw .bin per component with a JSON index per backend (the two
read the same .bin files; test_image_pipeline_entry.ts loads them). In the browser:

* text embeddings, one batch-2 UNet noise prediction with a different timestep per half,
  and one VAE decode match transformers / diffusers;
* a whole 2-step text-to-image run (ImagePipeline.generate: classifier-free guidance,
  scheduler, VAE scaling, postprocessing) matches StableDiffusionPipeline(output_type="np")
  started from the same latents (our GaussianNoise(seed), passed as `latents=`), for Euler
  DPM-Solver++ 2M and Euler ancestral with guidance 7.5, and Euler ancestral with guidance 1
  (no classifier-free guidance: one image through the batch-2 UNet); diffusers' ancestral
  noise is replaced by our generator's continuation, as tests/test_image_schedulers.py does;
* a run aborted from its progress callback (which first decodes a preview) stops with an
  AbortError.

Tolerance, the same on both backends: max |browser - reference| <= REL * max(1, max |reference|).
SwiftShader's f32 math and the wasm-cpu library's (exp, rsqrt, fused or unfused
multiply-adds, reduction order) differ from PyTorch's CPU kernels in the last bits; the
measured errors are printed (`pytest -s`).

The bundle is built with a one-off esbuild call into a temporary site, so this file does
not depend on web/build.mjs."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import numpy as np
import pytest
from conftest import REPO, LiveServer

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from diffusers import (
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
)
from diffusers.schedulers import scheduling_euler_ancestral_discrete
from test_diffusion_native import make_tiny_pipeline
from webkiln.image_noise import GaussianNoise

LATENT = 8  # latent height and width (the tiny VAE upsamples twice: 16x16 images)
SEED = 0
PROMPT = "a photo of the red cat"
# Measured (SwiftShader, this machine): components <= 6e-6 relative, whole 2-step runs <= 4e-6
# relative on the latents (guidance 7.5 amplifies the UNet's error), <= 4e-6 on the image.
REL = 1e-4
# Each backend keeps its own run of every test: the compile target of its libraries.
BACKENDS = ("webgpu", "wasm-cpu")
SCHEDULERS = {"euler": EulerDiscreteScheduler, "dpmpp_2m": DPMSolverMultistepScheduler,
              "euler_a": EulerAncestralDiscreteScheduler}
JS = "window.webkilnImagePipelineTest"


def _check(name: str, ours, ref: np.ndarray, rel: float = REL) -> float:
    ours = np.asarray(ours, dtype=np.float32).reshape(ref.shape)
    err = float(np.abs(ours - ref).max())
    scale = max(1.0, float(np.abs(ref).max()))
    print(f"\n{name}: max abs error {err:.3g} (reference max {float(np.abs(ref).max()):.3g}, "
          f"limit {rel * scale:.3g})")
    assert err <= rel * scale, f"{name}: max abs error {err} > {rel} * {scale}"
    return err


def _write_component(root, name: str, mod_specs, params: list[np.ndarray], **extra) -> dict:
    records, offset = [], 0
    with open(root / f"{name}.bin", "wb") as f:
        for (pname, shape, dtype), value in zip(mod_specs, params, strict=True):
            assert tuple(value.shape) == tuple(shape) and str(value.dtype) == dtype, pname
            data = np.ascontiguousarray(value).tobytes()
            f.write(data)
            records.append({"name": pname, "shape": list(shape), "dtype": dtype, "offset": offset,
                            "nbytes": len(data)})
            offset += len(data)
    return {"wasm": f"{name}.wasm", "bin": f"{name}.bin", "params": records, **extra}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from webkiln.sources.diffusers_folder import load_diffusers_folder

    pipe, folder = make_tiny_pipeline(tmp_path_factory.mktemp("diffusion"))
    pipe.tokenizer.model_max_length = 77  # the locally written tokenizer leaves it "unbounded" (1e30)
    return pipe, load_diffusers_folder(folder)


@pytest.fixture(scope="module")
def site(tiny, tmp_path_factory):
    from webkiln.compile.build import build_module
    from webkiln.toolchain.link import LinkMode

    _, loaded = tiny
    root = tmp_path_factory.mktemp("image-pipeline-site")
    (root / "assets").mkdir()
    shutil.copy(REPO / "tests" / "site" / "test-image-pipeline.html", root / "test-image-pipeline.html")
    subprocess.run(
        [str(REPO / "web" / "node_modules" / ".bin" / "esbuild"), "tests/web/test_image_pipeline_entry.ts", "--bundle",
         "--format=esm", "--target=es2022", f"--outfile={root / 'assets' / 'test-image-pipeline.js'}",
         "--log-level=warning", "--external:fs", "--external:path", "--external:perf_hooks", "--external:ws",
         "--external:url", "--external:module"],
        cwd=REPO, check=True,
    )
    model = root / "model"
    model.mkdir()
    components = {}
    exported = {}
    for name in ("text_encoder", "unet", "vae"):
        mod, specs = loaded.export(name, "float32", latent_height=LATENT, latent_width=LATENT, batch=2)
        exported[name] = mod
        extra = {"batch": 2} if name == "unet" else {}
        components[name] = _write_component(model, name, specs, loaded.components[name].params(), **extra)
    text, unet, vae = loaded.text_encoder.config, loaded.unet.config, loaded.vae.config
    assert unet.cross_attention_dim == text.hidden_size
    for backend in BACKENDS:  # one library per component and backend, one .bin per component
        t0 = time.monotonic()
        (model / backend).mkdir()
        for name, mod in exported.items():
            build_module(mod, backend, model / backend / f"{name}.wasm", LinkMode.FAST)
        print(f"\ncompiled the three components for {backend} in {time.monotonic() - t0:.1f} s")
        index = {
            "constants": {"latentChannels": vae.latent_channels, "latentHeight": LATENT, "latentWidth": LATENT,
                          "textLength": text.max_position_embeddings, "textHidden": text.hidden_size,
                          "vaeScalingFactor": vae.scaling_factor, "vaeShiftFactor": None, "dtype": "float32"},
            "scheduler": loaded.scheduler,
            "components": {name: {**c, "wasm": f"{backend}/{c['wasm']}"} for name, c in components.items()},
        }
        (model / f"index-{backend}.json").write_text(json.dumps(index))
    return root


@pytest.fixture(scope="module", params=BACKENDS)
def page(request, browser, site):
    backend = request.param
    with LiveServer(site) as server:
        context = browser.new_context()
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server.url}/test-image-pipeline.html")
        page.wait_for_function(f"{JS} !== undefined", timeout=10_000)
        info = page.evaluate(f"([u, b]) => {JS}.load(u, b)", [f"model/index-{backend}.json", backend])
        print(f"\nloaded the pipeline in the browser in {info['loadMs']:.0f} ms ({info['adapter']})")
        if backend == "wasm-cpu":
            assert info["adapter"] == "CPU (WebAssembly SIMD)"
        yield page
        assert not errors, errors
        context.close()


def _ids(pipe, text: str) -> list[int]:
    return pipe.tokenizer(text, padding="max_length", max_length=77, truncation=True).input_ids


def test_text_encoder_matches_transformers(tiny, page):
    pipe, _ = tiny
    ids = _ids(pipe, PROMPT)
    with torch.no_grad():
        ref = pipe.text_encoder(torch.tensor([ids]))[0].numpy()
    got = page.evaluate(f"(ids) => {JS}.encodeText(ids)", ids)
    print(f"\nencode_text: {got['ms']:.0f} ms")
    _check("text embeddings (browser)", got["values"], ref)


def test_unet_matches_diffusers(tiny, page):
    pipe, _ = tiny
    rng = np.random.default_rng(SEED)
    latents = rng.standard_normal((2, 4, LATENT, LATENT)).astype(np.float32)
    timestep = np.array([999.0, 321.0], dtype=np.float32)  # different per half: checks the batching
    text = rng.standard_normal((2, 77, 32)).astype(np.float32)
    with torch.no_grad():
        ref = pipe.unet(torch.from_numpy(latents), torch.from_numpy(timestep),
                        encoder_hidden_states=torch.from_numpy(text)).sample.numpy()
    got = page.evaluate(f"([x, t, e]) => {JS}.predictNoise(x, t, e)",
                        [latents.ravel().tolist(), timestep.tolist(), text.ravel().tolist()])
    print(f"\nunet (batch 2): {got['ms']:.0f} ms")
    _check("unet noise (browser)", got["values"], ref)
    assert np.abs(ref[0] - ref[1]).max() > 1e-2  # the two halves really differ
    # one image through the batch-2 UNet (the no-guidance path)
    one = page.evaluate(f"([x, t, e]) => {JS}.predictNoise(x, t, e)",
                        [latents[1].ravel().tolist(), float(timestep[1]), text[1].ravel().tolist()])
    _check("unet noise, one image (browser)", one["values"], ref[1:])


def test_vae_decode_matches_diffusers(tiny, page):
    pipe, _ = tiny
    z = np.random.default_rng(SEED + 1).standard_normal((1, 4, LATENT, LATENT)).astype(np.float32)
    with torch.no_grad():
        ref = pipe.vae.decode(torch.from_numpy(z)).sample.numpy()
    got = page.evaluate(f"(z) => {JS}.decodeRaw(z)", z.ravel().tolist())
    print(f"\nvae_decode: {got['ms']:.0f} ms")
    assert (got["height"], got["width"]) == (2 * LATENT, 2 * LATENT)
    _check("vae image (browser)", got["values"], ref)


def _diffusers_run(tiny, kind: str, steps: int, guidance: float, seed: int, output_type: str, monkeypatch):
    pipe, loaded = tiny
    noise = GaussianNoise(seed)
    monkeypatch.setattr(scheduling_euler_ancestral_discrete, "randn_tensor",
                        lambda shape, **kwargs: torch.from_numpy(noise.tensor(tuple(shape))))
    original = pipe.scheduler
    # From scheduler_config.json as saved (what the browser reads). Not from pipe.scheduler.config:
    # its `_use_default_values` makes from_config take Euler's own defaults (linspace spacing,
    # steps_offset 0) for the fields the PNDM scheduler was built without.
    pipe.scheduler = SCHEDULERS[kind].from_config(loaded.scheduler)
    try:
        latents = torch.from_numpy(noise.tensor((1, 4, LATENT, LATENT)))  # the pipeline multiplies by init_noise_sigma
        with torch.no_grad():
            out = pipe(PROMPT, height=2 * LATENT, width=2 * LATENT, num_inference_steps=steps,
                       guidance_scale=guidance, latents=latents, output_type=output_type)
        timesteps = pipe.scheduler.timesteps.numpy().tolist()
    finally:
        pipe.scheduler = original
    return out.images, timesteps


@pytest.mark.parametrize("kind,guidance", [("euler", 7.5), ("dpmpp_2m", 7.5), ("euler_a", 7.5),
                                           ("euler_a", 1.0)])
def test_generation_matches_diffusers(tiny, page, kind, guidance, monkeypatch):
    pipe, _ = tiny
    steps, seed = 2, 1234
    got = page.evaluate(f"(args) => {JS}.generate(args)", {
        "promptIds": _ids(pipe, PROMPT), "negativeIds": _ids(pipe, ""), "steps": steps,
        "guidanceScale": guidance, "seed": str(seed), "scheduler": kind})
    assert got["error"] is None, got["error"]
    ref_latents, ref_t = _diffusers_run(tiny, kind, steps, guidance, seed, "latent", monkeypatch)
    ref_image, _ = _diffusers_run(tiny, kind, steps, guidance, seed, "np", monkeypatch)
    t = got["timings"]
    print(f"\n{kind} guidance {guidance}: encode {t['encodeMs']:.0f} ms, steps "
          f"{', '.join(f'{ms:.0f}' for ms in t['stepMs'])} ms, decode {t['decodeMs']:.0f} ms, "
          f"total {t['totalMs']:.0f} ms")
    np.testing.assert_allclose(got["timesteps"], ref_t)
    assert [s["step"] for s in got["seen"]] == list(range(1, steps + 1))
    assert all(s["total"] == steps for s in got["seen"])
    _check(f"{kind} latents (browser)", got["latents"], ref_latents.numpy())
    assert ref_image.shape == (1, 2 * LATENT, 2 * LATENT, 3)
    _check(f"{kind} image (browser)", got["image"], ref_image[0])
    rgba = np.asarray(got["rgba"], dtype=np.int32).reshape(2 * LATENT, 2 * LATENT, 4)
    assert np.all(rgba[..., 3] == 255)
    ref_bytes = (ref_image[0] * 255).round().astype(np.int32)  # diffusers' numpy_to_pil
    assert np.abs(rgba[..., :3] - ref_bytes).max() <= 1
    assert np.std(ref_image) > 1e-3  # not a flat image


def test_generation_abort(tiny, page):
    pipe, _ = tiny
    got = page.evaluate(f"(args) => {JS}.generate(args)", {
        "promptIds": _ids(pipe, PROMPT), "negativeIds": _ids(pipe, ""), "steps": 3, "guidanceScale": 7.5,
        "seed": "7", "scheduler": "euler", "abortAfterStep": 1, "previewDecode": True})
    assert got["error"] is not None and got["error"]["name"] == "AbortError", got
    assert [s["step"] for s in got["seen"]] == [1]
    assert got["seen"][0]["previewWidth"] == 2 * LATENT  # a VAE preview decoded from inside onStep

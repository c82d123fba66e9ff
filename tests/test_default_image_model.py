"""The default image model (shapes-t2i, committed in python/webkiln/default_models) in headless
Chromium: `build_web --model default-image` builds it (webgpu-f32 and wasm-cpu, one set of
float32 shards), the Worker engine loads it on each backend in turn (WebGPU on SwiftShader,
and the CPU library, each its own test with the same tolerance), and images.generate draws
prompts from the model's fixed evaluation set. Each browser image is
compared with diffusers' StableDiffusionPipeline on the CPU started from the same initial
latents (webkiln.image_noise.GaussianNoise(seed)), and both are judged by the quality
check (`webkiln.train.shapes.judge`: the object's colour and position against the prompt):
the browser passes the check exactly where diffusers does, and at least as often as the
model's README reports for its quick check.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil

import numpy as np
import pytest

from conftest import LiveServer

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from PIL import Image  # noqa: E402

from webkiln.sources.default_model import IMAGE_MODEL_DIR  # noqa: E402
from webkiln.train import shapes  # noqa: E402

STEPS = 8  # the README's quick check uses 8 Euler steps at guidance 5
GUIDANCE = 5.0
# Three of the fixed evaluation prompts: opposite corners and the centre (position is the
# weak point of small text-to-image models), three colours, three shapes.
PROMPTS = [shapes.eval_prompts(20)[i] for i in (0, 3, 4)]


@pytest.fixture(scope="module")
def site(tmp_path_factory, test_site):
    from webkiln.cli import build_web_main

    root = tmp_path_factory.mktemp("default-image-site")
    shutil.copytree(test_site, root, dirs_exist_ok=True)
    assert build_web_main(["--model", "default-image", "--quantization", "f32", "--fast-link",
                           "--out", str(root / "models")]) == 0
    return root


def test_default_image_alias_builds_the_committed_model(site):
    (model_dir,) = [p for p in (site / "models").iterdir() if p.is_dir()]
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["task"] == "image" and manifest["id"] == "shapes-t2i-f32"
    assert manifest["image"]["width"] == manifest["image"]["height"] == shapes.IMAGE_SIZE
    assert manifest["scheduler"]["prediction_type"] == json.loads(
        (IMAGE_MODEL_DIR / "scheduler" / "scheduler_config.json").read_text())["prediction_type"]
    index = json.loads((site / "models" / "index.json").read_text())
    assert [m["id"] for m in index["models"]] == ["shapes-t2i-f32"]
    # Both libraries, one float32 weight set: the CPU reads webgpu-f32's shards.
    backends = manifest["backends"]
    assert {k: (v["device"], v["tensors"]) for k, v in backends.items()} == {
        "webgpu-f32": ("webgpu", "float32"), "wasm-cpu": ("cpu", "float32")}
    assert list(manifest["tensors"]) == ["float32"]
    cpu = backends["wasm-cpu"]["memory"]
    library = (model_dir / "wasm-cpu.wasm").stat().st_size
    assert cpu["weights_bytes"] == backends["webgpu-f32"]["memory"]["weights_bytes"]
    assert cpu["total_bytes"] > cpu["weights_bytes"] + cpu["activations_bytes"] + library
    assert index["models"][0]["backends"]["wasm-cpu"] == {"device": "cpu", "required_features": []}


def _reference(pipe, prompt: str, seed: int) -> np.ndarray:
    from webkiln.image_noise import GaussianNoise

    latent = shapes.IMAGE_SIZE // 4
    latents = torch.from_numpy(GaussianNoise(seed).tensor((1, 4, latent, latent)))
    with torch.no_grad():
        out = pipe(prompt, num_inference_steps=STEPS, guidance_scale=GUIDANCE, latents=latents, output_type="np")
    return (out.images[0] * 255).round().astype(np.int32)


def _passes(image: np.ndarray, prompt: str) -> bool:
    verdict = shapes.judge(image.astype(np.uint8), prompt)
    return verdict["colour_ok"] and verdict["position_ok"]


@pytest.fixture(scope="module")
def pipe():
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(IMAGE_MODEL_DIR), torch_dtype=torch.float32, local_files_only=True)
    # The folder's own scheduler (Euler, trailing, v-prediction), as saved: what the manifest carries.
    assert isinstance(pipe.scheduler, EulerDiscreteScheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _matches_diffusers_and_passes(pipe, runs: list[tuple[str, dict]], where: str) -> None:
    """runs: (b64 PNG, usage.extra) per prompt of PROMPTS, seeds 0, 1, 2."""
    ours_ok, reference_ok = [], []
    for i, (prompt, (b64, extra)) in enumerate(zip(PROMPTS, runs, strict=True)):
        print(f"{where}: encode {extra['encode_ms']:.0f} ms, steps {[round(ms) for ms in extra['step_ms']]} ms, "
              f"decode {extra['decode_ms']:.0f} ms")
        ours = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.int32)
        ref = _reference(pipe, prompt, i)
        err = np.abs(ours - ref)
        print(f"{prompt}: max |{where} - diffusers| {err.max()}, mean {err.mean():.3f}")
        # f32 on both sides: the images differ by rounding only (measured: at most 1 of 255).
        assert err.max() <= 2, (prompt, err.max(), err.mean())
        ours_ok.append(_passes(ours, prompt))
        reference_ok.append(_passes(ref, prompt))
    print(f"prompt check passed: {where} {ours_ok}, diffusers {reference_ok}")
    assert ours_ok == reference_ok
    readme = (IMAGE_MODEL_DIR / "README.md").read_text()
    quick = re.search(r"prompt check \(test\): colour (\d+)%, position (\d+)%, both (\d+)%", readme)
    assert quick, "the model's README reports its prompt-check rates"
    # Most prompts of the check pass (the README's rate, within one prompt of these three).
    assert sum(ours_ok) / len(PROMPTS) >= min(int(quick[3]) / 100, 1.0) - 1 / 3 - 1e-9
    assert sum(ours_ok) >= 2


# Each backend its own test, with the same tolerance and check: the WGSL library on WebGPU
# (SwiftShader here; asked for by name, since "auto" picks the CPU on a fallback adapter)
# and the WebAssembly SIMD library on the CPU.
BACKENDS = {"webgpu": "webgpu-f32", "wasm-cpu": "wasm-cpu"}


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_default_image_model_in_the_browser_matches_diffusers_and_passes_the_check(browser, site, pipe, backend):
    with LiveServer(site) as server:
        context = browser.new_context()
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server.url}/chat.html")
        page.wait_for_function("window.webkilnChat !== undefined")
        loaded, runs = page.evaluate("""async ([prompts, steps, guidance, backend]) => {
            const engine = window.webkilnChat.createEngine();
            await engine.listModels();
            const loaded = await engine.loadModel("shapes-t2i-f32", {backend});
            const out = [];
            for (let i = 0; i < prompts.length; i++) {
                const r = await engine.images.generate({prompt: prompts[i], seed: i, steps, guidance_scale: guidance,
                                                        scheduler: "euler"});
                out.push([r.data[0].b64_json, r.usage.extra]);
            }
            engine.terminate();
            return [{backend: loaded.backend, device: loaded.device}, out];
        }""", [PROMPTS, STEPS, GUIDANCE, backend])
        context.close()
    assert errors == []
    assert loaded == {"backend": BACKENDS[backend], "device": "cpu" if backend == "wasm-cpu" else "webgpu"}
    _matches_diffusers_and_passes(pipe, runs, f"browser {BACKENDS[backend]}")


def test_default_image_model_on_node_dawn_matches_diffusers_and_passes_the_check(site, pipe):
    """The same engine and .wasm in Node on Dawn (npm `webgpu`; the runner of `webkiln bench-image
    --node-dawn`, the route to a GPU machine without a browser). Here it is Dawn's OpenGL ES
    backend on Mesa's llvmpipe: a second WebGPU implementation besides Chromium's SwiftShader."""
    from webkiln.bench_image import run_node_dawn

    out = run_node_dawn(site, "models/shapes-t2i-f32/manifest.json", PROMPTS, list(range(len(PROMPTS))),
                        {"steps": STEPS, "guidance_scale": GUIDANCE, "scheduler": "euler"}, timeout=1200,
                        backend="webgpu")
    print(f"Node + Dawn adapter: {out['adapter']} ({out['dawn']})")
    assert out["loaded"] == {"id": "shapes-t2i-f32", "backend": "webgpu-f32"}
    _matches_diffusers_and_passes(pipe, [(r["png"], r["extra"]) for r in out["runs"]], "node-dawn")

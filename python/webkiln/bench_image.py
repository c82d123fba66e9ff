"""`webkiln bench-image`: seconds per image and per denoising step of the default image model
(shapes-t2i) in the browser (headless Chromium, WebGPU, through the Worker engine's
images.generate) and on the CPU with diffusers (PyTorch), measured side by side in one run.

What is measured (see BENCHMARKS.md for results and caveats):
  build      build_web --model default-image --quantization f32 into a temporary site
             (the compile cache as the machine has it: the log says whether the library
             was compiled or reused).
  load       engine.loadModel() in a fresh Chromium profile (network from the local dev
             server; includes creating the WebGPU device and uploading the weights).
  first      the first images.generate() after the load: includes compiling every
             compute pipeline (on SwiftShader that dominates).
  warm       --images further generations (one prompt each from the fixed evaluation
             prompts, seeds 0..N-1), the model's default steps, guidance and scheduler:
             seconds per image, per denoising step (one UNet call on a batch of 2 for
             classifier-free guidance, plus the scheduler on the CPU), text encoding and
             VAE decode, from the engine's usage.extra timings.
  reference  diffusers' StableDiffusionPipeline (PyTorch, CPU, float32, --threads
             threads) on the same prompts, steps, guidance and scheduler: seconds per
             image and per step (step boundaries from callback_on_step_end).
Every image (browser and reference) is also judged with webkiln.train.shapes.judge, so a
run shows that what was timed is the working model.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from .bench import (
    _ADAPTER_JS,
    CHROMIUM,
    CHROMIUM_ARGS,
    REPO,
    _fmt,
    _log,
    _serve,
    machine_facts,
)

TIMEOUT_MS = 60 * 60 * 1000

_GENERATE_JS = """async ([model, prompts, seeds, first]) => {
  const engine = window.benchEngine ??= window.webkilnChat.createEngine();
  const out = {};
  if (first) {
    await engine.listModels();
    const t0 = performance.now();
    const loaded = await engine.loadModel(model);
    out.loadMillis = performance.now() - t0;
    out.loaded = {id: loaded.id, backend: loaded.backend};
  }
  out.runs = [];
  for (let i = 0; i < prompts.length; i++) {
    const t0 = performance.now();
    const r = await engine.images.generate({prompt: prompts[i], seed: seeds[i]});
    out.runs.push({wallMillis: performance.now() - t0, extra: r.usage.extra, png: r.data[0].b64_json});
  }
  return out;
}"""


def bench_build(models_dir: Path) -> tuple[dict, Path]:
    from .cli import build_web_main

    started = time.perf_counter()
    code = build_web_main(["--model", "default-image", "--quantization", "f32", "--fast-link",
                           "--out", str(models_dir)])
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError("build_web --model default-image failed")
    (model_dir,) = [p for p in models_dir.iterdir() if (p / "manifest.json").is_file()]
    _log(f"build: {seconds:.1f} s -> {model_dir.name}")
    return {"seconds": seconds, "link": "fast"}, model_dir


def _judge_png(b64: str, prompt: str) -> dict:
    from PIL import Image

    from .train import shapes

    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    v = shapes.judge(image, prompt)
    return {"colour_ok": v["colour_ok"], "position_ok": v["position_ok"]}


def bench_browser(site: Path, model_id: str, prompts: list[str], executable: str) -> dict:
    from playwright.sync_api import sync_playwright

    profile = Path(tempfile.mkdtemp(prefix="webkiln-bench-image-profile-"))
    try:
        with _serve(site) as url, sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                str(profile), executable_path=executable, args=CHROMIUM_ARGS, headless=True)
            context.set_default_timeout(TIMEOUT_MS)
            try:
                page = context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(f"{url}/chat.html")
                page.wait_for_function("window.webkilnChat !== undefined")
                user_agent = page.evaluate("navigator.userAgent")
                adapter = page.evaluate(_ADAPTER_JS)
                _log("load + first image (compiles every pipeline; minutes on SwiftShader)...")
                first = page.evaluate(_GENERATE_JS, [model_id, prompts[:1], [0], True])
                _log(f"load {first['loadMillis'] / 1000:.2f} s, first image {first['runs'][0]['wallMillis'] / 1000:.1f} s")
                _log(f"{len(prompts)} warm images...")
                warm = page.evaluate(_GENERATE_JS, [model_id, prompts, list(range(len(prompts))), False])
                if errors:
                    raise RuntimeError(f"page errors: {errors}")
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)

    runs = warm["runs"]
    extra0 = runs[0]["extra"]
    step_ms = [ms for r in runs for ms in r["extra"]["step_ms"]]
    return {
        "user_agent": user_agent,
        "adapter": adapter,
        "backend": first["loaded"]["backend"],
        "load_seconds": first["loadMillis"] / 1000,
        "first_image_seconds": first["runs"][0]["wallMillis"] / 1000,
        "first_image_step_ms": first["runs"][0]["extra"]["step_ms"],
        "steps": extra0["steps"],
        "guidance_scale": extra0["guidance_scale"],
        "scheduler": extra0["scheduler"],
        "size": f"{extra0['width']}x{extra0['height']}",
        "image_seconds": [r["wallMillis"] / 1000 for r in runs],
        "image_seconds_median": statistics.median(r["wallMillis"] / 1000 for r in runs),
        "step_seconds_median": statistics.median(step_ms) / 1000,
        "encode_seconds_median": statistics.median(r["extra"]["encode_ms"] for r in runs) / 1000,
        "decode_seconds_median": statistics.median(r["extra"]["decode_ms"] for r in runs) / 1000,
        "judged": [_judge_png(r["png"], prompt) for r, prompt in zip(runs, prompts)],
    }


def bench_reference(model_dir: Path, prompts: list[str], steps: int, guidance: float, threads: int) -> dict:
    import numpy as np
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from .train import shapes

    torch.set_num_threads(threads)
    pipe = StableDiffusionPipeline.from_pretrained(str(model_dir), torch_dtype=torch.float32, local_files_only=True)
    # The model's own scheduler (what the browser's default "euler" follows); not from_config(), which
    # would reset fields the saved config left at their defaults.
    if not isinstance(pipe.scheduler, EulerDiscreteScheduler):
        raise ValueError(f"the reference expects an Euler scheduler, the model has {type(pipe.scheduler).__name__}")
    pipe.set_progress_bar_config(disable=True)
    image_s, step_s, judged = [], [], []
    for i, prompt in enumerate([prompts[0]] + prompts):  # the first run warms up and is not counted
        marks: list[float] = []

        def on_step(_pipe, _i, _t, kwargs, marks=marks):
            marks.append(time.perf_counter())
            return kwargs

        t0 = time.perf_counter()
        out = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, output_type="np",
                   generator=torch.Generator().manual_seed(i), callback_on_step_end=on_step)
        t1 = time.perf_counter()
        if i == 0:
            continue
        image_s.append(t1 - t0)
        step_s += list(np.diff([t0] + marks)[1:])  # the first interval also holds text encoding
        img = np.clip(out.images[0] * 255 + 0.5, 0, 255).astype(np.uint8)
        v = shapes.judge(img, prompt)
        judged.append({"colour_ok": v["colour_ok"], "position_ok": v["position_ok"]})
    return {
        "library": f"diffusers + torch {torch.__version__}, CPU, float32, {threads} threads",
        "image_seconds": image_s,
        "image_seconds_median": statistics.median(image_s),
        "step_seconds_median": statistics.median(step_s),
        "judged": judged,
    }


def table(results: dict) -> str:
    b, r, ratio = results["browser"], results["reference"], results["ratios"]
    rows = [
        ("build (f32, fast link)", _fmt(results["build"]["seconds"], " s"), ""),
        ("browser load", _fmt(b["load_seconds"], " s"), f"backend {b['backend']}"),
        ("first image after load", _fmt(b["first_image_seconds"], " s"), "includes compiling every pipeline"),
        (f"image, {b['steps']} steps, {b['size']}", "", f"guidance {b['guidance_scale']}, {b['scheduler']}"),
        ("  browser", _fmt(b["image_seconds_median"], " s"), f"median of {len(b['image_seconds'])}"),
        ("  diffusers CPU", _fmt(r["image_seconds_median"], " s"), f"median of {len(r['image_seconds'])}"),
        ("  browser/diffusers", _fmt(ratio["image"]), "time ratio (>1: browser slower)"),
        ("denoising step", "", "UNet on a batch of 2 (guidance) + scheduler"),
        ("  browser", _fmt(b["step_seconds_median"] * 1000, " ms"), "median"),
        ("  diffusers CPU", _fmt(r["step_seconds_median"] * 1000, " ms"), "median"),
        ("  browser/diffusers", _fmt(ratio["step"]), ""),
        ("text encode / VAE decode (browser)", f"{_fmt(b['encode_seconds_median'] * 1000)}/{_fmt(b['decode_seconds_median'] * 1000)} ms", ""),
        ("prompt check passed (both)", f"{results['judge']['browser']}/{results['judge']['reference']}", "browser / diffusers"),
    ]
    width = max(len(x[0]) for x in rows)
    vwidth = max(len(x[1]) for x in rows)
    return "\n".join(f"{a:<{width}}  {v:>{vwidth}}  {c}".rstrip() for a, v, c in rows)


def run_image_bench(out: str | Path, images: int = 5, threads: int = 2, executable: str = CHROMIUM) -> dict:
    from .train import shapes

    if images < 1:
        raise ValueError("--images must be at least 1")
    bundle = REPO / "site" / "assets" / "engine-worker.js"
    if not bundle.is_file():
        raise ValueError(f"{bundle} is missing: run `cd web && node build.mjs` first")
    started = time.perf_counter()
    facts = machine_facts(executable)
    prompts = shapes.eval_prompts(max(images, 1))[:images]
    with tempfile.TemporaryDirectory(prefix="webkiln-bench-image-site-") as tmp:
        site = Path(tmp) / "site"
        shutil.copytree(REPO / "site", site, ignore=shutil.ignore_patterns("kernel-check", "models"))
        build, model_dir = bench_build(site / "models")
        manifest = json.loads((model_dir / "manifest.json").read_text())
        files_bytes = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
        wasm_bytes = sum(p.stat().st_size for p in model_dir.glob("*.wasm"))
        browser = bench_browser(site, model_dir.name, prompts, executable)
    from .sources.default_model import IMAGE_MODEL_DIR

    _log("diffusers reference on the CPU...")
    reference = bench_reference(IMAGE_MODEL_DIR, prompts, browser["steps"], browser["guidance_scale"], threads)
    both = lambda js: sum(1 for j in js if j["colour_ok"] and j["position_ok"])
    results = {
        "machine": facts,
        "model": {"id": model_dir.name, "files_bytes": files_bytes, "wasm_bytes": wasm_bytes,
                  "backends": sorted(manifest["backends"])},
        "prompts": prompts,
        "build": build,
        "browser": browser,
        "reference": reference,
        "ratios": {"image": browser["image_seconds_median"] / reference["image_seconds_median"],
                   "step": browser["step_seconds_median"] / reference["step_seconds_median"]},
        "judge": {"browser": both(browser["judged"]), "reference": both(reference["judged"]), "n": len(prompts)},
        "total_seconds": time.perf_counter() - started,
        "load_average_at_end": os.getloadavg(),
    }
    Path(out).write_text(json.dumps(results, indent=2) + "\n")
    return results

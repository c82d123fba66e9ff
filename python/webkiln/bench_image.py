"""`webkiln bench-image`: seconds per image and per denoising step of the default image model
(shapes-t2i) in the browser (headless Chromium, through the Worker engine's images.generate,
on each --backend: WebGPU and/or the wasm-cpu library) and on the CPU with diffusers
(PyTorch), measured side by side in one run.

What is measured (see BENCHMARKS.md for results and caveats):
  build      build_web --model default-image --quantization f32 (or --quantization f16: the
             f16 library too, which the engine takes where the device has shader-f16) into a temporary site
             (the compile cache as the machine has it: the log says whether the library
             was compiled or reused).
  load       engine.loadModel(id, {backend}) in a fresh Chromium profile per backend
             (network from the local dev server; includes creating the WebGPU device, or
             instantiating the CPU library, and uploading the weights).
  first      the first images.generate() after the load: on WebGPU it includes compiling
             every compute pipeline (on SwiftShader that dominates).
  warm       --images further generations (one prompt each from the fixed evaluation
             prompts, seeds 0..N-1), the model's default steps, guidance and scheduler:
             seconds per image, per denoising step (one UNet call on a batch of 2 for
             classifier-free guidance, plus the scheduler on the CPU), text encoding and
             VAE decode, from the engine's usage.extra timings.
  node-dawn  (--node-dawn) the same engine and .wasm in Node on Dawn (npm `webgpu`,
             web/src/node/bench_image.ts): load, first and warm images as above. Dawn's
             Vulkan backend where there is a Vulkan GPU, else its OpenGL ES backend (on a
             machine without a GPU: Mesa's llvmpipe, CPU rendering). --no-browser leaves
             Chromium out (a GPU machine without a browser).
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
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .bench_common import (
    ADAPTER_JS,
    CHROMIUM,
    REPO,
    TIMEOUT_MS,
    BenchError,
    assemble_site,
    chromium,
    fmt,
    format_table,
    log,
    machine_facts,
    serve,
)
from .package.image.build import build_image_model
from .sources import load_source
from .sources.default_model import IMAGE_ALIAS, IMAGE_MODEL_DIR, resolve_alias
from .toolchain.link import LinkMode
from .train import shapes

# The browser backends a run measures by default, each in its own fresh profile of the same
# Chromium: WebGPU (SwiftShader on a machine without a GPU) and the CPU library.
BROWSER_BACKENDS = ("webgpu", "wasm-cpu")

_GENERATE_JS = """async ([model, prompts, seeds, first, backend]) => {
  const engine = window.benchEngine ??= window.webkilnChat.createEngine();
  const out = {};
  if (first) {
    await engine.listModels();
    const t0 = performance.now();
    const loaded = await engine.loadModel(model, {backend});
    out.loadMillis = performance.now() - t0;
    out.loaded = {id: loaded.id, backend: loaded.backend, reason: loaded.backendReason};
  }
  out.runs = [];
  for (let i = 0; i < prompts.length; i++) {
    const t0 = performance.now();
    const r = await engine.images.generate({prompt: prompts[i], seed: seeds[i]});
    out.runs.push({wallMillis: performance.now() - t0, extra: r.usage.extra, png: r.data[0].b64_json});
  }
  return out;
}"""


def bench_build(models_dir: Path, quantization: str = "f32") -> tuple[dict, Path]:
    """`build_web --model default-image --quantization <q> --fast-link`, through the package API."""
    started = time.perf_counter()
    build_image_model(load_source(resolve_alias(IMAGE_ALIAS)), models_dir, quantization, link_mode=LinkMode.FAST)
    seconds = time.perf_counter() - started
    (model_dir,) = [p for p in models_dir.iterdir() if (p / "manifest.json").is_file()]
    log(f"build: {seconds:.1f} s -> {model_dir.name}")
    return {"seconds": seconds, "link": "fast", "quantization": quantization}, model_dir


def _judge_png(b64: str, prompt: str) -> dict:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    v = shapes.judge(image, prompt)
    return {"colour_ok": v["colour_ok"], "position_ok": v["position_ok"]}


def bench_browser(site: Path, model_id: str, prompts: list[str], executable: str, backend: str = "auto") -> dict:
    """`backend`: loadModel's ("auto", "webgpu", "wasm-cpu")."""
    with chromium(site, executable, "webkiln-bench-image-profile-") as browser:
        page = browser.page()
        user_agent = page.evaluate("navigator.userAgent")
        adapter = page.evaluate(ADAPTER_JS)
        log(f"[{backend}] load + first image (on WebGPU it compiles every pipeline: minutes on SwiftShader)...")
        first = page.evaluate(_GENERATE_JS, [model_id, prompts[:1], [0], True, backend])
        log(f"[{backend}] loaded {first['loaded']['backend']} ({first['loaded']['reason']}) in "
            f"{first['loadMillis'] / 1000:.2f} s, first image {first['runs'][0]['wallMillis'] / 1000:.1f} s")
        log(f"[{backend}] {len(prompts)} warm images...")
        warm = page.evaluate(_GENERATE_JS, [model_id, prompts, list(range(len(prompts))), False, backend])
        browser.check()

    return {"user_agent": user_agent, "adapter": adapter,
            **_summarize(first["loaded"], first["loadMillis"], first["runs"][0], warm["runs"], prompts)}


def _summarize(loaded: dict, load_ms: float, first: dict, runs: list[dict], prompts: list[str]) -> dict:
    """One side's numbers from its engine runs ({wallMillis, extra: usage.extra, png})."""
    extra0 = runs[0]["extra"]
    step_ms = [ms for r in runs for ms in r["extra"]["step_ms"]]
    return {
        "backend": loaded["backend"],
        "load_seconds": load_ms / 1000,
        "first_image_seconds": first["wallMillis"] / 1000,
        "first_image_step_ms": first["extra"]["step_ms"],
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


# --- Node + Dawn ------------------------------------------------------------------------------

NODE_RUNNER = REPO / "web" / "dist" / "bench-image-node.mjs"
# Tried in order: a real GPU through Vulkan; else OpenGL ES (compatibility mode), which on a
# machine without a GPU is Mesa's llvmpipe.
DAWN_ADAPTERS = [{"dawn": ["backend=vulkan"], "featureLevel": "core"},
                 {"dawn": ["backend=opengles"], "featureLevel": "compatibility"}]


def run_node_dawn(site: Path, manifest: str, prompts: list[str], seeds: list[int], options: dict | None = None,
                  adapters: list[dict] | None = None, timeout: float = TIMEOUT_MS / 1000,
                  backend: str = "webgpu") -> dict:
    """images.generate for each prompt in one Node process on Dawn (web/src/node/bench_image.ts),
    the site served by the dev server; `manifest` is relative to the site. Its progress goes to
    stderr as it runs; returns the runner's JSON ({adapter, dawn, loaded, loadMillis, runs}).
    `backend`: loadModel's (WebGPU by default: Dawn is what this side measures)."""
    if not NODE_RUNNER.is_file():
        raise BenchError(f"{NODE_RUNNER} is missing: run `cd web && node build.mjs` first")
    env = dict(os.environ)
    env.setdefault("EGL_PLATFORM", "surfaceless")  # headless EGL for the OpenGL ES backend
    env.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
    with serve(site) as url:
        request = {"baseUrl": f"{url}/", "model": manifest, "prompts": prompts, "seeds": seeds,
                   "options": options or {}, "adapters": adapters or DAWN_ADAPTERS, "backend": backend}
        proc = subprocess.run(["node", str(NODE_RUNNER)], input=json.dumps(request), stdout=subprocess.PIPE,
                              text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"the Node + Dawn runner failed (exit {proc.returncode}); its messages are above")
    return json.loads(proc.stdout)


def bench_node_dawn(site: Path, model_id: str, prompts: list[str]) -> dict:
    log("Node + Dawn: load, first image, warm images...")
    out = run_node_dawn(site, f"models/{model_id}/manifest.json", prompts[:1] + prompts,
                        [0] + list(range(len(prompts))))
    first, *runs = out["runs"]
    return {"node": _node_version(), "dawn": out["dawn"], "adapter": out["adapter"],
            **_summarize(out["loaded"], out["loadMillis"], first, runs, prompts)}


def _node_version() -> str:
    try:
        return subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def bench_reference(model_dir: Path, prompts: list[str], steps: int, guidance: float, threads: int) -> dict:
    # Lazy: torch and diffusers are the test extra's (not every install has them) and take
    # seconds to import; only this reference side needs them.
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    torch.set_num_threads(threads)
    pipe = StableDiffusionPipeline.from_pretrained(str(model_dir), torch_dtype=torch.float32, local_files_only=True)
    # The model's own scheduler (what the browser's default "euler" follows); not from_config(), which
    # would reset fields the saved config left at their defaults.
    if not isinstance(pipe.scheduler, EulerDiscreteScheduler):
        raise BenchError(f"the reference expects an Euler scheduler, the model has {type(pipe.scheduler).__name__}")
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


def _browser_key(backend: str) -> str:
    return f"browser_{backend.replace('-', '_')}"


SIDES = {**{_browser_key(b): f"browser {b}" for b in ("auto", *BROWSER_BACKENDS)}, "node_dawn": "Node + Dawn"}


def table(results: dict) -> str:
    r = results["reference"]
    sides = {key: results[key] for key in SIDES if results.get(key)}
    any_side = next(iter(sides.values()))
    build = results["build"]
    rows = [(f"build ({build.get('quantization', 'f32')}, fast link)", fmt(build["seconds"], " s"), "")]
    for key, side in sides.items():
        rows += [(f"{SIDES[key]} load", fmt(side["load_seconds"], " s"), f"backend {side['backend']}"),
                 (f"{SIDES[key]} first image after load", fmt(side["first_image_seconds"], " s"),
                  "nothing to compile on the CPU" if side["backend"] == "wasm-cpu" else "includes compiling every pipeline")]
    rows.append((f"image, {any_side['steps']} steps, {any_side['size']}", "",
                 f"guidance {any_side['guidance_scale']}, {any_side['scheduler']}"))
    for key, side in sides.items():
        rows.append((f"  {SIDES[key]}", fmt(side["image_seconds_median"], " s"), f"median of {len(side['image_seconds'])}"))
    rows.append(("  diffusers CPU", fmt(r["image_seconds_median"], " s"), f"median of {len(r['image_seconds'])}"))
    for key in sides:
        rows.append((f"  {SIDES[key]}/diffusers", fmt(results["ratios"][key]["image"]), "time ratio (>1: slower)"))
    cpu, gpu = sides.get(_browser_key("wasm-cpu")), sides.get(_browser_key("webgpu"))
    if cpu and gpu:
        rows.append(("  browser webgpu/wasm-cpu", fmt(gpu["image_seconds_median"] / cpu["image_seconds_median"]),
                     "same Chromium (>1: the CPU library is faster)"))
    rows.append(("denoising step", "", "UNet (batch of 2 with guidance) + scheduler"))
    for key, side in sides.items():
        rows.append((f"  {SIDES[key]}", fmt(side["step_seconds_median"] * 1000, " ms"), "median"))
    rows.append(("  diffusers CPU", fmt(r["step_seconds_median"] * 1000, " ms"), "median"))
    for key in sides:
        rows.append((f"  {SIDES[key]}/diffusers", fmt(results["ratios"][key]["step"]), ""))
    for key, side in sides.items():
        rows.append((f"text encode / VAE decode ({SIDES[key]})",
                     f"{fmt(side['encode_seconds_median'] * 1000)}/{fmt(side['decode_seconds_median'] * 1000)} ms", ""))
    judge = results["judge"]
    rows.append(("prompt check passed", " / ".join(str(judge[k]) for k in [*sides, "reference"]),
                 " / ".join([*(SIDES[k] for k in sides), "diffusers"]) + f", of {judge['n']}"))
    return format_table(rows)


def run_image_bench(out: str | Path, images: int = 5, threads: int = 2, executable: str = CHROMIUM,
                    browser: bool = True, node_dawn: bool = False, quantization: str = "f32",
                    backends: tuple[str, ...] = BROWSER_BACKENDS) -> dict:
    """`backends`: the browser sides, one fresh Chromium profile each ("auto", "webgpu", "wasm-cpu")."""
    if images < 1:
        raise BenchError("--images must be at least 1")
    if not (browser or node_dawn):
        raise BenchError("nothing to measure: --no-browser needs --node-dawn")
    unknown = [b for b in backends if _browser_key(b) not in SIDES]
    if unknown or not backends:
        raise BenchError(f"--backend {', '.join(unknown) or '(none)'}: choose auto, webgpu or wasm-cpu")
    started = time.perf_counter()
    facts = machine_facts(executable)
    prompts = shapes.eval_prompts(max(images, 1))[:images]
    sides: dict[str, dict | None] = {key: None for key in SIDES}
    with tempfile.TemporaryDirectory(prefix="webkiln-bench-image-site-") as tmp:
        site = assemble_site(Path(tmp) / "site", ("app.js", "engine-worker.js") if browser else ("app.js",))
        build, model_dir = bench_build(site / "models", quantization)
        manifest = json.loads((model_dir / "manifest.json").read_text())
        files_bytes = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
        wasm_bytes = sum(p.stat().st_size for p in model_dir.glob("*.wasm"))
        if browser:
            for backend in dict.fromkeys(backends):
                sides[_browser_key(backend)] = bench_browser(site, model_dir.name, prompts, executable, backend)
        if node_dawn:
            sides["node_dawn"] = bench_node_dawn(site, model_dir.name, prompts)
    ran = {k: v for k, v in sides.items() if v}
    first = next(iter(ran.values()))
    log("diffusers reference on the CPU...")
    reference = bench_reference(IMAGE_MODEL_DIR, prompts, first["steps"], first["guidance_scale"], threads)
    both = lambda js: sum(1 for j in js if j["colour_ok"] and j["position_ok"])
    results = {
        "machine": facts,
        "model": {"id": model_dir.name, "files_bytes": files_bytes, "wasm_bytes": wasm_bytes,
                  "backends": sorted(manifest["backends"])},
        "prompts": prompts,
        "build": build,
        **{k: v for k, v in sides.items() if v},
        "reference": reference,
        "ratios": {k: {"image": v["image_seconds_median"] / reference["image_seconds_median"],
                       "step": v["step_seconds_median"] / reference["step_seconds_median"]} for k, v in ran.items()},
        "judge": {**{k: both(v["judged"]) for k, v in ran.items()}, "reference": both(reference["judged"]),
                  "n": len(prompts)},
        "total_seconds": time.perf_counter() - started,
        "load_average_at_end": os.getloadavg(),
    }
    Path(out).write_text(json.dumps(results, indent=2) + "\n")
    return results

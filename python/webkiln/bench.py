"""`webkiln bench`: build, load and generation timings of the default model, in the
browser (headless Chromium, WebGPU) and natively (TVM native-cpu, the same model),
measured in one run.

What is measured (see BENCHMARKS.md for results and caveats):
  build          build_chat_model twice into a temporary site, with a private compile
                 cache (holding a copy of the already built web runtime): the first
                 build compiles the WebGPU library; the second only converts weights
                 and must reuse the library from the compile cache.
  load           window.webkilnChat.load() in a persistent Chromium profile: cold =
                 first load (network), warm = second load in a fresh page of the same
                 profile (Cache API).
  first token    warm load + prefill of a short prompt (--ttft-tokens), i.e. the time
                 from starting a warm load to having the first token's logits.
  prefill/decode a --prompt-tokens prompt (token ids of a fixed English text), then
                 --decode-tokens greedy tokens; decode tok/s counts the forwards after
                 the first token (the first comes from the prefill's logits).
  native         the same model compiled for native-cpu (TVM's default CPU pipeline,
                 no tuned CPU schedules), same prompt, same number of tokens.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--enable-unsafe-webgpu", "--disable-quic"]
REUSED = "reused from the compile cache"
PROMPT_TEXT = (
    "The history of the bicycle begins in the early nineteenth century, when inventors in Europe "
    "experimented with two-wheeled machines pushed along by the rider's feet. Pedals attached to the "
    "front wheel came decades later, followed by the chain drive, pneumatic tyres and lighter steel "
    "frames. By the end of the century the safety bicycle had taken the shape we still recognise "
    "today, and cycling spread quickly among workers, students and travellers in many countries. "
)
TIMEOUT_MS = 60 * 60 * 1000  # SwiftShader is slow: a 128-token prefill takes minutes


def _log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


# --- machine facts ---------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _chromium_version(executable: str) -> str:
    try:
        out = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=30).stdout
        return out.strip().splitlines()[0] if out.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_facts(executable: str) -> dict:
    import importlib.metadata

    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tvm": importlib.metadata.version("apache-tvm"),
        "chromium": _chromium_version(executable),
        # Other work on the machine skews every number: record how busy it was.
        "load_average_at_start": os.getloadavg(),
    }


# --- dev server (as the tests' LiveServer) ------------------------------------------


@contextmanager
def _serve(root: Path):
    import uvicorn

    from .server import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(root), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("dev server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# --- pieces -----------------------------------------------------------------------------


def prompt_ids(tokenizer_json: str, count: int) -> list[int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    text = PROMPT_TEXT
    while True:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        if len(ids) >= count:
            return ids[:count]
        text += PROMPT_TEXT


def bench_build(source, models_dir: Path, link_mode) -> tuple[dict, Path]:
    """Two builds with a private compile cache (a copy of the built web runtime, no libraries)."""
    from .package.model import build_chat_model
    from .toolchain import runtime

    real_runtime = runtime.ensure_runtime(log=_log).directory
    previous = os.environ.get("WEBKILN_CACHE_DIR")
    cache = Path(tempfile.mkdtemp(prefix="webkiln-bench-cache-"))
    os.environ["WEBKILN_CACHE_DIR"] = str(cache)
    try:
        entry = runtime.runtime_dir()
        entry.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(real_runtime, entry)
        results = {"link": link_mode.value}
        model_dir = None
        for name in ("first", "rebuild"):
            log: list[str] = []
            started = time.perf_counter()
            model_dir = build_chat_model(source, models_dir, "q4f32", link_mode=link_mode, log=log.append)
            results[f"{name}_seconds"] = time.perf_counter() - started
            results[f"{name}_reused_library"] = any(REUSED in line for line in log)
            _log(f"{name} build: {results[f'{name}_seconds']:.1f} s "
                 f"(library {'reused' if results[f'{name}_reused_library'] else 'compiled'})")
        assert model_dir is not None
        return results, model_dir
    finally:
        if previous is None:
            os.environ.pop("WEBKILN_CACHE_DIR", None)
        else:
            os.environ["WEBKILN_CACHE_DIR"] = previous
        shutil.rmtree(cache, ignore_errors=True)


_ADAPTER_JS = """async () => {
  if (!navigator.gpu) return {available: false};
  const a = await navigator.gpu.requestAdapter();
  if (!a) return {available: true, adapter: null};
  const i = a.info || {};
  return {available: true, vendor: i.vendor, architecture: i.architecture, device: i.device,
          description: i.description, isFallbackAdapter: a.isFallbackAdapter ?? i.isFallbackAdapter ?? null,
          features: Array.from(a.features).sort(),
          maxBufferSize: a.limits.maxBufferSize, maxStorageBufferBindingSize: a.limits.maxStorageBufferBindingSize};
}"""

_RUN_JS = """async ([manifest, short, prompt, decode]) => {
  const chat = window.webkilnChat;
  const loaded = await chat.load(manifest);
  // First token: a short prompt right after the warm load (also warms the decode kernels).
  const first = await chat.generate(short, {maxTokens: 2, temperature: 0, stopTokenIds: []});
  chat.reset();
  const run = await chat.generate(prompt, {maxTokens: decode, temperature: 0, stopTokenIds: []});
  return {loaded, first: {prefillMillis: first.prefillMillis, decodeMillis: first.decodeMillis,
                          prefilledTokens: first.prefilledTokens},
          run: {prefillMillis: run.prefillMillis, decodeMillis: run.decodeMillis,
                prefilledTokens: run.prefilledTokens, tokens: run.tokens}};
}"""


def bench_browser(site: Path, model_dir: Path, ids: list[int], short: list[int], decode_tokens: int,
                  executable: str) -> dict:
    from playwright.sync_api import sync_playwright

    manifest = f"models/{model_dir.name}/manifest.json"
    profile = Path(tempfile.mkdtemp(prefix="webkiln-bench-profile-"))
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
                _log("cold load...")
                cold = page.evaluate("(m) => window.webkilnChat.load(m)", manifest)
                _log(f"cold load: {cold['millis'] / 1000:.2f} s ({cold['backend']})")
                page.close()

                page = context.new_page()
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(f"{url}/chat.html")
                page.wait_for_function("window.webkilnChat !== undefined")
                _log(f"warm load, first token ({len(short)}-token prompt), prefill {len(ids)} tokens, "
                     f"decode {decode_tokens} tokens (SwiftShader: minutes)...")
                warm = page.evaluate(_RUN_JS, [manifest, short, ids, decode_tokens])
                page.close()
                if errors:
                    raise RuntimeError(f"page errors: {errors}")
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)

    run = warm["run"]
    assert run["prefilledTokens"] == len(ids), run
    decoded = len(run["tokens"]) - 1  # forwards after the first token
    return {
        "user_agent": user_agent,
        "adapter": adapter,
        "backend": warm["loaded"]["backend"],
        "load_cold_seconds": cold["millis"] / 1000,
        "load_warm_seconds": warm["loaded"]["millis"] / 1000,
        "first_token_prompt_tokens": len(short),
        "first_token_prefill_seconds": warm["first"]["prefillMillis"] / 1000,
        "first_token_warm_seconds": (warm["loaded"]["millis"] + warm["first"]["prefillMillis"]) / 1000,
        "prefill_tokens": len(ids),
        "prefill_seconds": run["prefillMillis"] / 1000,
        "prefill_tok_s": len(ids) / (run["prefillMillis"] / 1000),
        "decode_tokens": decoded,
        "decode_seconds": run["decodeMillis"] / 1000,
        "decode_tok_s": decoded / (run["decodeMillis"] / 1000) if decoded else None,
        "tokens": run["tokens"],
    }


def bench_native(source, ids: list[int], decode_tokens: int, context: int, prefill_chunk: int) -> dict:
    import numpy as np

    from .compile.build import build_module
    from .compile.native import NativeLM
    from .compile.targets import get_target
    from .models.llm import export
    from .quant.convert import convert_params, plan_weights
    from .quant.schemes import get_scheme

    scheme = get_scheme("q4f32")
    plan = plan_weights(source, scheme, notice=lambda _: None)
    with tempfile.TemporaryDirectory(prefix="webkiln-bench-native-") as tmp:
        started = time.perf_counter()
        mod, spec = export(source.config, plan, scheme.activation_dtype,
                           get_target("native-cpu").tvm_target(), prefill_chunk)
        lib = build_module(mod, "native-cpu", Path(tmp) / "model.so")
        compile_seconds = time.perf_counter() - started
        _log(f"native compile: {compile_seconds:.1f} s")
        params = [array for _, array in convert_params(source, plan, scheme.activation_dtype, spec)]
        lm = NativeLM(lib, params, context, prefill_chunk)

        lm.prefill(ids[:2])  # warm-up (first calls allocate workspaces)
        lm.decode(ids[2])
        lm.reset()
        started = time.perf_counter()
        logits = lm.prefill(ids)
        prefill_seconds = time.perf_counter() - started
        tokens = [int(np.argmax(logits))]
        started = time.perf_counter()
        while len(tokens) < decode_tokens:
            tokens.append(int(np.argmax(lm.decode(tokens[-1]))))
        decode_seconds = time.perf_counter() - started
    decoded = len(tokens) - 1
    return {
        "compile_seconds": compile_seconds,
        "prefill_tokens": len(ids),
        "prefill_seconds": prefill_seconds,
        "prefill_tok_s": len(ids) / prefill_seconds,
        "decode_tokens": decoded,
        "decode_seconds": decode_seconds,
        "decode_tok_s": decoded / decode_seconds if decoded else None,
        "tokens": tokens,
    }


# --- report --------------------------------------------------------------------------


def _fmt(value, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.3g}{unit}" if value < 100 else f"{value:.0f}{unit}"


def table(results: dict) -> str:
    b, w, n = results["build"], results["browser"], results["native"]
    ratio = results["ratios"]
    rows = [
        ("first build", _fmt(b["first_seconds"], " s"), f"library {'reused' if b['first_reused_library'] else 'compiled'}, {b['link']} link"),
        ("weights-only rebuild", _fmt(b["rebuild_seconds"], " s"), f"library {'reused' if b['rebuild_reused_library'] else 'compiled'}"),
        ("browser load, cold", _fmt(w["load_cold_seconds"], " s"), "network"),
        ("browser load, warm", _fmt(w["load_warm_seconds"], " s"), "Cache API"),
        ("first token, warm", _fmt(w["first_token_warm_seconds"], " s"), f"warm load + {w['first_token_prompt_tokens']}-token prefill"),
        (f"prefill ({w['prefill_tokens']} tok)", "", ""),
        ("  browser", _fmt(w["prefill_tok_s"], " tok/s"), _fmt(w["prefill_seconds"], " s")),
        ("  native", _fmt(n["prefill_tok_s"], " tok/s"), _fmt(n["prefill_seconds"], " s")),
        ("  browser/native", _fmt(ratio["prefill"]), ""),
        (f"decode ({w['decode_tokens']} tok)", "", ""),
        ("  browser", _fmt(w["decode_tok_s"], " tok/s"), _fmt(w["decode_seconds"], " s")),
        ("  native", _fmt(n["decode_tok_s"], " tok/s"), _fmt(n["decode_seconds"], " s")),
        ("  browser/native", _fmt(ratio["decode"]), ""),
    ]
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{width}}  {v:>{vwidth}}  {c}".rstrip() for a, v, c in rows)


def run_bench(out: str | Path, prompt_tokens: int = 128, decode_tokens: int = 128, ttft_tokens: int = 8,
              release: bool = False, executable: str = CHROMIUM) -> dict:
    from .package.model import DEFAULT_CONTEXT, DEFAULT_PREFILL_CHUNK
    from .sources import load_source
    from .sources.default_model import fetch_default_model
    from .toolchain.link import LinkMode

    if prompt_tokens < 3 or decode_tokens < 2:
        raise ValueError("--prompt-tokens must be >= 3 and --decode-tokens >= 2")
    bundle = REPO / "site" / "assets" / "chat.js"
    if not bundle.is_file():
        raise ValueError(f"{bundle} is missing: run `cd web && node build.mjs` first")

    started = time.perf_counter()
    facts = machine_facts(executable)
    source = load_source(fetch_default_model())
    ids = prompt_ids(source.tokenizer_json, prompt_tokens)
    short = ids[: min(ttft_tokens, prompt_tokens)]

    with tempfile.TemporaryDirectory(prefix="webkiln-bench-site-") as tmp:
        site = Path(tmp) / "site"
        shutil.copytree(REPO / "site", site, ignore=shutil.ignore_patterns("kernel-check", "models"))
        build, model_dir = bench_build(source, site / "models", LinkMode.RELEASE if release else LinkMode.FAST)
        wasm_bytes = sum(p.stat().st_size for p in model_dir.glob("*.wasm"))
        weight_bytes = json.loads((model_dir / "manifest.json").read_text())["memory"]["weights_bytes"]
        browser = bench_browser(site, model_dir, ids, short, decode_tokens, executable)
    native = bench_native(source, ids, decode_tokens, DEFAULT_CONTEXT, DEFAULT_PREFILL_CHUNK)

    def ratio(key: str):
        a, b = browser[key], native[key]
        return a / b if a and b else None

    results = {
        "machine": facts,
        "model": {"id": model_dir.name, "source": "SmolLM2-135M-Instruct Q4_1 GGUF", "quantization": "q4f32",
                  "wasm_bytes": wasm_bytes, "weights_bytes": weight_bytes,
                  "context_window": DEFAULT_CONTEXT, "prefill_chunk": DEFAULT_PREFILL_CHUNK},
        "settings": {"prompt_tokens": prompt_tokens, "decode_tokens": decode_tokens,
                     "first_token_prompt_tokens": len(short), "release_link": release},
        "build": build,
        "browser": browser,
        "native": native,
        "ratios": {"prefill": ratio("prefill_tok_s"), "decode": ratio("decode_tok_s")},
        "same_tokens": browser["tokens"] == native["tokens"],
        "total_seconds": time.perf_counter() - started,
        "load_average_at_end": os.getloadavg(),
    }
    Path(out).write_text(json.dumps(results, indent=2) + "\n")
    return results

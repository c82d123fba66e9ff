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
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from .bench_common import (
    ADAPTER_JS,
    CHROMIUM,
    BenchError,
    assemble_site,
    chromium,
    fmt,
    format_table,
    log,
    machine_facts,
)
from .compile.build import build_module
from .compile.native import NativeLM
from .compile.targets import get_target
from .model_source import ModelSource
from .models.llm import export
from .package.chat_build import DEFAULT_CONTEXT, DEFAULT_PREFILL_CHUNK, build_chat_model
from .quant.convert import convert_params, plan_weights
from .quant.schemes import get_scheme
from .sources import load_source
from .sources.default_model import fetch_default_model
from .toolchain import runtime
from .toolchain.link import LinkMode

REUSED = "reused from the compile cache"
PROMPT_TEXT = (
    "The history of the bicycle begins in the early nineteenth century, when inventors in Europe "
    "experimented with two-wheeled machines pushed along by the rider's feet. Pedals attached to the "
    "front wheel came decades later, followed by the chain drive, pneumatic tyres and lighter steel "
    "frames. By the end of the century the safety bicycle had taken the shape we still recognise "
    "today, and cycling spread quickly among workers, students and travellers in many countries. "
)


# --- pieces -----------------------------------------------------------------------------


def prompt_ids(tokenizer_json: str, count: int) -> list[int]:
    tokenizer = Tokenizer.from_str(tokenizer_json)
    text = PROMPT_TEXT
    while True:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        if len(ids) >= count:
            return ids[:count]
        text += PROMPT_TEXT


def bench_build(source: ModelSource, models_dir: Path, link_mode: LinkMode) -> tuple[dict, Path]:
    """Two builds with a private compile cache (a copy of the built web runtime, no libraries)."""
    real_runtime = runtime.ensure_runtime(log=log).directory
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
            log(f"{name} build: {results[f'{name}_seconds']:.1f} s "
                 f"(library {'reused' if results[f'{name}_reused_library'] else 'compiled'})")
        assert model_dir is not None
        return results, model_dir
    finally:
        if previous is None:
            os.environ.pop("WEBKILN_CACHE_DIR", None)
        else:
            os.environ["WEBKILN_CACHE_DIR"] = previous
        shutil.rmtree(cache, ignore_errors=True)


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
    manifest = f"models/{model_dir.name}/manifest.json"
    with chromium(site, executable, "webkiln-bench-profile-") as browser:
        page = browser.page()
        user_agent = page.evaluate("navigator.userAgent")
        adapter = page.evaluate(ADAPTER_JS)
        log("cold load...")
        cold = page.evaluate("(m) => window.webkilnChat.load(m)", manifest)
        log(f"cold load: {cold['millis'] / 1000:.2f} s ({cold['backend']})")
        page.close()

        page = browser.page()  # same profile: the weights now come from the Cache API
        log(f"warm load, first token ({len(short)}-token prompt), prefill {len(ids)} tokens, "
            f"decode {decode_tokens} tokens (SwiftShader: minutes)...")
        warm = page.evaluate(_RUN_JS, [manifest, short, ids, decode_tokens])
        page.close()
        browser.check()

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


def bench_native(source: ModelSource, ids: list[int], decode_tokens: int, context: int,
                 prefill_chunk: int) -> dict:
    scheme = get_scheme("q4f32")
    plan = plan_weights(source, scheme, notice=lambda _: None)
    with tempfile.TemporaryDirectory(prefix="webkiln-bench-native-") as tmp:
        started = time.perf_counter()
        mod, spec = export(source.config, plan, scheme.activation_dtype,
                           get_target("native-cpu").tvm_target(), prefill_chunk)
        lib = build_module(mod, "native-cpu", Path(tmp) / "model.so")
        compile_seconds = time.perf_counter() - started
        log(f"native compile: {compile_seconds:.1f} s")
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


def table(results: dict) -> str:
    b, w, n = results["build"], results["browser"], results["native"]
    ratio = results["ratios"]
    rows = [
        ("first build", fmt(b["first_seconds"], " s"), f"library {'reused' if b['first_reused_library'] else 'compiled'}, {b['link']} link"),
        ("weights-only rebuild", fmt(b["rebuild_seconds"], " s"), f"library {'reused' if b['rebuild_reused_library'] else 'compiled'}"),
        ("browser load, cold", fmt(w["load_cold_seconds"], " s"), "network"),
        ("browser load, warm", fmt(w["load_warm_seconds"], " s"), "Cache API"),
        ("first token, warm", fmt(w["first_token_warm_seconds"], " s"), f"warm load + {w['first_token_prompt_tokens']}-token prefill"),
        (f"prefill ({w['prefill_tokens']} tok)", "", ""),
        ("  browser", fmt(w["prefill_tok_s"], " tok/s"), fmt(w["prefill_seconds"], " s")),
        ("  native", fmt(n["prefill_tok_s"], " tok/s"), fmt(n["prefill_seconds"], " s")),
        ("  browser/native", fmt(ratio["prefill"]), ""),
        (f"decode ({w['decode_tokens']} tok)", "", ""),
        ("  browser", fmt(w["decode_tok_s"], " tok/s"), fmt(w["decode_seconds"], " s")),
        ("  native", fmt(n["decode_tok_s"], " tok/s"), fmt(n["decode_seconds"], " s")),
        ("  browser/native", fmt(ratio["decode"]), ""),
    ]
    return format_table(rows)


def run_bench(out: str | Path, prompt_tokens: int = 128, decode_tokens: int = 128, ttft_tokens: int = 8,
              release: bool = False, executable: str = CHROMIUM) -> dict:
    if prompt_tokens < 3 or decode_tokens < 2:
        raise BenchError("--prompt-tokens must be >= 3 and --decode-tokens >= 2")

    started = time.perf_counter()
    facts = machine_facts(executable)
    source = load_source(fetch_default_model())
    ids = prompt_ids(source.tokenizer_json, prompt_tokens)
    short = ids[: min(ttft_tokens, prompt_tokens)]

    with tempfile.TemporaryDirectory(prefix="webkiln-bench-site-") as tmp:
        site = assemble_site(Path(tmp) / "site")
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

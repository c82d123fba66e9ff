"""`webkiln bench`: the default model's build, load, prefill and decode timings, webkiln in the
browser (headless Chromium: the `wasm-cpu` backend and, on request, WebGPU) side by side with
wllama (llama.cpp compiled to WebAssembly, npm `@wllama/wllama`, a dev dependency) on the same
GGUF in the same Chromium, and natively (TVM native-cpu, the same model), in one run.

What is measured (see BENCHMARKS.md for results and caveats):
  build          build_chat_model twice into a temporary site, with a private compile
                 cache (holding copies of the already built web runtimes): the first
                 build compiles the libraries (WebGPU and wasm-cpu); the second only
                 converts weights and must reuse them from the compile cache.
  rows           one per (engine, thread count): webkiln wasm-cpu, wllama and native at each
                 of --threads; webkiln WebGPU once (CPU threads do not apply to it). Rows of
                 more than one thread run on a cross-origin isolated page (COOP/COEP, as
                 `webkiln serve --isolate`), the only kind of page that may use
                 SharedArrayBuffer and so WebAssembly threads; one-thread rows on a plain page.
  load           cold: the engine's first load on its origin (network from the local dev
                 server; webkiln fills the Cache API, wllama its OPFS model cache); warm: the
                 load in a fresh page of the same profile (from that storage), once per run.
  first token    warm load + prefill of a short prompt (--first-token-prompt tokens), i.e.
                 the time from starting a warm load to having the first token's logits.
  prefill/decode per run, after the warm load and the first-token request (which also warms
                 the kernels): a --prompt-tokens prompt (token ids of a fixed English text),
                 evaluated afresh, then --decode-tokens greedy tokens with end-of-generation
                 ignored. Decode tok/s counts the forwards after the first token (the first
                 comes from the prefill's logits): for webkiln and native as timed here, for
                 wllama from llama.cpp's own timings, which count the same way.
  medians        of --runs runs (a fresh page each), per row.

wllama 3.x takes a prompt only as text (its completion API has no token-id input), so it gets
the prompt ids decoded to text; the run checks that the text encodes back to the same ids and
that llama.cpp evaluated exactly that many prompt tokens. Its output is text too, so greedy
agreement between engines is checked on the decoded text (and on token ids between webkiln and
native).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from .bench_common import (
    ADAPTER_JS,
    CHROMIUM,
    REPO,
    BenchError,
    ChromiumProfile,
    assemble_site,
    chromium,
    fmt,
    log,
    machine_facts,
)
from .model_source import ModelSource
from .package.chat_build import DEFAULT_CONTEXT, DEFAULT_PREFILL_CHUNK
from .sources import load_source
from .sources.default_model import fetch_default_model
from .toolchain.link import LinkMode

REUSED = "reused from the compile cache"
PROMPT_TEXT = (
    "The history of the bicycle begins in the early nineteenth century, when inventors in Europe "
    "experimented with two-wheeled machines pushed along by the rider's feet. Pedals attached to the "
    "front wheel came decades later, followed by the chain drive, pneumatic tyres and lighter steel "
    "frames. By the end of the century the safety bicycle had taken the shape we still recognise "
    "today, and cycling spread quickly among workers, students and travellers in many countries. "
)

# What --backends may name: webkiln's two browser backends, wllama, and TVM native-cpu.
BACKENDS = ("wasm-cpu", "webgpu", "wllama", "native")
# WebGPU is left out by default: on SwiftShader (the only adapter of a machine without a GPU)
# it decodes well under 1 tok/s, and 128/128 tokens times three runs would take most of an hour.
DEFAULT_BACKENDS = ("wasm-cpu", "wllama", "native")
WEBGPU_LIBRARY = "webgpu-f32"

WLLAMA_PACKAGE = REPO / "web" / "node_modules" / "@wllama" / "wllama"
WLLAMA_WASM = WLLAMA_PACKAGE / "esm" / "wasm" / "wllama.wasm"
# Where the benchmark puts wllama's files in its temporary site (never in site/).
BENCH_DIR = "bench"
WLLAMA_SCRIPTS = ("assets/bench-wllama.js",)
WLLAMA_READY = "window.wllamaBench !== undefined"


@dataclass(frozen=True)
class BenchSettings:
    prompt_tokens: int = 128
    decode_tokens: int = 128
    ttft_tokens: int = 8
    runs: int = 3
    threads: tuple[int, ...] = (1, 2)
    backends: tuple[str, ...] = DEFAULT_BACKENDS
    release: bool = False
    build: bool = True  # time two builds; False: one build, untimed (the test's quick run)

    def check(self) -> None:
        if self.prompt_tokens < 3 or self.decode_tokens < 2:
            raise BenchError("--prompt-tokens must be >= 3 and --decode-tokens >= 2")
        if self.runs < 1:
            raise BenchError("--runs must be >= 1")
        if not 1 <= self.ttft_tokens <= self.prompt_tokens:
            raise BenchError("--first-token-prompt must be between 1 and --prompt-tokens")
        if not self.threads or any(t < 1 for t in self.threads) or len(set(self.threads)) != len(self.threads):
            raise BenchError(f"--threads needs distinct counts >= 1, e.g. 1,2 (got {list(self.threads)})")
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown or not self.backends:
            raise BenchError(f"--backends: unknown {', '.join(unknown) or '(none given)'}; choose from "
                             f"{', '.join(BACKENDS)} (comma-separated)")
        # Decoding reuses the KV cache; the context window must hold the whole run.
        if self.prompt_tokens + self.decode_tokens > DEFAULT_CONTEXT:
            raise BenchError(f"--prompt-tokens + --decode-tokens must fit the context window ({DEFAULT_CONTEXT})")


def parse_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


# --- pieces -----------------------------------------------------------------------------


def prompt_ids(tokenizer_json: str, count: int) -> list[int]:
    tokenizer = Tokenizer.from_str(tokenizer_json)
    text = PROMPT_TEXT
    while True:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        if len(ids) >= count:
            return ids[:count]
        text += PROMPT_TEXT


def added_prefix(tokenizer_json: str) -> list[int]:
    """The ids the tokenizer puts before any text (a BOS, for Gemma), which llama.cpp adds too."""
    tokenizer = Tokenizer.from_str(tokenizer_json)
    with_special, plain = tokenizer.encode("a").ids, tokenizer.encode("a", add_special_tokens=False).ids
    return with_special[: len(with_special) - len(plain)] if with_special[-len(plain):] == plain else []


def bench_prompt(tokenizer_json: str, prompt_tokens: int, short_tokens: int) -> Prompt:
    """`prompt_tokens` ids (the tokenizer's own prefix, e.g. a BOS, included: webkiln is given them
    all, wllama the text, to which llama.cpp adds that prefix itself) and a short prefix of them."""
    prefix = added_prefix(tokenizer_json)
    text_ids = prompt_ids(tokenizer_json, prompt_tokens - len(prefix))
    short_ids = text_ids[: short_tokens - len(prefix)]
    return Prompt(prefix + text_ids, prefix + short_ids, prompt_text(tokenizer_json, text_ids),
                  prompt_text(tokenizer_json, short_ids))


def prompt_text(tokenizer_json: str, ids: list[int]) -> str:
    """`ids` as text that encodes back to exactly `ids` (what wllama, which takes text, is given)."""
    tokenizer = Tokenizer.from_str(tokenizer_json)
    text = tokenizer.decode(ids, skip_special_tokens=False)
    again = tokenizer.encode(text, add_special_tokens=False).ids
    if again != ids:
        raise BenchError(f"the benchmark prompt does not survive decode/encode ({len(ids)} ids -> {len(again)}): "
                         "wllama would be given a different prompt; choose another --prompt-tokens")
    return text


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def bench_build(source: ModelSource, models_dir: Path, link_mode: LinkMode, timed: bool) -> tuple[dict, Path]:
    """`timed`: two builds with a private compile cache (a copy of the built web runtimes, no
    libraries), first and weights-only rebuild; else one build on the machine's cache."""
    from .package.chat_build import build_chat_model
    from .toolchain import runtime, threads

    if not timed:
        model_dir = build_chat_model(source, models_dir, "q4f32", link_mode=link_mode, log=lambda _: None)
        return {"link": link_mode.value, "timed": False}, model_dir
    # Both web runtimes a chat build links (single-threaded, and threaded with its pool), built
    # once per machine: copied in, so the first build times the model's libraries alone.
    runtime.ensure_runtime(log=log)
    threads.ensure_threaded_runtime(log=log)
    real_runtimes = runtime.runtime_dir().parent
    previous = os.environ.get("WEBKILN_CACHE_DIR")
    cache = Path(tempfile.mkdtemp(prefix="webkiln-bench-cache-"))
    os.environ["WEBKILN_CACHE_DIR"] = str(cache)
    try:
        shutil.copytree(real_runtimes, runtime.runtime_dir().parent, ignore=shutil.ignore_patterns("*.lock"))
        results: dict[str, Any] = {"link": link_mode.value, "timed": True}
        model_dir = None
        for name in ("first", "rebuild"):
            lines: list[str] = []
            started = time.perf_counter()
            model_dir = build_chat_model(source, models_dir, "q4f32", link_mode=link_mode, log=lines.append)
            results[f"{name}_seconds"] = time.perf_counter() - started
            results[f"{name}_reused_library"] = any(REUSED in line for line in lines)
            log(f"{name} build: {results[f'{name}_seconds']:.1f} s "
                f"(libraries {'reused' if results[f'{name}_reused_library'] else 'compiled'})")
        assert model_dir is not None
        return results, model_dir
    finally:
        if previous is None:
            os.environ.pop("WEBKILN_CACHE_DIR", None)
        else:
            os.environ["WEBKILN_CACHE_DIR"] = previous
        shutil.rmtree(cache, ignore_errors=True)


def add_wllama(site: Path, gguf: Path) -> dict:
    """wllama's wasm and the GGUF in `site`/bench/ (the temporary benchmark site only)."""
    if not WLLAMA_WASM.is_file() or not (site / WLLAMA_SCRIPTS[0]).is_file():
        raise BenchError(f"wllama is not installed ({WLLAMA_WASM} or the bench-wllama bundle is missing): "
                         "run `cd web && npm ci` (it is a dev dependency of web/)")
    folder = site / BENCH_DIR
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(WLLAMA_WASM, folder / "wllama.wasm")
    target = folder / "model.gguf"
    try:
        os.link(gguf, target)  # the same bytes without a 100 MB copy where the filesystem allows
    except OSError:
        shutil.copyfile(gguf, target)
    version = json.loads((WLLAMA_PACKAGE / "package.json").read_text())["version"]
    return {"package": f"@wllama/wllama@{version}", "wasm_bytes": WLLAMA_WASM.stat().st_size,
            "gguf": gguf.name, "gguf_bytes": gguf.stat().st_size}


# --- the browser engines ----------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    short: list[int]
    text: str  # ids as text (wllama)
    short_text: str


# wasm-cpu rows run in a Worker (the only place its threads run), with the thread count asked
# for; the WebGPU row on the page, as the app's in-page engine would.
_WEBKILN_RUN_JS = """async ([manifest, backend, threads, short, prompt, decode]) => {
  const chat = threads === null ? window.webkilnChat : window.webkilnChat.worker();
  const loaded = await chat.load(manifest, backend, threads ?? undefined);
  // First token: a short prompt right after the warm load (also warms the kernels).
  const first = await chat.generate(short, {maxTokens: 2, temperature: 0, stopTokenIds: []});
  chat.reset();
  const started = performance.now();
  const run = await chat.generate(prompt, {maxTokens: decode, temperature: 0, stopTokenIds: []});
  const wallMillis = performance.now() - started;
  chat.terminate?.();
  return {loaded, isolated: self.crossOriginIsolated,
          first: {prefillMillis: first.prefillMillis, prefilledTokens: first.prefilledTokens},
          run: {prefillMillis: run.prefillMillis, decodeMillis: run.decodeMillis, wallMillis,
                prefilledTokens: run.prefilledTokens, tokens: run.tokens, text: run.text}};
}"""

_WLLAMA_RUN_JS = """async ([options, short, prompt, decode]) => {
  const w = window.wllamaBench;
  const loaded = await w.load(options);
  const first = await w.generate(short, 2);
  const run = await w.generate(prompt, decode);
  await w.exit();
  return {loaded, first, run};
}"""


_WEBKILN_LOAD_JS = """async ([manifest, backend, threads]) => {
  const chat = threads === null ? window.webkilnChat : window.webkilnChat.worker();
  const loaded = await chat.load(manifest, backend, threads ?? undefined);
  chat.terminate?.();
  return loaded;
}"""


def _webkiln_load(browser: ChromiumProfile, manifest: str, backend: str, threads: int | None, isolated: bool) -> dict:
    page = browser.page(isolated=isolated)
    try:
        return page.evaluate(_WEBKILN_LOAD_JS, [manifest, backend, threads])
    finally:
        page.close()


def _webkiln_run(browser: ChromiumProfile, manifest: str, backend: str, threads: int | None, isolated: bool,
                 prompt: Prompt, decode_tokens: int) -> dict:
    page = browser.page(isolated=isolated)
    try:
        got = page.evaluate(_WEBKILN_RUN_JS, [manifest, backend, threads, prompt.short, prompt.ids, decode_tokens])
    finally:
        page.close()
    run, loaded = got["run"], got["loaded"]
    if run["prefilledTokens"] != len(prompt.ids):
        raise RuntimeError(f"webkiln prefilled {run['prefilledTokens']} tokens, not {len(prompt.ids)}")
    forwards = len(run["tokens"]) - 1  # after the first token, which the prefill's logits give
    return {
        "backend": loaded["backend"],
        "backend_reason": loaded.get("backendReason"),
        "threads_used": loaded.get("threads"),  # the CPU's, as the engine reports them (None on WebGPU)
        "cross_origin_isolated_page": got["isolated"],
        "load_warm_seconds": loaded["millis"] / 1000,
        "first_token_warm_seconds": (loaded["millis"] + got["first"]["prefillMillis"]) / 1000,
        "prefill_seconds": run["prefillMillis"] / 1000,
        "prefill_tok_s": len(prompt.ids) / (run["prefillMillis"] / 1000),
        "decode_forwards": forwards,
        "decode_seconds": run["decodeMillis"] / 1000,
        "decode_tok_s": forwards / (run["decodeMillis"] / 1000) if forwards else None,
        "wall_seconds": run["wallMillis"] / 1000,
        "tokens": run["tokens"],
        "text": run["text"],
    }


def _wllama_options(threads: int, settings: BenchSettings) -> dict:
    return {"modelUrl": f"{BENCH_DIR}/model.gguf", "wasmUrl": f"{BENCH_DIR}/wllama.wasm", "threads": threads,
            "contextTokens": settings.prompt_tokens + settings.decode_tokens + 8}


def _wllama_load(browser: ChromiumProfile, threads: int, settings: BenchSettings, isolated: bool) -> dict:
    page = browser.page(isolated=isolated, scripts=WLLAMA_SCRIPTS, ready=WLLAMA_READY)
    try:
        loaded = page.evaluate("async (o) => { const r = await window.wllamaBench.load(o); "
                               "await window.wllamaBench.exit(); return r; }", _wllama_options(threads, settings))
    finally:
        page.close()
    return loaded


def _wllama_run(browser: ChromiumProfile, threads: int, settings: BenchSettings, isolated: bool,
                prompt: Prompt) -> dict:
    page = browser.page(isolated=isolated, scripts=WLLAMA_SCRIPTS, ready=WLLAMA_READY)
    try:
        got = page.evaluate(_WLLAMA_RUN_JS, [_wllama_options(threads, settings), prompt.short_text, prompt.text,
                                             settings.decode_tokens])
    finally:
        page.close()
    loaded, first, run = got["loaded"], got["first"]["timings"], got["run"]["timings"]
    # The prompt llama.cpp evaluated is the benchmark's, all of it, afresh.
    for timings, expected in ((first, len(prompt.short)), (run, len(prompt.ids))):
        if timings["prompt_n"] != expected or timings["cache_n"] != 0:
            raise RuntimeError(f"wllama evaluated {timings['prompt_n']} prompt tokens ({timings['cache_n']} from "
                               f"its cache), not {expected} afresh: the text prompt did not tokenize as webkiln's ids")
    if run["predicted_n"] != settings.decode_tokens:
        raise RuntimeError(f"wllama generated {run['predicted_n']} tokens, not {settings.decode_tokens}")
    # llama.cpp times token generation from the first sampled token on, so predicted_ms covers
    # predicted_n - 1 forwards (its predicted_per_second is exactly that ratio).
    forwards = run["predicted_n"] - 1
    return {
        "backend": "wllama (llama.cpp wasm, CPU)",
        "libllama": loaded["libllama"],
        "threads_used": loaded["threads"],
        "multithread": loaded["multithread"],
        "cross_origin_isolated_page": loaded["crossOriginIsolated"],
        "load_warm_seconds": loaded["millis"] / 1000,
        "first_token_warm_seconds": (loaded["millis"] + first["prompt_ms"]) / 1000,
        "prefill_seconds": run["prompt_ms"] / 1000,
        "prefill_tok_s": len(prompt.ids) / (run["prompt_ms"] / 1000),
        "decode_forwards": forwards,
        "decode_seconds": run["predicted_ms"] / 1000,
        "decode_tok_s": forwards / (run["predicted_ms"] / 1000) if forwards else None,
        "wall_seconds": got["run"]["wallMillis"] / 1000,
        "text": got["run"]["text"],
    }


@dataclass
class Row:
    engine: str  # webkiln, wllama, native
    backend: str  # wasm-cpu, webgpu, wllama, native
    threads: int | None  # requested (None: CPU threads do not apply, WebGPU)
    isolated: bool
    runs: list[dict]
    load_cold_seconds: float | None = None

    @property
    def label(self) -> str:
        return {"wasm-cpu": "webkiln wasm-cpu", "webgpu": "webkiln WebGPU", "wllama": "wllama 3.x (wasm)",
                "native": "webkiln native (TVM)"}[self.backend]

    def threads_note(self) -> str:
        if self.threads is None:
            return "n/a (WebGPU)"
        used = {r.get("threads_used") for r in self.runs}
        if len(used) == 1:
            only = used.pop()
            return str(only) if only == self.threads else f"{only} (asked {self.threads})"
        return f"{sorted(u for u in used if u is not None)} (asked {self.threads})"

    def to_json(self) -> dict:
        keys = ("load_warm_seconds", "first_token_warm_seconds", "prefill_tok_s", "prefill_seconds",
                "decode_tok_s", "decode_seconds", "wall_seconds")
        first = self.runs[0]
        return {
            "engine": self.engine, "backend": self.backend, "label": self.label,
            "threads_requested": self.threads, "threads": self.threads_note(),
            "cross_origin_isolated": self.isolated if self.engine != "native" else None,
            "load_cold_seconds": self.load_cold_seconds,
            "median": {k: median([r.get(k) for r in self.runs]) for k in keys},
            # The fastest run: what the engine does when nothing else got in its way.
            "best": {k: (max if k.endswith("tok_s") else min)(vals) if (vals := [r[k] for r in self.runs if r.get(k)])
                     else None for k in keys},
            "runs": [{k: v for k, v in r.items() if k not in ("tokens", "text")} for r in self.runs],
            "decode_forwards": first["decode_forwards"],
            "tokens": first.get("tokens"),
            "text": first.get("text"),
            "same_output_every_run": all(r.get("text") == first.get("text") and r.get("tokens") == first.get("tokens")
                                         for r in self.runs),
            **{k: first[k] for k in ("backend_reason", "libllama", "multithread") if k in first},
        }


def bench_browser(site: Path, model_dir: Path, prompt: Prompt, settings: BenchSettings,
                  executable: str) -> tuple[dict, list[Row]]:
    manifest = f"models/{model_dir.name}/manifest.json"
    backends = set(settings.backends)
    rows: list[Row] = []
    for threads in settings.threads:
        isolated = threads > 1
        if "wasm-cpu" in backends:
            rows.append(Row("webkiln", "wasm-cpu", threads, isolated, []))
        if "wllama" in backends:
            rows.append(Row("wllama", "wllama", threads, isolated, []))
    if "webgpu" in backends:
        rows.append(Row("webkiln", "webgpu", None, False, []))
    if not rows:
        return {}, []

    with chromium(site, executable, "webkiln-bench-profile-", isolated=any(r.isolated for r in rows)) as browser:
        page = browser.page()
        facts = {"user_agent": page.evaluate("navigator.userAgent"), "adapter": page.evaluate(ADAPTER_JS),
                 "hardware_concurrency": page.evaluate("navigator.hardwareConcurrency")}
        page.close()
        # Cold loads: each engine's first load on each origin fills that origin's storage.
        for row in rows:
            log(f"{row.label}, {row.threads or '-'} thread(s): cold load...")
            if row.engine == "wllama":
                loaded = _wllama_load(browser, row.threads or 1, settings, row.isolated)
            else:
                loaded = _webkiln_load(browser, manifest, _library(row.backend), row.threads, row.isolated)
            row.load_cold_seconds = loaded["millis"] / 1000
        # Runs interleaved (run 1 of every row, then run 2, ...): on a shared machine a busy
        # spell then slows every engine alike instead of one row.
        for index in range(settings.runs):
            for row in rows:
                log(f"run {index + 1}/{settings.runs}: {row.label}, {row.threads or '-'} thread(s), "
                    f"{'isolated' if row.isolated else 'plain'} page: warm load, prefill {len(prompt.ids)}, "
                    f"decode {settings.decode_tokens}...")
                busy = os.getloadavg()[0]
                if row.engine == "wllama":
                    result = _wllama_run(browser, row.threads or 1, settings, row.isolated, prompt)
                else:
                    result = _webkiln_run(browser, manifest, _library(row.backend), row.threads, row.isolated,
                                          prompt, settings.decode_tokens)
                # How busy the machine was: another job's threads preempt a thread pool that
                # waits at barriers (llama.cpp's), which shows at 2 threads on 2 cores first.
                result["load_average_1min_before"] = busy
                log(f"  prefill {result['prefill_tok_s']:.2f} tok/s, decode {fmt(result['decode_tok_s'])} tok/s, "
                    f"warm load {result['load_warm_seconds']:.2f} s")
                row.runs.append(result)
        browser.check()
    return facts, rows


def _library(backend: str) -> str:
    return WEBGPU_LIBRARY if backend == "webgpu" else backend


# --- native -----------------------------------------------------------------------------


def _set_native_threads(threads: int) -> int:
    """TVM's CPU thread pool resized to `threads`; returns the size it took (TVM caps it at
    TVM_NUM_THREADS, or at what it detects, read once: run_bench sets that first)."""
    import tvm

    tvm.get_global_func("runtime.config_threadpool")(1, threads)  # 1: all (big) cores
    return int(tvm.runtime.num_threads())


def bench_native(source: ModelSource, prompt: Prompt, settings: BenchSettings) -> tuple[dict, list[Row]]:
    from .compile.build import build_module
    from .compile.native import NativeLM
    from .compile.targets import get_target
    from .models.llm import export
    from .quant.convert import convert_params, plan_weights
    from .quant.schemes import get_scheme

    scheme = get_scheme("q4f32")
    plan = plan_weights(source, scheme, notice=lambda _: None)
    ids = prompt.ids
    rows = [Row("native", "native", threads, False, []) for threads in settings.threads]
    with tempfile.TemporaryDirectory(prefix="webkiln-bench-native-") as tmp:
        started = time.perf_counter()
        mod, spec = export(source.config, plan, scheme.activation_dtype,
                           get_target("native-cpu").tvm_target(), DEFAULT_PREFILL_CHUNK)
        lib = build_module(mod, "native-cpu", Path(tmp) / "model.so")
        compile_seconds = time.perf_counter() - started
        log(f"native compile: {compile_seconds:.1f} s")
        params = [array for _, array in convert_params(source, plan, scheme.activation_dtype, spec)]
        lm = NativeLM(lib, params, DEFAULT_CONTEXT, DEFAULT_PREFILL_CHUNK)
        for index in range(settings.runs):
            for row in rows:
                assert row.threads is not None
                used = _set_native_threads(row.threads)
                busy = os.getloadavg()[0]
                lm.reset()
                lm.prefill(ids[:2])  # warm-up (first calls allocate workspaces)
                lm.decode(ids[2])
                lm.reset()
                started = time.perf_counter()
                logits = lm.prefill(ids)
                prefill_seconds = time.perf_counter() - started
                tokens = [int(np.argmax(logits))]
                started = time.perf_counter()
                while len(tokens) < settings.decode_tokens:
                    tokens.append(int(np.argmax(lm.decode(tokens[-1]))))
                decode_seconds = time.perf_counter() - started
                forwards = len(tokens) - 1
                row.runs.append({
                    "threads_used": used, "load_average_1min_before": busy,
                    "prefill_seconds": prefill_seconds, "prefill_tok_s": len(ids) / prefill_seconds,
                    "decode_forwards": forwards, "decode_seconds": decode_seconds,
                    "decode_tok_s": forwards / decode_seconds if forwards else None,
                    "tokens": tokens,
                })
                log(f"run {index + 1}/{settings.runs}: native, {row.threads} thread(s): prefill "
                    f"{len(ids) / prefill_seconds:.2f} tok/s, decode {fmt(row.runs[-1]['decode_tok_s'])} tok/s")
    _set_native_threads(1)
    return {"compile_seconds": compile_seconds}, rows


# --- report --------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def ratios(rows: list[dict]) -> list[dict]:
    """webkiln wasm-cpu / wllama at each thread count: rates (>1: webkiln faster) and load time (<1: faster)."""
    out = []
    for webkiln in (r for r in rows if r["backend"] == "wasm-cpu"):
        wllama = next((r for r in rows if r["backend"] == "wllama"
                       and r["threads_requested"] == webkiln["threads_requested"]), None)
        if wllama is None:
            continue
        a, b = webkiln["median"], wllama["median"]
        out.append({
            "threads": webkiln["threads_requested"],
            "webkiln_threads": webkiln["threads"], "wllama_threads": wllama["threads"],
            "decode": _ratio(a["decode_tok_s"], b["decode_tok_s"]),
            "prefill": _ratio(a["prefill_tok_s"], b["prefill_tok_s"]),
            "load_warm": _ratio(a["load_warm_seconds"], b["load_warm_seconds"]),
            "first_token_warm": _ratio(a["first_token_warm_seconds"], b["first_token_warm_seconds"]),
        })
    return out


def agreement(rows: list[dict], tokenizer_json: str) -> dict:
    """Whether each row generated the reference's greedy continuation (the reference: the first row
    with token ids, webkiln or native), and for how many tokens. wllama gives text only: its ids
    are the text encoded again with the model's tokenizer (equal to what it sampled unless a
    token boundary was ambiguous)."""
    tokenizer = Tokenizer.from_str(tokenizer_json)
    reference = next((r for r in rows if r["tokens"] is not None), None)
    out: dict[str, Any] = {"reference": None if reference is None else
                           f"{reference['backend']}@{reference['threads_requested']}", "rows": {}}
    for row in rows:
        key = f"{row['backend']}@{row['threads_requested']}"
        ids = row["tokens"] if row["tokens"] is not None else tokenizer.encode(row["text"], add_special_tokens=False).ids
        entry: dict[str, Any] = {"ids_from": "engine" if row["tokens"] is not None else "text re-encoded",
                                 "same_output_every_run": row["same_output_every_run"]}
        if reference is not None:
            ref = reference["tokens"]
            prefix = next((i for i, (a, b) in enumerate(zip(ids, ref)) if a != b), min(len(ids), len(ref)))
            entry.update(same_as_reference=ids == ref, matching_prefix_tokens=prefix, of=len(ref))
        out["rows"][key] = entry
    out["all_same"] = all(e.get("same_as_reference", True) for e in out["rows"].values())
    return out


def table(results: dict) -> str:
    """The results as markdown: a row per engine and thread count, then the ratios."""
    s = results["settings"]
    lines = [
        f"{s['prompt_tokens']}-token prompt, {s['decode_tokens']} greedy tokens, median of {s['runs']} runs; "
        f"first token: warm load + {s['first_token_prompt_tokens']}-token prefill; "
        f"decode counts the {s['decode_tokens'] - 1} forwards after the first token; (best: the fastest run)",
        "",
        "| engine | threads | prefill tok/s | decode tok/s | load warm | load cold | first token warm |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    def rate(row: dict, key: str) -> str:
        if s["runs"] == 1:
            return fmt(row["median"][key])
        return f"{fmt(row['median'][key])} (best {fmt(row['best'][key])})"

    for r in results["rows"]:
        m = r["median"]
        lines.append(f"| {r['label']} | {r['threads']} | {rate(r, 'prefill_tok_s')} | {rate(r, 'decode_tok_s')} | "
                     f"{fmt(m['load_warm_seconds'], ' s')} | {fmt(r['load_cold_seconds'], ' s')} | "
                     f"{fmt(m['first_token_warm_seconds'], ' s')} |")
    if results["ratios"]:
        lines += ["", "| webkiln wasm-cpu / wllama | decode | prefill | load warm (<1: faster) | first token warm |",
                  "|---|---:|---:|---:|---:|"]
        for q in results["ratios"]:
            lines.append(f"| {q['threads']} thread(s) (webkiln: {q['webkiln_threads']}) | {fmt(q['decode'])} | "
                         f"{fmt(q['prefill'])} | {fmt(q['load_warm'])} | {fmt(q['first_token_warm'])} |")
    b = results["build"]
    if b.get("timed"):
        lines += ["", f"first build {fmt(b['first_seconds'], ' s')} (libraries "
                      f"{'reused' if b['first_reused_library'] else 'compiled'}, {b['link']} link); weights-only "
                      f"rebuild {fmt(b['rebuild_seconds'], ' s')} (libraries "
                      f"{'reused' if b['rebuild_reused_library'] else 'compiled'})"]
    a = results["agreement"]
    if a["reference"] is not None:
        differ = [f"{k} agrees for {e['matching_prefix_tokens']} of {e['of']} tokens"
                  for k, e in a["rows"].items() if not e["same_as_reference"]]
        lines += ["", f"greedy tokens as {a['reference']}: " + ("every row" if not differ else "; ".join(differ))]
    return "\n".join(lines)


def run_bench(out: str | Path, settings: BenchSettings = BenchSettings(), executable: str = CHROMIUM,
              gguf: Path | None = None) -> dict:
    """`gguf`: the model file (default: the default model), built with q4f32 and given to wllama as is."""
    settings.check()
    # Before anything starts TVM's thread pool: it reads its cap once (native rows resize it).
    os.environ.setdefault("TVM_NUM_THREADS", str(max(settings.threads)))
    started = time.perf_counter()
    facts = machine_facts(executable)
    gguf = gguf or fetch_default_model()
    source = load_source(gguf)
    prompt = bench_prompt(source.tokenizer_json, settings.prompt_tokens, settings.ttft_tokens)
    ids = prompt.ids
    browser_backends = {"wasm-cpu", "webgpu", "wllama"} & set(settings.backends)

    build: dict[str, Any] = {"link": "none", "timed": False}
    model: dict[str, Any] = {"source": f"{source.name} GGUF", "gguf": gguf.name,
                             "gguf_bytes": gguf.stat().st_size, "quantization": "q4f32",
                             "context_window": DEFAULT_CONTEXT, "prefill_chunk": DEFAULT_PREFILL_CHUNK}
    browser_facts: dict[str, Any] = {}
    wllama: dict[str, Any] | None = None
    rows: list[Row] = []
    if browser_backends:
        with tempfile.TemporaryDirectory(prefix="webkiln-bench-site-") as tmp:
            site = assemble_site(Path(tmp) / "site")
            if "wllama" in browser_backends:
                wllama = add_wllama(site, gguf)
            if browser_backends - {"wllama"}:
                link = LinkMode.RELEASE if settings.release else LinkMode.FAST
                build, model_dir = bench_build(source, site / "models", link, settings.build)
                manifest = json.loads((model_dir / "manifest.json").read_text())
                for backend in {_library(b) for b in browser_backends - {"wllama"}}:
                    if backend not in manifest["backends"]:
                        raise BenchError(f"the built model has no {backend} backend (it has "
                                         f"{', '.join(manifest['backends'])})")
                # The build may cap the context (a sliding window, LongRoPE's original context).
                if settings.prompt_tokens + settings.decode_tokens > manifest["context_window"]:
                    raise BenchError(f"--prompt-tokens + --decode-tokens must fit {model_dir.name}'s context window "
                                     f"({manifest['context_window']} tokens)")
                model.update(id=model_dir.name, weights_bytes=manifest["memory"]["weights_bytes"],
                             context_window=manifest["context_window"],
                             wasm_bytes={p.name: p.stat().st_size for p in sorted(model_dir.glob("*.wasm"))})
            else:
                model_dir = Path("unused")
            browser_facts, browser_rows = bench_browser(site, model_dir, prompt, settings, executable)
            rows += browser_rows
    native_facts: dict[str, Any] = {}
    if "native" in settings.backends:
        native_facts, native_rows = bench_native(source, prompt, settings)
        rows += native_rows

    row_json = [r.to_json() for r in rows]
    results = {
        "machine": {**facts, "browser": browser_facts},
        "model": model,
        "wllama": wllama,
        "settings": {"prompt_tokens": settings.prompt_tokens, "decode_tokens": settings.decode_tokens,
                     "first_token_prompt_tokens": settings.ttft_tokens, "runs": settings.runs,
                     "threads": list(settings.threads), "backends": list(settings.backends),
                     "release_link": settings.release, "prompt_ids": ids},
        "build": build,
        "native": native_facts,
        "rows": row_json,
        "ratios": ratios(row_json),
        "agreement": agreement(row_json, source.tokenizer_json),
        "total_seconds": time.perf_counter() - started,
        "load_average_at_end": os.getloadavg(),
    }
    Path(out).write_text(json.dumps(results, indent=2) + "\n")
    return results

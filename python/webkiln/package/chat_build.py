"""`build_web --model <chat model>`: source -> site/models/<id>/ (manifest, shards,
tokenizer, wasm), written atomically (publish.py). Its format is documented in
docs/FORMAT.md; manifest.json (manifest.py) is the single description of a built model."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from .. import __version__
from ..compile.build import build_module
from ..compile.cache import threads_library
from ..compile.targets import get_target
from ..models import llm
from ..quant.convert import convert_params, plan_weights
from ..quant.schemes import get_scheme
from ..model_source import LlmConfig, ModelSource
from ..toolchain.link import LinkMode
from .manifest import (
    MANIFEST_FORMAT,
    BackendEntry,
    ChatGenerationDefaults,
    ChatManifest,
    ChatMemory,
    ChatTensors,
    KvCache,
    QuantizationQuality,
    SourceInfo,
    TensorRecord,
)
from .progress import Progress
from .quality import measure_quality
from .publish import check_model_id, default_model_id, folder_files, publish, stage_library, staging_folder, write_manifest
from .shards import write_shards

PAGE_SIZE = 16
DEFAULT_CONTEXT = 2048
DEFAULT_PREFILL_CHUNK = 512
# Sampling defaults of every chat model; a source's generation_config overrides them.
GENERATION_DEFAULTS = {"temperature": 0.7, "top_p": 0.95, "max_tokens": 512}


def build_chat_model(
    source: ModelSource,
    out_root: str | Path,
    quantization: str = "q4f32",
    model_id: str | None = None,
    context_window: int = DEFAULT_CONTEXT,
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
    link_mode: LinkMode = LinkMode.RELEASE,
    log: Callable[[str], None] = print,
    cpu: bool = True,
) -> Path:
    """`cpu`: also build the wasm-cpu library (WebAssembly SIMD: runs without WebGPU)."""
    scheme = get_scheme(quantization)
    cfg = source.config
    model_id = check_model_id(model_id or default_model_id(source, scheme.name))
    context_window = context_window_for(cfg, context_window, log)
    out_root = Path(out_root)
    backends = chat_backends(scheme.activation_dtype, cpu)
    progress = Progress(5 + len(backends), log)

    progress.stage(f"planning weights for {scheme.name}")
    plan = plan_weights(source, scheme, notice=log)
    progress.done()

    with staging_folder(out_root, model_id) as staging:
        params_spec: list[tuple[str, tuple, str]] = []
        for backend in backends:
            progress.stage(f"compiling {backend.name} library")
            spec = get_target(backend.target)
            # "params" in the key: entries carry the parameter list (older ones did not).
            parts = {"target": spec.name, "config": dataclasses.asdict(cfg), "plan": plan.formats,
                     "dtype": backend.dtype, "prefill_chunk": prefill_chunk, "link": link_mode.value,
                     "info": "params"}
            threaded = backend.target == "wasm-cpu"
            if threaded:
                parts["threads"] = True  # entries carry the threaded variant (older ones did not)

            def build(path: Path, dtype=backend.dtype, spec=spec, threaded=threaded) -> list:
                # Exported only on a cache miss: exporting SmolLM2 takes ~6 s, most of a
                # weights-only rebuild. (Called through the module so a test can check that.)
                mod, params = llm.export(cfg, plan, dtype, spec.tvm_target(), prefill_chunk)
                build_module(mod, spec.name, path, link_mode, threads_library(path) if threaded else None)
                return params

            params = [(n, tuple(shape), dt) for n, shape, dt in
                      stage_library(parts, build, staging, backend.name, progress)]
            if params_spec and params != params_spec:  # one set of shards serves every backend
                raise RuntimeError(f"the {backend.name} library takes other parameters than {backends[0].name}")
            params_spec = params  # (JSON gave the shapes as lists)

        progress.stage("converting weights and writing shards")
        stored: dict = {}

        def keep(params):  # the converted arrays, kept for the quality check below
            for name, array in params:
                stored[name] = array
                yield name, array

        records, shards = write_shards(keep(convert_params(source, plan, scheme.activation_dtype, params_spec)),
                                       staging)
        weight_bytes = sum(s["size"] for s in shards)
        progress.done(f"{len(shards)} shards, {weight_bytes / 2**20:.1f} MiB")

        progress.stage("measuring quantization quality against the source weights")
        quality = QuantizationQuality(**measure_quality(source, plan, stored))
        stored.clear()  # the converted arrays are not needed past the quality check
        progress.done(f"top-1 agreement {quality.top1_agreement:.1%}, mean KL {quality.mean_kl:.4f} nats "
                      f"over {quality.text_tokens} tokens ({quality.reference})")

        progress.stage("writing tokenizer and manifest")
        (staging / "tokenizer.json").write_text(source.tokenizer_json)
        largest = _largest_binding(cfg, records, context_window, prefill_chunk, scheme.activation_dtype)
        kv_bytes = _kv_cache_bytes(cfg, context_window, scheme.activation_dtype)
        activation_bytes = _activation_bytes(cfg, prefill_chunk, scheme.activation_dtype)
        # A CPU backend loads either of its two links: the larger counts against the heap.
        library_bytes = {b.name: max(p.stat().st_size for p in (staging / f"{b.name}.wasm", staging / f"{b.name}-threads.wasm")
                                     if p.exists())
                         for b in backends}
        generation = {**GENERATION_DEFAULTS, **source.generation_defaults}
        manifest = ChatManifest(
            format=MANIFEST_FORMAT,
            webkiln_version=__version__,
            id=model_id,
            task="chat",
            name=source.name,
            architecture=cfg.architecture,
            config=cfg,
            quantization=scheme.name,
            activation_dtype=scheme.activation_dtype,
            source=SourceInfo(source.kind, os.path.basename(source.origin.rstrip("/"))),
            context_window=context_window,
            prefill_chunk_size=prefill_chunk,
            kv_cache=KvCache(PAGE_SIZE, scheme.activation_dtype),
            chat_template=source.chat_template,
            bos_token_id=source.bos_token_id,
            stop_token_ids=source.eos_token_ids,
            generation=ChatGenerationDefaults(
                generation.pop("temperature"), generation.pop("top_p"), generation.pop("max_tokens"), generation),
            backends={b.name: _backend_entry(b, cfg, weight_bytes, largest, context_window, prefill_chunk,
                                             library_bytes[b.name])
                      for b in backends},
            memory=ChatMemory(weight_bytes, kv_bytes, activation_bytes, weight_bytes + kv_bytes + activation_bytes),
            tensors=ChatTensors([s["path"] for s in shards], [TensorRecord.from_json(r) for r in records]),
            files=folder_files(staging),
            weight_formats=dict(plan.formats),
            quality=quality,
        )
        write_manifest(staging, manifest)
        progress.done()

        final = publish(staging, out_root, model_id)
    progress.finished(model_id, final)
    return final


@dataclasses.dataclass(frozen=True)
class ChatBackend:
    name: str  # the manifest's key and the library's file stem
    target: str  # compile/targets.py
    dtype: str  # activation dtype of the library


def chat_backends(activation_dtype: str, cpu: bool) -> list[ChatBackend]:
    """The libraries a chat build compiles. Weights are stored the same way whatever the
    activation dtype (f32 scales; q0f16's f16 values packed in uint32), so one set of shards
    serves an f32 library (any WebGPU device), an f16 one (shader-f16) and the CPU one (f32:
    WebAssembly SIMD has no f16 arithmetic)."""
    backends = [ChatBackend("webgpu-f32", "webgpu", "float32")]
    if activation_dtype == "float16":
        backends.append(ChatBackend("webgpu-f16", "webgpu", "float16"))
    if cpu:
        backends.append(ChatBackend("wasm-cpu", "wasm-cpu", "float32"))
    return backends


# The wasm heap holds more than the model: the runtime's own allocations, the VM's workspace
# pool and the tokenizer. An allowance for those (the manifest's estimate feeds the check
# against wasm32's 4 GiB before download, so erring high refuses early rather than late).
CPU_HEAP_OVERHEAD = 64 * 2**20


def context_window_for(cfg: LlmConfig, asked: int, log: Callable[[str], None] = print) -> int:
    """The context window a build gets: at most the model's trained context and, where layers
    slide (Gemma 3, Mistral 7B v0.1), at most their window: those layers are computed as full
    attention (models/llm.py), which is the same while every key is inside the window."""
    context = min(asked, cfg.context_length)
    scaling = cfg.rope_scaling or {}
    if scaling.get("rope_type") == "longrope" and context > scaling["original_max_position_embeddings"]:
        original = int(scaling["original_max_position_embeddings"])
        log(f"[webkiln] notice: the context window is {original} tokens, the model's original context "
            f"(not {context}): webkiln applies LongRoPE's short factors only, which transformers uses up to it")
        context = original
    if cfg.layer_types and "sliding_attention" in cfg.layer_types and context > (cfg.sliding_window or 0):
        log(f"[webkiln] notice: the context window is {cfg.sliding_window} tokens, the sliding-window "
            f"layers' window (not {context}): webkiln does not limit attention to a window yet, "
            "and within one it needs no limit")
        context = int(cfg.sliding_window or 0)
    return context


def _backend_entry(b: ChatBackend, cfg: LlmConfig, weight_bytes: int, largest: int, context: int, chunk: int,
                   library_bytes: int) -> BackendEntry:
    memory = weight_bytes + _kv_cache_bytes(cfg, context, b.dtype) + _activation_bytes(cfg, chunk, b.dtype)
    if b.target == "wasm-cpu":
        # The whole model lives in one wasm32 memory: the library's own data and the
        # runtime's allocations count too.
        return BackendEntry(f"{b.name}.wasm", "cpu", [], {}, memory + library_bytes + CPU_HEAP_OVERHEAD,
                            threads_wasm=f"{b.name}-threads.wasm")
    return BackendEntry(f"{b.name}.wasm", "webgpu", ["shader-f16"] if b.dtype == "float16" else [],
                        {"maxStorageBufferBindingSize": largest, "maxBufferSize": largest}, memory)


def _dtype_bytes(dtype: str) -> int:
    return 2 if dtype == "float16" else 4


def _kv_cache_bytes(cfg: LlmConfig, context: int, dtype: str) -> int:
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * context * _dtype_bytes(dtype)


def _activation_bytes(cfg: LlmConfig, chunk: int, dtype: str) -> int:
    # Largest simultaneous intermediates of a prefill chunk: the fused gate/up output,
    # the hidden state and residual, the qkv projection, plus f32 logits of one token.
    b = _dtype_bytes(dtype)
    qkv = (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * cfg.head_dim
    return chunk * (2 * cfg.intermediate_size + 3 * cfg.hidden_size + qkv) * b + cfg.vocab_size * 4


def _largest_binding(cfg: LlmConfig, records: list[dict], context: int, chunk: int, dtype: str) -> int:
    """Largest single buffer a kernel binds: a weight tensor, one layer's KV pages,
    or the biggest activation of a prefill chunk."""
    b = _dtype_bytes(dtype)
    pages = -(-context // PAGE_SIZE) + 1
    kv_layer = pages * 2 * cfg.num_key_value_heads * PAGE_SIZE * cfg.head_dim * b
    act = chunk * 2 * cfg.intermediate_size * b
    return max([r["nbytes"] for r in records] + [kv_layer, act, cfg.vocab_size * 4])

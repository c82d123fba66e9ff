"""`build_web --model`: source -> site/models/<id>/ (manifest, shards, tokenizer, wasm).

The output folder is written under a temporary name and renamed into place at
the end, so a failed build leaves nothing behind. Its format is documented in
docs/FORMAT.md; manifest.json is the single description of a built model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .. import __version__
from ..compile.cache import cached_library
from ..compile.targets import get_target
from ..hashing import sha256_file
from ..quant.convert import convert_params, plan_weights
from ..quant.schemes import get_scheme
from ..sources.base import ModelSource
from ..toolchain.link import LinkMode
from .shards import write_shards

FORMAT_VERSION = 1
PAGE_SIZE = 16
DEFAULT_CONTEXT = 2048
DEFAULT_PREFILL_CHUNK = 512


def default_model_id(source: ModelSource, quantization: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", source.name).strip("-.").lower() or "model"
    base = re.sub(r"\.(q\d_\d|q\d_k(_[sml])?|f16|f32|bf16)$", "", base)
    return f"{base}-{quantization}"


class Progress:
    def __init__(self, total: int, log: Callable[[str], None]) -> None:
        self.total, self.step, self.log, self.start = total, 0, log, time.monotonic()
        self.stage_start = self.start

    def stage(self, text: str) -> None:
        self.step += 1
        self.stage_start = time.monotonic()
        self.log(f"[{self.step}/{self.total}] {text}")

    def done(self, text: str = "") -> None:
        self.log(f"      done in {time.monotonic() - self.stage_start:.1f} s{('; ' + text) if text else ''}")


def build_chat_model(
    source: ModelSource,
    out_root: str | Path,
    quantization: str = "q4f32",
    model_id: str | None = None,
    context_window: int = DEFAULT_CONTEXT,
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
    link_mode: LinkMode = LinkMode.RELEASE,
    log: Callable[[str], None] = print,
) -> Path:
    scheme = get_scheme(quantization)
    cfg = source.config
    model_id = model_id or default_model_id(source, scheme.name)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", model_id):
        raise ValueError(f"model id '{model_id}' may only contain letters, digits, '.', '_' and '-'")
    context_window = min(context_window, cfg.context_length)
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    # Weights are stored the same way whatever the activation dtype (f32 scales; q0f16's
    # f16 values packed in uint32), so one set of shards serves an f32 library (any
    # device) and an f16 one (shader-f16).
    backends = [("webgpu-f32", "float32")]
    if scheme.activation_dtype == "float16":
        backends.append(("webgpu-f16", "float16"))
    progress = Progress(4 + len(backends), log)

    progress.stage(f"planning weights for {scheme.name}")
    plan = plan_weights(source, scheme, notice=log)
    progress.done()

    staging = Path(tempfile.mkdtemp(prefix=f".{model_id}.", dir=out_root))
    staging.chmod(0o755)  # mkdtemp makes it private; a static host must read it
    try:
        from ..models.llm import export

        backend_entries: dict[str, dict] = {}
        params_spec: list[tuple[str, tuple, str]] = []
        for name, dtype in backends:
            progress.stage(f"compiling {name} library")
            spec = get_target("webgpu")
            # "params" in the key: entries carry the parameter list (older ones did not).
            parts = {"target": spec.name, "config": dataclasses.asdict(cfg), "plan": plan.formats,
                     "dtype": dtype, "prefill_chunk": prefill_chunk, "link": link_mode.value,
                     "info": "params"}

            def build(path: Path, dtype=dtype, spec=spec) -> list:
                from ..compile.build import build_module

                # Exported only on a cache miss: exporting SmolLM2 takes ~6 s, most of a
                # weights-only rebuild.
                mod, params = export(cfg, plan, dtype, spec.tvm_target(), prefill_chunk)
                build_module(mod, spec.name, path, link_mode)
                return params

            lib, reused, params = cached_library(parts, build)
            params = [(n, tuple(shape), dt) for n, shape, dt in params]  # JSON gave lists
            if params_spec and params != params_spec:  # one set of shards serves every backend
                raise RuntimeError(f"the {name} library takes other parameters than {backends[0][0]}")
            params_spec = params
            wasm_name = f"{name}.wasm"
            shutil.copyfile(lib, staging / wasm_name)
            features = ["shader-f16"] if dtype == "float16" else []
            backend_entries[name] = {"wasm": wasm_name, "required_features": features}
            progress.done("reused from the compile cache" if reused else f"cached as {lib.name}")

        progress.stage("converting weights and writing shards")
        records, shards = write_shards(convert_params(source, plan, scheme.activation_dtype, params_spec), staging)
        weight_bytes = sum(s["size"] for s in shards)
        progress.done(f"{len(shards)} shards, {weight_bytes / 2**20:.1f} MiB")

        progress.stage("writing tokenizer and manifest")
        (staging / "tokenizer.json").write_text(source.tokenizer_json)
        largest = _largest_binding(cfg, records, context_window, prefill_chunk, scheme.activation_dtype)
        for entry in backend_entries.values():
            entry["required_limits"] = {"maxStorageBufferBindingSize": largest, "maxBufferSize": largest}
        kv_bytes = _kv_cache_bytes(cfg, context_window, scheme.activation_dtype)
        files = [{"path": p.name, "size": p.stat().st_size, "sha256": sha256_file(p)}
                 for p in sorted(staging.iterdir()) if p.is_file()]
        manifest = {
            "format": FORMAT_VERSION,
            "webkiln_version": __version__,
            "id": model_id,
            "task": "chat",
            "name": source.name,
            "architecture": cfg.architecture,
            "config": dataclasses.asdict(cfg),
            "quantization": scheme.name,
            "activation_dtype": scheme.activation_dtype,
            "source": {"kind": source.kind, "origin": os.path.basename(source.origin.rstrip("/"))},
            "context_window": context_window,
            "prefill_chunk_size": prefill_chunk,
            "kv_cache": {"page_size": PAGE_SIZE, "dtype": scheme.activation_dtype},
            "chat_template": source.chat_template,
            "bos_token_id": source.bos_token_id,
            "stop_token_ids": source.eos_token_ids,
            "generation": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 512,
                           **source.generation_defaults},
            "backends": backend_entries,
            "memory": {"weights_bytes": weight_bytes, "kv_cache_bytes": kv_bytes,
                       "activations_bytes": _activation_bytes(cfg, prefill_chunk, scheme.activation_dtype),
                       "total_bytes": weight_bytes + kv_bytes
                       + _activation_bytes(cfg, prefill_chunk, scheme.activation_dtype)},
            "tensors": {"shards": [s["path"] for s in shards], "records": records},
            "files": files,
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
        progress.done()

        final = publish(staging, out_root, model_id)
        log(f"built {model_id} in {time.monotonic() - progress.start:.1f} s -> {final}")
        return final
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _dtype_bytes(dtype: str) -> int:
    return 2 if dtype == "float16" else 4


def _kv_cache_bytes(cfg, context: int, dtype: str) -> int:
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * context * _dtype_bytes(dtype)


def _activation_bytes(cfg, chunk: int, dtype: str) -> int:
    # Largest simultaneous intermediates of a prefill chunk: the fused gate/up output,
    # the hidden state and residual, the qkv projection, plus f32 logits of one token.
    b = _dtype_bytes(dtype)
    qkv = (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * cfg.head_dim
    return chunk * (2 * cfg.intermediate_size + 3 * cfg.hidden_size + qkv) * b + cfg.vocab_size * 4


def _largest_binding(cfg, records: list[dict], context: int, chunk: int, dtype: str) -> int:
    """Largest single buffer a kernel binds: a weight tensor, one layer's KV pages,
    or the biggest activation of a prefill chunk."""
    b = _dtype_bytes(dtype)
    pages = -(-context // PAGE_SIZE) + 1
    kv_layer = pages * 2 * cfg.num_key_value_heads * PAGE_SIZE * cfg.head_dim * b
    act = chunk * 2 * cfg.intermediate_size * b
    return max([r["nbytes"] for r in records] + [kv_layer, act, cfg.vocab_size * 4])


def publish(staging: Path, out_root: Path, model_id: str) -> Path:
    """Renames a finished staging folder to `out_root/model_id` (the previous build is
    restored if that fails) and rewrites models/index.json."""
    final = out_root / model_id
    old = None
    if final.exists():
        old = out_root / f".{model_id}.old-{os.getpid()}"
        final.rename(old)
    try:
        staging.rename(final)
    except BaseException:
        if old is not None:  # put the previous build back
            old.rename(final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    write_index(out_root)
    return final


def write_index(out_root: Path) -> Path:
    """models/index.json: every built model, read by the app to list what it can load."""
    models = []
    for manifest_path in sorted(out_root.glob("*/manifest.json")):
        if manifest_path.parent.name.startswith("."):
            continue
        m = json.loads(manifest_path.read_text())
        models.append({
            "id": m["id"], "task": m["task"], "name": m["name"], "architecture": m["architecture"],
            "quantization": m["quantization"], "manifest": f"{manifest_path.parent.name}/manifest.json",
            "download_bytes": sum(f["size"] for f in m["files"]),
            "memory_bytes": m["memory"]["total_bytes"], "context_window": m.get("context_window"),
            "backends": {k: {"required_features": v["required_features"]} for k, v in m["backends"].items()},
        })
    index = out_root / "index.json"
    tmp = index.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"format": FORMAT_VERSION, "models": models}, indent=1))
    tmp.replace(index)
    return index

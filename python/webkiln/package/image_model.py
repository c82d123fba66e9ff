"""`build_web --model <diffusers folder>`: a Stable Diffusion pipeline -> site/models/<id>/.

The same format as chat models (docs/FORMAT.md, "Image models"): manifest.json with
`task: "image"`, content-addressed weight shards, tokenizer.json (CLIP BPE), and one
`.wasm` per backend holding all three entry points (`encode_text`, `unet`,
`vae_decode`), each taking its own component's parameters as one packed tuple.

Schemes (`--quantization`):
  f32  webgpu-f32 only: f32 weights and activations (any WebGPU device).
  f16  webgpu-f16 (f16 weights and activations, needs shader-f16) and webgpu-f32 (the
       f32 fallback for devices without it). The two read different weight sets
       (`tensors.float16`, `tensors.float32`); a browser downloads only its backend's.
In both, norm weights, norms, attention scores and softmax are float32 (models/diffusion/layers.py).

Buffer limits: `required_limits.maxStorageBufferBindingSize` is the largest buffer any
kernel binds, measured on the Relax graph after operator fusion (what the compiled
library allocates): weights, inputs and every intermediate, such as attention score
matrices. The build refuses a model whose largest binding exceeds `max_binding`
(default 128 MiB, WebGPU's default limit): a weight tensor over it is split by rows when
it is an embedding table (CLIP's token embedding: 49408 x 768 f32 is 144.8 MiB), any
other oversized weight or activation is an error naming the tensor.

`plan_only=True` does all of the above except compiling and converting/writing weights:
it returns the manifest (no `files`, no shard pieces) and writes nothing; that is how an
SD 1.5-sized pipeline is checked without 3.4 GB of weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..compile.cache import cached_library
from ..compile.targets import get_target
from ..hashing import sha256_file
from ..toolchain.link import LinkMode
from .model import FORMAT_VERSION, Progress, default_model_id, publish
from .shards import write_shards

MIB = 2**20
DEFAULT_MAX_BINDING = 128 * MIB  # WebGPU's default maxStorageBufferBindingSize
IMAGE_SCHEMES = {"f32": ("webgpu-f32",), "f16": ("webgpu-f32", "webgpu-f16")}
BACKEND_DTYPES = {"webgpu-f32": "float32", "webgpu-f16": "float16"}
COMPONENTS = ("text_encoder", "unet", "vae")
ENTRY_POINTS = {"text_encoder": "encode_text", "unet": "unet", "vae": "vae_decode"}
ARCHITECTURE = "stable-diffusion"
# Generation defaults: a classifier-free-guidance pipeline, and an adversarially distilled
# (SD-Turbo-like) one that samples in 1-4 steps without guidance.
STANDARD_GENERATION = {"steps": 25, "max_steps": 100, "guidance_scale": 7.5}
TURBO_GENERATION = {"steps": 1, "max_steps": 4, "guidance_scale": 0.0}
_SCHEDULER_DEFAULTS = {
    "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
    "trained_betas": None, "prediction_type": "epsilon", "timestep_spacing": "leading", "steps_offset": 0,
    "set_alpha_to_one": True, "clip_sample": False,
}
_SCHEDULER_SUPPORTED = {"beta_schedule": ("linear", "scaled_linear", "squaredcos_cap_v2"),
                        "prediction_type": ("epsilon", "v_prediction"),
                        "timestep_spacing": ("leading", "trailing", "linspace")}


class ImageBuildError(ValueError):
    """A pipeline this build cannot package as asked; the message names the tensor or field."""


# --- what to build ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImageShape:
    height: int  # image pixels
    width: int
    latent_height: int
    latent_width: int
    unet_batch: int  # 2: [unconditional, conditional] in one call; 1: no guidance in one call


def image_shape(pipeline, size: int | tuple[int, int] | None, turbo: bool) -> ImageShape:
    unet, vae = pipeline.unet.config, pipeline.vae.config
    scale = vae.upscale
    if size is None:
        size = unet.sample_size * scale
    height, width = (size, size) if isinstance(size, int) else size
    step = scale * unet.downscale
    for label, value in (("height", height), ("width", width)):
        if value <= 0 or value % step:
            raise ImageBuildError(
                f"image {label} {value} is not a positive multiple of {step} (the VAE upscales latents {scale}x "
                f"and the UNet halves them {len(unet.block_out_channels) - 1} times); pass --size as a multiple "
                f"of {step}, e.g. {max(step, round(value / step) * step)}.")
    return ImageShape(height, width, height // scale, width // scale, 1 if turbo else 2)


def is_turbo(pipeline) -> bool:
    """SD-Turbo-like: the folder or the pipeline it was saved from is named *turbo*."""
    names = [pipeline.name, str(pipeline.model_index.get("_name_or_path", "")),
             str(pipeline.unet.raw_config.get("_name_or_path", ""))]
    return any("turbo" in n.lower() for n in names)


def scheduler_config(pipeline) -> dict[str, Any]:
    raw = {k: v for k, v in pipeline.scheduler.items() if k != "_diffusers_version"}
    config = {"class": raw.pop("_class_name", None), **_SCHEDULER_DEFAULTS}
    config.update({k: v for k, v in raw.items() if v is not None or k == "trained_betas"})
    where = f"{pipeline.origin}/scheduler/scheduler_config.json"
    for field, supported in _SCHEDULER_SUPPORTED.items():
        if config[field] not in supported:
            raise ImageBuildError(f"{where}: unsupported {field} {json.dumps(config[field])}; the browser's "
                                  f"schedulers support {', '.join(json.dumps(s) for s in supported)}.")
    n = config["num_train_timesteps"]
    if not isinstance(n, int) or n <= 0:
        raise ImageBuildError(f"{where}: num_train_timesteps must be a positive integer, got {n!r}.")
    betas = config["trained_betas"]
    if betas is not None and (not isinstance(betas, list) or len(betas) != n):
        raise ImageBuildError(f"{where}: trained_betas must be null or a list of num_train_timesteps ({n}) numbers.")
    return config


# --- the Relax module ----------------------------------------------------------------------


def _split_rows(rows: int, row_bytes: int, limit: int) -> list[tuple[int, int]]:
    per = max(1, limit // row_bytes)
    return [(start, min(rows, start + per)) for start in range(0, rows, per)]


def _text_encoder_module(cfg, dtype: str, split_bytes: int):
    """The CLIP text encoder; its token embedding split into row blocks of at most `split_bytes`
    when it is larger. -> (nn.Module, {part param name: (param name, first row, end row)})."""
    from tvm import te, tirx
    from tvm.relax.frontend import nn
    from tvm.relax.frontend.nn import op

    from ..models.diffusion.clip import Table
    from ..models.diffusion.params import build

    model = build("text_encoder", cfg, dtype)
    row_bytes = cfg.hidden_size * np.dtype(dtype).itemsize
    if cfg.vocab_size * row_bytes <= split_bytes:
        return model, {}
    ranges = _split_rows(cfg.vocab_size, row_bytes, split_bytes)

    class SplitTable(nn.Module):
        def __init__(self) -> None:
            self.parts = nn.ModuleList([Table(end - start, cfg.hidden_size, dtype) for start, end in ranges])

    class SplitEmbeddings(nn.Module):
        """ClipEmbeddings whose token table is row blocks: each id reads its block."""

        def __init__(self, position_embedding) -> None:
            self.token_embedding = SplitTable()
            self.position_embedding = position_embedding

        def forward(self, input_ids):
            b, s = (int(d) for d in input_ids.shape)
            starts = [start for start, _ in ranges]

            def gather(ids, *parts):
                def value(i, j):
                    idx = ids[i]
                    out = parts[-1][idx - starts[-1], j]
                    for k in range(len(parts) - 2, -1, -1):  # lazily: only the id's block is read
                        out = tirx.if_then_else(idx < starts[k + 1], parts[k][idx - starts[k], j], out)
                    return out

                return te.compute((b * s, cfg.hidden_size), value, name="split_take")

            parts = [p.weight for p in self.token_embedding.parts]
            tokens = op.tensor_expr_op(gather, "split_take", [op.reshape(input_ids, (b * s,)), *parts])
            positions = op.reshape(self.position_embedding.weight, (1, s, cfg.hidden_size))
            return op.reshape(tokens, (b, s, cfg.hidden_size)) + positions

    model.embeddings = SplitEmbeddings(model.embeddings.position_embedding)  # same attribute slot: same order
    name = "embeddings.token_embedding.weight"
    split = {f"embeddings.token_embedding.parts.{i}.weight": (name, start, end) for i, (start, end) in enumerate(ranges)}
    return model, split


def export_components(pipeline, dtype: str, shape: ImageShape, split_bytes: int, max_binding: int | None = None):
    """-> (one IRModule with the three entry points, {component: [(name, shape, dtype)]},
    {component: {part name: (param name, first row, end row)}}).

    `max_binding` (the build's per-binding limit): the UNet's and the VAE's attentions whose
    float32 scores would exceed it are computed in query chunks (models/diffusion/layers.py,
    attention_tiles), so no kernel binds a larger score or probability tensor. None: no chunking."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    from ..models.diffusion.layers import AttentionTooLarge
    from ..models.diffusion.params import build

    @mutator
    class Rename(PyExprMutator):
        def __init__(self, mapping) -> None:
            super().__init__()
            self.mapping = mapping

        def visit_global_var_(self, gv):
            return self.mapping.get(gv.name_hint, gv)

    text_len = pipeline.text_encoder.config.max_position_embeddings
    merged = tvm.IRModule()
    specs, splits = {}, {}
    for component in COMPONENTS:
        cfg = pipeline.components[component].config
        if component == "text_encoder":
            model, splits[component] = _text_encoder_module(cfg, dtype, split_bytes)
        else:
            model = build(component, cfg, dtype, shape.latent_height, shape.latent_width, shape.unet_batch,
                          text_len, max_binding)
            splits[component] = {}
        try:
            mod, named = model.export_tvm(spec=model.spec())
        except AttentionTooLarge as e:
            raise ImageBuildError(
                f"{component}: {e} (--max-binding-mib {max_binding / MIB:g}); attention is tiled down to one query "
                "row of one head and feature maps down to one norm group. Raise --max-binding-mib or build a "
                "smaller --size.") from None
        specs[component] = [(n, tuple(int(d) for d in p.shape), str(p.dtype)) for n, p in named]
        # Helper functions (tensor_expr_op kernels) get the component as prefix: the UNet and
        # the VAE both have an `upsample_nearest2x`, of different shapes.
        mapping = {}
        for gv in mod.get_global_vars():
            if gv.name_hint != ENTRY_POINTS[component]:
                new = tvm.ir.GlobalVar(f"{component}_{gv.name_hint}")
                relax.expr._update_type(new, gv.ty)
                mapping[gv.name_hint] = new
        for gv, func in mod.functions.items():
            if isinstance(func, relax.Function):
                merged[gv] = Rename(mapping).visit_expr(func)
            else:
                new = mapping[gv.name_hint]
                merged[new] = func.with_attr("global_symbol", new.name_hint)
    relax.analysis.well_formed(merged)
    return merged, specs, splits


# --- buffer analysis -------------------------------------------------------------------------


def _tensor_bytes(ty) -> list[tuple[int, list[int], str]]:
    from tvm import relax

    if isinstance(ty, relax.TensorType):
        if ty.shape is None:
            return []
        dims = [int(d) for d in ty.shape.values]
        return [(int(np.prod(dims, dtype=np.int64)) * np.dtype(str(ty.dtype)).itemsize, dims, str(ty.dtype))]
    if isinstance(ty, relax.TupleType):
        return [t for field in ty.fields for t in _tensor_bytes(field)]
    return []


@dataclasses.dataclass
class Buffers:
    largest_bytes: int  # largest activation or input a kernel binds (weights are counted separately)
    largest: str  # what it is, for messages
    peak_bytes: int  # most activation bytes alive at once, inputs and output included


def analyze_buffers(mod, target) -> dict[str, Buffers]:
    """Per entry point: the largest intermediate and the peak of live intermediates, on the
    graph after LegalizeOps + FuseOps + FuseTIR (each binding is then one kernel's output)."""
    import tvm
    from tvm import relax

    with target:
        fused = tvm.transform.Sequential([
            relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(),
            relax.transform.FuseOps(), relax.transform.FuseTIR()])(mod)
    result = {}
    for component, entry in ENTRY_POINTS.items():
        func = fused[entry]
        params = list(func.params)
        packed = params[-1]  # the packed parameter tuple
        sizes: dict[Any, int] = {}
        largest = (0, "nothing")
        for p in params[:-1]:
            for nbytes, dims, dtype in _tensor_bytes(p.ty):
                sizes[p] = sizes.get(p, 0) + nbytes
                largest = max(largest, (nbytes, f"input '{p.name}' {dims} {dtype}"))
        bindings = [b for block in func.body.blocks for b in block.bindings]
        alias: dict[Any, Any] = {}
        last_use: dict[Any, int] = {}
        for i, b in enumerate(bindings):
            value = b.value
            for v in relax.analysis.free_vars(value):
                last_use[alias.get(v, v)] = i
            if isinstance(value, relax.TupleGetItem) and value.tuple_value.same_as(packed):
                continue  # a weight
            if isinstance(value, relax.Call) and value.op.same_as(tvm.ir.Op.get("relax.call_tir")):
                kernel = value.args[0].name_hint
            elif isinstance(value, relax.Call) and getattr(value.op, "name", "") != "relax.reshape":
                kernel = getattr(value.op, "name", "call")
            else:  # reshape, tuple access, variable: a view of an earlier tensor
                free = [v for v in relax.analysis.free_vars(value) if not v.same_as(packed)]
                if free:
                    alias[b.var] = alias.get(free[0], free[0])
                continue
            for nbytes, dims, dtype in _tensor_bytes(b.var.ty):
                sizes[b.var] = sizes.get(b.var, 0) + nbytes
                hint = " (attention scores)" if len(dims) == 4 and ("matmul" in kernel or "softmax" in kernel) and dims[-1] == dims[-2] else ""
                largest = max(largest, (nbytes, f"output of kernel '{kernel}' {dims} {dtype}{hint}"))
        for v in relax.analysis.free_vars(func.body.body):
            last_use[alias.get(v, v)] = len(bindings)
        live = sum(sizes.get(p, 0) for p in params[:-1])
        peak = live
        frees: dict[int, int] = {}
        for var, size in sizes.items():
            frees[last_use.get(var, -1)] = frees.get(last_use.get(var, -1), 0) + size
        live -= frees.get(-1, 0)
        for i, b in enumerate(bindings):
            live += sizes.get(b.var, 0)
            peak = max(peak, live)
            live -= frees.get(i, 0)
        result[component] = Buffers(largest[0], largest[1], peak)
    return result


# --- the plan ----------------------------------------------------------------------------------


@dataclasses.dataclass
class BackendPlan:
    name: str
    dtype: str
    mod: Any
    specs: dict[str, list[tuple[str, tuple[int, ...], str]]]
    splits: dict[str, dict[str, tuple[str, int, int]]]
    buffers: dict[str, Buffers]
    largest_binding: int = 0  # the backend's required maxStorageBufferBindingSize

    @property
    def weights_bytes(self) -> int:
        return sum(int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize
                   for specs in self.specs.values() for _, s, d in specs)


def _component_config(pipeline, component: str) -> dict[str, Any]:
    return dataclasses.asdict(pipeline.components[component].config)


def _check_limits(plan: BackendPlan, shape: ImageShape, max_binding: int) -> int:
    """The largest binding of the backend, or ImageBuildError naming what exceeds `max_binding`."""
    largest = 0
    for component, specs in plan.specs.items():
        for name, dims, dtype in specs:
            nbytes = int(np.prod(dims, dtype=np.int64)) * np.dtype(dtype).itemsize
            if nbytes > max_binding:
                raise ImageBuildError(
                    f"{component} weight '{name}' {list(dims)} {dtype} is {nbytes / MIB:.1f} MiB, more than the "
                    f"{max_binding / MIB:g} MiB a kernel may bind (--max-binding-mib); only embedding tables are "
                    "split into row blocks. Raise --max-binding-mib (devices that allow larger bindings) or use "
                    "--quantization f16.")
            largest = max(largest, nbytes)
        buffers = plan.buffers[component]
        if buffers.largest_bytes > max_binding:
            raise ImageBuildError(
                f"{plan.name}: the {component} {buffers.largest} is {buffers.largest_bytes / MIB:.1f} MiB at "
                f"{shape.width}x{shape.height} pixels, more than the {max_binding / MIB:g} MiB a kernel may bind "
                "(--max-binding-mib, default 128: WebGPU's default limit). Build a smaller --size, or raise "
                "--max-binding-mib for devices that allow larger bindings (desktop GPUs often allow 1-4 GiB).")
        largest = max(largest, buffers.largest_bytes)
    return largest


def _records(plan: BackendPlan) -> list[dict]:
    records = []
    for component in COMPONENTS:
        for name, dims, dtype in plan.specs[component]:
            record = {"component": component, "name": name, "shape": list(dims), "dtype": dtype,
                      "nbytes": int(np.prod(dims, dtype=np.int64)) * np.dtype(dtype).itemsize}
            if name in plan.splits[component]:
                whole, start, end = plan.splits[component][name]
                record["split"] = {"of": whole, "axis": 0, "rows": [start, end]}
            records.append(record)
    return records


def _arrays(pipeline, plan: BackendPlan) -> Iterator[tuple[str, np.ndarray]]:
    """Every parameter converted, one at a time (an SD UNet is 3.4 GB in f32), in record order."""
    from ..models.diffusion.params import Binding, convert, param_specs

    for component in COMPONENTS:
        comp = pipeline.components[component]
        full = param_specs(component, comp.config, plan.dtype)
        bindings = {b.param: Binding(b.param, b.source, b.shape, dtype)
                    for b, (_, _, dtype) in zip(comp.bindings, full, strict=True)}
        cache: dict[str, np.ndarray] = {}

        def read(name: str, bindings=bindings, comp=comp) -> np.ndarray:
            return convert([bindings[name]], lambda src: comp.tensors[src].dequantize())[0]

        for name, dims, _ in plan.specs[component]:
            if name in plan.splits[component]:
                whole, start, end = plan.splits[component][name]
                if whole not in cache:
                    cache = {whole: read(whole)}
                array = np.ascontiguousarray(cache[whole][start:end])
            else:
                array = read(name)
            assert tuple(array.shape) == tuple(dims), (component, name)
            yield f"{component}/{name}", array


def plan_image_model(pipeline, quantization: str = "f16", size: int | tuple[int, int] | None = None,
                     turbo: bool | None = None, max_binding: int = DEFAULT_MAX_BINDING,
                     split_bytes: int | None = None) -> tuple[ImageShape, bool, list[BackendPlan]]:
    if quantization not in IMAGE_SCHEMES:
        raise ImageBuildError(f"unknown image quantization '{quantization}'; image models support "
                              f"{', '.join(IMAGE_SCHEMES)} (f16 also builds the f32 fallback).")
    turbo = is_turbo(pipeline) if turbo is None else turbo
    shape = image_shape(pipeline, size, turbo)
    target = get_target("webgpu").tvm_target()
    plans = []
    for name in IMAGE_SCHEMES[quantization]:
        dtype = BACKEND_DTYPES[name]
        mod, specs, splits = export_components(pipeline, dtype, shape, split_bytes or max_binding, max_binding)
        plan = BackendPlan(name, dtype, mod, specs, splits, analyze_buffers(mod, target))
        plan.largest_binding = _check_limits(plan, shape, max_binding)  # fails before planning the next
        plans.append(plan)
    return shape, turbo, plans


def build_image_model(
    pipeline,
    out_root: str | Path,
    quantization: str = "f16",
    model_id: str | None = None,
    size: int | tuple[int, int] | None = None,
    link_mode: LinkMode = LinkMode.RELEASE,
    log: Callable[[str], None] = print,
    turbo: bool | None = None,
    max_binding: int = DEFAULT_MAX_BINDING,
    plan_only: bool = False,
    split_bytes: int | None = None,
) -> Path | dict:
    """Builds site/models/<id>/ (returns its path) or, with `plan_only`, returns the manifest it
    would write (no `files`, records without shard pieces) and writes nothing."""
    model_id = model_id or default_model_id(pipeline, quantization)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", model_id):
        raise ValueError(f"model id '{model_id}' may only contain letters, digits, '.', '_' and '-'")
    n_backends = len(IMAGE_SCHEMES.get(quantization, ()))
    progress = Progress(2 if plan_only else 2 + 2 * n_backends, log)

    progress.stage(f"exporting and planning {quantization} ({', '.join(IMAGE_SCHEMES.get(quantization, ()))})")
    scheduler = scheduler_config(pipeline)
    shape, turbo, plans = plan_image_model(pipeline, quantization, size, turbo, max_binding, split_bytes)
    largest = {plan.name: plan.largest_binding for plan in plans}
    progress.done(f"{shape.width}x{shape.height} pixels, latents {shape.latent_width}x{shape.latent_height}, "
                  f"largest binding {max(largest.values()) / MIB:.1f} MiB")

    def manifest_for(tensors: dict[str, dict], backend_files: dict[str, str], files: list[dict]) -> dict:
        tok = pipeline.tokenizer
        text, unet, vae = (pipeline.components[c].config for c in COMPONENTS)
        backends, memories = {}, {}
        for plan in plans:
            weights = plan.weights_bytes  # = the sizes of its shards, which the records tile exactly
            activations = max(b.peak_bytes for b in plan.buffers.values())
            memories[plan.name] = {"weights_bytes": weights, "activations_bytes": activations,
                                   "total_bytes": weights + activations}
            backends[plan.name] = {
                "wasm": backend_files.get(plan.name),
                "activation_dtype": plan.dtype,
                "required_features": ["shader-f16"] if plan.dtype == "float16" else [],
                "required_limits": {"maxStorageBufferBindingSize": largest[plan.name],
                                    "maxBufferSize": largest[plan.name]},
                "largest_activations": {c: {"bytes": b.largest_bytes, "what": b.largest}
                                        for c, b in plan.buffers.items()},
                "tensors": plan.dtype,
                "memory": memories[plan.name],
            }
        preferred = plans[-1].name  # webgpu-f16 where built: what a device with shader-f16 runs
        latents = [1, vae.latent_channels, shape.latent_height, shape.latent_width]
        components = {
            "text_encoder": {"entry": ENTRY_POINTS["text_encoder"], "config": _component_config(pipeline, "text_encoder"),
                             "inputs": {"input_ids": {"shape": [1, text.max_position_embeddings], "dtype": "int32"}},
                             "output": {"shape": [1, text.max_position_embeddings, text.hidden_size],
                                        "dtype": "activation"}},
            "unet": {"entry": ENTRY_POINTS["unet"], "config": _component_config(pipeline, "unet"),
                     "batch": shape.unet_batch,
                     "inputs": {"latents": {"shape": [shape.unet_batch, *latents[1:]], "dtype": "activation"},
                                "timestep": {"shape": [shape.unet_batch], "dtype": "float32"},
                                "text_embeds": {"shape": [shape.unet_batch, text.max_position_embeddings,
                                                          unet.cross_attention_dim], "dtype": "activation"}},
                     "output": {"shape": [shape.unet_batch, *latents[1:]], "dtype": "activation"}},
            "vae": {"entry": ENTRY_POINTS["vae"], "config": _component_config(pipeline, "vae"),
                    "scaling_factor": vae.scaling_factor, "shift_factor": vae.shift_factor,
                    "inputs": {"latents": {"shape": latents, "dtype": "activation"}},
                    "output": {"shape": [1, vae.out_channels, shape.height, shape.width], "dtype": "activation",
                               "range": [-1, 1]}},
        }
        return {
            "format": FORMAT_VERSION,
            "webkiln_version": __version__,
            "id": model_id,
            "task": "image",
            "name": pipeline.name,
            "architecture": ARCHITECTURE,
            "pipeline_class": pipeline.pipeline_class,
            "quantization": quantization,
            "source": {"kind": "diffusers-folder", "origin": os.path.basename(pipeline.origin.rstrip("/"))},
            "image": {"height": shape.height, "width": shape.width, "latent_channels": vae.latent_channels,
                      "latent_height": shape.latent_height, "latent_width": shape.latent_width,
                      "vae_scale_factor": vae.upscale},
            "components": components,
            "tokenizer": {"file": "tokenizer.json", "kind": "clip-bpe", "max_length": text.max_position_embeddings,
                          "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                          "pad_token_id": tok.pad_token_id},
            "scheduler": scheduler,
            "generation": {**(TURBO_GENERATION if turbo else STANDARD_GENERATION), "turbo": turbo,
                           "width": shape.width, "height": shape.height, "negative_prompt": ""},
            "backends": backends,
            "memory": memories[preferred],
            "tensors": tensors,
            "files": files,
        }

    if plan_only:
        progress.stage("manifest (plan only: nothing compiled or written)")
        tensors = {plan.dtype: {"shards": [], "records": _records(plan)} for plan in plans}
        manifest = manifest_for(tensors, {}, [])
        manifest["plan_only"] = True
        progress.done()
        return manifest

    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_id}.", dir=out_root))
    staging.chmod(0o755)  # mkdtemp makes it private; a static host must read it
    try:
        backend_files = {}
        spec = get_target("webgpu")
        for plan in plans:
            progress.stage(f"compiling {plan.name} library (encode_text, unet, vae_decode)")
            parts = {"kind": "image", "target": spec.name, "dtype": plan.dtype, "link": link_mode.value,
                     "configs": {c: _component_config(pipeline, c) for c in COMPONENTS},
                     "shape": dataclasses.asdict(shape), "splits": plan.splits}

            def build(path: Path, mod=plan.mod) -> None:
                from ..compile.build import build_module

                build_module(mod, spec.name, path, link_mode)

            lib, reused, _ = cached_library(parts, build)
            backend_files[plan.name] = f"{plan.name}.wasm"
            shutil.copyfile(lib, staging / backend_files[plan.name])
            progress.done("reused from the compile cache" if reused else f"cached as {lib.name}")

        tensors = {}
        for plan in plans:
            progress.stage(f"converting {plan.dtype} weights and writing shards")
            records, shards = write_shards(_arrays(pipeline, plan), staging)
            for record, planned in zip(records, _records(plan), strict=True):
                assert record["nbytes"] == planned["nbytes"]
                record.update({k: v for k, v in planned.items() if k != "nbytes"})
            tensors[plan.dtype] = {"shards": [s["path"] for s in shards], "records": records}
            progress.done(f"{len(shards)} shards, {sum(s['size'] for s in shards) / MIB:.1f} MiB")

        progress.stage("writing tokenizer and manifest")
        (staging / "tokenizer.json").write_text(pipeline.tokenizer.tokenizer_json())
        files = [{"path": p.name, "size": p.stat().st_size, "sha256": sha256_file(p)}
                 for p in sorted(staging.iterdir()) if p.is_file()]
        manifest = manifest_for(tensors, backend_files, files)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
        progress.done()

        final = publish(staging, out_root, model_id)
        log(f"built {model_id} in {time.monotonic() - progress.start:.1f} s -> {final}")
        return final
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

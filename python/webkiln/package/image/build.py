"""`build_web --model <diffusers folder>`: a Stable Diffusion pipeline -> site/models/<id>/.

The same format as chat models (docs/FORMAT.md, "Image models"): manifest.json with
`task: "image"`, content-addressed weight shards, tokenizer.json (CLIP BPE), and one
`.wasm` per backend holding all three entry points (`encode_text`, `unet`,
`vae_decode`), each taking its own component's parameters as one packed tuple.

Backends: the scheme's WebGPU libraries (schemes.py) and, unless `cpu=False`
(build_web --no-cpu), `wasm-cpu`: the same module compiled for WebAssembly SIMD, which
reads webgpu-f32's float32 shards (one weight set per dtype, whatever the number of
libraries). Its `memory.total_bytes` is the wasm heap it needs; a build whose CPU
backend cannot fit wasm32's 4 GiB still lists it (the browser refuses it by that
number, before any download, naming the limit) and says so in the log.

Buffer limits: `required_limits.maxStorageBufferBindingSize` is the largest buffer any
kernel binds, measured on the Relax graph after operator fusion (buffers.py): weights,
inputs and every intermediate, such as attention score matrices. The build refuses a
model whose largest binding exceeds `max_binding` (default 128 MiB, WebGPU's default
limit): a weight tensor over it is split by rows when it is an embedding table (CLIP's
token embedding: 49408 x 768 f32 is 144.8 MiB), any other oversized weight or activation
is an error naming the tensor (plan.py).

`plan_only=True` does all of the above except compiling and converting/writing weights:
it returns the manifest (no `files`, no shard pieces) and writes nothing; that is how an
SD 1.5-sized pipeline is checked without 3.4 GB of weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...compile.build import build_module
from ...compile.targets import get_target
from ...models.diffusion.params import COMPONENTS
from ...sources.diffusers_folder import DiffusersPipeline
from ...toolchain.link import LinkMode
from ..manifest import ImageManifest, ImageTensors, ManifestFile, TensorPiece
from ..progress import Progress
from ..publish import check_model_id, default_model_id, folder_files, publish, stage_library, staging_folder, write_manifest
from ..shards import write_shards
from .image_manifest import image_manifest, plan_json
from .plan import plan_image_model
from .schedulers import default_scheduler, scheduler_config
from .schemes import DEFAULT_MAX_BINDING, IMAGE_SCHEMES, MIB, image_backends
from .weights import planned_records, weight_arrays

# wasm32 addresses 4 GiB (web/src/base/backend_choice.ts WASM32_HEAP_LIMIT, which the browser checks).
WASM32_HEAP_LIMIT = 4 * 2**30


def build_image_model(
    pipeline: DiffusersPipeline,
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
    cpu: bool = True,
) -> Path | dict[str, Any]:
    """Builds site/models/<id>/ (returns its path) or, with `plan_only`, returns the manifest it
    would write (no `files`, records without shard pieces) and writes nothing. `cpu`: also the
    wasm-cpu library (WebAssembly SIMD: runs without WebGPU)."""
    model_id = check_model_id(model_id or default_model_id(pipeline, quantization))
    names = image_backends(quantization, cpu) if quantization in IMAGE_SCHEMES else ()
    n_weight_sets = len(IMAGE_SCHEMES.get(quantization, ()))  # one per dtype: wasm-cpu adds none
    progress = Progress(2 if plan_only else 2 + len(names) + n_weight_sets, log)

    progress.stage(f"exporting and planning {quantization} ({', '.join(names)})")
    scheduler = scheduler_config(pipeline)
    shape, turbo, plans = plan_image_model(pipeline, quantization, size, turbo, max_binding, split_bytes, cpu)
    largest = max(plan.largest_binding for plan in plans)
    progress.done(f"{shape.width}x{shape.height} pixels, latents {shape.latent_width}x{shape.latent_height}, "
                  f"largest binding {largest / MIB:.1f} MiB, default scheduler {default_scheduler(scheduler)}")
    # One weight set per dtype, in plan order; each backend reads the one of its dtype.
    weight_plans = [plan for i, plan in enumerate(plans) if plan.dtype not in {p.dtype for p in plans[:i]}]

    def manifest_for(tensors: dict[str, ImageTensors], files: list[ManifestFile],
                     library_bytes: dict[str, int] | None = None) -> ImageManifest:
        manifest = image_manifest(pipeline, model_id, quantization, shape, turbo, plans, scheduler, tensors, files,
                                  library_bytes)
        _note_cpu_heap(manifest, log)
        return manifest

    if plan_only:
        progress.stage("manifest (plan only: nothing compiled or written)")
        manifest = plan_json(manifest_for({p.dtype: ImageTensors([], planned_records(p)) for p in weight_plans}, []))
        progress.done()
        return manifest

    out_root = Path(out_root)
    with staging_folder(out_root, model_id) as staging:
        for plan in plans:
            spec = get_target(plan.target)
            progress.stage(f"compiling {plan.name} library (encode_text, unet, vae_decode)")
            parts = {"kind": "image", "target": spec.name, "dtype": plan.dtype, "link": link_mode.value,
                     "configs": {c: dataclasses.asdict(pipeline.components[c].config) for c in COMPONENTS},
                     "shape": dataclasses.asdict(shape), "splits": plan.splits}

            def build(path: Path, mod=plan.mod, target=spec.name) -> None:
                build_module(mod, target, path, link_mode)

            stage_library(parts, build, staging, plan.name, progress)

        tensors = {}
        for plan in weight_plans:
            progress.stage(f"converting {plan.dtype} weights and writing shards")
            written, shards = write_shards(weight_arrays(pipeline, plan), staging)
            records = planned_records(plan)
            for record, placed in zip(records, written, strict=True):
                assert record.nbytes == placed["nbytes"]
                record.pieces = [TensorPiece.from_json(p) for p in placed["pieces"]]
            tensors[plan.dtype] = ImageTensors([s["path"] for s in shards], records)
            progress.done(f"{len(shards)} shards, {sum(s['size'] for s in shards) / MIB:.1f} MiB")

        progress.stage("writing tokenizer and manifest")
        (staging / "tokenizer.json").write_text(pipeline.tokenizer.tokenizer_json())
        library_bytes = {plan.name: (staging / f"{plan.name}.wasm").stat().st_size for plan in plans}
        write_manifest(staging, manifest_for(tensors, folder_files(staging), library_bytes))
        progress.done()

        final = publish(staging, out_root, model_id)
    progress.finished(model_id, final)
    return final


def _note_cpu_heap(manifest: ImageManifest, log: Callable[[str], None]) -> None:
    """Says in the log when the CPU backend cannot fit wasm32's memory (the browser refuses it)."""
    for name, backend in manifest.backends.items():
        need = backend.memory.total_bytes
        if backend.device == "cpu" and need > WASM32_HEAP_LIMIT:
            log(f"[webkiln] note: {name} needs {need / 2**30:.2f} GiB of WebAssembly memory, more than wasm32's "
                f"4 GiB: browsers will refuse it before downloading (use WebGPU, a smaller --size, or --no-cpu "
                "to leave it out).")

"""The plan of an image build, per backend: the merged module, its parameters, their
splits, the buffer analysis, and the limit check that refuses anything a kernel could not
bind under `max_binding` (naming the tensor and the fix).

The CPU backend (wasm-cpu) has no binding limit, but it takes webgpu-f32's plan as it is:
the same module (so the same split CLIP table and attention chunks) and therefore the
same parameter list, which is what lets it read webgpu-f32's shards instead of a second
float32 weight set. (Chunked attention computes the same values with a lower peak of live
memory, which the wasm32 heap also gains from; the default model, shapes-t2i, is small
enough that nothing is split or chunked at all.)"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ...compile.targets import get_target
from ...sources.diffusers_folder import DiffusersPipeline
from .buffers import Buffers, analyze_buffers
from .errors import ImageBuildError
from .schemes import BACKEND_DTYPES, BACKEND_TARGETS, CPU_BACKEND, DEFAULT_MAX_BINDING, IMAGE_SCHEMES, MIB, image_backends
from .shape import ImageShape, image_shape, is_turbo
from .surgery import export_components


def nbytes(dims: tuple[int, ...] | list[int], dtype: str) -> int:
    return int(np.prod(dims, dtype=np.int64)) * np.dtype(dtype).itemsize


@dataclasses.dataclass
class BackendPlan:
    name: str
    dtype: str
    mod: Any
    specs: dict[str, list[tuple[str, tuple[int, ...], str]]]
    splits: dict[str, dict[str, tuple[str, int, int]]]
    buffers: dict[str, Buffers]
    largest_binding: int = 0  # the backend's required maxStorageBufferBindingSize (WebGPU)

    @property
    def target(self) -> str:
        """The compile target (compile/targets.py)."""
        return BACKEND_TARGETS[self.name]

    @property
    def device(self) -> str:
        """Where the library runs: "webgpu" or "cpu" (the manifest's `device`)."""
        return "cpu" if self.target == "wasm-cpu" else "webgpu"

    @property
    def weights_bytes(self) -> int:
        return sum(nbytes(s, d) for specs in self.specs.values() for _, s, d in specs)


def _check_limits(plan: BackendPlan, shape: ImageShape, max_binding: int) -> int:
    """The largest binding of the backend, or ImageBuildError naming what exceeds `max_binding`."""
    largest = 0
    for component, specs in plan.specs.items():
        for name, dims, dtype in specs:
            size = nbytes(dims, dtype)
            if size > max_binding:
                raise ImageBuildError(
                    f"{component} weight '{name}' {list(dims)} {dtype} is {size / MIB:.1f} MiB, more than the "
                    f"{max_binding / MIB:g} MiB a kernel may bind (--max-binding-mib); only embedding tables are "
                    "split into row blocks. Raise --max-binding-mib (devices that allow larger bindings) or use "
                    "--quantization f16.")
            largest = max(largest, size)
        buffers = plan.buffers[component]
        if buffers.largest_bytes > max_binding:
            raise ImageBuildError(
                f"{plan.name}: the {component} {buffers.largest} is {buffers.largest_bytes / MIB:.1f} MiB at "
                f"{shape.width}x{shape.height} pixels, more than the {max_binding / MIB:g} MiB a kernel may bind "
                "(--max-binding-mib, default 128: WebGPU's default limit). Build a smaller --size, or raise "
                "--max-binding-mib for devices that allow larger bindings (desktop GPUs often allow 1-4 GiB).")
        largest = max(largest, buffers.largest_bytes)
    return largest


def plan_image_model(pipeline: DiffusersPipeline, quantization: str = "f16", size: int | tuple[int, int] | None = None,
                     turbo: bool | None = None, max_binding: int = DEFAULT_MAX_BINDING,
                     split_bytes: int | None = None, cpu: bool = True) -> tuple[ImageShape, bool, list[BackendPlan]]:
    """The plans of the backends `quantization` builds (schemes.py), wasm-cpu last when `cpu`."""
    if quantization not in IMAGE_SCHEMES:
        raise ImageBuildError(f"unknown image quantization '{quantization}'; image models support "
                              f"{', '.join(IMAGE_SCHEMES)} (f16 also builds the f32 fallback).")
    turbo = is_turbo(pipeline) if turbo is None else turbo
    shape = image_shape(pipeline, size, turbo)
    target = get_target("webgpu").tvm_target()
    plans = []
    for name in image_backends(quantization, cpu):
        if name == CPU_BACKEND:
            # webgpu-f32's module and parameters (both schemes plan it first): one float32
            # weight set for both libraries (see the module docstring).
            f32 = next(p for p in plans if p.name == "webgpu-f32")
            plans.append(dataclasses.replace(f32, name=CPU_BACKEND))
            continue
        dtype = BACKEND_DTYPES[name]
        mod, specs, splits = export_components(pipeline, dtype, shape, split_bytes or max_binding, max_binding)
        plan = BackendPlan(name, dtype, mod, specs, splits, analyze_buffers(mod, target))
        plan.largest_binding = _check_limits(plan, shape, max_binding)  # fails before planning the next
        plans.append(plan)
    return shape, turbo, plans

"""An image model's weights: the tensor records a plan implies (one weight set per backend
dtype, in each entry point's parameter order) and the converted arrays, one at a time."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ...models.diffusion.params import COMPONENTS, Binding, convert, param_specs
from ...sources.diffusers_folder import DiffusersPipeline
from ..manifest import ImageTensorRecord, TensorSplit
from .plan import BackendPlan, nbytes


def planned_records(plan: BackendPlan) -> list[ImageTensorRecord]:
    """The records of the backend's weight set, without shard pieces (writing the shards places them)."""
    records = []
    for component in COMPONENTS:
        for name, dims, dtype in plan.specs[component]:
            split = None
            if name in plan.splits[component]:
                whole, start, end = plan.splits[component][name]
                split = TensorSplit(whole, 0, (start, end))
            records.append(ImageTensorRecord(name, list(dims), dtype, nbytes(dims, dtype), [], component, split))
    return records


def weight_arrays(pipeline: DiffusersPipeline, plan: BackendPlan) -> Iterator[tuple[str, np.ndarray]]:
    """Every parameter converted, one at a time (an SD UNet is 3.4 GB in f32), in record order."""
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

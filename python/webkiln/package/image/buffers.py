"""Buffer analysis of the merged module: per entry point, the largest buffer a kernel binds
and the peak of intermediates alive at once, measured on the graph after LegalizeOps +
FuseOps + FuseTIR (each binding is then one kernel's output: what the library allocates)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tvm
from tvm import relax

from ...models.diffusion.params import ENTRY_POINTS


def tensor_bytes(ty) -> list[tuple[int, list[int], str]]:
    if isinstance(ty, relax.TensorType):
        if ty.shape is None:
            return []
        dims = [int(d) for d in ty.shape.values]
        return [(int(np.prod(dims, dtype=np.int64)) * np.dtype(str(ty.dtype)).itemsize, dims, str(ty.dtype))]
    if isinstance(ty, relax.TupleType):
        return [t for field in ty.fields for t in tensor_bytes(field)]
    return []


@dataclasses.dataclass
class Buffers:
    largest_bytes: int  # largest activation or input a kernel binds (weights are counted separately)
    largest: str  # what it is, for messages
    peak_bytes: int  # most activation bytes alive at once, inputs and output included


def analyze_buffers(mod, target) -> dict[str, Buffers]:
    """Per entry point: the largest intermediate and the peak of live intermediates, on the
    graph after LegalizeOps + FuseOps + FuseTIR (each binding is then one kernel's output)."""
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
            for nbytes, dims, dtype in tensor_bytes(p.ty):
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
            for nbytes, dims, dtype in tensor_bytes(b.var.ty):
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

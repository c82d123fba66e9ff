"""The table of compile targets.

`webgpu` and `wasm-cpu` are what the browser loads; `native-cpu` compiles the
same module for this machine, a fast reference for numerics and the "native"
column of benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WASM32_HOST: dict[str, Any] = {"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"}


@dataclass(frozen=True)
class TargetSpec:
    name: str
    target: dict[str, Any]
    host: dict[str, Any] | None
    device: str  # tvmjs / TVM device name the module runs on
    artifact: str  # file extension of the linked result
    description: str

    def tvm_target(self):
        import tvm  # lazy: TVM takes seconds to import; the target table is read without it

        if self.host is None:
            return tvm.target.Target(self.target)
        return tvm.target.Target(self.target, host=self.host)


TARGETS: dict[str, TargetSpec] = {
    spec.name: spec
    for spec in (
        TargetSpec(
            name="webgpu",
            target={"kind": "webgpu"},
            host=WASM32_HOST,
            device="webgpu",
            artifact="wasm",
            description="WGSL compute shaders on WebGPU, wasm32 host code",
        ),
        TargetSpec(
            name="wasm-cpu",
            target={**WASM32_HOST, "mattr": ["+simd128"]},
            host=None,
            device="cpu",
            artifact="wasm",
            description="WebAssembly with SIMD on the CPU (no WebGPU needed)",
        ),
        TargetSpec(
            name="native-cpu",
            target={"kind": "llvm"},
            host=None,
            device="cpu",
            artifact="so",
            description="this machine's CPU through LLVM (reference and benchmarks)",
        ),
    )
}


def get_target(name: str) -> TargetSpec:
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(
            f"unknown target '{name}'; choose one of: {', '.join(TARGETS)}"
        ) from None

"""Relax IRModule -> linked artifact (`.wasm` for the browser, `.so` for native)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..toolchain.link import LinkMode, fcompile
from .cpu_matmul import compile_kernels, uses_kernels
from .schedules import relax_pipeline
from .targets import get_target


def build_module(mod, target: str, output: str | Path, mode: LinkMode = LinkMode.FAST) -> Path:
    """Compiles `mod` for `target` (a name in TARGETS) and writes the linked artifact."""
    import tvm  # lazy: TVM takes seconds to import, and package/ (so `build_web --help`) imports this module

    spec = get_target(target)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    target_obj = spec.tvm_target()
    executable = tvm.compile(mod, target=target_obj, relax_pipeline=relax_pipeline(target_obj))
    if spec.artifact == "wasm" and uses_kernels(target_obj):
        # The hand-written kernels the module calls (cpu_matmul.py), linked in.
        with tempfile.TemporaryDirectory(prefix="webkiln-kernels-") as tmp:
            executable.export_library(str(output), fcompile=fcompile(mode, compile_kernels(Path(tmp))))
    elif spec.artifact == "wasm":
        executable.export_library(str(output), fcompile=fcompile(mode))
    else:
        executable.export_library(str(output))
    return output

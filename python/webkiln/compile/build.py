"""Relax IRModule -> linked artifact (`.wasm` for the browser, `.so` for native)."""

from __future__ import annotations

from pathlib import Path

from ..toolchain.link import LinkMode, fcompile
from .targets import get_target


def build_module(mod, target: str, output: str | Path, mode: LinkMode = LinkMode.FAST) -> Path:
    """Compiles `mod` for `target` (a name in TARGETS) and writes the linked artifact."""
    import tvm

    spec = get_target(target)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # On GPU targets tvm.compile applies dlight's default schedules itself.
    executable = tvm.compile(mod, target=spec.tvm_target())
    if spec.artifact == "wasm":
        executable.export_library(str(output), fcompile=fcompile(mode))
    else:
        executable.export_library(str(output))
    return output

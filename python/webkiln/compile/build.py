"""Relax IRModule -> linked artifact (`.wasm` for the browser, `.so` for native)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..toolchain.link import LinkMode, fcompile
from ..toolchain.threads import fcompile_threaded
from .cpu_matmul import compile_kernels, uses_kernels
from .schedules import relax_pipeline
from .targets import get_target


def build_module(mod, target: str, output: str | Path, mode: LinkMode = LinkMode.FAST,
                 threads_output: str | Path | None = None) -> Path:
    """Compiles `mod` for `target` (a name in TARGETS) and writes the linked artifact.
    `threads_output` (wasm-cpu only): also link the same objects as a threaded library there
    (toolchain/threads.py: one TVM compile, two links; the kernels split their rows over the
    threads' tasks)."""
    import tvm  # lazy: TVM takes seconds to import, and package/ (so `build_web --help`) imports this module

    spec = get_target(target)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    target_obj = spec.tvm_target()
    executable = tvm.compile(mod, target=target_obj, relax_pipeline=relax_pipeline(target_obj))
    if spec.artifact == "wasm" and uses_kernels(target_obj):
        # The hand-written kernels the module calls (cpu_matmul.py), linked in.
        with tempfile.TemporaryDirectory(prefix="webkiln-kernels-") as tmp:
            kernels = compile_kernels(Path(tmp))
            single = fcompile(mode, kernels)
            threaded = fcompile_threaded(mode, kernels) if threads_output is not None else None

            def link_both(out: str, objects, options=None) -> None:
                single(out, objects, options)
                if threaded is not None:  # TVM's objects exist only during this call
                    threaded(str(threads_output), objects, options)

            link_both.object_format = "o"  # type: ignore[attr-defined]
            executable.export_library(str(output), fcompile=link_both)
    elif threads_output is not None:
        raise ValueError(f"a threaded library is built for the wasm-cpu target only, not {target}")
    elif spec.artifact == "wasm":
        executable.export_library(str(output), fcompile=fcompile(mode))
    else:
        executable.export_library(str(output))
    return output

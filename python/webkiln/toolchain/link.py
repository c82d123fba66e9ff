"""Link TVM-compiled modules with the web runtime into one `.wasm` that tvmjs loads."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from pathlib import Path

from .runtime import ensure_runtime
from .system import find_emscripten


class LinkMode(str, enum.Enum):
    """`fast` for tests and development (about a second); `release` runs wasm-opt -O3."""

    FAST = "fast"
    RELEASE = "release"


_MODE_FLAGS = {LinkMode.FAST: ["-O1"], LinkMode.RELEASE: ["-O3"]}

# The settings tvmjs expects of a module (see tvm.support.emcc.create_tvmjs_wasm):
# a standalone reactor with 64-bit integers as BigInt, a growable memory, and
# undefined symbols left as imports that tvmjs' wrapper supplies.
_LINK_FLAGS = [
    "--no-entry",
    "-s", "WASM_BIGINT=1",
    "-s", "STANDALONE_WASM=1",
    "-s", "ERROR_ON_UNDEFINED_SYMBOLS=0",
    "-s", "ALLOW_MEMORY_GROWTH=1",
    "-s", "INITIAL_MEMORY=64MB",
    "-s", "MAXIMUM_MEMORY=4GB",
    # LLVM 22's wasm-ld rejects emscripten 3.1.6's default --stack-first + --global-base.
    "-Wl,--no-stack-first",
]


def compile_c(source: str | Path, output: str | Path, flags: Sequence[str]) -> Path:
    """One C source -> a wasm object file that link_wasm can take (e.g. hand-written kernels)."""
    emcc = find_emscripten()
    emcc.run([*flags, "-c", str(source), "-o", str(output)], f"compiling {Path(source).name}")
    return Path(output)


def link_wasm(output: str | Path, objects: Sequence[str | Path], mode: LinkMode = LinkMode.FAST) -> Path:
    emcc = find_emscripten()
    runtime = ensure_runtime()
    args = [*_MODE_FLAGS[LinkMode(mode)], *_LINK_FLAGS, "-o", str(output)]
    args += [str(p) for p in runtime.objects] + [str(p) for p in objects]
    emcc.run(args, f"linking {Path(output).name}")
    return Path(output)


def fcompile(mode: LinkMode = LinkMode.FAST, extra_objects: Sequence[str | Path] = ()) -> Callable[..., None]:
    """An `export_library` compiler: TVM writes wasm object files, we link them, with
    `extra_objects` (e.g. the wasm-cpu kernels the module calls by name)."""

    def compile_wasm(output: str, objects: Sequence[str] | str, options=None) -> None:
        objs = [objects] if isinstance(objects, str) else list(objects)
        link_wasm(output, [*objs, *extra_objects], mode)

    compile_wasm.object_format = "o"  # type: ignore[attr-defined]
    return compile_wasm

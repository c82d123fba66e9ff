"""The threaded variant of the wasm-cpu toolchain: TVM's parallel loops on several cores.

TVM's wasm runtime runs `TVMBackendParallelLaunch` serially (one task). A threaded model
library instead links our pool (`thread_pool/`): its launch hands the tasks of every TIR
`parallel` loop, and of any C kernel that calls it, to helper Web Workers that share the
module's memory, and falls back to the serial launch when no helper runs (one library works
with and without cross-origin isolation; web/src/compiled/threads.ts starts the helpers).

What differs from the single-threaded build, and why:
- The memory is imported (shared, so the browser can hand it to Workers) and exported again
  (tvmjs' WASI glue reads the exported one).
- wasm-ld links a shared memory only if no object was compiled without atomics *and* uses
  thread-locals (their TLS would have been lowered to plain globals). TVM's generated code has
  no thread-locals, so the very objects of the wasm-cpu compile link both ways: one TVM compile,
  two links. The runtime has thread-locals: it is rebuilt with `-pthread` (also so that libc++'s
  headers match the `-mt` archives), with the serial launch renamed so that ours is exported.
  Hand-written C kernels linked in need `-pthread` only if they use thread-locals or atomics.
- emscripten's `-mt` libraries are linked by hand: emcc refuses `-pthread` with
  STANDALONE_WASM, which tvmjs needs.
- libc's pthread start-up normally runs in emscripten's JavaScript; thread_state.c does the
  three calls it needs in C, so the module imports nothing beyond what tvmjs supplies plus
  `env.memory` (checked by `threaded_import_problems`).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import importlib.metadata
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..hashing import sha256_file
from . import runtime
from .errors import ToolchainError
from .paths import cache_dir
from .runtime import RuntimeLibs
from .system import EMSCRIPTEN_ROOT, Emscripten, find_emscripten
from .wasm_imports import TVMJS_SUPPLIED, read_imports

POOL_DIR = Path(__file__).parent / "thread_pool"
# The runtime's own serial launch stays, under another name: the pool calls it when no helper runs.
RENAMES = (
    "-DTVMBackendParallelLaunch=webkiln_serial_parallel_launch",
    "-DTVMBackendParallelBarrier=webkiln_serial_parallel_barrier",
)
RUNTIME_FLAGS = (*runtime.COMPILE_FLAGS, "-pthread")
POOL_FLAGS = ("-O3", "-pthread", "-Wall", "-Werror")
_MUSL = EMSCRIPTEN_ROOT / "system" / "lib"
# thread_state.c fills in libc's per-thread record (struct pthread), declared in musl's internals.
STATE_INCLUDES = tuple(
    f"-I{_MUSL / p}" for p in ("libc/musl/src/internal", "libc/musl/src/include", "libc/musl/arch/emscripten", "libc", "pthread")
)
POOL_UNITS = {"thread_pool.c": "thread_pool.o", "thread_state.c": "thread_state.o", "thread_entry.s": "thread_entry.o"}
RUNTIME_UNITS = runtime.UNITS
MANIFEST = "runtime.json"

# What tvmjs expects of any module, as link.py links the single-threaded one (its _LINK_FLAGS
# and _MODE_FLAGS, private there: tests/test_cpu_threads.py checks that these copies agree).
BASE_LINK_FLAGS = (
    "--no-entry",
    "-s", "WASM_BIGINT=1",
    "-s", "STANDALONE_WASM=1",
    "-s", "ERROR_ON_UNDEFINED_SYMBOLS=0",
    "-s", "ALLOW_MEMORY_GROWTH=1",
    "-s", "INITIAL_MEMORY=64MB",
    "-s", "MAXIMUM_MEMORY=4GB",
    "-Wl,--no-stack-first",
)
MODE_FLAGS = {"fast": ("-O1",), "release": ("-O3",)}
# Link flags on top of those: shared memory, imported and exported, and the `-mt` libraries
# emcc would pick with -pthread (which STANDALONE_WASM refuses), in emcc's own order.
LINK_FLAGS = (
    "-nodefaultlibs",
    "-Wl,--shared-memory",
    "-Wl,--import-memory",
    "-Wl,--export-memory",
)
MT_LIBS = (
    "-lstandalonewasm-memgrow", "-lstubs", "-lnoexit", "-lc-mt", "-ldlmalloc-mt", "-lcompiler_rt-mt",
    "-lc++-mt-noexcept", "-lc++abi-mt-noexcept", "-lsockets-mt",
)
# Exports web/src/compiled/threads.ts calls.
POOL_EXPORTS = frozenset({
    "webkiln_thread_entry", "webkiln_threads_prepare", "webkiln_threads_ready", "webkiln_threads_enable",
    "webkiln_threads_use", "webkiln_threads_main_can_block", "webkiln_threads_helpers", "webkiln_threads_stop",
})


def _pool_sources() -> list[Path]:
    return [POOL_DIR / name for name in POOL_UNITS]


def _runtime_key(emcc: Emscripten) -> str:
    h = hashlib.sha256()
    for part in (runtime.cache_key(emcc), " ".join(RUNTIME_FLAGS), " ".join(RENAMES)):
        h.update(part.encode() + b"\0")
    return h.hexdigest()


def _pool_key(emcc: Emscripten) -> str:
    # Kept apart from the runtime's key: editing the pool recompiles three small files (a
    # second), not the runtime (a minute).
    h = hashlib.sha256()
    for part in (emcc.version, " ".join(POOL_FLAGS), " ".join(STATE_INCLUDES)):
        h.update(part.encode() + b"\0")
    for path in _pool_sources():
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _cache_entry(kind: str, key: str) -> Path:
    tvm_version = importlib.metadata.version("apache-tvm")
    return cache_dir() / "runtime" / f"tvm-{tvm_version}-{kind}-{key[:16]}"


def verify(directory: Path, names: Sequence[str]) -> list[Path] | None:
    """The objects `names` of a complete, intact cache entry `directory`, else None."""
    try:
        files = json.loads((directory / MANIFEST).read_text())["files"]
        objects = []
        for name in names:
            path = directory / name
            if path.stat().st_size != files[name]["size"] or sha256_file(path) != files[name]["sha256"]:
                return None
            objects.append(path)
        return objects
    except (OSError, KeyError, TypeError, ValueError):
        return None


def _cached(final: Path, key: str, names: Sequence[str], build: Callable[[Path], None], what: str,
            log: Callable[[str], None]) -> RuntimeLibs:
    """Objects `names` from the cache entry `final`, built by `build(out_dir)` when absent or damaged."""
    with runtime._locked(final.parent / (final.name + ".lock")):
        objects = verify(final, names)
        if objects is not None:
            return RuntimeLibs(final, tuple(objects), built=False)
        if final.exists():
            log(f"[webkiln] cached {what} at {final} is incomplete or corrupted; rebuilding")
            shutil.rmtree(final)
        start = time.monotonic()
        final.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="build-", dir=final.parent) as tmp:
            out = Path(tmp) / "out"
            out.mkdir()
            build(Path(tmp))
            files = {n: {"size": (out / n).stat().st_size, "sha256": sha256_file(out / n)} for n in names}
            # Written last: its presence marks a finished build.
            (out / MANIFEST).write_text(json.dumps({"key": key, "files": files}, indent=2))
            out.rename(final)
        if time.monotonic() - start > 5:
            log(f"[webkiln] {what} built in {time.monotonic() - start:.0f} s -> {final}")
        objects = verify(final, names)
        if objects is None:
            raise ToolchainError(f"{what} at {final} failed verification right after building")
        return RuntimeLibs(final, tuple(objects), built=True)


def _build_runtime(emcc: Emscripten, tmp: Path) -> None:
    root, out = tmp / "src", tmp / "out"
    runtime._assemble_sources(root)
    includes = [
        f"-I{root}", f"-I{root / 'include'}",
        f"-I{root / '3rdparty/tvm-ffi/include'}",
        f"-I{root / '3rdparty/tvm-ffi/3rdparty/dlpack/include'}",
        f"-I{root / '3rdparty/compiler-rt'}",
    ]

    def unit(name: str) -> None:
        src = root / "web" / "emcc" / f"{name}.cc"
        flags = [*RUNTIME_FLAGS, *RENAMES, f"-ffile-prefix-map={root}=tvm"]
        emcc.run([*includes, *flags, "-c", str(src), "-o", str(out / f"{name}.o")],
                 f"compiling the threaded TVM web runtime ({name}.cc)")

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(RUNTIME_UNITS)) as pool:
        for job in [pool.submit(unit, u) for u in RUNTIME_UNITS]:
            job.result()


def _build_pool(emcc: Emscripten, tmp: Path) -> None:
    for source, obj in POOL_UNITS.items():
        if source.endswith(".s"):
            flags: list[str] = []  # assembled as is
        elif source == "thread_state.c":
            # musl's internal headers have unused static helpers.
            flags = [*POOL_FLAGS, *STATE_INCLUDES, "-Wno-unused-function"]
        else:
            flags = list(POOL_FLAGS)
        emcc.run([*flags, f"-ffile-prefix-map={POOL_DIR}=webkiln", "-c", str(POOL_DIR / source),
                  "-o", str(tmp / "out" / obj)], f"compiling the thread pool ({source})")


def ensure_threaded_runtime(log: Callable[[str], None] = print) -> RuntimeLibs:
    """The objects a threaded library links (TVM's runtime built for threads, then the pool),
    built into the cache when absent or damaged: the runtime about a minute on 2 cores, once
    per machine; the pool a second."""
    emcc = find_emscripten()
    rkey, pkey = _runtime_key(emcc), _pool_key(emcc)
    rt_names = [f"{u}.o" for u in RUNTIME_UNITS]
    rt_dir = _cache_entry("threads", rkey)
    if verify(rt_dir, rt_names) is None:
        log("[webkiln] building the threaded TVM web runtime (one time per machine, about a minute)...")
    rt = _cached(rt_dir, rkey, rt_names, lambda tmp: _build_runtime(emcc, tmp), "threaded TVM web runtime", log)
    pool = _cached(_cache_entry("thread-pool", pkey), pkey, list(POOL_UNITS.values()),
                   lambda tmp: _build_pool(emcc, tmp), "thread pool", log)
    return RuntimeLibs(rt.directory, (*rt.objects, *pool.objects), built=rt.built or pool.built)


def link_threaded_wasm(output: str | Path, objects: Sequence[str | Path], mode: str = "fast") -> Path:
    """Links TVM-compiled objects (the wasm-cpu target's, unchanged) with the threaded runtime."""
    emcc = find_emscripten()
    libs = ensure_threaded_runtime()
    mode = getattr(mode, "value", mode)  # a link.LinkMode or its value
    args = [*MODE_FLAGS[mode], *BASE_LINK_FLAGS, *LINK_FLAGS, "-o", str(output)]
    args += [str(p) for p in libs.objects] + [str(p) for p in objects] + list(MT_LIBS)
    try:
        emcc.run(args, f"linking {Path(output).name} (threaded)")
    except ToolchainError as error:
        if "disallowed by" in str(error) and "atomics" in str(error):
            raise ToolchainError(
                f"{error}\nFix: that object uses thread-locals (or atomics) but was compiled without "
                "atomics, which a shared memory needs: compile C/C++ sources for a threaded library "
                "with -pthread (TVM targets: add +atomics,+bulk-memory to mattr)."
            ) from None
        raise
    problems = threaded_import_problems(output)
    if problems:
        raise ToolchainError(f"{output} is not a usable threaded library: " + "; ".join(problems))
    return Path(output)


def fcompile_threaded(mode: str = "fast", extra_objects: Sequence[str | Path] = ()) -> Callable[..., None]:
    """An `export_library` compiler for the threaded variant (see link.fcompile)."""

    def compile_wasm(output: str, objects: Sequence[str] | str, options=None) -> None:
        objs = [objects] if isinstance(objects, str) else list(objects)
        link_threaded_wasm(output, [*objs, *extra_objects], mode)

    compile_wasm.object_format = "o"  # type: ignore[attr-defined]
    return compile_wasm


def _sections(path: str | Path) -> dict[int, bytes]:
    """The first section of each id in a wasm file (ids 2 imports, 7 exports)."""
    data = Path(path).read_bytes()
    if data[:4] != b"\0asm":
        raise ValueError(f"{path} is not a WebAssembly module (bad magic)")
    found: dict[int, bytes] = {}
    pos = 8
    while pos < len(data):
        section = data[pos]
        size, pos = _uleb(data, pos + 1)
        found.setdefault(section, data[pos : pos + size])
        pos += size
    return found


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, pos


def _name(data: bytes, pos: int) -> tuple[str, int]:
    n, pos = _uleb(data, pos)
    return data[pos : pos + n].decode("utf-8"), pos + n


def read_exports(path: str | Path) -> set[str]:
    """The names a wasm file exports."""
    body = _sections(path).get(7, b"")
    names: set[str] = set()
    if not body:
        return names
    count, pos = _uleb(body, 0)
    for _ in range(count):
        name, pos = _name(body, pos)
        _, pos = _uleb(body, pos + 1)  # kind byte, then index
        names.add(name)
    return names


def imported_memory(path: str | Path) -> dict[str, int | bool] | None:
    """The limits of the memory imported as env.memory (initial/maximum pages, shared), or None."""
    body = _sections(path).get(2, b"")
    if not body:
        return None
    count, pos = _uleb(body, 0)
    for _ in range(count):
        module, pos = _name(body, pos)
        field, pos = _name(body, pos)
        kind = body[pos]
        pos += 1
        if kind == 0:
            _, pos = _uleb(body, pos)
        elif kind in (1, 2):
            if kind == 1:
                pos += 1  # element type
            flags, pos = _uleb(body, pos)
            initial, pos = _uleb(body, pos)
            maximum = None
            if flags & 1:
                maximum, pos = _uleb(body, pos)
            if kind == 2 and (module, field) == ("env", "memory"):
                return {"initial": initial, "maximum": maximum if maximum is not None else 65536,
                        "shared": bool(flags & 2)}
        elif kind == 3:
            pos += 2
        elif kind == 4:
            _, pos = _uleb(body, pos + 1)
    return None


def threaded_import_problems(path: str | Path) -> list[str]:
    """What keeps a threaded library from loading in tvmjs with helper threads (empty: none):
    function imports beyond tvmjs', a memory that is not imported as a shared `env.memory`,
    any other import, or a missing pool export."""
    problems = []
    for module, name, kind in read_imports(path):
        if kind == "func":
            if name not in TVMJS_SUPPLIED:
                problems.append(f"imports function {module}.{name}, which tvmjs does not supply")
        elif (kind, module, name) != ("memory", "env", "memory"):
            problems.append(f"imports {kind} {module}.{name}")
    memory = imported_memory(path)
    if memory is None:
        problems.append("does not import env.memory (not linked with --shared-memory --import-memory)")
    elif not memory["shared"]:
        problems.append("imports a memory that is not shared")
    missing = POOL_EXPORTS - read_exports(path)
    if missing:
        problems.append(f"lacks the thread pool's exports {sorted(missing)}")
    return problems

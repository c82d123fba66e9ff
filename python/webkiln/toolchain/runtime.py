"""Build TVM's WebAssembly runtime (tvmjs' native half) once per machine, into the user cache.

The apache-tvm wheel ships the runtime's C++ sources but not a built wasm
runtime, and it lacks nine headers: three come from the `apache-tvm-tirx`
wheel, the other six are our own (`runtime_headers/`). We compile the three
translation units TVM's web Makefile compiles, to wasm object files (not LLVM
bitcode) so that linking a model stays fast; see link.py.

The cache entry is keyed by every input (TVM/tvm-ffi versions, emcc, LLVM,
our headers, flags) and verified on every use against the SHA-256 recorded
when it was built, so an interrupted or corrupted build is rebuilt, never used.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..hashing import sha256_file
from .errors import ToolchainError
from .paths import cache_dir
from .pins import LLVM_MAJOR, TVM_TIRX_VERSION
from .system import Emscripten, find_emscripten

UNITS = ("wasm_runtime", "tvmjs_support", "webgpu_runtime")
COMPILE_FLAGS = ("-O3", "-std=c++17", "-Wno-ignored-attributes")
OWN_HEADERS = Path(__file__).parent / "runtime_headers"
# Headers present in apache-tvm-tirx (path inside its wheel -> path in our source root).
TIRX_HEADERS = {
    "tvm_tirx/include/tvm/support/io.h": "include/tvm/support/io.h",
    "tvm_tirx/include/tvm/support/serializer.h": "include/tvm/support/serializer.h",
    "tvm_tirx/include/tvm/support/bytes_io.h": "src/support/bytes_io.h",
}
MANIFEST = "runtime.json"


@dataclass(frozen=True)
class RuntimeLibs:
    directory: Path
    objects: tuple[Path, ...]
    built: bool  # False when reused from the cache


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ToolchainError(f"Python package '{name}' is not installed; run: pip install -e .")
    return Path(spec.origin).parent


def _own_header_files() -> list[Path]:
    return sorted(p for p in OWN_HEADERS.rglob("*.h"))


def cache_key(emcc: Emscripten) -> str:
    h = hashlib.sha256()
    parts = [
        importlib.metadata.version("apache-tvm"),
        importlib.metadata.version("apache-tvm-ffi"),
        TVM_TIRX_VERSION,
        f"llvm{LLVM_MAJOR}",
        emcc.version,
        " ".join(COMPILE_FLAGS),
        "format=wasm-object,prefix-map",
    ]
    for part in parts:
        h.update(part.encode() + b"\0")
    for path in _own_header_files():
        h.update(str(path.relative_to(OWN_HEADERS)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def runtime_dir(emcc: Emscripten | None = None) -> Path:
    emcc = emcc or find_emscripten()
    tvm_version = importlib.metadata.version("apache-tvm")
    return cache_dir() / "runtime" / f"tvm-{tvm_version}-{cache_key(emcc)[:16]}"


def verify(directory: Path) -> list[Path] | None:
    """The runtime objects if `directory` holds a complete, intact build; otherwise None."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        files = manifest["files"]
        objects = []
        for unit in UNITS:
            entry = files[f"{unit}.o"]
            path = directory / f"{unit}.o"
            if path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
                return None
            objects.append(path)
        return objects
    except (OSError, KeyError, TypeError, ValueError):
        return None


def _tirx_wheel(downloads: Path) -> Path:
    """The apache-tvm-tirx wheel, downloaded once into the cache (we need three headers from it)."""
    found = sorted(downloads.glob(f"apache_tvm_tirx-{TVM_TIRX_VERSION}-*.whl"))
    if found:
        return found[0]
    downloads.mkdir(parents=True, exist_ok=True)
    # Headers are platform-independent: fetch the one published wheel whatever this machine is.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
           "-d", str(downloads), f"apache-tvm-tirx=={TVM_TIRX_VERSION}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(downloads.glob(f"apache_tvm_tirx-{TVM_TIRX_VERSION}-*.whl"))
    if proc.returncode != 0 or not found:
        raise ToolchainError(
            f"Could not download apache-tvm-tirx=={TVM_TIRX_VERSION} from PyPI (it provides three "
            "TVM runtime headers the apache-tvm wheel lacks).\n"
            f"Fix: make PyPI reachable, or run: pip install apache-tvm-tirx=={TVM_TIRX_VERSION}\n"
            f"{proc.stderr[-1500:]}"
        )
    return found[0]


def _copy_tirx_headers(root: Path) -> None:
    installed = importlib.util.find_spec("tvm_tirx")
    if installed is not None and installed.origin is not None:
        base = Path(installed.origin).parent.parent
        for src, dst in TIRX_HEADERS.items():
            (root / dst).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(base / src, root / dst)
        return
    with zipfile.ZipFile(_tirx_wheel(cache_dir() / "downloads")) as wheel:
        for src, dst in TIRX_HEADERS.items():
            (root / dst).parent.mkdir(parents=True, exist_ok=True)
            (root / dst).write_bytes(wheel.read(src))


def _assemble_sources(root: Path) -> None:
    """Lay the wheels' sources out like a TVM checkout. Copies, not symlinks:
    clang resolves `../support/x.h` from a file's real path."""
    tvm = _package_dir("tvm")
    ffi = _package_dir("tvm_ffi")
    shutil.copytree(tvm / "src" / "runtime", root / "src" / "runtime")
    shutil.copytree(tvm / "include" / "tvm" / "runtime", root / "include" / "tvm" / "runtime")
    shutil.copytree(tvm / "web" / "emcc", root / "web" / "emcc")
    for part in ("include", "src", "3rdparty"):
        shutil.copytree(ffi / part, root / "3rdparty" / "tvm-ffi" / part)
    shutil.copytree(OWN_HEADERS, root, dirs_exist_ok=True)
    _copy_tirx_headers(root)


def _compile_all(emcc: Emscripten, root: Path, out: Path) -> None:
    includes = [
        f"-I{root}", f"-I{root / 'include'}",
        f"-I{root / '3rdparty/tvm-ffi/include'}",
        f"-I{root / '3rdparty/tvm-ffi/3rdparty/dlpack/include'}",
        f"-I{root / '3rdparty/compiler-rt'}",
    ]

    def compile_unit(unit: str) -> None:
        src = root / "web" / "emcc" / f"{unit}.cc"
        # The prefix map keeps the temporary build path out of the objects: rebuilds are byte-identical.
        flags = [*COMPILE_FLAGS, f"-ffile-prefix-map={root}=tvm"]
        emcc.run([*includes, *flags, "-c", str(src), "-o", str(out / f"{unit}.o")],
                 f"compiling the TVM web runtime ({unit}.cc)")

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(UNITS)) as pool:
        for future in [pool.submit(compile_unit, u) for u in UNITS]:
            future.result()


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_runtime(log=print) -> RuntimeLibs:
    """Returns the cached runtime objects, building them first if absent or damaged."""
    emcc = find_emscripten()
    final = runtime_dir(emcc)
    with _locked(final.parent / (final.name + ".lock")):
        objects = verify(final)
        if objects is not None:
            return RuntimeLibs(final, tuple(objects), built=False)
        if final.exists():
            log(f"[webkiln] cached TVM web runtime at {final} is incomplete or corrupted; rebuilding")
            shutil.rmtree(final)
        log("[webkiln] building the TVM web runtime (one time per machine, about a minute)...")
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="runtime-build-", dir=final.parent) as tmp:
            tmp_path = Path(tmp)
            root, out = tmp_path / "src", tmp_path / "out"
            out.mkdir()
            _assemble_sources(root)
            _compile_all(emcc, root, out)
            manifest = {
                "key": cache_key(emcc),
                "emcc": emcc.version,
                "files": {
                    p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)}
                    for p in sorted(out.glob("*.o"))
                },
            }
            # The manifest is written last: its presence marks a finished build.
            (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
            out.rename(final)
        log(f"[webkiln] TVM web runtime built in {time.monotonic() - start:.0f} s -> {final}")
        objects = verify(final)
        if objects is None:
            raise ToolchainError(f"runtime build at {final} failed verification right after building")
        return RuntimeLibs(final, tuple(objects), built=True)

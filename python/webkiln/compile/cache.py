"""Cache of compiled model libraries, keyed by everything that determines them.

A fine-tune of an architecture that was already built has the same config,
weight formats, target and toolchain, hence the same key: its build reuses the
`.wasm` and only converts weights. The code that generates the module is part
of the key, so changing it invalidates old entries.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from ..hashing import sha256_file
from ..toolchain.paths import cache_dir

_PACKAGE = Path(__file__).resolve().parents[1]
# Sources whose content shapes the compiled library.
_CODE = ("models/llm.py", "quant/formats.py", "compile/build.py", "compile/schedules.py", "compile/targets.py",
         "compile/cpu_matmul.py",  # the wasm-cpu kernels' TIR calls, flags and sources:
         *sorted(p.relative_to(_PACKAGE).as_posix() for p in (_PACKAGE / "compile" / "cpu_kernels").glob("*.[ch]")),
         "toolchain/link.py", "toolchain/threads.py",  # both links of the wasm-cpu library
         *sorted(p.relative_to(_PACKAGE).as_posix() for p in (_PACKAGE / "toolchain" / "thread_pool").glob("*.[chs]")),
         "package/image/surgery.py",  # merges the components, splits tables
         *sorted(p.relative_to(_PACKAGE).as_posix() for p in (_PACKAGE / "models" / "diffusion").glob("*.py")))


def library_key(parts: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(parts, sort_keys=True, default=str).encode())
    h.update(importlib.metadata.version("apache-tvm").encode())
    for rel in _CODE:
        h.update(rel.encode() + b"\0" + (_PACKAGE / rel).read_bytes())
    return h.hexdigest()


class CachedLibrary(NamedTuple):
    path: Path
    reused: bool
    # What `build` returned, kept next to the library (JSON), e.g. the parameter list a
    # weights-only rebuild needs without exporting the model again.
    info: Any
    # The threaded variant `build` also wrote (threads_library(path)), or None.
    threads_path: Path | None = None


def threads_library(path: Path) -> Path:
    """Where a build writes the threaded variant of the library at `path`, if it makes one."""
    return path.with_name(path.stem + "-threads.wasm")


def _intact(path: Path, recorded: dict) -> bool:
    return path.stat().st_size == recorded["size"] and sha256_file(path) == recorded["sha256"]


def cached_library(parts: dict, build: Callable[[Path], Any]) -> CachedLibrary:
    """`build(path)` writes the library (and, optionally, its threaded variant at
    threads_library(path)) and may return JSON-serialisable info about it."""
    key = library_key(parts)
    directory = cache_dir() / "libs"
    lib, threads, meta = directory / f"{key}.wasm", directory / f"{key}-threads.wasm", directory / f"{key}.json"
    try:
        recorded = json.loads(meta.read_text())
        if _intact(lib, recorded) and ("threads" not in recorded or _intact(threads, recorded["threads"])):
            return CachedLibrary(lib, True, recorded.get("info"), threads if "threads" in recorded else None)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as tmp:
        out = Path(tmp) / "lib.wasm"
        info = build(out)
        entry: dict[str, Any] = {"size": out.stat().st_size, "sha256": sha256_file(out), "parts": parts, "info": info}
        built_threads = threads_library(out)
        if built_threads.exists():
            entry["threads"] = {"size": built_threads.stat().st_size, "sha256": sha256_file(built_threads)}
            shutil.move(str(built_threads), threads)
        (Path(tmp) / "meta.json").write_text(json.dumps(entry, default=str, indent=1))
        shutil.move(str(out), lib)
        shutil.move(str(Path(tmp) / "meta.json"), meta)  # written last: marks the entry complete
    return CachedLibrary(lib, False, info, threads if "threads" in entry else None)

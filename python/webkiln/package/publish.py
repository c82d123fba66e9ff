"""Writing a model folder atomically: a staging folder next to the final one (the compiled
libraries, the manifest and the file list go into it), renamed into place only when
complete (a failed build leaves nothing behind), then models/index.json rewritten. Also
the model ids that name those folders."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import WebkilnError
from ..compile.cache import cached_library
from ..hashing import sha256_file
from ..model_source import ModelSource
from ..sources.diffusers_folder import DiffusersPipeline
from .index import write_index
from .manifest import Manifest, ManifestFile
from .progress import Progress

_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ModelIdError(WebkilnError, ValueError):
    """A model id that cannot name a folder of the site."""


def default_model_id(source: ModelSource | DiffusersPipeline, quantization: str) -> str:
    """The source's name made safe for a URL, without a GGUF type suffix, plus the scheme."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", source.name).strip("-.").lower() or "model"
    base = re.sub(r"\.(q\d_\d|q\d_k(_[sml])?|f16|f32|bf16)$", "", base)
    return f"{base}-{quantization}"


def check_model_id(model_id: str) -> str:
    if not _MODEL_ID.fullmatch(model_id):
        raise ModelIdError(f"model id '{model_id}' may only contain letters, digits, '.', '_' and '-'")
    return model_id


@contextmanager
def staging_folder(out_root: Path, model_id: str) -> Iterator[Path]:
    """A fresh folder in `out_root` to write the model into; removed if the build fails."""
    out_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_id}.", dir=out_root))
    staging.chmod(0o755)  # mkdtemp makes it private; a static host must read it
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def folder_files(folder: Path) -> list[ManifestFile]:
    """Every file of the folder with its size and SHA-256 (the manifest's `files`)."""
    return [ManifestFile(p.name, p.stat().st_size, sha256_file(p)) for p in sorted(folder.iterdir()) if p.is_file()]


def stage_library(parts: dict[str, Any], build: Callable[[Path], Any], staging: Path, backend: str,
                  progress: Progress) -> Any:
    """Copies the backend's compiled library (from the compile cache, built by `build` on a
    miss) into the staging folder as `<backend>.wasm`, and its threaded variant, if `build`
    made one, as `<backend>-threads.wasm`; -> what `build` recorded with it."""
    lib, reused, info, threads = cached_library(parts, build)
    shutil.copyfile(lib, staging / f"{backend}.wasm")
    if threads is not None:
        shutil.copyfile(threads, staging / f"{backend}-threads.wasm")
    progress.done("reused from the compile cache" if reused else f"cached as {lib.name}")
    return info


def write_manifest(staging: Path, manifest: Manifest) -> None:
    (staging / "manifest.json").write_text(json.dumps(manifest.to_json(), indent=1))


def publish(staging: Path, out_root: Path, model_id: str) -> Path:
    """Renames a finished staging folder to `out_root/model_id` (the previous build is
    restored if that fails) and rewrites models/index.json."""
    final = out_root / model_id
    old = None
    if final.exists():
        old = out_root / f".{model_id}.old-{os.getpid()}"
        final.rename(old)
    try:
        staging.rename(final)
    except BaseException:
        if old is not None:  # put the previous build back
            old.rename(final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    write_index(out_root)
    return final

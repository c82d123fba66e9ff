"""Reading the files both Hugging Face layouts share (transformers model folders, diffusers
pipelines): JSON configs, safetensors shard indexes and headers, and lazily read tensors.

Tensors are opened lazily: `safetensors.safe_open` for F32/F16, and a memory map for BF16,
which NumPy has no dtype for (`raw()` and `dequantize()` both give float32 then). Every
problem is a SourceError naming the file and the fix.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

from ..model_source import SourceError, SourceTensor

_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}


def read_json(path: Path, missing: str | None) -> dict[str, Any]:
    """The JSON object in `path`. A missing file is a SourceError whose message ends with
    `missing` (why the file is needed), or, with `missing=None`, an optional file: {}."""
    if not path.is_file():
        if missing is None:
            return {}
        raise SourceError(f"{path}: file is missing; {missing}.")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SourceError(f"{path}: cannot be read ({error.strerror}); check its permissions.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SourceError(f"{path}: not valid JSON ({error}); the file is corrupt, re-download it.") from None
    if not isinstance(value, dict):
        raise SourceError(f"{path}: expected a JSON object; the file is corrupt, re-download it.")
    return value


def shards(index: Path) -> dict[Path, list[str]]:
    weight_map = read_json(index, "a Hugging Face model folder needs it").get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise SourceError(f"{index}: field `weight_map` is missing or empty; re-download the index.")
    found: dict[Path, list[str]] = {}
    for name, file_name in weight_map.items():
        found.setdefault(index.parent / file_name, []).append(name)
    for shard in found:
        if not shard.is_file():
            raise SourceError(f"{shard}: shard listed in {index.name} is missing; the download is incomplete, "
                              "re-download it.")
    return found


def safetensors_tensors(files: dict[Path, list[str] | None], index_name: str = "the index",
                        ignored_suffixes: tuple[str, ...] = ()) -> dict[str, SourceTensor]:
    """Every tensor of the safetensors `files` (each with the names its shard index lists for
    it, or None), checked: a name the index lists must be in its shard."""
    tensors: dict[str, SourceTensor] = {}
    for path, expected in files.items():
        header = safetensors_header(path)
        for name in expected or ():
            if name not in header:
                raise SourceError(f"{path}: tensor {name!r} listed in {index_name} is missing from the shard; "
                                  "the download is incomplete, re-download it.")
        for name, entry in header.items():
            if not name.endswith(ignored_suffixes):
                tensors[name] = source_tensor(path, name, entry)
    return tensors


def safetensors_header(path: Path) -> dict[str, dict[str, Any]]:
    """Tensor entries of a safetensors file, with absolute data offsets, checked against the file size."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise SourceError(f"{path.name}: truncated safetensors file ({size} bytes, no header); re-download it.")
        (header_len,) = struct.unpack("<Q", prefix)
        if 8 + header_len > size:
            raise SourceError(f"{path.name}: truncated or corrupt safetensors file: the header claims {header_len} "
                              f"bytes but the file has {size}; re-download it.")
        try:
            header = json.loads(handle.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise SourceError(f"{path.name}: corrupt safetensors header ({error}); re-download it.") from None
    if not isinstance(header, dict):
        raise SourceError(f"{path.name}: corrupt safetensors header (not a JSON object); re-download it.")
    header.pop("__metadata__", None)
    data_start = 8 + header_len
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], [int(n) for n in entry["shape"]], entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise SourceError(f"{path.name}: corrupt safetensors header entry for tensor {name!r}; "
                              "re-download the file.") from None
        if dtype not in _DTYPES:
            raise SourceError(f"{path.name}: tensor {name} has dtype {dtype}; only F32, F16 and BF16 are supported.")
        expected = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype].itemsize
        if data_start + end > size:
            raise SourceError(f"{path.name}: truncated safetensors file: tensor {name} ends at byte "
                              f"{data_start + end} but the file has {size} bytes; re-download it.")
        if end - begin != expected or begin < 0:
            raise SourceError(f"{path.name}: corrupt safetensors file: tensor {name} spans {end - begin} bytes, "
                              f"its shape {shape} needs {expected}; re-download it.")
        entry["offset"] = data_start + begin
    return header


def source_tensor(path: Path, name: str, entry: dict[str, Any]) -> SourceTensor:
    shape = tuple(int(n) for n in entry["shape"])
    dtype = entry["dtype"]

    def stored() -> np.ndarray:
        if dtype == "BF16":
            bits = np.memmap(path, dtype=_DTYPES["BF16"], mode="r", offset=entry["offset"], shape=shape or (1,))
            # bfloat16 is the top half of a float32.
            return (bits.astype(np.uint32) << 16).view(np.float32).reshape(shape)
        try:
            with safe_open(path, framework="numpy") as handle:
                return handle.get_tensor(name)
        except Exception as error:  # SafetensorError is not exported under a stable name
            raise SourceError(f"{path.name}: cannot read tensor {name} ({error}); re-download the file.") from None

    def dequantize() -> np.ndarray:
        return stored().astype(np.float32, copy=False)

    return SourceTensor(name=name, shape=shape, ggml_type=None, raw=stored, dequantize=dequantize)

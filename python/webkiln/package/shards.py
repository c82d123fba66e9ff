"""Weight shards: parameters concatenated into files of at most 32 MB, each named by
its SHA-256, with an index of where every tensor lives. Identical shards get
identical names, so builds and models share them (on disk and in browser caches)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

MAX_SHARD_BYTES = 32 * 1024 * 1024


def write_shards(arrays: Iterable[tuple[str, np.ndarray]], out_dir: Path,
                 max_bytes: int = MAX_SHARD_BYTES) -> tuple[list[dict], list[dict]]:
    """-> (tensor records in order, shard file entries). A tensor larger than a shard
    is split into pieces across consecutive shards."""
    records: list[dict] = []
    shards: list[dict] = []
    buffer = bytearray()

    def flush() -> None:
        if not buffer:
            return
        digest = hashlib.sha256(buffer).hexdigest()
        name = f"{digest}.bin"
        path = out_dir / name
        if not path.exists():
            path.write_bytes(buffer)
        shards.append({"path": name, "size": len(buffer), "sha256": digest})
        buffer.clear()

    for name, array in arrays:
        data = np.ascontiguousarray(array).tobytes()
        record = {"name": name, "shape": list(array.shape), "dtype": str(array.dtype),
                  "nbytes": len(data), "pieces": []}
        pos = 0
        while pos < len(data):
            if len(buffer) >= max_bytes:
                flush()
            take = min(len(data) - pos, max_bytes - len(buffer))
            record["pieces"].append({"shard": len(shards), "offset": len(buffer), "nbytes": take})
            buffer += data[pos : pos + take]
            pos += take
        records.append(record)
    flush()
    return records, shards

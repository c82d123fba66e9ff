"""4-bit symmetric group quantization with packed uint32 storage (the `q4` weight format).

A weight row of `in` values is split into groups of `group_size`; each group
stores one f32 scale = max|w| / 7, and each value as q = round(w / scale) + 7
in [0, 14]. Eight 4-bit values are packed per uint32, element k of a word in
bits [4k, 4k+4). Dequantized: w' = (q - 7) * scale.
"""

from __future__ import annotations

import numpy as np

BITS = 4
PER_WORD = 32 // BITS
MAX_INT = 7


def _check(in_features: int, group_size: int) -> None:
    if group_size % PER_WORD or in_features % group_size:
        raise ValueError(
            f"q4 needs in_features ({in_features}) divisible by group_size ({group_size}), "
            f"and group_size divisible by {PER_WORD}"
        )


def quantize(weight: np.ndarray, group_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """weight [out, in] float -> (packed uint32 [out, in/8], scales float32 [out, in/group_size])."""
    out_features, in_features = weight.shape
    _check(in_features, group_size)
    groups = weight.astype(np.float32).reshape(out_features, -1, group_size)
    scales = np.abs(groups).max(axis=-1) / MAX_INT
    safe = np.where(scales == 0, 1.0, scales)[..., None]
    q = np.clip(np.rint(groups / safe) + MAX_INT, 0, 2 * MAX_INT).astype(np.uint32)
    q = q.reshape(out_features, -1, PER_WORD)
    shifts = (np.arange(PER_WORD, dtype=np.uint32) * BITS)[None, None, :]
    packed = np.bitwise_or.reduce(q << shifts, axis=-1).astype(np.uint32)
    return packed, scales.astype(np.float32)


def dequantize(packed: np.ndarray, scales: np.ndarray, group_size: int = 32) -> np.ndarray:
    """The exact inverse of the storage format (NumPy reference for the kernels)."""
    out_features = packed.shape[0]
    shifts = (np.arange(PER_WORD, dtype=np.uint32) * BITS)[None, None, :]
    q = ((packed[..., None] >> shifts) & 0xF).reshape(out_features, -1).astype(np.float32)
    scale = np.repeat(scales, group_size, axis=1)
    return (q - MAX_INT) * scale


def dequantize_te(packed, scales, group_size: int = 32):
    """The same dequantization as a TVM tensor expression, for fusing into matmuls."""
    from tvm import te, tirx

    out_features = packed.shape[0]
    in_features = packed.shape[1] * PER_WORD

    def value(i, j):
        word = packed[i, j // PER_WORD]
        shift = ((j % PER_WORD) * BITS).astype("uint32")
        q = tirx.bitwise_and(tirx.shift_right(word, shift), tirx.const(0xF, "uint32"))
        return (q.astype("float32") - tirx.const(MAX_INT, "float32")) * scales[i, j // group_size]

    return te.compute((out_features, in_features), value, name="dequantize")

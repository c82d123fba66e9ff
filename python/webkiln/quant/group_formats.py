"""Group formats: one linear/embedding matrix `[out, in]` stored in 32-value groups
along `in`, each with its own scale (and minimum), or as plain floats. 4-bit values are
packed eight to a uint32 (element k of a row in word k // 8, bits 4 * (k % 8)), 8-bit
values four to a uint32 (bytes k % 4, little endian). 5-bit values store their low four
bits like 4-bit ones and their fifth bit in `qhigh` (element k at bit k % 32 of word
k // 32). `f16_packed` stores plain f16 values two to a uint32 (element k in the low half
of word k // 2 when k is even): WGSL without `shader-f16` cannot declare an f16 buffer,
so the kernels decode the bits to f32 arithmetically and f16 weights serve the f32
library as well as the f16 one.

The GGUF block types Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 map onto `q4_sym`, `q4_affine`,
`q5_sym`, `q5_affine` and `q8_sym` exactly: their f16 scales (and minimums) widen to f32
without rounding, and dequantization does the same arithmetic as `gguf`'s NumPy code,
so the weights the kernels see equal gguf's values bit for bit. (The k-quants, whose
256-value super-blocks scale their groups, are kquant_formats.py.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import WebkilnError

GROUP = 32
GGML_BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q5_1": 24, "Q8_0": 34}


class QuantizationError(WebkilnError, ValueError):
    """A quantization the user asked for does not exist or does not fit the model's shapes."""


@dataclass(frozen=True)
class WeightFormat:
    name: str
    bits: int  # 4, 5 or 8 (quantized), 16 (f16_packed), or 0 for plain floats
    has_min: bool
    zero_point: int
    description: str

    @property
    def quantized(self) -> bool:
        return self.bits in (4, 5, 8)

    @property
    def packed(self) -> bool:
        """Stored in uint32 words and read through `value_te` (not a plain float matrix)."""
        return self.bits != 0

    @property
    def token_tiled(self) -> bool:
        """Prefill matmuls may give each thread several tokens (compile/schedules.py), the
        weight decode repeated for each. Not f16_packed: its branchy bit-level decode,
        repeated four times and unrolled, made SwiftShader lose the device (while q4/q8
        decodes run 4.3x faster so: BENCHMARKS.md)."""
        return self.bits != 16

    def param_specs(self, out_f: int, in_f: int, dtype: str) -> dict[str, tuple[tuple[int, ...], str]]:
        """Parameter name -> (shape, dtype) of the stored arrays."""
        if not self.packed:
            return {"weight": ((out_f, in_f), dtype)}
        if self.bits == 16:
            if in_f % 2:
                raise QuantizationError(f"{self.name} needs an even in_features, got {in_f}")
            return {"weight": ((out_f, in_f // 2), "uint32")}
        if in_f % GROUP:
            raise QuantizationError(f"{self.name} needs in_features divisible by {GROUP}, got {in_f}")
        # Scales and minimums stay f32 whatever the activation dtype: the f32 and
        # f16 builds of one model then read the same weight files.
        specs = {"qweight": ((out_f, in_f * self._word_bits // 32), "uint32")}
        if self.bits == 5:
            specs["qhigh"] = ((out_f, in_f // 32), "uint32")
        specs["scale"] = ((out_f, in_f // GROUP), "float32")
        if self.has_min:
            specs["minimum"] = ((out_f, in_f // GROUP), "float32")
        return specs

    @property
    def _word_bits(self) -> int:
        """Bits per element in `qweight` (5-bit formats keep their fifth bit in `qhigh`)."""
        return 4 if self.bits == 5 else self.bits

    # ------------------------------------------------------------------ packing
    def quantize(self, weight: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
        """Float weights -> stored arrays (used when a source is not already in this format)."""
        w = weight.astype(np.float32)
        if not self.packed:
            return {"weight": w.astype(dtype)}
        if self.bits == 16:
            return {"weight": np.ascontiguousarray(w.astype(np.float16)).view(np.uint32)}
        out_f, in_f = w.shape
        groups = w.reshape(out_f, in_f // GROUP, GROUP)
        if self.has_min:
            lo, hi = groups.min(-1), groups.max(-1)
            scale = (hi - lo) / (2**self.bits - 1)
            safe = np.where(scale == 0, 1, scale)[..., None]
            q = np.clip(np.rint((groups - lo[..., None]) / safe), 0, 2**self.bits - 1)
            return self._pack(q.astype(np.int64), scale, dtype, minimum=lo)
        qmax = 2 ** (self.bits - 1) - 1
        scale = np.abs(groups).max(-1) / qmax
        safe = np.where(scale == 0, 1, scale)[..., None]
        q = np.clip(np.rint(groups / safe), -qmax - 1, qmax) + self.zero_point
        return self._pack(q.astype(np.int64), scale, dtype)

    def _pack(self, q: np.ndarray, scale: np.ndarray, dtype: str, minimum=None) -> dict[str, np.ndarray]:
        """Unsigned levels q [out, in] (q8_sym: signed) -> the stored arrays."""
        arrays = {"qweight": pack_bits(q, self._word_bits)}
        if self.bits == 5:
            arrays["qhigh"] = pack_bits(q >> 4, 1)
        arrays["scale"] = scale.astype(np.float32)
        if minimum is not None:
            arrays["minimum"] = minimum.astype(np.float32)
        return arrays

    def from_ggml(self, blocks: np.ndarray, ggml_type: str, dtype: str) -> dict[str, np.ndarray]:
        """GGML blocks (uint8 [rows, bytes_per_row]) -> stored arrays, without requantizing."""
        rows = blocks.shape[0]
        b = blocks.reshape(rows, -1, GGML_BLOCK_BYTES[ggml_type])
        d = b[..., 0:2].copy().view(np.float16)[..., 0]
        has_min = ggml_type in ("Q4_1", "Q5_1")
        minimum = b[..., 2:4].copy().view(np.float16)[..., 0] if has_min else None
        start = 4 if has_min else 2
        if ggml_type in ("Q4_0", "Q4_1", "Q5_0", "Q5_1"):
            high = None
            if ggml_type in ("Q5_0", "Q5_1"):  # then a little-endian uint32: bit j is element j's fifth bit
                high = b[..., start : start + 4].copy().view("<u4")[..., 0]
                start += 4
            qs = b[..., start : start + 16]
            # GGML: element j is the low nibble of byte j, element j + 16 the high nibble.
            q = np.concatenate([qs & 0xF, qs >> 4], axis=-1).astype(np.int64)
            if high is not None:
                q |= ((high[..., None] >> np.arange(32, dtype=np.uint32)) & 1).astype(np.int64) << 4
            return self._pack(q.reshape(rows, -1), d.astype(np.float32), dtype,
                              minimum=None if minimum is None else minimum.astype(np.float32))
        if ggml_type == "Q8_0":
            q = b[..., 2:34].copy().view(np.int8).reshape(rows, -1).astype(np.int64)
            return self._pack(q, d.astype(np.float32), dtype)
        raise ValueError(f"GGML type {ggml_type} is not kept as is")

    # ------------------------------------------------------------------ dequantizing
    def dequantize(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """NumPy reference of the kernels' dequantization (float32, same arithmetic)."""
        if not self.packed:
            return arrays["weight"].astype(np.float32)
        if self.bits == 16:
            return np.ascontiguousarray(arrays["weight"]).view(np.float16).astype(np.float32)
        q = unpack_bits(arrays["qweight"], self._word_bits)
        if self.bits == 5:
            q = q | (unpack_bits(arrays["qhigh"], 1) << 4)
        scale = np.repeat(arrays["scale"].astype(np.float32), GROUP, axis=1)
        if self.bits == 8:
            return q.astype(np.uint8).view(np.int8).astype(np.float32) * scale
        if self.has_min:
            return q.astype(np.float32) * scale + np.repeat(arrays["minimum"].astype(np.float32), GROUP, axis=1)
        return (q.astype(np.float32) - np.float32(self.zero_point)) * scale

    def value_te(self, params: dict, row, col, dtype: str):
        """TIR expression for element [row, col] of the dequantized matrix."""
        from tvm import tirx  # lazy: TVM takes seconds to import; conversion and `build_web --help` never need it

        if not self.packed:
            return params["weight"][row, col].astype(dtype)
        if self.bits == 16:
            word = params["weight"][row, col // 2]
            half = tirx.bitwise_and(tirx.shift_right(word, ((col % 2) * 16).astype("uint32")),
                                    tirx.const(0xFFFF, "uint32"))
            return _f16_bits_to_f32(half).astype(dtype)
        q = bits_te(params["qweight"], row, col, self._word_bits)
        if self.bits == 5:
            q = tirx.bitwise_or(q, tirx.shift_left(bits_te(params["qhigh"], row, col, 1), tirx.const(4, "uint32")))
        # The arithmetic is float32 whatever the activation dtype, so an f16 library sees the
        # reference value rounded once (an f16 multiply-add would round the affine ones twice).
        scale = params["scale"][row, col // GROUP]
        if self.bits == 8:
            # Sign-extend the byte: (q ^ 0x80) - 0x80.
            signed = tirx.bitwise_xor(q, tirx.const(0x80, "uint32")).astype("int32") - tirx.const(0x80, "int32")
            value = signed.astype("float32") * scale
        elif self.has_min:
            value = q.astype("float32") * scale + params["minimum"][row, col // GROUP]
        else:
            value = (q.astype("float32") - tirx.const(self.zero_point, "float32")) * scale
        return value if dtype == "float32" else value.astype(dtype)


def pack_bits(q: np.ndarray, bits: int) -> np.ndarray:
    """Levels q [rows, n] (their low `bits` bits) -> uint32 [rows, n * bits / 32]: element k
    at bits `bits * (k % per_word)` of word k // per_word."""
    rows = q.shape[0]
    per_word = 32 // bits
    words = q.reshape(rows, -1, per_word).astype(np.uint64) & ((1 << bits) - 1)
    shifts = (np.arange(per_word, dtype=np.uint64) * bits)[None, None, :]
    return np.bitwise_or.reduce(words << shifts, axis=-1).astype(np.uint32)


def unpack_bits(packed: np.ndarray, bits: int) -> np.ndarray:
    """The inverse of pack_bits: uint32 levels [rows, n]."""
    per_word = 32 // bits
    shifts = (np.arange(per_word, dtype=np.uint32) * bits)[None, None, :]
    return ((packed[..., None] >> shifts) & np.uint32((1 << bits) - 1)).reshape(packed.shape[0], -1)


def bits_te(words, row, col, bits: int):
    """TIR: the `bits`-bit field of element `col` in a pack_bits array (uint32)."""
    from tvm import tirx  # lazy, as in WeightFormat.value_te

    per_word = 32 // bits
    shift = ((col % per_word) * bits).astype("uint32")
    return tirx.bitwise_and(tirx.shift_right(words[row, col // per_word], shift), tirx.const((1 << bits) - 1, "uint32"))


def _f16_bits_to_f32(h):
    """IEEE half bits (uint32 holding 16 bits) -> the same value as float32, exactly.
    Normal, infinite and NaN halves map by moving the fields (exponent bias 15 -> 127,
    all-ones exponent -> 255); zeros and subnormals are mantissa * 2**-24."""
    from tvm import tirx  # lazy, as in WeightFormat.value_te

    u32 = lambda v: tirx.const(v, "uint32")  # noqa: E731
    sign = tirx.bitwise_and(h, u32(0x8000))
    exponent = tirx.bitwise_and(tirx.shift_right(h, u32(10)), u32(0x1F))
    mantissa = tirx.bitwise_and(h, u32(0x3FF))
    f32_exponent = tirx.Select(exponent == u32(0x1F), u32(0xFF), exponent + u32(112))
    bits = tirx.bitwise_or(tirx.bitwise_or(tirx.shift_left(sign, u32(16)), tirx.shift_left(f32_exponent, u32(23))),
                           tirx.shift_left(mantissa, u32(13)))
    subnormal = mantissa.astype("float32") * tirx.const(2.0**-24, "float32")
    subnormal = tirx.Select(sign == u32(0), subnormal, -subnormal)
    return tirx.Select(exponent == u32(0), subnormal, tirx.reinterpret("float32", bits))


GROUP_FORMATS: tuple[WeightFormat, ...] = (
    WeightFormat("float", 0, False, 0, "plain floating point in the activation dtype"),
    WeightFormat("q4_sym", 4, False, 8, "4-bit, value = (q - 8) * scale per 32 (GGUF Q4_0)"),
    WeightFormat("q4_affine", 4, True, 0, "4-bit, value = q * scale + min per 32 (GGUF Q4_1)"),
    WeightFormat("q5_sym", 5, False, 16, "5-bit, value = (q - 16) * scale per 32 (GGUF Q5_0)"),
    WeightFormat("q5_affine", 5, True, 0, "5-bit, value = q * scale + min per 32 (GGUF Q5_1)"),
    WeightFormat("q8_sym", 8, False, 0, "8-bit signed, value = q * scale per 32 (GGUF Q8_0)"),
    WeightFormat("f16_packed", 16, False, 0, "f16 values two to a uint32, readable without shader-f16"),
)

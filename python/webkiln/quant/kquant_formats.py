"""The GGUF k-quants Q4_K, Q5_K and Q6_K as weight formats, kept bit for bit.

A k-quant row is made of 256-value super-blocks. Each super-block has an f16 scale `d`
(and, for Q4_K/Q5_K, an f16 `dmin`), and its groups (8 of 32 values for Q4_K/Q5_K, 16 of
16 for Q6_K) have small integer scales (and minimums) relative to those:

    Q4_K, Q5_K:  value = (d * sc) * q - (dmin * m)     q 4/5-bit, sc and m 6-bit
    Q6_K:        value = (d * sc) * (q - 32)           q 6-bit, sc int8

GGML packs these bytes for its own CPU kernels (the 6-bit scales interleaved into 12
bytes, nibbles of two groups sharing bytes). Here they are repacked once, at build time,
into arrays a kernel can index directly, at about the same size (Q4_K 4.75 bits a value
against GGML's 4.5, Q5_K 5.75 against 5.5, Q6_K 6.625 against 6.5625):

    qweight   uint32 [out, in / 8]    the low 4 bits of every q, eight to a word (element
                                      k at bits 4 * (k % 8) of word k // 8, like q4_sym)
    qhigh     uint32 [out, in / 32]   Q5_K: the fifth bit, element k at bit k % 32
              uint32 [out, in / 16]   Q6_K: bits 4-5, element k at bits 2 * (k % 16)
    subscale  uint32 [out, in / 64]   Q4_K/Q5_K: per 32-value group g, byte 2 * (g % 2) of
                                      word g // 2 is sc and the next byte m;
                                      Q6_K: per 16-value group g, signed byte g % 4 of word g // 4
    scale     float32 [out, in / 256] d, widened from f16 (exact)
    minimum   float32 [out, in / 256] dmin (Q4_K/Q5_K)

Dequantization does gguf's NumPy arithmetic in the same order in float32 (d * sc first,
then times q, then minus dmin * m), so the kernels see gguf's values bit for bit; the f16
library converts the f32 value once, at the end. No float weights are quantized into
these formats: they exist to keep what a GGUF file already holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .group_formats import QuantizationError, WeightFormat, bits_te, pack_bits, unpack_bits

SUPER = 256
GGML_BLOCK_BYTES = {"Q4_K": 144, "Q5_K": 176, "Q6_K": 210}


@dataclass(frozen=True)
class KQuantFormat(WeightFormat):
    ggml_type: str = ""

    @property
    def quantized(self) -> bool:
        return True

    @property
    def _group(self) -> int:
        return 16 if self.ggml_type == "Q6_K" else 32

    def param_specs(self, out_f: int, in_f: int, dtype: str) -> dict[str, tuple[tuple[int, ...], str]]:
        if in_f % SUPER:
            raise QuantizationError(f"{self.name} (GGUF {self.ggml_type}) needs in_features divisible by {SUPER}, "
                                    f"got {in_f}")
        specs = {"qweight": ((out_f, in_f // 8), "uint32")}
        if self.ggml_type == "Q5_K":
            specs["qhigh"] = ((out_f, in_f // 32), "uint32")
        elif self.ggml_type == "Q6_K":
            specs["qhigh"] = ((out_f, in_f // 16), "uint32")
        specs["subscale"] = ((out_f, in_f // 64), "uint32")
        specs["scale"] = ((out_f, in_f // SUPER), "float32")
        if self.has_min:
            specs["minimum"] = ((out_f, in_f // SUPER), "float32")
        return specs

    def quantize(self, weight: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
        raise QuantizationError(f"{self.name} only keeps GGUF {self.ggml_type} tensors as they are; float "
                                "weights are quantized with the scheme's own format")

    # ------------------------------------------------------------------ from GGML bytes
    def from_ggml(self, blocks: np.ndarray, ggml_type: str, dtype: str) -> dict[str, np.ndarray]:
        if ggml_type != self.ggml_type:
            raise ValueError(f"{self.name} keeps GGML {self.ggml_type}, not {ggml_type}")
        rows = blocks.shape[0]
        b = blocks.reshape(rows, -1, GGML_BLOCK_BYTES[ggml_type])
        n = b.shape[1]  # super-blocks per row
        if ggml_type == "Q6_K":
            return self._from_q6_k(b, rows, n)
        d = b[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        dmin = b[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
        sc, m = _unpack_6bit_scales(b[..., 4:16])  # [rows, n, 8] each
        if ggml_type == "Q4_K":
            qs = b[..., 16:144]
        else:
            qh, qs = b[..., 16:48], b[..., 48:176]
        # 4 chunks of 32 bytes; group 2j is the low nibbles of chunk j, group 2j + 1 the high ones.
        chunks = qs.reshape(rows, n, 4, 1, 32) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 1, 2, 1)
        q = (chunks & 0xF).reshape(rows, n, 8, 32).astype(np.int64)
        if ggml_type == "Q5_K":
            # Bit g of byte l of qh is the fifth bit of element l of group g.
            high = (qh[:, :, None, :] >> np.arange(8, dtype=np.uint8).reshape(1, 1, 8, 1)) & 1
            q |= high.astype(np.int64) << 4
        sub = np.stack([sc, m], axis=-1).reshape(rows, n * 16)  # sc0 m0 sc1 m1 ... bytes
        arrays = {"qweight": pack_bits(q.reshape(rows, -1), 4)}
        if ggml_type == "Q5_K":
            arrays["qhigh"] = pack_bits(q.reshape(rows, -1) >> 4, 1)
        arrays["subscale"] = pack_bits(sub.astype(np.int64), 8)
        arrays["scale"] = d
        arrays["minimum"] = dmin
        return arrays

    def _from_q6_k(self, b: np.ndarray, rows: int, n: int) -> dict[str, np.ndarray]:
        ql, qh, scales = b[..., 0:128], b[..., 128:192], b[..., 192:208]
        d = b[..., 208:210].copy().view(np.float16)[..., 0].astype(np.float32)
        # Two halves of 128 values. In half h, value 64 * s + i has the low nibble (s = 0) or
        # high nibble (s = 1) of ql byte 64 * h + i, and value 32 * t + l bits 2t..2t+1 of qh
        # byte 32 * h + l.
        low = ql.reshape(rows, n, 2, 1, 64) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 1, 2, 1)
        low = (low & 0xF).reshape(rows, n, 2, 128).astype(np.int64)
        high = qh.reshape(rows, n, 2, 1, 32) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 1, 4, 1)
        high = (high & 3).reshape(rows, n, 2, 128).astype(np.int64)
        q = (low | (high << 4)).reshape(rows, -1)
        return {
            "qweight": pack_bits(q, 4),
            "qhigh": pack_bits(q >> 4, 2),
            "subscale": pack_bits(scales.reshape(rows, -1).astype(np.int64), 8),  # the int8 bytes as they are
            "scale": d,
        }

    # ------------------------------------------------------------------ dequantizing
    def _levels(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        q = unpack_bits(arrays["qweight"], 4)
        if self.ggml_type == "Q5_K":
            q = q | (unpack_bits(arrays["qhigh"], 1) << 4)
        elif self.ggml_type == "Q6_K":
            q = q | (unpack_bits(arrays["qhigh"], 2) << 4)
        return q

    def dequantize(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """NumPy reference of the kernels' dequantization (float32, same arithmetic)."""
        q = self._levels(arrays).astype(np.float32)
        rows, cols = q.shape
        group = self._group
        sub = unpack_bits(arrays["subscale"], 8)  # [rows, bytes]
        d = np.repeat(arrays["scale"].astype(np.float32), SUPER // group, axis=1)  # per group
        if self.ggml_type == "Q6_K":
            sc = sub.astype(np.uint8).view(np.int8).astype(np.float32)
            scale = np.repeat(d * sc, group, axis=1)
            return scale * (q - np.float32(32))
        sc, m = sub[:, 0::2].astype(np.float32), sub[:, 1::2].astype(np.float32)
        dmin = np.repeat(arrays["minimum"].astype(np.float32), SUPER // group, axis=1)
        return np.repeat(d * sc, group, axis=1) * q - np.repeat(dmin * m, group, axis=1)

    def value_te(self, params: dict, row, col, dtype: str):
        from tvm import tirx  # lazy: TVM takes seconds to import

        u32 = lambda v: tirx.const(v, "uint32")  # noqa: E731
        q = bits_te(params["qweight"], row, col, 4)
        d = params["scale"][row, col // SUPER]
        if self.ggml_type == "Q6_K":
            q = tirx.bitwise_or(q, tirx.shift_left(bits_te(params["qhigh"], row, col, 2), u32(4)))
            byte = bits_te(params["subscale"], row, col // 16, 8)
            sc = tirx.bitwise_xor(byte, u32(0x80)).astype("int32") - tirx.const(0x80, "int32")  # sign-extend
            value = (d * sc.astype("float32")) * (q.astype("int32") - tirx.const(32, "int32")).astype("float32")
            return value if dtype == "float32" else value.astype(dtype)
        if self.ggml_type == "Q5_K":
            q = tirx.bitwise_or(q, tirx.shift_left(bits_te(params["qhigh"], row, col, 1), u32(4)))
        group = col // 32
        sc = bits_te(params["subscale"], row, group * 2, 8)
        m = bits_te(params["subscale"], row, group * 2 + 1, 8)
        dmin = params["minimum"][row, col // SUPER]
        value = (d * sc.astype("float32")) * q.astype("float32") - dmin * m.astype("float32")
        return value if dtype == "float32" else value.astype(dtype)


def _unpack_6bit_scales(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GGML's 12 scale bytes of a Q4_K/Q5_K super-block -> (sc, m), 8 six-bit values each.

    Bytes 0-3 hold sc of groups 0-3 in their low 6 bits, bytes 4-7 m of groups 0-3 the same
    way; groups 4-7 take their low 4 bits from bytes 8-11 (sc in the low nibble, m in the
    high one) and their top 2 bits from the top 2 bits of bytes 0-3 (sc) and 4-7 (m).
    """
    lo_sc, lo_m, rest = scales[..., 0:4], scales[..., 4:8], scales[..., 8:12]
    sc = np.concatenate([lo_sc & 0x3F, (rest & 0xF) | ((lo_sc >> 6) << 4)], axis=-1)
    m = np.concatenate([lo_m & 0x3F, (rest >> 4) | ((lo_m >> 6) << 4)], axis=-1)
    return sc, m


KQUANT_FORMATS: tuple[KQuantFormat, ...] = (
    KQuantFormat("q4_k", 4, True, 0, "GGUF Q4_K: 4-bit, per 256 an f16 d and dmin, per 32 a 6-bit scale and min",
                 "Q4_K"),
    KQuantFormat("q5_k", 5, True, 0, "GGUF Q5_K: 5-bit, per 256 an f16 d and dmin, per 32 a 6-bit scale and min",
                 "Q5_K"),
    KQuantFormat("q6_k", 6, False, 32, "GGUF Q6_K: 6-bit, per 256 an f16 d, per 16 an 8-bit signed scale", "Q6_K"),
)

"""Seeded Gaussian noise for diffusion, bit-identical to web/src/image/latents.ts.

The browser draws the initial latents and the ancestral noise of a text-to-image run
from this generator, so the same run can be replayed outside the browser (for example
fed to diffusers: tests/test_image_schedulers.py). The specification lives at the top of
latents.ts; in short:

* uniforms: PCG32 (PCG-XSH-RR 64/32, seeded like pcg32_srandom_r(seed, stream), default
  stream 54), ``next_float = ((u32 >> 5) * 2**26 + (u32' >> 6)) / 2**53``;
* pairs (Box-Muller): ``a, b = next_float(), next_float()``;
  ``r = sqrt(-2 ln(1 - a))``; values ``r cos(2 pi b)``, then ``r sin(2 pi b)``, each
  rounded to float32 at the end;
* ``ln``, ``cos`` and ``sin`` are fixed float64 recipes built from +, -, *, / and sqrt
  only (:func:`det_log`, :func:`det_cos_sin_turn`), so every platform agrees bit for bit;
* the generator is a stream: values come out one by one, in flat row-major (NCHW) order;
  drawing 3 then 5 gives the same 8 values as drawing 8.

NumPy's elementwise float64 +, -, *, / and sqrt are IEEE 754 correctly rounded, like
JavaScript's, which is why the vectorised code below agrees with the scalar TypeScript.
"""

from __future__ import annotations

import math

import numpy as np

MASK64 = (1 << 64) - 1
PCG_MULTIPLIER = 6364136223846793005

SQRT_HALF = 0.7071067811865476
LN2 = 0.6931471805599453
HALF_PI = 1.5707963267948966
LOG_TERMS = 10
TRIG_TERMS = 12


def det_log(x: np.ndarray) -> np.ndarray:
    """Natural log (float64, x > 0 finite and normal) with the fixed recipe of latents.ts."""
    x = np.asarray(x, dtype=np.float64)
    if not np.all((x > 0) & np.isfinite(x)):
        raise ValueError("det_log needs positive finite numbers")
    m, e = np.frexp(x)  # exact: m in [0.5, 1), x = m * 2**e
    if np.any(e < -1021):
        raise ValueError("det_log does not handle subnormal numbers")
    e = e.astype(np.float64)
    low = m < SQRT_HALF
    m = np.where(low, m * 2, m)
    e = np.where(low, e - 1, e)
    f = (m - 1) / (m + 1)
    f2 = f * f
    p = np.full_like(f, 1 / (2 * LOG_TERMS + 1))
    for k in range(LOG_TERMS - 1, -1, -1):
        p = p * f2 + 1 / (2 * k + 1)
    return e * LN2 + 2 * f * p


def det_cos_sin_turn(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cos(2 pi b), sin(2 pi b)) for b in [0, 1) with the fixed recipe of latents.ts."""
    q = np.asarray(b, dtype=np.float64) * 4
    k = np.floor(q)
    x = (q - k) * HALF_PI
    x2 = x * x
    s = np.ones_like(x)
    c = np.ones_like(x)
    for j in range(TRIG_TERMS, 0, -1):
        s = 1 - x2 * s / (2 * j * (2 * j + 1))
        c = 1 - x2 * c / ((2 * j - 1) * (2 * j))
    s = x * s
    quarter = k.astype(np.int64) & 3
    cos = np.select([quarter == 0, quarter == 1, quarter == 2], [c, -s, -c], s)
    sin = np.select([quarter == 0, quarter == 1, quarter == 2], [s, c, -s], -c)
    return cos, sin


class Pcg32:
    """PCG32 as in web/src/llm/sampling.ts, with a vectorised ``next_u32_array``."""

    def __init__(self, seed: int, stream: int = 54) -> None:
        if seed < 0 or stream < 0:
            raise ValueError("seed and stream must be >= 0")
        self.inc = ((stream << 1) | 1) & MASK64
        self.state = 0
        self._advance(1)
        self.state = (self.state + (seed & MASK64)) & MASK64
        self._advance(1)

    def _advance(self, steps: int) -> None:
        # state_{n} = A^n state + inc (A^{n-1} + ... + 1)   (mod 2^64), by doubling
        mult, plus = PCG_MULTIPLIER, self.inc
        acc_mult, acc_plus = 1, 0
        while steps:
            if steps & 1:
                acc_mult = (acc_mult * mult) & MASK64
                acc_plus = (acc_plus * mult + plus) & MASK64
            plus = ((mult + 1) * plus) & MASK64
            mult = (mult * mult) & MASK64
            steps >>= 1
        self.state = (acc_mult * self.state + acc_plus) & MASK64

    def next_u32(self) -> int:
        return int(self.next_u32_array(1)[0])

    def next_u32_array(self, count: int) -> np.ndarray:
        """The next ``count`` outputs as uint32, in order."""
        if count <= 0:
            return np.zeros(0, dtype=np.uint32)
        with np.errstate(over="ignore"):
            # old states s_0..s_{count-1}: s_i = A^i s_0 + inc (A^{i-1} + ... + 1), all mod 2^64
            powers = np.full(count, PCG_MULTIPLIER, dtype=np.uint64)
            powers[0] = 1
            powers = np.multiply.accumulate(powers)  # A^i, wrapping
            sums = np.zeros(count, dtype=np.uint64)
            if count > 1:
                sums[1:] = np.add.accumulate(powers[:-1])  # A^0 + ... + A^{i-1}, wrapping
            old = powers * np.uint64(self.state) + sums * np.uint64(self.inc)
            xorshifted = (((old >> np.uint64(18)) ^ old) >> np.uint64(27)) & np.uint64(0xFFFFFFFF)
            rot = old >> np.uint64(59)
            left = (np.uint64(32) - rot) & np.uint64(31)
            out = ((xorshifted >> rot) | (xorshifted << left)) & np.uint64(0xFFFFFFFF)
        self._advance(count)
        return out.astype(np.uint32)

    def next_float_array(self, count: int) -> np.ndarray:
        """The next ``count`` next_float() values (float64 in [0, 1)), in order."""
        words = self.next_u32_array(2 * count).astype(np.float64)
        high = np.floor(words[0::2] / 32)  # >> 5
        low = np.floor(words[1::2] / 64)  # >> 6
        return (high * 67108864 + low) / 9007199254740992


class GaussianNoise:
    """The seeded standard-normal float32 stream of web/src/image/latents.ts."""

    def __init__(self, seed: int, stream: int = 54) -> None:
        self.rng = Pcg32(seed, stream)
        self.spare: np.float32 | None = None

    def normal(self, count: int) -> np.ndarray:
        """The next ``count`` values as a float32 array."""
        out = np.empty(count, dtype=np.float32)
        start = 0
        if count and self.spare is not None:
            out[0] = self.spare
            self.spare = None
            start = 1
        pairs = (count - start + 1) // 2
        if pairs:
            uniforms = self.rng.next_float_array(2 * pairs)
            a, b = uniforms[0::2], uniforms[1::2]
            r = np.sqrt(-2 * det_log(1 - a))
            cos, sin = det_cos_sin_turn(b)
            values = np.empty(2 * pairs, dtype=np.float32)
            values[0::2] = (r * cos).astype(np.float32)
            values[1::2] = (r * sin).astype(np.float32)
            out[start:] = values[: count - start]
            if (count - start) % 2:
                self.spare = values[-1]
        return out

    def tensor(self, shape: tuple[int, ...]) -> np.ndarray:
        """The next ``prod(shape)`` values, row-major, as a float32 array of ``shape``."""
        return self.normal(math.prod(shape)).reshape(shape)


def initial_latents(noise: GaussianNoise, shape: tuple[int, ...], init_noise_sigma: float) -> np.ndarray:
    """``randn * init_noise_sigma`` in float32, as latents.ts's initialLatents."""
    latents = noise.tensor(shape)
    scale = np.float32(init_noise_sigma)
    return latents if scale == 1 else (latents * scale).astype(np.float32)

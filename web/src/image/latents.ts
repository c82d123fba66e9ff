// Seeded Gaussian noise for diffusion: the initial latents and the noise that ancestral
// schedulers add at each step. python/webkiln/image_noise.py is the same generator in
// NumPy; for the same seed and stream both give bit-identical float32 values
// (tests/test_image_schedulers.py), so a browser run can be replayed outside it.
//
// The generator, exactly:
//   * Uniforms come from PCG32 (web/src/llm/sampling.ts, `new Pcg32(seed, stream)`):
//     nextFloat() = 53 random bits in [0, 1).
//   * Values are made in pairs (Box-Muller). For each pair:
//       a = nextFloat(); b = nextFloat()                 (a first)
//       r = sqrt(-2 * ln(1 - a))                          (1 - a is in (0, 1], exactly)
//       z0 = r * cos(2*pi*b); z1 = r * sin(2*pi*b)
//     and the stream is z0, z1, z0', z1', ... each rounded to float32 (round to nearest
//     even) only at the end. ln, cos and sin are NOT Math.log / Math.cos / Math.sin (whose
//     last bit differs between engines and libms) but the fixed float64 recipes below,
//     built only from +, -, *, / and sqrt, which IEEE 754 makes identical everywhere.
//   * The generator is a stream: next() hands out one value at a time, so drawing 3 and
//     then 5 values gives the same 8 values as drawing 8. An odd draw keeps the second
//     value of its last pair for the next draw.
//   * Tensors are filled in flat row-major order (for latents [batch, channels, height,
//     width], NCHW, the order diffusers' randn_tensor uses).
//   * A text-to-image run draws from one generator: first the initial latents, then, for
//     ancestral schedulers, one latent-sized block per step, in step order.
//
// ln(x), x > 0 finite:  x = m * 2^e with m in [0.5, 1) (exact, from the float's bits);
//   if m < SQRT_HALF then m = 2m, e = e - 1.  f = (m - 1) / (m + 1); f2 = f * f;
//   p = 1/21; then for k = 9 down to 0: p = p * f2 + 1/(2k+1);
//   ln x = e * LN2 + 2 * f * p.
// sin/cos of 2*pi*b, b in [0, 1):  q = 4b; k = floor(q); x = (q - k) * HALF_PI;
//   x2 = x * x; s = 1; c = 1; for j = 12 down to 1:
//     s = 1 - x2 * s / ((2j) * (2j + 1));  c = 1 - x2 * c / ((2j - 1) * (2j));
//   s = x * s.  Quarter k turns (cos, sin) = (c, s), (-s, c), (-c, -s), (s, -c).
// (The constants below are float64 literals; 1/(2k+1) is computed by division.)

import { Pcg32 } from "../base/prng";

export const SQRT_HALF = 0.7071067811865476;
export const LN2 = 0.6931471805599453;
export const HALF_PI = 1.5707963267948966;

const LOG_TERMS = 10; // series terms after the first: f^2 ... f^20 (|f| <= 0.1716)
const TRIG_TERMS = 12; // x^2 ... x^24 (x <= pi/2)

const scratch = new DataView(new ArrayBuffer(8));

/** Natural log with the fixed recipe above (for x > 0, finite, normal). */
export function detLog(x: number): number {
  if (!(x > 0) || !Number.isFinite(x)) {
    throw new RangeError(`detLog needs a positive finite number, got ${x}`);
  }
  scratch.setFloat64(0, x);
  const high = scratch.getUint32(0);
  const biased = (high >>> 20) & 0x7ff;
  if (biased === 0) {
    throw new RangeError(`detLog does not handle subnormal ${x}`);
  }
  let e = biased - 1022;
  scratch.setUint32(0, (high & 0x800fffff) | (1022 << 20)); // same mantissa, m in [0.5, 1)
  let m = scratch.getFloat64(0);
  if (m < SQRT_HALF) {
    m = m * 2;
    e = e - 1;
  }
  const f = (m - 1) / (m + 1);
  const f2 = f * f;
  let p = 1 / (2 * LOG_TERMS + 1);
  for (let k = LOG_TERMS - 1; k >= 0; k--) {
    p = p * f2 + 1 / (2 * k + 1);
  }
  return e * LN2 + 2 * f * p;
}

/** [cos(2*pi*b), sin(2*pi*b)] with the fixed recipe above, for b in [0, 1). */
export function detCosSinTurn(b: number): [number, number] {
  const q = b * 4;
  const k = Math.floor(q);
  const x = (q - k) * HALF_PI;
  const x2 = x * x;
  let s = 1;
  let c = 1;
  for (let j = TRIG_TERMS; j >= 1; j--) {
    s = 1 - (x2 * s) / (2 * j * (2 * j + 1));
    c = 1 - (x2 * c) / ((2 * j - 1) * (2 * j));
  }
  s = x * s;
  switch (k & 3) {
    case 0:
      return [c, s];
    case 1:
      return [-s, c];
    case 2:
      return [-c, -s];
    default:
      return [s, -c];
  }
}

/** Where a scheduler's ancestral noise comes from: fills `out` with N(0, 1) values. */
export interface NoiseSource {
  fill(out: Float32Array): Float32Array;
}

/** The seeded standard-normal stream described at the top of this file. */
export class GaussianNoise implements NoiseSource {
  private readonly rng: Pcg32;
  private spare: number | null = null;

  constructor(seed: number | bigint, stream: number | bigint = 54n) {
    if (typeof seed === "number" && !(Number.isSafeInteger(seed) && seed >= 0)) {
      throw new RangeError(`seed must be a whole number >= 0, got ${seed}`);
    }
    this.rng = new Pcg32(seed, stream);
  }

  /** The next value (a float32, returned as a number). */
  next(): number {
    if (this.spare !== null) {
      const value = this.spare;
      this.spare = null;
      return value;
    }
    const a = this.rng.nextFloat();
    const b = this.rng.nextFloat();
    const r = Math.sqrt(-2 * detLog(1 - a));
    const [c, s] = detCosSinTurn(b);
    this.spare = Math.fround(r * s);
    return Math.fround(r * c);
  }

  /** Fills `out` with the next out.length values, in order; returns `out`. */
  fill(out: Float32Array): Float32Array {
    for (let i = 0; i < out.length; i++) {
      out[i] = this.next();
    }
    return out;
  }

  /** The next `count` values as a new Float32Array. */
  take(count: number): Float32Array {
    return this.fill(new Float32Array(count));
  }
}

/** Number of elements of a tensor shape (whole numbers >= 1). */
export function shapeSize(shape: readonly number[]): number {
  let size = 1;
  for (const dim of shape) {
    if (!Number.isInteger(dim) || dim < 1) {
      throw new RangeError(`bad tensor shape [${shape.join(", ")}]`);
    }
    size *= dim;
  }
  return size;
}

/**
 * Initial latents for a run: `count` values from `noise`, each multiplied by the
 * scheduler's initNoiseSigma in float32 (as diffusers' pipelines do:
 * `latents = randn * scheduler.init_noise_sigma`).
 */
export function initialLatents(noise: GaussianNoise, count: number, initNoiseSigma: number): Float32Array {
  const latents = noise.take(count);
  const scale = Math.fround(initNoiseSigma);
  if (scale !== 1) {
    for (let i = 0; i < latents.length; i++) {
      latents[i] = Math.fround((latents[i] as number) * scale);
    }
  }
  return latents;
}

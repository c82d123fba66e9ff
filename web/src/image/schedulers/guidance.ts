// Classifier-free guidance, applied to the model output before a scheduler step.

const f32 = Math.fround;

/**
 * Classifier-free guidance: uncond + scale * (cond - uncond), elementwise in float32
 * (as diffusers' pipelines compute it). Writes into `out` (may be `uncond`) or a new array.
 */
export function classifierFreeGuidance(
  uncond: Float32Array,
  cond: Float32Array,
  scale: number,
  out: Float32Array = new Float32Array(uncond.length),
): Float32Array {
  if (uncond.length !== cond.length || out.length !== uncond.length) {
    throw new RangeError("classifier-free guidance: arrays of different lengths");
  }
  const g = f32(scale);
  for (let i = 0; i < uncond.length; i++) {
    const u = uncond[i] as number;
    out[i] = u + f32(g * f32((cond[i] as number) - u));
  }
  return out;
}

/**
 * Guidance for a batched model output [uncond; cond] (the unconditional half first,
 * as diffusers' `noise_pred.chunk(2)`): a new array of half the length.
 */
export function guidanceFromBatch(batched: Float32Array, scale: number): Float32Array {
  if (batched.length % 2 !== 0) {
    throw new RangeError("classifier-free guidance: batched output has an odd length");
  }
  const half = batched.length / 2;
  return classifierFreeGuidance(batched.subarray(0, half), batched.subarray(half), scale);
}

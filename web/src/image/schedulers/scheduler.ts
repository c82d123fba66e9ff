// The interface every sampler implements, and the argument checks they share.

import type { SchedulerName } from "../../base/manifest_types";
import type { NoiseSource } from "../latents";

// ------------------------------------------------------------------- interface

export interface Scheduler {
  readonly kind: SchedulerName;
  /** Timesteps to give the model, one per step (DPM-Solver's are whole numbers). */
  readonly timesteps: Float32Array;
  /** Noise levels: sigmas[i] at step i, plus the final one (length steps + 1). */
  readonly sigmas: Float32Array;
  /** Standard deviation of the initial latents (multiply N(0, 1) noise by it). */
  readonly initNoiseSigma: number;
  /** Whether step() needs a noise source (ancestral sampling). */
  readonly needsNoise: boolean;
  setTimesteps(steps: number): void;
  /** The model's input at step `stepIndex` (a new array; `sample` is not changed). */
  scaleModelInput(sample: Float32Array, stepIndex: number): Float32Array;
  /** One denoising step: the sample for step stepIndex + 1 (a new array). */
  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array, noise?: NoiseSource): Float32Array;
  /**
   * The clean sample the model predicted in the last step() (diffusers'
   * pred_original_sample; DPM-Solver++'s data prediction), or null before the first step.
   * Previews decode it: early steps' latents are mostly noise, this is what they denoise to.
   */
  readonly predictedOriginal: Float32Array | null;
}

export function checkSteps(steps: number): void {
  if (!Number.isInteger(steps) || steps < 1) {
    throw new RangeError(`number of inference steps must be a whole number >= 1, got ${steps}`);
  }
}

export function checkStepArgs(s: Scheduler, stepIndex: number, a: Float32Array, b?: Float32Array): void {
  if (!Number.isInteger(stepIndex) || stepIndex < 0 || stepIndex >= s.timesteps.length) {
    throw new RangeError(`step index ${stepIndex} is outside 0..${s.timesteps.length - 1}`);
  }
  if (b !== undefined && a.length !== b.length) {
    throw new RangeError(`model output has ${a.length} values but the sample has ${b.length}`);
  }
}

// The noise schedules the samplers share: NumPy/torch's spacing and interpolation helpers
// (reproduced bit for bit, see index.ts) and the training schedule of a config.

import { SchedulerConfigError } from "../../base/errors";
import { pickChoice, pickNumber, requireDefault, type SchedulerConfig } from "./config";

const f32 = Math.fround;

// ----------------------------------------------------------- NumPy / torch helpers

/** np.round: to the nearest whole number, halves to even. */
export function roundHalfEven(x: number): number {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff < 0.5) return floor;
  if (diff > 0.5) return floor + 1;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** np.linspace(start, stop, num) in float64, computed the way NumPy does. */
export function numpyLinspace(start: number, stop: number, num: number): number[] {
  const div = num - 1;
  const delta = stop - start;
  const out: number[] = [];
  if (div > 0) {
    const step = delta / div;
    for (let i = 0; i < num; i++) {
      out.push(step === 0 ? (i / div) * delta + start : i * step + start);
    }
    out[num - 1] = stop;
  } else if (num === 1) {
    out.push(0 * delta + start);
  }
  return out;
}

/** np.arange(start, stop, step) for float64: start, start + step, then start + i * delta. */
export function numpyArange(start: number, stop: number, step: number): number[] {
  const length = Math.ceil((stop - start) / step);
  const out: number[] = [];
  if (!(length > 0)) return out;
  out.push(start);
  if (length === 1) return out;
  const next = start + step;
  out.push(next);
  const delta = next - start;
  for (let i = 2; i < length; i++) out.push(start + i * delta);
  return out;
}

/** torch.linspace(start, end, steps, dtype=float32) on CPU (fused start + step * i). */
export function torchLinspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  const s = f32(start);
  const e = f32(end);
  if (steps === 1) {
    out[0] = s;
    return out;
  }
  const step = f32(f32(e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) {
    out[i] = i < halfway ? s + step * i : e - step * (steps - 1 - i);
  }
  return out;
}

/** np.interp(x, arange(len(fp)), fp) in float64. */
export function interpIndex(x: number, fp: Float32Array): number {
  const last = fp.length - 1;
  if (x <= 0) return fp[0] as number;
  if (x >= last) return fp[last] as number;
  const j = Math.floor(x);
  const slope = (fp[j + 1] as number) - (fp[j] as number); // divided by (j + 1) - j = 1
  return slope * (x - j) + (fp[j] as number);
}

/** diffusers' _sigma_to_t: fractional training timestep of `sigma` (float64). */
export function sigmaToT(sigma: number, logSigmas: Float32Array): number {
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  let lowIdx = 0;
  for (let i = 0; i < logSigmas.length; i++) {
    if (logSigma - (logSigmas[i] as number) >= 0) lowIdx = i;
  }
  lowIdx = Math.min(lowIdx, logSigmas.length - 2);
  const highIdx = lowIdx + 1;
  const low = logSigmas[lowIdx] as number;
  const high = logSigmas[highIdx] as number;
  let w = (low - logSigma) / (low - high);
  w = Math.min(Math.max(w, 0), 1);
  return (1 - w) * lowIdx + w * highIdx;
}

/** Karras et al. (2022) sigmas, rho = 7, float64 (diffusers' _convert_to_karras). */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, steps: number): number[] {
  const rho = 7.0;
  const minInvRho = Math.pow(sigmaMin, 1 / rho);
  const maxInvRho = Math.pow(sigmaMax, 1 / rho);
  return numpyLinspace(0, 1, steps).map((r) => Math.pow(maxInvRho + r * (minInvRho - maxInvRho), rho));
}

// ------------------------------------------------------------ training schedule

export interface TrainSchedule {
  numTrain: number;
  /** alphas_cumprod, float32, index = training timestep. */
  alphasCumprod: Float32Array;
  /** ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5, float32, ascending with t. */
  sigmas: Float32Array;
}

export function trainSchedule(config: SchedulerConfig): TrainSchedule {
  const numTrain = pickNumber(config, "num_train_timesteps", 1000, (v) => Number.isInteger(v) && v >= 2);
  const betaStart = pickNumber(config, "beta_start", 0.0001, (v) => v >= 0);
  const betaEnd = pickNumber(config, "beta_end", 0.02, (v) => v >= 0);
  requireDefault(config, "rescale_betas_zero_snr", false);
  let betas: Float32Array;
  const trained = config.trained_betas;
  if (trained !== undefined && trained !== null) {
    if (!Array.isArray(trained) || trained.length !== numTrain || !trained.every((b) => typeof b === "number")) {
      throw new SchedulerConfigError("trained_betas", `expected ${numTrain} numbers`);
    }
    betas = Float32Array.from(trained);
  } else {
    const schedule = pickChoice(config, "beta_schedule", "linear", ["linear", "scaled_linear", "squaredcos_cap_v2"]);
    if (schedule === "linear") {
      betas = torchLinspaceF32(betaStart, betaEnd, numTrain);
    } else if (schedule === "scaled_linear") {
      betas = torchLinspaceF32(Math.sqrt(betaStart), Math.sqrt(betaEnd), numTrain);
      for (let i = 0; i < numTrain; i++) betas[i] = (betas[i] as number) * (betas[i] as number);
    } else {
      // Glide cosine schedule (diffusers' betas_for_alpha_bar, cosine), float64 then float32
      const alphaBar = (t: number) => Math.cos((((t + 0.008) / 1.008) * Math.PI) / 2) ** 2;
      betas = new Float32Array(numTrain);
      for (let i = 0; i < numTrain; i++) {
        betas[i] = Math.min(1 - alphaBar((i + 1) / numTrain) / alphaBar(i / numTrain), 0.999);
      }
    }
  }
  // torch.cumprod on float32 keeps its running product in float64
  const alphasCumprod = new Float32Array(numTrain);
  let acc = 1;
  for (let i = 0; i < numTrain; i++) {
    acc *= f32(1 - (betas[i] as number));
    alphasCumprod[i] = acc;
  }
  const sigmas = new Float32Array(numTrain);
  for (let i = 0; i < numTrain; i++) {
    const ac = alphasCumprod[i] as number;
    sigmas[i] = Math.sqrt(f32(f32(1 - ac) / ac));
  }
  return { numTrain, alphasCumprod, sigmas };
}

/** diffusers' timestep_spacing values we implement. */
export type Spacing = "linspace" | "leading" | "trailing";

// Diffusion schedulers on Float32Array latents, equal to diffusers' (0.42):
//   * Euler            = EulerDiscreteScheduler
//   * Euler ancestral  = EulerAncestralDiscreteScheduler (also SD-Turbo's few-step path,
//                        timestep_spacing "trailing": see sdTurboSchedulerConfig)
//   * DPM-Solver++ 2M  = DPMSolverMultistepScheduler, algorithm_type "dpmsolver++",
//                        solver_order 2 (1 also works), Karras sigmas optional (off)
// Each is built from a diffusers scheduler_config.json object; missing fields take the
// defaults of that diffusers class, fields the class does not know are ignored, and a
// value we do not implement throws a SchedulerConfigError that names the field.
//
// Numerics follow diffusers step by step (tests/test_image_schedulers.py compares them):
// the training schedule and every per-step scalar and element operation are done in
// float32 like torch (each result rounded with Math.fround), the places where diffusers
// uses NumPy float64 (timestep spacing, np.interp, Karras sigmas) in float64, and the
// roundings (np.round: half to even) and float32 casts happen where diffusers has them.
// Only transcendental functions (log/exp/pow/cos) may differ in the last bit, and sqrt:
// Math.sqrt is correctly rounded, torch's float32 sqrt (MKL on x86) is not always, so a
// sigma can differ from diffusers' by one float32 ulp (timesteps are exact).
//
// Use (a text-to-image loop; `noise` also gives the initial latents, see latents.ts):
//   const s = createScheduler(config); s.setTimesteps(steps);
//   let x = initialLatents(noise, size, s.initNoiseSigma);
//   for (let i = 0; i < s.timesteps.length; i++) {
//     const eps = unet(s.scaleModelInput(x, i), s.timesteps[i]);
//     x = s.step(eps, i, x, noise);
//   }

import { SchedulerConfigError } from "../base/errors";
import { SCHEDULER_CLASSES, type SchedulerName } from "../base/manifest_types";
import type { NoiseSource } from "./latents";

const f32 = Math.fround;

// ------------------------------------------------------------------------- config

/** A diffusers scheduler_config.json object (snake_case keys, as in the file). */
export interface SchedulerConfig {
  _class_name?: string;
  num_train_timesteps?: number;
  beta_start?: number;
  beta_end?: number;
  beta_schedule?: string;
  trained_betas?: number[] | null;
  prediction_type?: string;
  timestep_spacing?: string;
  steps_offset?: number;
  final_sigmas_type?: string;
  use_karras_sigmas?: boolean;
  sigma_min?: number | null;
  sigma_max?: number | null;
  interpolation_type?: string;
  timestep_type?: string;
  rescale_betas_zero_snr?: boolean;
  use_exponential_sigmas?: boolean;
  use_beta_sigmas?: boolean;
  // DPMSolverMultistepScheduler
  solver_order?: number;
  algorithm_type?: string;
  solver_type?: string;
  lower_order_final?: boolean;
  euler_at_final?: boolean;
  thresholding?: boolean;
  lambda_min_clipped?: number;
  variance_type?: string | null;
  use_lu_lambdas?: boolean;
  use_flow_sigmas?: boolean;
  use_dynamic_shifting?: boolean;
  [key: string]: unknown;
}

/**
 * SD-Turbo's few-step sampler: Euler ancestral with "trailing" spacing over the
 * SD 2.x training schedule (1 to 4 steps, no classifier-free guidance). Prefer the
 * model's own scheduler_config.json when it ships one; this is the fallback.
 */
export function sdTurboSchedulerConfig(): SchedulerConfig {
  return {
    _class_name: "EulerAncestralDiscreteScheduler",
    num_train_timesteps: 1000,
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: "scaled_linear",
    prediction_type: "epsilon",
    timestep_spacing: "trailing",
    steps_offset: 1,
  };
}

function pick<T>(config: SchedulerConfig, field: string, fallback: T): T {
  const value = config[field];
  return value === undefined || value === null ? fallback : (value as T);
}

function pickChoice<T extends string>(config: SchedulerConfig, field: string, fallback: T, allowed: readonly T[]): T {
  const value = pick<unknown>(config, field, fallback);
  if (typeof value !== "string" || !(allowed as readonly string[]).includes(value)) {
    throw new SchedulerConfigError(
      field,
      `${JSON.stringify(value)} is not supported (expected ${allowed.map((a) => JSON.stringify(a)).join(", ")})`,
    );
  }
  return value as T;
}

function pickNumber(config: SchedulerConfig, field: string, fallback: number, check?: (v: number) => boolean): number {
  const value = pick<unknown>(config, field, fallback);
  if (typeof value !== "number" || !Number.isFinite(value) || (check !== undefined && !check(value))) {
    throw new SchedulerConfigError(field, `bad value ${JSON.stringify(value)}`);
  }
  return value;
}

function pickBool(config: SchedulerConfig, field: string, fallback: boolean): boolean {
  const value = pick<unknown>(config, field, fallback);
  if (typeof value !== "boolean") {
    throw new SchedulerConfigError(field, `expected true or false, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** Throws unless `field` is absent, null, or `expected` (an option we do not implement). */
function requireDefault(config: SchedulerConfig, field: string, expected: unknown): void {
  const value = config[field];
  if (value !== undefined && value !== null && value !== expected) {
    throw new SchedulerConfigError(field, `${JSON.stringify(value)} is not supported (only ${JSON.stringify(expected)})`);
  }
}

const isWhole = (v: number) => Number.isInteger(v) && v >= 0;

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
function interpIndex(x: number, fp: Float32Array): number {
  const last = fp.length - 1;
  if (x <= 0) return fp[0] as number;
  if (x >= last) return fp[last] as number;
  const j = Math.floor(x);
  const slope = (fp[j + 1] as number) - (fp[j] as number); // divided by (j + 1) - j = 1
  return slope * (x - j) + (fp[j] as number);
}

/** diffusers' _sigma_to_t: fractional training timestep of `sigma` (float64). */
function sigmaToT(sigma: number, logSigmas: Float32Array): number {
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
function karrasSigmas(sigmaMin: number, sigmaMax: number, steps: number): number[] {
  const rho = 7.0;
  const minInvRho = Math.pow(sigmaMin, 1 / rho);
  const maxInvRho = Math.pow(sigmaMax, 1 / rho);
  return numpyLinspace(0, 1, steps).map((r) => Math.pow(maxInvRho + r * (minInvRho - maxInvRho), rho));
}

// ------------------------------------------------------------ training schedule

interface TrainSchedule {
  numTrain: number;
  /** alphas_cumprod, float32, index = training timestep. */
  alphasCumprod: Float32Array;
  /** ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5, float32, ascending with t. */
  sigmas: Float32Array;
}

function trainSchedule(config: SchedulerConfig): TrainSchedule {
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

function checkSteps(steps: number): void {
  if (!Number.isInteger(steps) || steps < 1) {
    throw new RangeError(`number of inference steps must be a whole number >= 1, got ${steps}`);
  }
}

function checkStepArgs(s: Scheduler, stepIndex: number, a: Float32Array, b?: Float32Array): void {
  if (!Number.isInteger(stepIndex) || stepIndex < 0 || stepIndex >= s.timesteps.length) {
    throw new RangeError(`step index ${stepIndex} is outside 0..${s.timesteps.length - 1}`);
  }
  if (b !== undefined && a.length !== b.length) {
    throw new RangeError(`model output has ${a.length} values but the sample has ${b.length}`);
  }
}

/** sample / sqrt(sigma^2 + 1), in float32 (the Euler samplers' model input). */
function scaleBySigma(sample: Float32Array, sigma: number): Float32Array {
  const denom = f32(Math.sqrt(f32(f32(sigma * sigma) + 1)));
  const out = new Float32Array(sample.length);
  for (let i = 0; i < sample.length; i++) out[i] = (sample[i] as number) / denom;
  return out;
}

// ------------------------------------------------------------- Euler samplers

type EulerPrediction = "epsilon" | "v_prediction" | "sample";
type Spacing = "linspace" | "leading" | "trailing";

/** Shared by Euler and Euler ancestral: spacing, interpolated sigmas. */
abstract class EulerBase implements Scheduler {
  abstract readonly kind: SchedulerName;
  abstract readonly needsNoise: boolean;
  timesteps: Float32Array = new Float32Array(0);
  sigmas: Float32Array;
  predictedOriginal: Float32Array | null = null;
  protected readonly train: TrainSchedule;
  protected readonly spacing: Spacing;
  protected readonly stepsOffset: number;
  protected readonly prediction: EulerPrediction;

  constructor(config: SchedulerConfig, predictions: readonly EulerPrediction[]) {
    this.train = trainSchedule(config);
    this.prediction = pickChoice(config, "prediction_type", "epsilon", predictions);
    this.spacing = pickChoice<Spacing>(config, "timestep_spacing", "linspace", ["linspace", "leading", "trailing"]);
    this.stepsOffset = pickNumber(config, "steps_offset", 0, isWhole);
    // before setTimesteps, as diffusers: every training sigma (descending) and 0
    this.sigmas = Float32Array.from([...this.train.sigmas].reverse().concat([0]));
  }

  get initNoiseSigma(): number {
    let max = 0;
    for (const s of this.sigmas) max = Math.max(max, s);
    if (this.spacing === "linspace" || this.spacing === "trailing") return max;
    return f32(Math.sqrt(f32(f32(max * max) + 1)));
  }

  /** diffusers' timestep spacing for Euler-type schedulers (float32 timesteps). */
  protected spacedTimesteps(steps: number): Float32Array {
    const n = this.train.numTrain;
    let values: number[];
    if (this.spacing === "linspace") {
      values = numpyLinspace(0, n - 1, steps).reverse();
    } else if (this.spacing === "leading") {
      const ratio = Math.floor(n / steps);
      values = [];
      for (let i = steps - 1; i >= 0; i--) values.push(f32(i * ratio) + this.stepsOffset);
    } else {
      values = numpyArange(n, 0, -(n / steps)).map((t) => f32(roundHalfEven(t)) - 1);
    }
    return Float32Array.from(values);
  }

  scaleModelInput(sample: Float32Array, stepIndex: number): Float32Array {
    checkStepArgs(this, stepIndex, sample);
    return scaleBySigma(sample, this.sigmas[stepIndex] as number);
  }

  abstract setTimesteps(steps: number): void;
  abstract step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array, noise?: NoiseSource): Float32Array;

  /** x0 from the model output, elementwise in float32 (diffusers' pred_original_sample). */
  protected predictOriginal(modelOutput: Float32Array, sample: Float32Array, sigma: number): Float32Array {
    const out = new Float32Array(sample.length);
    if (this.prediction === "epsilon") {
      for (let i = 0; i < out.length; i++) {
        out[i] = (sample[i] as number) - f32(sigma * (modelOutput[i] as number));
      }
    } else if (this.prediction === "v_prediction") {
      const c = f32(f32(sigma * sigma) + 1);
      const cOut = f32(-sigma / f32(Math.sqrt(c)));
      for (let i = 0; i < out.length; i++) {
        out[i] = f32((modelOutput[i] as number) * cOut) + f32((sample[i] as number) / c);
      }
    } else {
      out.set(modelOutput);
    }
    return out;
  }
}

/** EulerDiscreteScheduler (deterministic: s_churn = 0, the pipelines' default). */
export class EulerScheduler extends EulerBase {
  readonly kind = "euler" as const;
  readonly needsNoise = false;
  private readonly finalSigmas: "zero" | "sigma_min";
  private readonly karras: boolean;
  private readonly sigmaMin: number | null;
  private readonly sigmaMax: number | null;

  constructor(config: SchedulerConfig = {}) {
    super(config, ["epsilon", "v_prediction", "sample"]);
    requireDefault(config, "interpolation_type", "linear");
    requireDefault(config, "timestep_type", "discrete");
    requireDefault(config, "use_exponential_sigmas", false);
    requireDefault(config, "use_beta_sigmas", false);
    this.karras = pickBool(config, "use_karras_sigmas", false);
    this.finalSigmas = pickChoice(config, "final_sigmas_type", "zero", ["zero", "sigma_min"]);
    const sigmaMin = pick<number | null>(config, "sigma_min", null);
    const sigmaMax = pick<number | null>(config, "sigma_max", null);
    this.sigmaMin = sigmaMin === null ? null : pickNumber(config, "sigma_min", 0, (v) => v > 0);
    this.sigmaMax = sigmaMax === null ? null : pickNumber(config, "sigma_max", 0, (v) => v > 0);
  }

  setTimesteps(steps: number): void {
    checkSteps(steps);
    let timesteps: number[] = [...this.spacedTimesteps(steps)];
    let sigmas = timesteps.map((t) => interpIndex(t, this.train.sigmas));
    if (this.karras) {
      const logSigmas = this.train.sigmas.map(Math.log); // np.log of a float32 array: float32
      const sigmaMin = this.sigmaMin ?? (sigmas[sigmas.length - 1] as number);
      const sigmaMax = this.sigmaMax ?? (sigmas[0] as number);
      sigmas = karrasSigmas(sigmaMin, sigmaMax, steps);
      timesteps = sigmas.map((s) => sigmaToT(s, logSigmas));
    }
    const last = this.finalSigmas === "zero" ? 0 : (this.train.sigmas[0] as number);
    this.sigmas = Float32Array.from(sigmas.concat([last]));
    this.timesteps = Float32Array.from(timesteps);
  }

  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array): Float32Array {
    checkStepArgs(this, stepIndex, modelOutput, sample);
    const sigma = this.sigmas[stepIndex] as number;
    const dt = f32((this.sigmas[stepIndex + 1] as number) - sigma);
    const pred = this.predictOriginal(modelOutput, sample, sigma);
    this.predictedOriginal = pred;
    const out = new Float32Array(sample.length);
    for (let i = 0; i < out.length; i++) {
      const x = sample[i] as number;
      const derivative = f32(f32(x - (pred[i] as number)) / sigma);
      out[i] = x + f32(derivative * dt);
    }
    return out;
  }
}

/** EulerAncestralDiscreteScheduler: Euler to sigma_down, then noise * sigma_up. */
export class EulerAncestralScheduler extends EulerBase {
  readonly kind = "euler_a" as const;
  readonly needsNoise = true;

  constructor(config: SchedulerConfig = {}) {
    super(config, ["epsilon", "v_prediction"]);
  }

  setTimesteps(steps: number): void {
    checkSteps(steps);
    this.timesteps = this.spacedTimesteps(steps);
    const sigmas = [...this.timesteps].map((t) => interpIndex(t, this.train.sigmas));
    this.sigmas = Float32Array.from(sigmas.concat([0]));
  }

  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array, noise?: NoiseSource): Float32Array {
    checkStepArgs(this, stepIndex, modelOutput, sample);
    if (noise === undefined) {
      throw new TypeError("Euler ancestral sampling needs a noise source");
    }
    const sigmaFrom = this.sigmas[stepIndex] as number;
    const sigmaTo = this.sigmas[stepIndex + 1] as number;
    const from2 = f32(sigmaFrom * sigmaFrom);
    const to2 = f32(sigmaTo * sigmaTo);
    const sigmaUp = f32(Math.sqrt(f32(f32(to2 * f32(from2 - to2)) / from2)));
    const sigmaDown = f32(Math.sqrt(f32(to2 - f32(sigmaUp * sigmaUp))));
    const dt = f32(sigmaDown - sigmaFrom);
    const pred = this.predictOriginal(modelOutput, sample, sigmaFrom);
    this.predictedOriginal = pred;
    const z = noise.fill(new Float32Array(sample.length));
    const out = new Float32Array(sample.length);
    for (let i = 0; i < out.length; i++) {
      const x = sample[i] as number;
      const derivative = f32(f32(x - (pred[i] as number)) / sigmaFrom);
      const moved = f32(x + f32(derivative * dt));
      out[i] = moved + f32((z[i] as number) * sigmaUp);
    }
    return out;
  }
}

// ------------------------------------------------------------ DPM-Solver++ (2M)

/** DPMSolverMultistepScheduler with algorithm_type "dpmsolver++", solver_order 1 or 2. */
export class DpmSolverMultistepScheduler implements Scheduler {
  readonly kind = "dpmpp_2m" as const;
  readonly needsNoise = false;
  readonly initNoiseSigma = 1;
  timesteps: Float32Array = new Float32Array(0);
  sigmas: Float32Array;
  predictedOriginal: Float32Array | null = null;
  private readonly train: TrainSchedule;
  private readonly order: number;
  private readonly prediction: "epsilon" | "v_prediction" | "sample";
  private readonly solverType: "midpoint" | "heun";
  private readonly spacing: Spacing;
  private readonly stepsOffset: number;
  private readonly lowerOrderFinal: boolean;
  private readonly eulerAtFinal: boolean;
  private readonly karras: boolean;
  private readonly finalSigmas: "zero" | "sigma_min";
  private readonly lambdaMinClipped: number;
  private readonly lambdaT: Float32Array;
  private readonly cosineBetas: boolean;
  // multistep state: converted outputs of the previous steps
  private previous: Float32Array | null = null;
  private lowerOrderNums = 0;
  private nextStep = 0;

  constructor(config: SchedulerConfig = {}) {
    this.train = trainSchedule(config);
    this.cosineBetas = config.beta_schedule === "squaredcos_cap_v2";
    this.order = pickNumber(config, "solver_order", 2, (v) => v === 1 || v === 2 || v === 3);
    if (this.order === 3) {
      throw new SchedulerConfigError("solver_order", "3 is not supported (only 1 and 2)");
    }
    this.prediction = pickChoice(config, "prediction_type", "epsilon", ["epsilon", "v_prediction", "sample"]);
    // diffusers maps the deprecated "deis" to "dpmsolver++" and "logrho"/"bh1"/"bh2" to "midpoint"
    pickChoice(config, "algorithm_type", "dpmsolver++", ["dpmsolver++", "deis"]);
    const solverType = pickChoice(config, "solver_type", "midpoint", ["midpoint", "heun", "logrho", "bh1", "bh2"]);
    this.solverType = solverType === "heun" ? "heun" : "midpoint";
    this.spacing = pickChoice<Spacing>(config, "timestep_spacing", "linspace", ["linspace", "leading", "trailing"]);
    this.stepsOffset = pickNumber(config, "steps_offset", 0, isWhole);
    this.lowerOrderFinal = pickBool(config, "lower_order_final", true);
    this.eulerAtFinal = pickBool(config, "euler_at_final", false);
    this.karras = pickBool(config, "use_karras_sigmas", false);
    this.finalSigmas = pickChoice(config, "final_sigmas_type", "zero", ["zero", "sigma_min"]);
    this.lambdaMinClipped = pick<number>(config, "lambda_min_clipped", -Infinity);
    if (typeof this.lambdaMinClipped !== "number" || Number.isNaN(this.lambdaMinClipped)) {
      throw new SchedulerConfigError("lambda_min_clipped", `bad value ${JSON.stringify(this.lambdaMinClipped)}`);
    }
    requireDefault(config, "thresholding", false);
    requireDefault(config, "variance_type", null);
    requireDefault(config, "use_lu_lambdas", false);
    requireDefault(config, "use_exponential_sigmas", false);
    requireDefault(config, "use_beta_sigmas", false);
    requireDefault(config, "use_flow_sigmas", false);
    requireDefault(config, "use_dynamic_shifting", false);
    this.lambdaT = this.train.alphasCumprod.map((ac) => {
      const alpha = f32(Math.sqrt(ac));
      const sigma = f32(Math.sqrt(f32(1 - ac)));
      return f32(Math.log(alpha)) - f32(Math.log(sigma));
    });
    this.sigmas = Float32Array.from(this.train.sigmas);
  }

  setTimesteps(steps: number): void {
    checkSteps(steps);
    const n = this.train.numTrain;
    // torch.searchsorted(flip(lambda_t), lambda_min_clipped): how many are below it
    let clipped = 0;
    for (let i = n - 1; i >= 0; i--) {
      if ((this.lambdaT[i] as number) < this.lambdaMinClipped) clipped++;
      else break;
    }
    const lastTimestep = n - clipped;
    let timesteps: number[];
    if (this.spacing === "linspace") {
      timesteps = numpyLinspace(0, lastTimestep - 1, steps + 1)
        .map(roundHalfEven)
        .reverse()
        .slice(0, steps);
    } else if (this.spacing === "leading") {
      const ratio = Math.floor(lastTimestep / (steps + 1));
      timesteps = [];
      for (let i = steps; i >= 1; i--) timesteps.push(i * ratio + this.stepsOffset);
    } else {
      timesteps = numpyArange(lastTimestep, 0, -(n / steps)).map((t) => roundHalfEven(t) - 1);
    }
    let sigmas: number[];
    if (this.karras) {
      const logSigmas = this.train.sigmas.map(Math.log);
      const trainSigmas = this.train.sigmas;
      sigmas = karrasSigmas(trainSigmas[0] as number, trainSigmas[n - 1] as number, steps);
      timesteps = sigmas.map((s) => sigmaToT(s, logSigmas));
      if (!this.cosineBetas) {
        timesteps = timesteps.map(roundHalfEven);
      }
    } else {
      sigmas = timesteps.map((t) => interpIndex(t, this.train.sigmas));
    }
    const last = this.finalSigmas === "zero" ? 0 : (this.train.sigmas[0] as number);
    this.sigmas = Float32Array.from(sigmas.concat([last]));
    this.timesteps = Float32Array.from(timesteps);
    this.reset();
  }

  /** Forgets the multistep history (setTimesteps and step 0 do this). */
  reset(): void {
    this.previous = null;
    this.predictedOriginal = null;
    this.lowerOrderNums = 0;
    this.nextStep = 0;
  }

  scaleModelInput(sample: Float32Array, stepIndex: number): Float32Array {
    checkStepArgs(this, stepIndex, sample);
    return Float32Array.from(sample);
  }

  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array): Float32Array {
    checkStepArgs(this, stepIndex, modelOutput, sample);
    if (stepIndex === 0) this.reset();
    if (stepIndex !== this.nextStep) {
      throw new RangeError(`DPM-Solver steps must run in order: expected step ${this.nextStep}, got ${stepIndex}`);
    }
    const count = this.timesteps.length;
    const lowerOrderFinal =
      stepIndex === count - 1 &&
      (this.eulerAtFinal || (this.lowerOrderFinal && count < 15) || this.finalSigmas === "zero");
    // (diffusers' lower_order_second only matters for third order, not implemented)
    const m0 = this.convert(modelOutput, sample, this.sigmas[stepIndex] as number);
    this.predictedOriginal = m0;
    let out: Float32Array;
    if (this.order === 1 || this.lowerOrderNums < 1 || lowerOrderFinal || this.previous === null) {
      out = this.firstOrder(m0, stepIndex, sample);
    } else {
      out = this.secondOrder(m0, this.previous, stepIndex, sample);
    }
    this.previous = m0;
    if (this.lowerOrderNums < this.order) this.lowerOrderNums++;
    this.nextStep = stepIndex + 1;
    return out;
  }

  /** (alpha_t, sigma_t) of a sigma, float32 (diffusers' _sigma_to_alpha_sigma_t). */
  private static alphaSigma(sigma: number): [number, number] {
    const alpha = f32(1 / f32(Math.sqrt(f32(f32(sigma * sigma) + 1))));
    return [alpha, f32(sigma * alpha)];
  }

  private static lambda(alpha: number, sigma: number): number {
    return f32(f32(Math.log(alpha)) - f32(Math.log(sigma)));
  }

  /** The data prediction x0 (diffusers' convert_model_output for dpmsolver++). */
  private convert(modelOutput: Float32Array, sample: Float32Array, sigma: number): Float32Array {
    const [alpha, sigmaT] = DpmSolverMultistepScheduler.alphaSigma(sigma);
    const out = new Float32Array(sample.length);
    if (this.prediction === "epsilon") {
      for (let i = 0; i < out.length; i++) {
        out[i] = f32((sample[i] as number) - f32(sigmaT * (modelOutput[i] as number))) / alpha;
      }
    } else if (this.prediction === "v_prediction") {
      for (let i = 0; i < out.length; i++) {
        out[i] = f32(alpha * (sample[i] as number)) - f32(sigmaT * (modelOutput[i] as number));
      }
    } else {
      out.set(modelOutput);
    }
    return out;
  }

  private firstOrder(m0: Float32Array, stepIndex: number, sample: Float32Array): Float32Array {
    const [alphaT, sigmaT] = DpmSolverMultistepScheduler.alphaSigma(this.sigmas[stepIndex + 1] as number);
    const [alphaS, sigmaS] = DpmSolverMultistepScheduler.alphaSigma(this.sigmas[stepIndex] as number);
    const h = f32(DpmSolverMultistepScheduler.lambda(alphaT, sigmaT) - DpmSolverMultistepScheduler.lambda(alphaS, sigmaS));
    const cSample = f32(sigmaT / sigmaS);
    const cModel = f32(alphaT * f32(f32(Math.exp(-h)) - 1));
    const out = new Float32Array(sample.length);
    for (let i = 0; i < out.length; i++) {
      out[i] = f32(cSample * (sample[i] as number)) - f32(cModel * (m0[i] as number));
    }
    return out;
  }

  private secondOrder(m0: Float32Array, m1: Float32Array, stepIndex: number, sample: Float32Array): Float32Array {
    const [alphaT, sigmaT] = DpmSolverMultistepScheduler.alphaSigma(this.sigmas[stepIndex + 1] as number);
    const [alphaS0, sigmaS0] = DpmSolverMultistepScheduler.alphaSigma(this.sigmas[stepIndex] as number);
    const [alphaS1, sigmaS1] = DpmSolverMultistepScheduler.alphaSigma(this.sigmas[stepIndex - 1] as number);
    const lambdaT = DpmSolverMultistepScheduler.lambda(alphaT, sigmaT);
    const lambdaS0 = DpmSolverMultistepScheduler.lambda(alphaS0, sigmaS0);
    const lambdaS1 = DpmSolverMultistepScheduler.lambda(alphaS1, sigmaS1);
    const h = f32(lambdaT - lambdaS0);
    const h0 = f32(lambdaS0 - lambdaS1);
    const r0 = f32(h0 / h);
    const invR0 = f32(1 / r0);
    const expm1 = f32(f32(Math.exp(-h)) - 1);
    const cSample = f32(sigmaT / sigmaS0);
    const cD0 = f32(alphaT * expm1);
    // midpoint: - 0.5 * (alpha_t * (exp(-h) - 1)) * D1;  heun: + alpha_t * ((exp(-h) - 1) / h + 1) * D1
    const cD1 = this.solverType === "midpoint" ? -f32(0.5 * cD0) : f32(alphaT * f32(f32(expm1 / h) + 1));
    const out = new Float32Array(sample.length);
    for (let i = 0; i < out.length; i++) {
      const d0 = m0[i] as number;
      const d1 = f32(invR0 * f32(d0 - (m1[i] as number)));
      const partial = f32(f32(cSample * (sample[i] as number)) - f32(cD0 * d0));
      out[i] = partial + f32(cD1 * d1);
    }
    return out;
  }
}

// ------------------------------------------------------------------ factory, CFG

/**
 * A scheduler from a scheduler_config.json object. `kind` overrides the config's
 * `_class_name` (diffusers' `OtherScheduler.from_config(config)`).
 */
export function createScheduler(config: SchedulerConfig, kind?: SchedulerName): Scheduler {
  let chosen = kind;
  if (chosen === undefined) {
    const className = config._class_name;
    chosen =
      typeof className === "string" && Object.prototype.hasOwnProperty.call(SCHEDULER_CLASSES, className)
        ? SCHEDULER_CLASSES[className as keyof typeof SCHEDULER_CLASSES]
        : undefined;
    if (chosen === undefined) {
      throw new SchedulerConfigError(
        "_class_name",
        `${JSON.stringify(className)} is not supported (expected ${Object.keys(SCHEDULER_CLASSES).join(", ")})`,
      );
    }
  }
  switch (chosen) {
    case "euler":
      return new EulerScheduler(config);
    case "euler_a":
      return new EulerAncestralScheduler(config);
    case "dpmpp_2m":
      return new DpmSolverMultistepScheduler(config);
    default:
      throw new SchedulerConfigError("_class_name", `unknown scheduler kind ${JSON.stringify(chosen)}`);
  }
}

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

import { SchedulerConfigError } from "../../base/errors";
import { isWhole, pick, pickBool, pickChoice, pickNumber, requireDefault, type SchedulerConfig } from "./config";
import {
  interpIndex,
  karrasSigmas,
  numpyArange,
  numpyLinspace,
  roundHalfEven,
  sigmaToT,
  trainSchedule,
  type Spacing,
  type TrainSchedule,
} from "./schedule";
import { checkStepArgs, checkSteps, type Scheduler } from "./scheduler";

const f32 = Math.fround;

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

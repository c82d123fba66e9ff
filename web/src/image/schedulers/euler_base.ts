// What Euler and Euler ancestral share: timestep spacing, sigmas, model input, x0.

import type { SchedulerName } from "../../base/manifest_types";
import type { NoiseSource } from "../latents";
import { isWhole, pickChoice, pickNumber, type SchedulerConfig } from "./config";
import { numpyArange, numpyLinspace, roundHalfEven, trainSchedule, type Spacing, type TrainSchedule } from "./schedule";
import { checkStepArgs, type Scheduler } from "./scheduler";

const f32 = Math.fround;

/** sample / sqrt(sigma^2 + 1), in float32 (the Euler samplers' model input). */
function scaleBySigma(sample: Float32Array, sigma: number): Float32Array {
  const denom = f32(Math.sqrt(f32(f32(sigma * sigma) + 1)));
  const out = new Float32Array(sample.length);
  for (let i = 0; i < sample.length; i++) out[i] = (sample[i] as number) / denom;
  return out;
}

type EulerPrediction = "epsilon" | "v_prediction" | "sample";

/** Shared by Euler and Euler ancestral: spacing, interpolated sigmas. */
export abstract class EulerBase implements Scheduler {
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

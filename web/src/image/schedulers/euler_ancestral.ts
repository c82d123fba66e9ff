import type { NoiseSource } from "../latents";
import type { SchedulerConfig } from "./config";
import { EulerBase } from "./euler_base";
import { interpIndex } from "./schedule";
import { checkStepArgs, checkSteps } from "./scheduler";

const f32 = Math.fround;

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

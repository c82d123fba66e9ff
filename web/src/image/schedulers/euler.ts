import { pick, pickBool, pickChoice, pickNumber, requireDefault, type SchedulerConfig } from "./config";
import { EulerBase } from "./euler_base";
import { interpIndex, karrasSigmas, sigmaToT } from "./schedule";
import { checkStepArgs, checkSteps } from "./scheduler";

const f32 = Math.fround;

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

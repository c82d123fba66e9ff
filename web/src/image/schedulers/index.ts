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
//
// One file a job: config.ts (reading the config), schedule.ts (timestep and sigma schedules),
// scheduler.ts (the interface), euler_base.ts, euler.ts, euler_ancestral.ts, dpmpp_2m.ts (the
// samplers), guidance.ts (classifier-free guidance); this file picks one (createScheduler).

import { SchedulerConfigError } from "../../base/errors";
import { SCHEDULER_CLASSES, type SchedulerName } from "../../base/manifest_types";
import type { SchedulerConfig } from "./config";
import { DpmSolverMultistepScheduler } from "./dpmpp_2m";
import { EulerScheduler } from "./euler";
import { EulerAncestralScheduler } from "./euler_ancestral";
import type { Scheduler } from "./scheduler";

export { sdTurboSchedulerConfig, type SchedulerConfig } from "./config";
export { numpyArange, numpyLinspace, roundHalfEven, torchLinspaceF32 } from "./schedule";
export type { Scheduler } from "./scheduler";
export { EulerScheduler } from "./euler";
export { EulerAncestralScheduler } from "./euler_ancestral";
export { DpmSolverMultistepScheduler } from "./dpmpp_2m";
export { classifierFreeGuidance, guidanceFromBatch } from "./guidance";

// ---------------------------------------------------------------------- factory

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

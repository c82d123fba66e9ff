// Reading a diffusers scheduler_config.json object: missing fields take the class's default,
// a value we do not implement throws a SchedulerConfigError that names the field.

import { SchedulerConfigError } from "../../base/errors";

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

export function pick<T>(config: SchedulerConfig, field: string, fallback: T): T {
  const value = config[field];
  return value === undefined || value === null ? fallback : (value as T);
}

export function pickChoice<T extends string>(config: SchedulerConfig, field: string, fallback: T, allowed: readonly T[]): T {
  const value = pick<unknown>(config, field, fallback);
  if (typeof value !== "string" || !(allowed as readonly string[]).includes(value)) {
    throw new SchedulerConfigError(
      field,
      `${JSON.stringify(value)} is not supported (expected ${allowed.map((a) => JSON.stringify(a)).join(", ")})`,
    );
  }
  return value as T;
}

export function pickNumber(config: SchedulerConfig, field: string, fallback: number, check?: (v: number) => boolean): number {
  const value = pick<unknown>(config, field, fallback);
  if (typeof value !== "number" || !Number.isFinite(value) || (check !== undefined && !check(value))) {
    throw new SchedulerConfigError(field, `bad value ${JSON.stringify(value)}`);
  }
  return value;
}

export function pickBool(config: SchedulerConfig, field: string, fallback: boolean): boolean {
  const value = pick<unknown>(config, field, fallback);
  if (typeof value !== "boolean") {
    throw new SchedulerConfigError(field, `expected true or false, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** Throws unless `field` is absent, null, or `expected` (an option we do not implement). */
export function requireDefault(config: SchedulerConfig, field: string, expected: unknown): void {
  const value = config[field];
  if (value !== undefined && value !== null && value !== expected) {
    throw new SchedulerConfigError(field, `${JSON.stringify(value)} is not supported (only ${JSON.stringify(expected)})`);
  }
}

export const isWhole = (v: number) => Number.isInteger(v) && v >= 0;

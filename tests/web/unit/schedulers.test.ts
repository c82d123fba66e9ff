// image/schedulers/ against diffusers: timesteps and sigmas for each config of
// fixtures/schedulers.json, which fixtures/make_scheduler_fixture.py wrote with diffusers
// itself (the version is in the file).
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { SchedulerConfigError } from "../../../web/src/base/errors";
import { createScheduler, sdTurboSchedulerConfig, type SchedulerConfig } from "../../../web/src/image/schedulers";
import fixture from "./fixtures/schedulers.json";

interface Case {
  name: string;
  config: SchedulerConfig;
  steps: number;
  timesteps: number[];
  sigmas: number[];
}

const cases = fixture.cases as Case[];

/** The spacing of float32 values at `x`: one unit in the last place. */
function ulpF32(x: number): number {
  return x === 0 ? 2 ** -149 : 2 ** (Math.floor(Math.log2(Math.abs(x))) - 23);
}

describe(`schedulers equal diffusers ${fixture.diffusers}`, () => {
  assert.ok(cases.length >= 10);
  for (const c of cases) {
    test(`${c.name}, ${c.steps} steps`, () => {
      const scheduler = createScheduler(c.config);
      scheduler.setTimesteps(c.steps);
      // Timesteps are exact (float32 from float64 spacing, as diffusers casts them).
      assert.deepEqual(Array.from(scheduler.timesteps), c.timesteps);
      // Sigmas may differ by one float32 ulp (Math.sqrt is correctly rounded, torch's is not always).
      assert.equal(scheduler.sigmas.length, c.sigmas.length);
      c.sigmas.forEach((expected, i) => {
        const got = scheduler.sigmas[i] as number;
        assert.ok(Math.abs(got - expected) <= ulpF32(expected), `sigma ${i}: ${got} vs ${expected}`);
      });
    });
  }
});

test("the class name picks the scheduler, in the API's vocabulary", () => {
  const kinds = Object.fromEntries(cases.map((c) => [c.config._class_name, createScheduler(c.config).kind]));
  assert.deepEqual(kinds, {
    EulerDiscreteScheduler: "euler",
    EulerAncestralDiscreteScheduler: "euler_a",
    DPMSolverMultistepScheduler: "dpmpp_2m",
  });
  // An explicit kind overrides the config's class (diffusers' from_config).
  const first = cases[0] as Case;
  assert.equal(createScheduler(first.config, "dpmpp_2m").kind, "dpmpp_2m");
});

test("SD-Turbo's fallback config is the trailing Euler ancestral schedule", () => {
  const turbo = cases.find((c) => c.name.includes("SD-Turbo") && c.steps === 4);
  assert.ok(turbo);
  const scheduler = createScheduler(sdTurboSchedulerConfig());
  scheduler.setTimesteps(4);
  assert.equal(scheduler.kind, "euler_a");
  assert.deepEqual(Array.from(scheduler.timesteps), turbo.timesteps);
});

test("configs it cannot follow are refused, naming the field", () => {
  const refusals: [SchedulerConfig, string][] = [
    [{ _class_name: "PNDMScheduler" }, "_class_name"],
    [{ _class_name: "EulerDiscreteScheduler", prediction_type: "flow" }, "prediction_type"],
    [{ _class_name: "EulerDiscreteScheduler", timestep_spacing: "random" }, "timestep_spacing"],
    [{ _class_name: "DPMSolverMultistepScheduler", algorithm_type: "sde-dpmsolver" }, "algorithm_type"],
  ];
  for (const [config, field] of refusals) {
    assert.throws(
      () => createScheduler(config).setTimesteps(10),
      (error) => error instanceof SchedulerConfigError && error.field === field,
      JSON.stringify(config),
    );
  }
});

// How a scheduler is named to people: in the PNG "parameters" chunk (A1111's sampler
// names, which other tools read back) and in the app's menus. One table for both.

import type { SchedulerName } from "./manifest_types";

export const SCHEDULER_LABELS: Record<SchedulerName, string> = {
  euler: "Euler",
  euler_a: "Euler a",
  dpmpp_2m: "DPM++ 2M",
};

// What this device offers (WebGPU adapter features and limits, approximate RAM) and
// whether a model fits it.

import { chooseBackend, type BackendRequest, type WebGPUTerms } from "../base/backend_choice";
import type { ModelInfo } from "../base/types";
import { formatBytes } from "./format";

export interface DeviceInfo {
  /** Null when WebGPU works; else why not. */
  unavailable: string | null;
  /** The adapter's features, limits and whether it is a CPU fallback; null without WebGPU. */
  webgpu: WebGPUTerms | null;
  /** navigator.deviceMemory (Chromium only; rounded, capped at 8 GB). */
  memoryBytes: number | null;
  description: string;
}

export async function probeDevice(): Promise<DeviceInfo> {
  const memoryGb = (navigator as Navigator & { deviceMemory?: number }).deviceMemory;
  const memoryBytes = typeof memoryGb === "number" ? memoryGb * 2 ** 30 : null;
  const none = (why: string): DeviceInfo => ({ unavailable: why, webgpu: null, memoryBytes, description: "no WebGPU" });
  if (!("gpu" in navigator) || !navigator.gpu) return none("navigator.gpu is missing");
  let adapter: GPUAdapter | null;
  try {
    adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch (error) {
    return none(`requestAdapter failed: ${String(error)}`);
  }
  if (!adapter) return none("no GPU adapter was returned"); // the engine's words (base/tvm.ts)
  const info = adapter.info as (GPUAdapterInfo & { isFallbackAdapter?: boolean }) | undefined;
  const name = [info?.vendor, info?.architecture, info?.description].filter(Boolean).join(" ") || "WebGPU adapter";
  const limits: Record<string, number> = {};
  for (const key of ["maxBufferSize", "maxStorageBufferBindingSize"] as const) limits[key] = adapter.limits[key];
  return {
    unavailable: null,
    webgpu: {
      features: Array.from(adapter.features as unknown as Iterable<string>),
      limits,
      isFallbackAdapter: info?.isFallbackAdapter ?? false,
      description: name,
    },
    memoryBytes,
    description: name,
  };
}

export type FitLevel = "fits" | "maybe" | "no";

export interface Fit {
  level: FitLevel;
  /** The backend a load with `backend` would run (base/backend_choice.ts); null when none can. */
  backend: string | null;
  device: "webgpu" | "cpu" | null;
  /** Why that backend runs here (the engine's LoadedModel.backendReason once loaded); null when none can. */
  reason: string | null;
  /** One line for the picker: what runs and why, or what is missing. */
  text: string;
}

export function requiredFeatures(model: ModelInfo): string {
  const sets = Object.entries(model.backends).map(([name, b]) =>
    `${name}: ${b.device === "cpu" ? "CPU (WebAssembly SIMD)" : b.required_features.join(", ") || "WebGPU"}`);
  return sets.join("; ");
}

/** Whether `model` runs here with `backend` ("auto" by default), by the engine's own decision. */
export function fitOf(model: ModelInfo, device: DeviceInfo, backend: BackendRequest = "auto"): Fit {
  // The index lists no limits or per-backend memory: the engine checks those again at load.
  const backends = Object.fromEntries(
    Object.entries(model.backends).map(([name, b]) => [name, { device: b.device, required_features: b.required_features }]),
  );
  let choice;
  try {
    choice = chooseBackend(model.id, backends, device.webgpu, device.unavailable, backend);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const hasCpu = Object.values(model.backends).some((b) => b.device === "cpu");
    // The engine's error offers the CPU backend; a model without one needs WebGPU, so say that instead.
    const text = device.webgpu === null && !hasCpu
      ? `needs WebGPU (${device.unavailable ?? "unavailable"}): this model has no CPU backend`
      : `${message}${/shader-f16/.test(message) ? " (use an f32 build of this model, e.g. q4f32)" : ""}`;
    return { level: "no", backend: null, device: null, reason: null, text };
  }
  const where = choice.entry.device === "cpu" ? "CPU memory" : "GPU memory";
  const runs = `runs on ${choice.name}: ${choice.reason}`;
  const need = model.memory_bytes;
  if (need && device.memoryBytes && need > device.memoryBytes * 0.5) {
    return {
      level: "maybe",
      backend: choice.name,
      device: choice.entry.device,
      reason: choice.reason,
      text: `${runs}; needs ~${formatBytes(need)} of ${where}, this device reports ${formatBytes(device.memoryBytes)} RAM`,
    };
  }
  return {
    level: "fits",
    backend: choice.name,
    device: choice.entry.device,
    reason: choice.reason,
    text: need ? `${runs} (~${formatBytes(need)} ${where})` : runs,
  };
}

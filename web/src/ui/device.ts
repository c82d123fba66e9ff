// What this device offers (WebGPU adapter features and limits, approximate RAM) and
// whether a model fits it.

import type { ModelInfo } from "../base/types";
import { formatBytes } from "./format";

export interface DeviceInfo {
  /** Null when WebGPU works; else why not. */
  unavailable: string | null;
  features: Set<string>;
  maxBufferSize: number | null;
  maxStorageBufferBindingSize: number | null;
  /** navigator.deviceMemory (Chromium only; rounded, capped at 8 GB). */
  memoryBytes: number | null;
  description: string;
}

export async function probeDevice(): Promise<DeviceInfo> {
  const memoryGb = (navigator as Navigator & { deviceMemory?: number }).deviceMemory;
  const memoryBytes = typeof memoryGb === "number" ? memoryGb * 2 ** 30 : null;
  const none = (why: string): DeviceInfo => ({
    unavailable: why,
    features: new Set(),
    maxBufferSize: null,
    maxStorageBufferBindingSize: null,
    memoryBytes,
    description: "no WebGPU",
  });
  if (!("gpu" in navigator) || !navigator.gpu) return none("navigator.gpu is missing");
  let adapter: GPUAdapter | null;
  try {
    adapter = await navigator.gpu.requestAdapter();
  } catch (error) {
    return none(`requestAdapter failed: ${String(error)}`);
  }
  if (!adapter) return none("no WebGPU adapter");
  const info = adapter.info as GPUAdapterInfo | undefined;
  const name = [info?.vendor, info?.architecture, info?.description].filter(Boolean).join(" ") || "WebGPU adapter";
  return {
    unavailable: null,
    features: new Set(Array.from(adapter.features as unknown as Iterable<string>)),
    maxBufferSize: adapter.limits.maxBufferSize,
    maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
    memoryBytes,
    description: name,
  };
}

export type FitLevel = "fits" | "maybe" | "no";

export interface Fit {
  level: FitLevel;
  /** The backends whose required features this device has. */
  backends: string[];
  /** One line for the picker. */
  text: string;
}

export function requiredFeatures(model: ModelInfo): string {
  const sets = Object.entries(model.backends).map(([name, b]) => `${name}: ${b.required_features.join(", ") || "none"}`);
  return sets.join("; ");
}

export function fitOf(model: ModelInfo, device: DeviceInfo): Fit {
  if (device.unavailable) return { level: "no", backends: [], text: `needs WebGPU (${device.unavailable})` };
  const backends = Object.entries(model.backends)
    .filter(([, b]) => b.required_features.every((f) => device.features.has(f)))
    .map(([name]) => name);
  if (backends.length === 0) {
    const missing = new Set(
      Object.values(model.backends).flatMap((b) => b.required_features.filter((f) => !device.features.has(f))),
    );
    const f16 = missing.has("shader-f16") ? " — use an f32 build of this model (e.g. q4f32)" : "";
    return { level: "no", backends, text: `this device lacks ${[...missing].join(", ")}${f16}` };
  }
  const need = model.memory_bytes;
  if (need && device.memoryBytes && need > device.memoryBytes * 0.5) {
    return {
      level: "maybe",
      backends,
      text: `needs ~${formatBytes(need)} of GPU memory; this device reports ${formatBytes(device.memoryBytes)} RAM`,
    };
  }
  return { level: "fits", backends, text: need ? `fits this device (~${formatBytes(need)} GPU memory)` : "fits this device" };
}

// Which of a model's compiled libraries runs on this device: the backend's WebGPU
// features must all be enabled and its buffer limits must fit the device's. Chat and
// image models state both the same way in their manifests (backends.<name>).

import { ModelLoadError, UnsupportedDeviceError } from "../base/errors";
import type { BackendEntry } from "../base/manifest";
import type { GPUContext } from "../base/tvm";

/** Preferred first: f16 halves the weights and activations when the device can run it. */
const PREFERENCE = ["webgpu-f16", "webgpu-f32"];

/**
 * The backend to load: `requested` (refused with the missing feature named) or the first of
 * PREFERENCE the device supports.
 */
export function chooseBackend<E extends BackendEntry>(
  modelId: string,
  backends: Record<string, E>,
  gpu: GPUContext,
  requested?: string,
): [string, E] {
  const names = Object.keys(backends);
  const missing = (entry: E) => entry.required_features.filter((f) => !gpu.features.includes(f));
  if (requested) {
    const entry = backends[requested];
    if (!entry) throw new ModelLoadError(`Model ${modelId} has no backend '${requested}' (it has: ${names.join(", ")}).`);
    const lacking = missing(entry);
    if (lacking.length > 0) {
      throw new UnsupportedDeviceError(
        `Backend ${requested} of ${modelId} needs WebGPU feature(s) ${lacking.join(", ")}, which this device lacks. Use the webgpu-f32 backend.`,
      );
    }
    return [requested, entry];
  }
  for (const name of PREFERENCE) {
    const entry = backends[name];
    if (entry && missing(entry).length === 0) return [name, entry];
  }
  throw new UnsupportedDeviceError(`No backend of ${modelId} runs on this device (it has: ${names.join(", ")}).`);
}

/**
 * Refuses a backend whose buffers exceed the device's limits (before downloading anything).
 * `smaller` says what to pick instead ("a smaller model or quantization", ...).
 */
export function checkLimits(modelId: string, backend: string, entry: BackendEntry, gpu: GPUContext, smaller: string): void {
  for (const [limit, needed] of Object.entries(entry.required_limits ?? {})) {
    const have = gpu.limits[limit];
    if (have !== undefined && have < needed) {
      throw new UnsupportedDeviceError(
        `Model ${modelId} (${backend}) needs ${limit} >= ${needed} bytes but this GPU allows ${have}. Choose ${smaller}.`,
      );
    }
  }
}

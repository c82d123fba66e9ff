// Which of a model's compiled libraries runs here, and why: one decision for the engine
// (what it loads) and the model picker (what it says it will load). Chat and image models
// state their backends the same way in their manifests (backends.<name>: device, WebGPU
// features and limits, memory).

import { ModelLoadError, UnsupportedDeviceError, WebGPUUnavailableError } from "./errors";

/** What loadModel's `backend` option accepts: a device ("auto" picks) or a backend's name. */
export type BackendRequest = "auto" | "webgpu" | "wasm-cpu" | (string & {});

/** The parts of a manifest's backend entry the choice reads. */
export interface BackendTerms {
  device: "webgpu" | "cpu";
  required_features: string[];
  required_limits?: Record<string, number>;
  /** Chat manifests: the backend's memory need. */
  memory_bytes?: number;
  /** Image manifests state it per backend this way. */
  memory?: { total_bytes: number };
}

/** What the choice knows of the WebGPU device: null where there is none (and why not). */
export interface WebGPUTerms {
  features: readonly string[];
  limits: Record<string, number>;
  isFallbackAdapter: boolean;
  /** "google swiftshader", "nvidia ampere", ... */
  description: string;
}

export interface BackendChoice<E extends BackendTerms> {
  name: string;
  entry: E;
  /** One line for the user: why this backend runs here. */
  reason: string;
}

/**
 * wasm32 addresses 4 GiB: the CPU backend's whole model (weights, KV cache, workspace,
 * the library itself) lives in one WebAssembly memory of at most this size.
 */
export const WASM32_HEAP_LIMIT = 4 * 2 ** 30;

/** Preferred first: f16 halves the weights and activations when the device can run it. */
const WEBGPU_PREFERENCE = ["webgpu-f16", "webgpu-f32"];

const GiB = (n: number) => `${(n / 2 ** 30).toFixed(2)} GiB`;

/**
 * The backend to load. `gpu` is null when WebGPU is unavailable (`unavailable` says why).
 * "auto": WebGPU on a real adapter; the CPU backend when WebGPU is missing, when the only
 * adapter is a CPU fallback (SwiftShader: WebGPU emulated on the CPU is far slower than
 * WebAssembly SIMD), or when the model does not fit the GPU's features or limits.
 * Throws (naming what is missing and what to do) when nothing here runs the model.
 */
export function chooseBackend<E extends BackendTerms>(
  modelId: string,
  backends: Record<string, E>,
  gpu: WebGPUTerms | null,
  unavailable: string | null,
  requested: BackendRequest = "auto",
  smaller = "a smaller model or quantization",
): BackendChoice<E> {
  const names = Object.keys(backends);
  const cpuName = names.find((n) => backends[n]!.device === "cpu");
  const cpu = (reason: string): BackendChoice<E> => {
    if (!cpuName) {
      throw new ModelLoadError(
        `Model ${modelId} has no CPU backend (it has: ${names.join(", ")}). Rebuild it with build_web (which builds wasm-cpu unless --no-cpu), or use WebGPU.`,
      );
    }
    const entry = backends[cpuName]!;
    checkHeap(modelId, cpuName, entry, smaller);
    return { name: cpuName, entry, reason };
  };

  if (requested === "wasm-cpu" || (requested in backends && backends[requested]!.device === "cpu")) {
    return cpu("the CPU backend was requested");
  }
  if (requested !== "auto" && requested !== "webgpu" && !(requested in backends)) {
    throw new ModelLoadError(
      `Model ${modelId} has no backend '${requested}' (it has: ${names.join(", ")}; or ask for "auto", "webgpu" or "wasm-cpu").`,
    );
  }
  const specific = requested === "auto" || requested === "webgpu" ? undefined : requested;
  if (!gpu) {
    if (requested === "auto" && cpuName) return cpu(`no WebGPU here (${unavailable ?? "unavailable"}), so the CPU`);
    throw new WebGPUUnavailableError(unavailable ?? "unavailable");
  }
  if (requested === "auto" && gpu.isFallbackAdapter && cpuName) {
    return cpu(`the only WebGPU adapter (${gpu.description}) is a CPU fallback, slower than the CPU backend`);
  }
  try {
    const [name, entry] = chooseWebGPU(modelId, backends, gpu, specific, smaller);
    return { name, entry, reason: specific ? `${specific} was requested` : `WebGPU on ${gpu.description}` };
  } catch (error) {
    if (requested === "auto" && cpuName && error instanceof UnsupportedDeviceError) {
      return cpu(`it does not fit this GPU (${error.message}), so the CPU`);
    }
    throw error;
  }
}

function chooseWebGPU<E extends BackendTerms>(
  modelId: string,
  backends: Record<string, E>,
  gpu: WebGPUTerms,
  requested: string | undefined,
  smaller: string,
): [string, E] {
  const names = Object.keys(backends);
  const missing = (entry: E) => entry.required_features.filter((f) => !gpu.features.includes(f));
  if (requested) {
    const entry = backends[requested]!;
    const lacking = missing(entry);
    if (lacking.length > 0) {
      throw new UnsupportedDeviceError(
        `Backend ${requested} of ${modelId} needs WebGPU feature(s) ${lacking.join(", ")}, which this device lacks. Use the webgpu-f32 backend.`,
      );
    }
    checkLimits(modelId, requested, entry, gpu, smaller);
    return [requested, entry];
  }
  for (const name of WEBGPU_PREFERENCE) {
    const entry = backends[name];
    if (entry && entry.device === "webgpu" && missing(entry).length === 0) {
      checkLimits(modelId, name, entry, gpu, smaller);
      return [name, entry];
    }
  }
  throw new UnsupportedDeviceError(`No WebGPU backend of ${modelId} runs on this device (it has: ${names.join(", ")}).`);
}

/** Refuses a backend whose buffers exceed the device's limits (before downloading anything). */
function checkLimits(modelId: string, backend: string, entry: BackendTerms, gpu: WebGPUTerms, smaller: string): void {
  for (const [limit, needed] of Object.entries(entry.required_limits ?? {})) {
    const have = gpu.limits[limit];
    if (have !== undefined && have < needed) {
      throw new UnsupportedDeviceError(
        `Model ${modelId} (${backend}) needs ${limit} >= ${needed} bytes but this GPU allows ${have}. Choose ${smaller}.`,
      );
    }
  }
}

/** Refuses a CPU backend whose model cannot fit a wasm32 memory (before downloading anything). */
function checkHeap(modelId: string, backend: string, entry: BackendTerms, smaller: string): void {
  const need = entry.memory_bytes ?? entry.memory?.total_bytes ?? 0;
  if (need > WASM32_HEAP_LIMIT) {
    throw new UnsupportedDeviceError(
      `Model ${modelId} (${backend}) needs ${GiB(need)} of WebAssembly memory, but wasm32 addresses at most 4 GiB (${WASM32_HEAP_LIMIT} bytes). Choose ${smaller}, or use WebGPU.`,
    );
  }
}

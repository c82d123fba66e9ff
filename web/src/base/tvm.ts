// Loading webkiln-built .wasm modules with tvmjs, on WebGPU or on the CPU.

import * as tvmjs from "@mlc-ai/web-runtime";
import type { WebGPUTerms } from "./backend_choice";
import { ModuleLoadError, WebGPUUnavailableError } from "./errors";

export type Backend = "webgpu" | "wasm-cpu";

export interface GPUContext {
  device: GPUDevice;
  adapterInfo: { vendor: string; architecture: string; description: string };
  isFallbackAdapter: boolean;
  features: string[]; // enabled on the device
  adapterFeatures: string[]; // offered by the adapter
  limits: Record<string, number>;
}

// Limits models depend on. Without asking for them in requiredLimits the device
// gets WebGPU's defaults (e.g. 128 MiB bindings, 256 workgroup invocations).
const REQUESTED_LIMITS = [
  "maxBufferSize",
  "maxStorageBufferBindingSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ",
  "maxComputeWorkgroupsPerDimension",
] as const;

/** Why WebGPU cannot be used here, or null when it may be (an adapter still has to be asked for). */
function webgpuMissing(): string | null {
  if (typeof navigator === "undefined" || !("gpu" in navigator) || !navigator.gpu) return "navigator.gpu is missing";
  return null;
}

export async function createWebGPUDevice(): Promise<GPUContext> {
  const missing = webgpuMissing();
  if (missing) throw new WebGPUUnavailableError(missing);
  let adapter: GPUAdapter | null;
  try {
    adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch (error) {
    throw new WebGPUUnavailableError(`requestAdapter failed: ${String(error)}`);
  }
  if (!adapter) {
    throw new WebGPUUnavailableError("no GPU adapter was returned");
  }
  const requiredLimits: Record<string, number> = {};
  for (const name of REQUESTED_LIMITS) {
    requiredLimits[name] = adapter.limits[name];
  }
  // f16 kernels need shader-f16; f32 builds run everywhere.
  const requiredFeatures: GPUFeatureName[] = adapter.features.has("shader-f16") ? ["shader-f16"] : [];
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  const info = adapter.info;
  return {
    device,
    adapterInfo: { vendor: info.vendor, architecture: info.architecture, description: info.description },
    isFallbackAdapter: (info as GPUAdapterInfo & { isFallbackAdapter?: boolean }).isFallbackAdapter ?? false,
    features: [...device.features].sort(),
    adapterFeatures: [...adapter.features].sort(),
    limits: requiredLimits,
  };
}

/** A WebGPU device, or null and why there is none (a browser without WebGPU, no adapter). */
export type WebGPUProbe = { gpu: GPUContext; unavailable: null } | { gpu: null; unavailable: string };

export async function probeWebGPU(): Promise<WebGPUProbe> {
  try {
    return { gpu: await createWebGPUDevice(), unavailable: null };
  } catch (error) {
    if (!(error instanceof WebGPUUnavailableError)) throw error;
    return { gpu: null, unavailable: error.detail };
  }
}

/** The terms backend_choice.ts decides on, of a device (null: none). */
export function webgpuTerms(gpu: GPUContext | null): WebGPUTerms | null {
  if (!gpu) return null;
  const { vendor, architecture, description } = gpu.adapterInfo;
  return {
    features: gpu.features,
    limits: gpu.limits,
    isFallbackAdapter: gpu.isFallbackAdapter,
    description: [vendor, architecture, description].filter(Boolean).join(" ") || "WebGPU adapter",
  };
}

export interface LoadedModule {
  backend: Backend;
  tvm: tvmjs.Instance;
  device: tvmjs.DLDevice;
  vm: tvmjs.VirtualMachine;
  gpu?: GPUContext;
  dispose(): void;
}

/** A library someone else instantiated (e.g. on a shared memory with helper threads), with how to free it. */
export interface InstantiatedLibrary {
  tvm: tvmjs.Instance;
  dispose(): void;
}

export async function loadModule(
  wasm: ArrayBuffer | InstantiatedLibrary,
  backend: Backend,
  gpu?: GPUContext,
): Promise<LoadedModule> {
  const log: string[] = [];
  let tvm: tvmjs.Instance;
  let free: () => void;
  if (wasm instanceof ArrayBuffer) {
    try {
      tvm = await tvmjs.instantiate(wasm, tvmjs.createPolyfillWASI(), (msg) => log.push(msg));
    } catch (err) {
      throw new ModuleLoadError(`Could not instantiate the model library: ${String(err)}`);
    }
    free = () => tvm.dispose();
  } else {
    tvm = wasm.tvm;
    free = () => wasm.dispose();
  }
  let device: tvmjs.DLDevice;
  if (backend === "webgpu") {
    gpu = gpu ?? (await createWebGPUDevice());
    // Must precede the VM: it registers the shader-creation hooks the module needs.
    tvm.initWebGPU(gpu.device);
    device = tvm.webgpu();
  } else {
    device = tvm.cpu();
  }
  // The VM outlives any scope: detach it and dispose it with the module.
  const vm = tvm.withNewScope(() => tvm.detachFromCurrentScope(tvm.createVirtualMachine(device)));
  return {
    backend,
    tvm,
    device,
    vm,
    gpu,
    dispose() {
      vm.dispose();
      free();
    },
  };
}

export async function fetchBytes(url: string): Promise<ArrayBuffer> {
  const response = await fetch(url);
  if (!response.ok) {
    throw new ModuleLoadError(`Fetching ${url} failed: HTTP ${response.status}`);
  }
  return response.arrayBuffer();
}

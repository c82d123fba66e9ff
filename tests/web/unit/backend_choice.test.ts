// The one backend decision (base/backend_choice.ts) the engine loads by and the picker
// reports: "auto" takes WebGPU on a real adapter and the CPU where WebGPU is missing, is a
// CPU fallback (SwiftShader), or the model does not fit; explicit requests are refused by
// name when they cannot run; a model too large for wasm32 is refused naming the limit.
import assert from "node:assert/strict";
import { test } from "node:test";

import { chooseBackend, WASM32_HEAP_LIMIT, type BackendTerms, type WebGPUTerms } from "../../../web/src/base/backend_choice";
import { ModelLoadError, UnsupportedDeviceError, WebGPUUnavailableError } from "../../../web/src/base/errors";

const MiB = 2 ** 20;
const backends: Record<string, BackendTerms> = {
  "webgpu-f32": { device: "webgpu", required_features: [], required_limits: { maxBufferSize: 200 * MiB }, memory_bytes: 300 * MiB },
  "webgpu-f16": { device: "webgpu", required_features: ["shader-f16"], required_limits: { maxBufferSize: 100 * MiB }, memory_bytes: 150 * MiB },
  "wasm-cpu": { device: "cpu", required_features: [], required_limits: {}, memory_bytes: 400 * MiB },
};
const gpuOnly = Object.fromEntries(Object.entries(backends).filter(([, b]) => b.device === "webgpu"));

const realGpu: WebGPUTerms = { features: ["shader-f16"], limits: { maxBufferSize: 1024 * MiB }, isFallbackAdapter: false, description: "nvidia ampere" };
const swiftshader: WebGPUTerms = { features: [], limits: { maxBufferSize: 1024 * MiB }, isFallbackAdapter: true, description: "google swiftshader" };
const smallGpu: WebGPUTerms = { features: [], limits: { maxBufferSize: 128 * MiB }, isFallbackAdapter: false, description: "small" };

test("auto: a real adapter runs the preferred WebGPU backend (f16 where the device has shader-f16)", () => {
  const choice = chooseBackend("m", backends, realGpu, null);
  assert.equal(choice.name, "webgpu-f16");
  assert.match(choice.reason, /WebGPU on nvidia ampere/);
  assert.equal(chooseBackend("m", backends, { ...realGpu, features: [] }, null).name, "webgpu-f32");
});

test("auto: no WebGPU, or a CPU fallback adapter, runs the CPU backend and says why", () => {
  const none = chooseBackend("m", backends, null, "navigator.gpu is missing");
  assert.equal(none.name, "wasm-cpu");
  assert.match(none.reason, /no WebGPU here \(navigator.gpu is missing\)/);
  const fallback = chooseBackend("m", backends, swiftshader, null);
  assert.equal(fallback.name, "wasm-cpu");
  assert.match(fallback.reason, /google swiftshader\) is a CPU fallback/);
});

test("auto: a model that does not fit the GPU's limits runs on the CPU", () => {
  const choice = chooseBackend("m", backends, smallGpu, null);
  assert.equal(choice.name, "wasm-cpu");
  assert.match(choice.reason, /does not fit this GPU .*maxBufferSize >= 209715200/);
});

test("auto without a CPU backend keeps the WebGPU behaviour and errors", () => {
  assert.equal(chooseBackend("m", gpuOnly, swiftshader, null).name, "webgpu-f32");
  assert.throws(() => chooseBackend("m", gpuOnly, null, "no GPU adapter was returned"), WebGPUUnavailableError);
  assert.throws(() => chooseBackend("m", gpuOnly, smallGpu, null), (e: unknown) =>
    e instanceof UnsupportedDeviceError && /maxBufferSize >= 209715200 bytes but this GPU allows 134217728/.test(e.message));
});

test("explicit requests: a device or a backend's name, refused by name when they cannot run", () => {
  assert.equal(chooseBackend("m", backends, swiftshader, null, "webgpu").name, "webgpu-f32");
  assert.equal(chooseBackend("m", backends, realGpu, null, "wasm-cpu").name, "wasm-cpu");
  assert.equal(chooseBackend("m", backends, realGpu, null, "webgpu-f32").name, "webgpu-f32");
  assert.throws(() => chooseBackend("m", backends, null, "navigator.gpu is missing", "webgpu"), (e: unknown) =>
    e instanceof WebGPUUnavailableError && /navigator.gpu is missing/.test(e.message));
  assert.throws(() => chooseBackend("m", backends, swiftshader, null, "webgpu-f16"), (e: unknown) =>
    e instanceof UnsupportedDeviceError && /needs WebGPU feature\(s\) shader-f16/.test(e.message));
  assert.throws(() => chooseBackend("m", gpuOnly, realGpu, null, "wasm-cpu"), (e: unknown) =>
    e instanceof ModelLoadError && /has no CPU backend .*Rebuild it with build_web/.test(e.message));
  assert.throws(() => chooseBackend("m", backends, realGpu, null, "webgpu-f64"), (e: unknown) =>
    e instanceof ModelLoadError && /has no backend 'webgpu-f64' \(it has: webgpu-f32, webgpu-f16, wasm-cpu/.test(e.message));
});

test("a CPU backend larger than wasm32's 4 GiB is refused before any download, naming the limit", () => {
  const huge = { ...backends, "wasm-cpu": { ...backends["wasm-cpu"]!, memory_bytes: WASM32_HEAP_LIMIT + 1 } };
  for (const requested of ["wasm-cpu", "auto"] as const) {
    assert.throws(() => chooseBackend("big", huge, null, "navigator.gpu is missing", requested), (e: unknown) =>
      e instanceof UnsupportedDeviceError && /big \(wasm-cpu\) needs 4\.00 GiB of WebAssembly memory, but wasm32 addresses at most 4 GiB/.test(e.message));
  }
  // Image manifests state the need as memory.total_bytes.
  const image = { "wasm-cpu": { device: "cpu" as const, required_features: [], memory: { total_bytes: 5 * 2 ** 30 } } };
  assert.throws(() => chooseBackend("img", image, null, "x", "auto", "a smaller image size or model"), (e: unknown) =>
    e instanceof UnsupportedDeviceError && /Choose a smaller image size or model, or use WebGPU/.test(e.message));
});

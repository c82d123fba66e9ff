// The kernel check page: runs a webkiln-built module with the operators LLMs need
// (see python/webkiln/models/kernel_check.py) on WebGPU and on the CPU, and
// exposes `window.webkiln` for the tests and the page itself.

import type * as tvmjs from "@mlc-ai/web-runtime";
import { createWebGPUDevice, fetchBytes, loadModule, type Backend, type GPUContext } from "./base/tvm";

interface TensorJSON {
  dtype: "float32" | "uint32";
  shape: number[];
  data: number[];
}

interface CheckSpec {
  entry: string; // VM function name
  inputs: Record<string, TensorJSON>;
  params: string[]; // parameter names, in call order
  outputs: string[];
}

export interface RunResult {
  backend: Backend;
  outputs: Record<string, number[]>;
  millis: number;
}

function typedArray(t: TensorJSON): Float32Array | Uint32Array {
  return t.dtype === "uint32" ? Uint32Array.from(t.data) : Float32Array.from(t.data);
}

async function run(wasmUrl: string, backend: Backend, spec: CheckSpec, gpu?: GPUContext): Promise<RunResult> {
  const mod = await loadModule(await fetchBytes(wasmUrl), backend, gpu);
  const { tvm, device } = mod;
  const start = performance.now();
  try {
    tvm.beginScope();
    const toDevice = (t: TensorJSON): tvmjs.Tensor => {
      const arr = tvm.empty(t.shape, t.dtype, device);
      const values = typedArray(t);
      arr.copyFromRawBytes(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
      return arr;
    };
    const x = spec.inputs["x"];
    if (!x) throw new Error("kernel check spec has no input 'x'");
    const args = [toDevice(x), ...spec.params.map((name) => {
      const p = spec.inputs[name];
      if (!p) throw new Error(`kernel check spec is missing parameter '${name}'`);
      return toDevice(p);
    })];
    const result = mod.vm.getFunction(spec.entry)(...args) as tvmjs.TVMArray;
    const outputs: Record<string, number[]> = {};
    const hostCopies: [string, tvmjs.Tensor][] = [];
    for (let i = 0; i < spec.outputs.length; i++) {
      const out = result.get(i) as tvmjs.Tensor;
      const host = tvm.empty(out.shape, out.dtype, tvm.cpu());
      host.copyFrom(out);
      hostCopies.push([spec.outputs[i]!, host]);
    }
    if (backend === "webgpu") await device.sync();
    for (const [name, host] of hostCopies) outputs[name] = Array.from(host.toArray());
    return { backend, outputs, millis: performance.now() - start };
  } finally {
    tvm.endScope();
    mod.dispose();
  }
}

async function describeGPU(): Promise<Omit<GPUContext, "device">> {
  const { device, ...info } = await createWebGPUDevice();
  device.destroy();
  return info;
}

declare global {
  interface Window {
    webkiln: {
      runKernelCheck: typeof run;
      describeGPU: typeof describeGPU;
    };
  }
}

window.webkiln = { runKernelCheck: run, describeGPU };

// The page: run the bundled check against its reference and show the result.
async function runPage(): Promise<void> {
  const status = document.getElementById("status");
  if (!status) return;
  const table = document.getElementById("results") as HTMLTableSectionElement;
  try {
    const gpu = await describeGPU().catch((err: unknown) => String(err));
    const gpuText = document.getElementById("gpu");
    if (gpuText) gpuText.textContent = typeof gpu === "string" ? gpu :
      `${gpu.adapterInfo.vendor} ${gpu.adapterInfo.architecture}${gpu.isFallbackAdapter ? " (fallback adapter)" : ""}; adapter features: ${gpu.adapterFeatures.join(", ") || "none"}`;
    const check = (await (await fetch("kernel-check/check.json")).json()) as {
      spec: CheckSpec;
      reference: Record<string, number[]>;
      tolerance: number;
      modules: Record<Backend, string>;
    };
    let allOk = true;
    for (const backend of Object.keys(check.modules) as Backend[]) {
      const result = await run(`kernel-check/${check.modules[backend]}`, backend, check.spec);
      for (const name of check.spec.outputs) {
        const got = result.outputs[name] ?? [];
        const want = check.reference[name] ?? [];
        let maxErr = got.length === want.length ? 0 : Infinity;
        for (let i = 0; i < want.length; i++) maxErr = Math.max(maxErr, Math.abs((got[i] ?? NaN) - want[i]!));
        const ok = maxErr <= check.tolerance;
        allOk &&= ok;
        const row = table.insertRow();
        row.insertCell().textContent = backend;
        row.insertCell().textContent = name;
        row.insertCell().textContent = maxErr.toExponential(2);
        row.insertCell().textContent = ok ? "pass" : "FAIL";
        row.className = ok ? "pass" : "fail";
      }
    }
    status.textContent = allOk ? "All kernels match the NumPy reference." : "Some kernels do NOT match the reference.";
    status.className = allOk ? "pass" : "fail";
  } catch (err) {
    status.textContent = `Kernel check failed: ${err instanceof Error ? err.message : String(err)}`;
    status.className = "fail";
  }
}

void runPage();

// Test bundle for tests/test_cpu_threads.py (tests/site/test-threads.html): runs in a dedicated Worker
// (the owner of a threaded model library blocks on Atomics, as the engine's Worker does), and is
// also the script its helper threads run. It loads a TVM-compiled module with a TIR `parallel`
// loop twice (the single-threaded library and the threaded one), runs it on 1..N threads, and
// posts the outputs' bytes and timings back to the page, which the test compares.

import { loadModule, type LoadedModule } from "../../web/src/base/tvm";
import { instantiateThreaded, isHelperThread, runHelperThread, threadsUnavailable } from "../../web/src/compiled/threads";

export interface ThreadsRequest {
  single: string; // URL of the single-threaded library
  threaded: string; // URL of the threaded library
  inputs: { name: string; url: string; dtype: "float32" | "uint8"; shape: number[] }[];
  threads: number[]; // thread counts to run the threaded library on
  repeats: number;
}

export interface ThreadsResult {
  crossOriginIsolated: boolean;
  unavailable: string | null;
  started: number;
  helperTasks: number; // tasks the helper threads ran
  outputs: Record<string, string>; // "single", "threaded-1", "threaded-2", ...: base64 of the output bytes
  medianMs: Record<string, number>;
  meanMs: Record<string, number>; // total / repeats: finer than one call's timer resolution
  error?: string;
}

function base64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

/** Runs `main` of the module on the inputs: its output bytes and median time per call. */
type Instance = LoadedModule["tvm"];

function runMain(tvm: Instance, inputs: { data: ArrayBuffer; dtype: string; shape: number[] }[], repeats: number) {
  return tvm.withNewScope(() => {
    const dev = tvm.cpu();
    const vm = tvm.createVirtualMachine(dev);
    const main = vm.getFunction("main");
    const args = inputs.map(({ data, dtype, shape }) => {
      const t = tvm.empty(shape, dtype, dev);
      t.copyFromRawBytes(new Uint8Array(data));
      return t;
    });
    const out = main(...args) as ReturnType<Instance["empty"]>; // the first call also warms the code up
    const bytes = new Uint8Array(out.toRawBytes());
    const times: number[] = [];
    const first = performance.now();
    for (let r = 0; r < repeats; r++) {
      const start = performance.now();
      main(...args);
      times.push(performance.now() - start);
    }
    return { bytes, ms: median(times), mean: (performance.now() - first) / repeats };
  });
}

async function run(request: ThreadsRequest): Promise<ThreadsResult> {
  const result: ThreadsResult = {
    crossOriginIsolated: (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated === true,
    unavailable: threadsUnavailable(),
    started: 0,
    helperTasks: 0,
    outputs: {},
    medianMs: {},
    meanMs: {},
  };
  const fetchBytes = async (url: string) => (await fetch(url)).arrayBuffer();
  const inputs = await Promise.all(
    request.inputs.map(async (i) => ({ data: await fetchBytes(i.url), dtype: i.dtype, shape: i.shape })),
  );
  // The single-threaded library exactly as the product loads it.
  const single = await loadModule(await fetchBytes(request.single), "wasm-cpu");
  const s = runMain(single.tvm, inputs, request.repeats);
  single.dispose();
  result.outputs.single = base64(s.bytes);
  result.medianMs.single = s.ms;
  result.meanMs.single = s.mean;
  // Without cross-origin isolation the threaded library still runs, on one thread.
  const most = result.unavailable ? 1 : Math.max(...request.threads);
  const threaded = await instantiateThreaded(await fetchBytes(request.threaded), { threads: most, helperUrl: self.location.href });
  result.started = threaded.threads;
  try {
    for (const count of request.threads.filter((n) => n <= most)) {
      threaded.useThreads(count);
      const t = runMain(threaded.tvm, inputs, request.repeats);
      result.outputs[`threaded-${count}`] = base64(t.bytes);
      result.medianMs[`threaded-${count}`] = t.ms;
      result.meanMs[`threaded-${count}`] = t.mean;
    }
    result.helperTasks = threaded.helperTasks();
  } finally {
    threaded.dispose();
  }
  return result;
}

if (isHelperThread()) {
  runHelperThread();
} else {
  const scope = self as unknown as { onmessage: ((e: MessageEvent<ThreadsRequest>) => void) | null; postMessage(m: unknown): void };
  scope.onmessage = (event) => {
    run(event.data).then(
      (result) => scope.postMessage(result),
      (error: unknown) => scope.postMessage({ error: error instanceof Error ? `${error.message}\n${error.stack ?? ""}` : String(error) }),
    );
  };
}

// The engine's entry point: createEngine() gives an Engine (./api) running in a Web
// Worker by default, or on this thread.
export * from "./api";
export * from "./errors";
import type { Engine } from "./api";
import { LocalEngine } from "./local_engine";
import { WorkerEngine } from "./worker_client";

export interface CreateEngineOptions {
  /** Run the engine in a Web Worker (default true) so the page never freezes. */
  worker?: boolean;
  /** URL of the worker script (default: engine-worker.js next to the bundle that calls this). */
  workerUrl?: string | URL;
}

export function createEngine(options: CreateEngineOptions = {}): Engine {
  if (options.worker === false) return new LocalEngine();
  // Bundles live in site/assets/, next to engine-worker.js.
  const url = options.workerUrl ?? new URL("./engine-worker.js", import.meta.url);
  return new WorkerEngine(new Worker(url, { type: "module" }));
}

export { LocalEngine, WorkerEngine };

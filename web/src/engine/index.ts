// The engine's entry point for pages: createEngine() gives an Engine (./api) running
// in a Web Worker, so the page never freezes. The same engine on the page's own
// thread is createInPageEngine() in ./in_page (kept out of this module: it brings
// tvmjs and the tokenizer's wasm into the page's bundle).
export * from "./api";
export * from "../base/errors";
import type { Engine } from "./api";
import { WorkerEngine } from "./worker_client";

export interface CreateEngineOptions {
  /** URL of the worker script (default: engine-worker.js next to the bundle that calls this). */
  workerUrl?: string | URL;
}

export function createEngine(options: CreateEngineOptions = {}): Engine {
  // Bundles live in site/assets/, next to engine-worker.js.
  const url = options.workerUrl ?? new URL("./engine-worker.js", import.meta.url);
  return new WorkerEngine(new Worker(url, { type: "module" }));
}

export { WorkerEngine };

// The engine's entry point for pages: createEngine() gives an Engine (./api) running
// in a Web Worker, so the page never freezes. The same engine on the page's own
// thread is createInPageEngine() in ./in_page (kept out of this module: it brings
// tvmjs and the tokenizer's wasm into the page's bundle).
export * from "./api";
export * from "../base/errors";
import { workerScriptUrl } from "../base/worker_url";
import type { Engine } from "./api";
import { WorkerEngine } from "./worker_client";

export interface CreateEngineOptions {
  /** URL of the worker script (default: engine-worker.js next to the bundle that calls this). */
  workerUrl?: string | URL;
}

export function createEngine(options: CreateEngineOptions = {}): Engine {
  // Bundles live in site/assets/, next to engine-worker.js.
  const url = new URL(options.workerUrl ?? new URL("./engine-worker.js", import.meta.url), globalThis.location?.href);
  return new WorkerEngine(startWorker(url));
}

/**
 * A module Worker running `url`, also when `url` is on another origin than the page (the
 * embeddable widget; base/worker_url.ts). The host page's CSP must allow blob: in worker-src
 * and the widget's origin in script-src.
 */
function startWorker(url: URL): Worker {
  const script = workerScriptUrl(url);
  const worker = new Worker(script.href, { type: "module" });
  // The Worker has fetched its script once it starts running it; revoking later is enough.
  if (script.bootstrap) setTimeout(() => URL.revokeObjectURL(script.href), 60_000);
  return worker;
}

export { WorkerEngine };

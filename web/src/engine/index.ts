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
  const url = new URL(options.workerUrl ?? new URL("./engine-worker.js", import.meta.url), globalThis.location?.href);
  return new WorkerEngine(startWorker(url));
}

/**
 * A module Worker running `url`, also when `url` is on another origin than the page (the
 * embeddable widget: the host page on one origin, widget.js and engine-worker.js on the
 * widget's). `new Worker(url)` refuses a cross-origin URL outright, so the Worker is started
 * from a same-origin blob: module whose only line imports the real worker module: the import
 * is an ordinary CORS module fetch (engine-worker.js must be served with
 * Access-Control-Allow-Origin), and inside it import.meta.url is the real URL, so what the
 * worker loads relative to itself still comes from the widget's origin. The host page's CSP
 * must allow blob: in worker-src and the widget's origin in script-src.
 */
function startWorker(url: URL): Worker {
  if (globalThis.location === undefined || url.origin === globalThis.location.origin || url.protocol === "blob:") {
    return new Worker(url, { type: "module" });
  }
  const bootstrap = new Blob([`import ${JSON.stringify(url.href)};\n`], { type: "text/javascript" });
  const blobUrl = URL.createObjectURL(bootstrap);
  const worker = new Worker(blobUrl, { type: "module" });
  // The Worker has fetched its script once it starts running it; revoking later is enough.
  setTimeout(() => URL.revokeObjectURL(blobUrl), 60_000);
  return worker;
}

export { WorkerEngine };

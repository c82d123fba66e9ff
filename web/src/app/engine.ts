// The app's engine: the Web Worker one (createEngine never pulls the in-page engine,
// tvmjs or the tokenizer's wasm into the page's bundle; the worker loads those).

import { createEngine, type Engine } from "../engine";

export function createWorkerEngine(): Engine {
  return createEngine();
}

// `window.wllamaBench`: wllama (llama.cpp compiled to WebAssembly, npm @wllama/wllama) driven the
// way `webkiln bench` drives webkiln through `window.webkilnChat`, so the two run side by side in
// the same Chromium on the same GGUF and the same prompt token ids. Benchmark-only: bundled into
// the test site (assets/bench-wllama.js), never into site/ or the npm package; the benchmark
// adds it to chat.html with a script tag.

// tests/ has no node_modules of its own and TypeScript resolves packages from the importing
// file's folder upwards, so the package is named by its path under web/node_modules (esbuild
// bundles the same file).
import { Wllama, type RawCompletionResponse, type ResultTimings } from "../../web/node_modules/@wllama/wllama/esm/index.js";

let current: Wllama | undefined;

export interface WllamaLoadOptions {
  /** The GGUF file's URL (relative to the page). */
  modelUrl: string;
  /** wllama.wasm's URL (the package's single build: threads and WebGPU are chosen at run time). */
  wasmUrl: string;
  threads: number;
  /** Context window; the benchmark's prompt plus its decode tokens must fit. */
  contextTokens: number;
}

async function load(options: WllamaLoadOptions) {
  await current?.exit();
  current = undefined;
  const started = performance.now();
  const wllama = new Wllama({ default: new URL(options.wasmUrl, location.href).href }, { suppressNativeLog: true });
  // useCache: the GGUF is kept in the origin's storage (OPFS) by wllama's cache manager, so a
  // second load in the same profile reads no network, as webkiln's warm load reads the Cache API.
  await wllama.loadModelFromUrl(new URL(options.modelUrl, location.href).href, {
    useCache: true,
    n_threads: options.threads,
    n_ctx: options.contextTokens,
    // The same prompt batch as one llama_decode call where it fits (wllama's default is 512).
    n_batch: Math.max(512, options.contextTokens),
    n_gpu_layers: 0, // the CPU build: wllama would otherwise offload every layer to WebGPU
    n_parallel: 1, // one request at a time: no slots kept for other sequences
  });
  current = wllama;
  return {
    millis: performance.now() - started,
    threads: wllama.getNumThreads(),
    multithread: wllama.isMultithread(),
    crossOriginIsolated: self.crossOriginIsolated,
    libllama: Wllama.getLibllamaVersion(),
    bos: wllama.getBOS(),
    addBos: wllama.mustAddBosToken(),
  };
}

function model(): Wllama {
  if (!current) throw new Error("no wllama model loaded: call wllamaBench.load() first");
  return current;
}

/**
 * `decodeTokens` greedy tokens after the prompt's token ids, end-of-generation ignored (as
 * webkiln's run with no stop tokens), the prompt evaluated afresh (no reuse of an earlier
 * request's KV cache). Timings are llama.cpp's own (prompt evaluation, token generation), plus
 * the wall time of the whole request seen from the page.
 */
async function generate(promptIds: number[], decodeTokens: number) {
  const started = performance.now();
  const response: RawCompletionResponse = await model().createCompletion({
    // llama.cpp's server takes a prompt of token ids as is (no BOS added, no re-tokenising).
    prompt: promptIds as unknown as string[],
    max_tokens: decodeTokens,
    temperature: 0,
    top_k: 1,
    ignore_eos: true,
    cache_prompt: false,
    stream: false,
  } as Parameters<Wllama["createCompletion"]>[0] & { stream: false; cache_prompt: boolean });
  const wallMillis = performance.now() - started;
  const timings: ResultTimings | undefined = response.timings;
  if (!timings) throw new Error("wllama returned no timings: cannot time prefill and decode separately");
  const choice = response.choices[0];
  if (!choice) throw new Error("wllama returned no completion choice");
  return { text: choice.text, finishReason: choice.finish_reason, usage: response.usage, timings, wallMillis };
}

declare global {
  interface Window {
    wllamaBench: {
      load: typeof load;
      generate: typeof generate;
      exit: () => Promise<void>;
    };
  }
}
window.wllamaBench = {
  load,
  generate,
  exit: async () => {
    await current?.exit();
    current = undefined;
  },
};

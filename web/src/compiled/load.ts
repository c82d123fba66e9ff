// Loading a compiled model, the part chat and image models share: the manifest (checked),
// the backend this device runs (features and limits), that backend's files from storage
// (verified, cached), the tokenizer the manifest names, and the library on the device.
// Each task then builds its weights and entry points on top (llm/chat_model.ts,
// image/image_model.ts).

import { chooseBackend, type BackendRequest } from "../base/backend_choice";
import { ModelLoadError } from "../base/errors";
import { parseManifest, tokenizerFile, type ChatManifest, type ImageManifest, type Manifest } from "../base/manifest";
import { Tokenizer } from "../base/tokenizer";
import { loadModule, probeWebGPU, webgpuTerms, type GPUContext, type LoadedModule, type WebGPUProbe } from "../base/tvm";
import { workerScriptUrl } from "../base/worker_url";
import { fetchJsonCached, loadFiles, type LoadOptions } from "../storage";
import { instantiateThreaded, planThreads, type ThreadedModule, type ThreadPlan } from "./threads";

export interface LoadCompiledOptions extends Pick<LoadOptions, "onProgress" | "onCorruptCacheEntry" | "cacheName" | "signal"> {
  /**
   * "auto" (default): WebGPU on a real GPU, else the CPU backend (base/backend_choice.ts);
   * "webgpu" or "wasm-cpu"; or a backend's name ("webgpu-f16", ...).
   */
  backend?: BackendRequest;
  /**
   * The WebGPU device, or its absence and why (the engine probes it to watch for device
   * loss); default: probed here. A CPU backend leaves the device unused.
   */
  webgpu?: WebGPUProbe;
  /** CPU backend threads (wasm-cpu): default, the cores where the page is cross-origin isolated, else 1. */
  threads?: number;
  /**
   * The script helper threads start: the engine Worker's own bundle, which runs a helper when
   * started as one (compiled/threads.ts isHelperThread). Without it the CPU runs one thread.
   */
  threadHelperUrl?: string | URL;
}

/** The CPU threads a loaded model runs (null on WebGPU). */
export interface CpuThreads {
  /** Threads that run its parallel work, the engine's own included. */
  count: number;
  /** Why that many, in one line ("2 threads (cross-origin isolated)", "1 thread: the page is not ..."). */
  reason: string;
  /** Parallel tasks helper threads have run so far (0 with one thread): proof that they ran. */
  helperTasks(): number;
}

const TASK_NOUN = { chat: "a chat model", image: "an image model" } as const;

/** The manifest at `manifestUrl` (network first, else the copy stored offline), which must be of `task`. */
export async function fetchManifest(manifestUrl: string, task: "chat", signal?: AbortSignal): Promise<ChatManifest>;
export async function fetchManifest(manifestUrl: string, task: "image", signal?: AbortSignal): Promise<ImageManifest>;
export async function fetchManifest(manifestUrl: string, task: Manifest["task"], signal?: AbortSignal): Promise<Manifest> {
  const manifest = parseManifest((await fetchJsonCached(manifestUrl, { signal })).data, manifestUrl);
  if (manifest.task !== task) {
    throw new ModelLoadError(`${manifest.id} is a '${manifest.task}' model, not ${TASK_NOUN[task]}.`);
  }
  return manifest;
}

/** A compiled model on the device, before its task adds weights and entry points. */
export interface CompiledModel<M extends Manifest> {
  manifest: M;
  backend: string;
  /** Why that backend runs here (one line for the user). */
  backendReason: string;
  entry: M["backends"][string];
  tokenizer: Tokenizer;
  mod: LoadedModule;
  threads: CpuThreads | null;
  /** The shards of the backend's weights, in the order the tensor records number them. */
  shards: Uint8Array[];
  /** Frees the library and the tokenizer (for a task whose own setup fails). */
  dispose(): void;
}

export interface CompiledModelSpec<M extends Manifest> {
  /** The shard paths the chosen backend reads (ModelLoadError when the manifest lacks them). */
  shardsOf(backend: string, entry: M["backends"][string]): string[];
  /** What to choose instead when the device's limits are too small, e.g. "a smaller model or quantization". */
  smaller: string;
}

export async function loadCompiledModel<M extends Manifest>(
  manifestUrl: string,
  manifest: M,
  spec: CompiledModelSpec<M>,
  options: LoadCompiledOptions,
): Promise<CompiledModel<M>> {
  const requested = options.backend ?? "auto";
  // A CPU request needs no device; any other choice reads the device's terms.
  const webgpu = options.webgpu ?? (requested === "wasm-cpu" ? { gpu: null, unavailable: "not needed" } : await probeWebGPU());
  const choice = chooseBackend<M["backends"][string]>(
    manifest.id,
    manifest.backends as Record<string, M["backends"][string]>,
    webgpuTerms(webgpu.gpu),
    webgpu.unavailable,
    requested,
    spec.smaller,
  );
  const { name: backend, entry } = choice;
  const gpu: GPUContext | undefined = entry.device === "webgpu" ? (webgpu.gpu ?? undefined) : undefined;
  // A device probed here only to decide is not kept by a CPU backend.
  if (!options.webgpu && webgpu.gpu && !gpu) webgpu.gpu.device.destroy();
  const shardPaths = spec.shardsOf(backend, entry);
  const tokenizerPath = tokenizerFile(manifest);
  // A CPU backend with more than one thread loads the threaded link of its library instead.
  const threadedWasm = entry.device === "cpu" && "threads_wasm" in entry ? entry.threads_wasm : undefined;
  const plan: ThreadPlan | null =
    entry.device === "cpu" ? planThreads(options.threads, options.threadHelperUrl, threadedWasm !== undefined) : null;
  const wasmPath = plan && plan.threads > 1 && threadedWasm ? threadedWasm : entry.wasm;
  const wanted = new Set([wasmPath, tokenizerPath, ...shardPaths]);
  const files = await loadFiles(manifestUrl, manifest.files.filter((f) => wanted.has(f.path)), options);
  const get = (path: string): ArrayBuffer => {
    const data = files.get(path);
    if (!data) throw new ModelLoadError(`${path} is listed by the manifest but was not loaded`);
    return data;
  };
  const shards = shardPaths.map((p) => new Uint8Array(get(p)));
  const tokenizer = await Tokenizer.fromJSON(get(tokenizerPath));
  let mod: LoadedModule;
  let threads: CpuThreads | null = null;
  try {
    if (plan && wasmPath !== entry.wasm) {
      const threaded = await startThreads(get(wasmPath), plan, options.threadHelperUrl!);
      threads = { count: threaded.module.threads, reason: threaded.reason, helperTasks: () => threaded.module.helperTasks() };
      mod = await loadModule(threaded.module, "wasm-cpu");
    } else {
      mod = await loadModule(get(wasmPath), entry.device === "cpu" ? "wasm-cpu" : "webgpu", gpu);
      if (plan) threads = { count: 1, reason: plan.reason, helperTasks: () => 0 };
    }
  } catch (error) {
    tokenizer.dispose();
    throw error;
  }
  return {
    manifest,
    backend,
    backendReason: threads ? `${choice.reason}; ${threads.reason}` : choice.reason,
    entry,
    tokenizer,
    mod,
    threads,
    shards,
    dispose() {
      mod.dispose();
      tokenizer.dispose();
    },
  };
}

/**
 * The threaded library with `plan.threads` threads; if its helpers do not start (a browser
 * that refuses nested Workers, memory for their stacks), the same library on one thread,
 * saying why: the model still loads.
 */
async function startThreads(wasm: ArrayBuffer, plan: ThreadPlan, helperUrl: string | URL): Promise<{ module: ThreadedModule; reason: string }> {
  try {
    // The engine's script may be on another origin (the widget's): helpers start from a
    // same-origin bootstrap then, kept for the Worker's life (a later load starts helpers again).
    const module = await instantiateThreaded(wasm, { threads: plan.threads, helperUrl: workerScriptUrl(helperUrl).href });
    return { module, reason: plan.reason };
  } catch (error) {
    const module = await instantiateThreaded(wasm, { threads: 1, helperUrl });
    const why = error instanceof Error ? error.message : String(error);
    return { module, reason: `1 thread: ${plan.threads} threads could not start (${why.replace(/\.$/, "")})` };
  }
}

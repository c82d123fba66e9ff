// Multi-threaded wasm-cpu: a threaded model library (linked with shared memory, see
// python/webkiln/toolchain/threads.py) instantiated on a SharedArrayBuffer-backed memory,
// plus helper Workers that run TVM's parallel tasks on that same memory.
//
// How it fits together: the library's TVMBackendParallelLaunch (threads/thread_pool.c) hands
// the tasks of every TIR `parallel` loop (and of any C kernel that calls it) to the helpers
// that are running, and runs them serially when none are. A helper instantiates the same
// WebAssembly.Module on the same memory, never runs `_initialize` (static constructors must
// run once, in the owner), gets its own stack and TLS block (webkiln_threads_prepare) and
// then blocks in webkiln_thread_entry, waiting on a futex word for work. Blocking needs a
// Worker: the owner (the engine's Worker) and the helpers all are.

import * as tvmjs from "@mlc-ai/web-runtime";

/** The Worker name a helper thread is started with: worker scripts check it first (isHelperThread). */
export const HELPER_THREAD_NAME = "webkiln-thread";
/** Helpers' stack: TVM's kernels keep small buffers on the stack (up to 1 KiB each, more in C kernels). */
const HELPER_STACK_BYTES = 1 << 20;
/**
 * Iterations a waiting thread polls before it blocks (a few ms): longer than the gaps between
 * a decode step's kernels and between steps, so helpers stay awake while a reply is written
 * (waking a blocked Worker costs about as long as a small kernel runs), and block soon after.
 * Measured: 20 000 polls gave 2-thread decode 18.2 tok/s, 2 000 000 gave 20.8 (BENCHMARKS.md).
 */
const DEFAULT_SPIN = 2_000_000;
/** More threads than this rarely help a memory-bound decode and cost a Worker each. */
export const MAX_THREADS = 8;

const WASM_PAGE = 65536;

/** Why threads cannot run in this context, or null when they can. */
export function threadsUnavailable(): string | null {
  const g = globalThis as { crossOriginIsolated?: boolean };
  if (!g.crossOriginIsolated) {
    return "the page is not cross-origin isolated (it needs the headers Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp; webkiln serve --isolate sends them)";
  }
  if (typeof SharedArrayBuffer === "undefined") return "SharedArrayBuffer is missing";
  if (typeof Worker === "undefined") return "this context cannot start Workers";
  return null;
}

/** Threads to use: `requested` if given, else the machine's cores; capped at MAX_THREADS. */
export function threadCount(requested?: number): number {
  const cores = typeof navigator !== "undefined" && navigator.hardwareConcurrency ? navigator.hardwareConcurrency : 1;
  const wanted = requested ?? cores;
  if (!Number.isInteger(wanted) || wanted < 1) throw new RangeError(`threads must be a positive integer, not ${wanted}`);
  return Math.min(wanted, MAX_THREADS);
}

/** How many threads a CPU backend runs, and why, in one line for the user. */
export interface ThreadPlan {
  threads: number;
  reason: string;
}

/** Whether this code runs in a dedicated Worker (which may block; a page's main thread may not). */
function inWorker(): boolean {
  const g = globalThis as { WorkerGlobalScope?: new () => unknown };
  return typeof g.WorkerGlobalScope === "function" && globalThis instanceof g.WorkerGlobalScope;
}

/**
 * The threads a wasm-cpu model gets here: `requested` (default: the cores, at most
 * MAX_THREADS) where threads can run, else 1 and why not. `helperUrl`: the script helpers
 * start (the engine's Worker bundle); without it this engine cannot start helpers.
 */
export function planThreads(requested: number | undefined, helperUrl: string | URL | undefined, hasThreadedLibrary: boolean): ThreadPlan {
  const wanted = threadCount(requested);
  if (wanted === 1) {
    return { threads: 1, reason: requested === 1 ? "1 thread, as asked" : "1 thread: the device reports one core" };
  }
  if (!hasThreadedLibrary) return { threads: 1, reason: "1 thread: this build of the model has no threaded CPU library" };
  if (!inWorker() || helperUrl === undefined) {
    return { threads: 1, reason: "1 thread: the engine runs on the page's main thread, which may not wait for helper threads (use createEngine(), which runs it in a Worker)" };
  }
  const unavailable = threadsUnavailable();
  if (unavailable) return { threads: 1, reason: `1 thread: ${unavailable}` };
  return { threads: wanted, reason: `${wanted} threads (cross-origin isolated)` };
}


/** The limits of the memory a module imports (env.memory), read from its import section. */
export function importedMemoryLimits(wasm: ArrayBuffer): { initial: number; maximum: number; shared: boolean } | null {
  const bytes = new Uint8Array(wasm);
  let pos = 8;
  const uleb = (): number => {
    let result = 0;
    let scale = 1;
    for (;;) {
      const b = bytes[pos++];
      if (b === undefined) throw new Error("truncated WebAssembly module");
      result += (b & 0x7f) * scale;
      scale *= 128;
      if (!(b & 0x80)) return result;
    }
  };
  const name = (): string => {
    const n = uleb();
    const s = new TextDecoder().decode(bytes.subarray(pos, pos + n));
    pos += n;
    return s;
  };
  const limits = (): { initial: number; maximum: number; shared: boolean } => {
    const flags = uleb();
    const initial = uleb();
    const maximum = flags & 1 ? uleb() : 65536;
    return { initial, maximum, shared: (flags & 2) !== 0 };
  };
  while (pos < bytes.length) {
    const section = bytes[pos++];
    const size = uleb();
    const end = pos + size;
    if (section === 2) {
      for (let count = uleb(); count > 0; count--) {
        const module = name();
        const field = name();
        const kind = bytes[pos++];
        if (kind === 0) uleb();
        else if (kind === 1) {
          pos++;
          limits();
        } else if (kind === 2) {
          const found = limits();
          if (module === "env" && field === "memory") return found;
        } else if (kind === 3) pos += 2;
        else if (kind === 4) {
          pos++;
          uleb();
        }
      }
      return null;
    }
    pos = end;
  }
  return null;
}

/** Whether a model library was linked for threads (it imports a shared memory). */
export function isThreadedLibrary(wasm: ArrayBuffer): boolean {
  return importedMemoryLimits(wasm)?.shared === true;
}

interface PoolExports {
  webkiln_threads_prepare(index: number, stackBytes: number): number;
  webkiln_threads_ready(): number;
  webkiln_threads_enable(helpers: number, mainMayWait: number, spin: number): void;
  webkiln_threads_main_can_block(canBlock: number): void;
  webkiln_threads_use(active: number): void;
  webkiln_threads_helpers(): number;
  webkiln_threads_stop(): void;
  webkiln_threads_helper_tasks(): number;
}

/** The message that starts a helper. */
interface HelperStart {
  kind: "webkiln-thread-start";
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  thread: number; // the descriptor webkiln_threads_prepare made
}

export interface ThreadedModule {
  tvm: tvmjs.Instance;
  /** Threads that run parallel loops, the owner's included (1: helpers did not start). */
  threads: number;
  /** Sets how many threads the next parallel loops use (1..threads), e.g. to compare. */
  useThreads(count: number): void;
  /** Parallel tasks the helpers have run so far (0 when every loop ran on the owner). */
  helperTasks(): number;
  /** Stops the helpers and frees the instance. */
  dispose(): void;
}

export interface ThreadOptions {
  /** Total threads, the calling one included (threadCount()); 1 starts no helper. */
  threads: number;
  /** The script helpers run: one that calls runHelperThread() when isHelperThread(). */
  helperUrl: string | URL;
  /** Worker type of that script (an ES module bundle or a classic one). */
  helperType?: WorkerType;
  /** Busy-wait iterations before a waiting thread blocks (DEFAULT_SPIN). */
  spin?: number;
  /** How long helpers may take to start, in ms. */
  startTimeoutMs?: number;
}

function exportsOf(tvm: tvmjs.Instance): PoolExports & Record<string, unknown> {
  return (tvm as unknown as { exports: PoolExports & Record<string, unknown> }).exports;
}

/**
 * Instantiates a threaded library on a shared memory and starts `threads - 1` helpers.
 * Must run in a Worker: the owner blocks (Atomics) while helpers finish their tasks.
 */
export async function instantiateThreaded(wasm: ArrayBuffer, options: ThreadOptions): Promise<ThreadedModule> {
  // One thread needs only a shared memory, which Chromium creates even without cross-origin
  // isolation (it just cannot be posted to a Worker): the same library then runs serially.
  const unavailable = options.threads > 1 ? threadsUnavailable() : null;
  if (unavailable) throw new Error(`Threads are unavailable: ${unavailable}.`);
  const limits = importedMemoryLimits(wasm);
  if (!limits?.shared) throw new Error("This model library is not a threaded build (it does not import a shared memory).");
  const module = await WebAssembly.compile(wasm);
  const memory = new WebAssembly.Memory({ initial: limits.initial, maximum: limits.maximum, shared: true });
  // tvmjs' WASI shim (emscripten glue) hands its import object to tvmjs; the module imports its
  // memory from there, and tvmjs then finds it as the instance's exported memory. The glue is
  // one per JavaScript realm, so the memory is taken out again once the instance exists.
  const wasi = tvmjs.createPolyfillWASI() as unknown as { imports: { env: Record<string, unknown> } };
  wasi.imports.env.memory = memory;
  let tvm: tvmjs.Instance;
  try {
    // Synchronous instantiation of a compiled module: allowed in Workers, and the only tvmjs
    // entry that takes a WebAssembly.Module (which the helpers must share).
    tvm = new tvmjs.Instance(module, wasi);
  } finally {
    delete wasi.imports.env.memory;
  }
  const pool = exportsOf(tvm);
  if (typeof pool.webkiln_threads_prepare !== "function") {
    tvm.dispose();
    throw new Error("This model library lacks webkiln's thread pool (webkiln_threads_prepare); rebuild it.");
  }
  // The owner is a Worker: it may block while it waits for helpers.
  pool.webkiln_threads_main_can_block(1);
  const helpers: Worker[] = [];
  const wanted = Math.max(1, Math.min(options.threads, MAX_THREADS)) - 1;
  const failures: string[] = [];
  for (let index = 1; index <= wanted; index++) {
    const thread = pool.webkiln_threads_prepare(index, HELPER_STACK_BYTES);
    if (thread === 0) {
      failures.push("out of memory for a helper's stack");
      break;
    }
    const worker = new Worker(options.helperUrl, { name: HELPER_THREAD_NAME, type: options.helperType ?? "module" });
    worker.onerror = (event) => failures.push(event.message || "helper thread failed to start");
    const start: HelperStart = { kind: "webkiln-thread-start", module, memory, thread };
    worker.postMessage(start);
    helpers.push(worker);
  }
  const deadline = performance.now() + (options.startTimeoutMs ?? 10000);
  while (pool.webkiln_threads_ready() < wanted && failures.length === 0 && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  const ready = pool.webkiln_threads_ready();
  const spin = options.spin ?? DEFAULT_SPIN;
  if (ready < wanted) {
    pool.webkiln_threads_stop();
    for (const worker of helpers) worker.terminate();
    tvm.dispose();
    throw new Error(
      `Only ${ready} of ${wanted} helper threads started within the time limit` +
        (failures.length ? `: ${failures.join("; ")}` : "") + ".",
    );
  }
  pool.webkiln_threads_enable(wanted, 1, spin);
  return {
    tvm,
    threads: wanted + 1,
    useThreads(count: number) {
      if (!Number.isInteger(count) || count < 1 || count > wanted + 1) {
        throw new RangeError(`threads must be between 1 and ${wanted + 1}, not ${count}`);
      }
      // Helpers beyond `count - 1` keep acknowledging launches but get no task (thread_pool.c).
      pool.webkiln_threads_use(count - 1);
    },
    helperTasks: () => pool.webkiln_threads_helper_tasks(),
    dispose() {
      pool.webkiln_threads_stop();
      for (const worker of helpers) worker.terminate();
      tvm.dispose();
    },
  };
}

/** Whether this Worker was started as a helper thread (check before any other start-up work). */
export function isHelperThread(): boolean {
  return (globalThis as { name?: string }).name === HELPER_THREAD_NAME;
}

/** A helper's whole life: wait for its start message, then run parallel tasks until stopped. */
export function runHelperThread(): void {
  const scope = globalThis as unknown as { onmessage: ((e: MessageEvent<HelperStart>) => void) | null; close(): void };
  scope.onmessage = (event) => {
    const { module, memory, thread } = event.data;
    scope.onmessage = null;
    const imports: Record<string, Record<string, WebAssembly.ImportValue>> = {};
    for (const entry of WebAssembly.Module.imports(module)) {
      const table = (imports[entry.module] ??= {});
      if (entry.kind === "memory") table[entry.name] = memory;
      else if (entry.kind === "function") {
        // Parallel tasks are pure computation; a task reaching into JavaScript is a bug, said loudly.
        table[entry.name] = () => {
          throw new Error(`${entry.module}.${entry.name} was called on a webkiln helper thread`);
        };
      }
    }
    const instance = new WebAssembly.Instance(module, imports);
    const entry = instance.exports.webkiln_thread_entry as (thread: number) => void;
    entry(thread); // returns when the owner stops the pool
    scope.close();
  };
}

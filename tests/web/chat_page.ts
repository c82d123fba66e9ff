// tests/site/chat.html's `window.webkilnChat`: direct access to a ChatModel, the chat
// template and both engine flavours, for tests and benchmarks. (The app is site/index.html.)
// The same bundle started as a module Worker (`webkilnChat.worker()`) serves load/generate/
// reset from there: the CPU backend runs more than one thread only in a Worker (and its
// helper threads are this bundle too).

import { createEngine, type Engine } from "../../web/src/engine";
import { createInPageEngine } from "../../web/src/engine/in_page";
import { ChatModel, type GenerateOptions, type LoadChatOptions } from "../../web/src/llm/chat_model";
import { ChatTemplate, type TemplateMessage } from "../../web/src/llm/chat_template";
import type { ChatManifest } from "../../web/src/base/manifest_types";
import { Tokenizer } from "../../web/src/base/tokenizer";
import { isHelperThread, runHelperThread } from "../../web/src/compiled/threads";

let current: ChatModel | undefined;

/** Loads a model (disposing the previous one); the UI and `window.webkilnChat` share it. */
export async function loadModel(manifestUrl: string, options: LoadChatOptions = {}): Promise<ChatModel> {
  current?.dispose();
  current = undefined;
  current = await ChatModel.load(manifestUrl, options);
  return current;
}

/** The loaded model, if any. */
export function currentModel(): ChatModel | undefined {
  return current;
}

async function load(manifestUrl: string, backend?: string, threads?: number) {
  const started = performance.now();
  const m = await loadModel(manifestUrl, { backend, threads, threadHelperUrl: import.meta.url });
  return {
    id: m.manifest.id,
    backend: m.backend,
    backendReason: m.backendReason,
    threads: m.threads?.count,
    millis: performance.now() - started,
  };
}

function model(): ChatModel {
  if (!current) throw new Error("no model loaded: call load() first");
  return current;
}

async function generate(promptIds: number[], options: Omit<GenerateOptions, "onToken" | "signal"> = {}) {
  const deltas: string[] = [];
  const result = await model().generate(promptIds, { ...options, onToken: (_id, delta) => deltas.push(delta) });
  return { ...result, deltas };
}

function encode(text: string): number[] {
  return Array.from(model().tokenizer.encode(text));
}

/** The prompt text the engine builds for `messages` with the model's chat template (reads only the manifest and tokenizer). */
/** `template`: render this chat template instead of the manifest's (with its tokenizer and special tokens). */
async function renderChat(manifestUrl: string, messages: TemplateMessage[], addGenerationPrompt = true,
  variables: Record<string, unknown> = {}, template?: string): Promise<string> {
  const built = (await (await fetch(manifestUrl)).json()) as ChatManifest;
  const manifest = template === undefined ? built : { ...built, chat_template: template };
  const tokenizer = await Tokenizer.fromJSON(await (await fetch(new URL("tokenizer.json", new URL(manifestUrl, location.href)))).arrayBuffer());
  try {
    return new ChatTemplate(manifest, tokenizer).render(messages, addGenerationPrompt, variables);
  } finally {
    tokenizer.dispose();
  }
}

type WorkerMethod = "load" | "generate" | "reset";
interface WorkerCall {
  id: number;
  method: WorkerMethod;
  args: unknown[];
}

/** load/generate/reset answered by this bundle in a module Worker (manifest URLs relative to the page). */
function workerChat() {
  const worker = new Worker(import.meta.url, { type: "module" });
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let next = 0;
  worker.onmessage = (e: MessageEvent<{ id: number; value?: unknown; error?: string }>) => {
    const waiting = pending.get(e.data.id);
    pending.delete(e.data.id);
    if (e.data.error !== undefined) waiting?.reject(new Error(e.data.error));
    else waiting?.resolve(e.data.value);
  };
  const call = <T>(method: WorkerMethod, ...args: unknown[]): Promise<T> =>
    new Promise((resolve, reject) => {
      const id = next++;
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      worker.postMessage({ id, method, args } satisfies WorkerCall);
    });
  return {
    load: (manifestUrl: string, backend?: string, threads?: number) =>
      call<Awaited<ReturnType<typeof load>>>("load", new URL(manifestUrl, location.href).href, backend, threads),
    generate: (promptIds: number[], options: Omit<GenerateOptions, "onToken" | "signal"> = {}) =>
      call<Awaited<ReturnType<typeof generate>>>("generate", promptIds, options),
    reset: () => call<void>("reset"),
    terminate: () => worker.terminate(),
  };
}

function serveWorkerCalls(): void {
  const scope = self as unknown as { onmessage: ((e: MessageEvent<WorkerCall>) => void) | null; postMessage(m: unknown): void };
  const methods: Record<WorkerMethod, (...args: never[]) => unknown> = {
    load: load as (...args: never[]) => unknown,
    generate: generate as (...args: never[]) => unknown,
    reset: () => model().reset(),
  };
  scope.onmessage = (e) => {
    const { id, method, args } = e.data;
    Promise.resolve()
      .then(() => methods[method](...(args as never[])))
      .then(
        (value) => scope.postMessage({ id, value }),
        (error: unknown) => scope.postMessage({ id, error: error instanceof Error ? error.message : String(error) }),
      );
  };
}

declare global {
  interface Window {
    webkilnChat: {
      load: typeof load;
      generate: typeof generate;
      encode: typeof encode;
      reset: () => void;
      renderChat: typeof renderChat;
      /** The Worker engine, or with {worker: false} the same engine on this thread. */
      createEngine: (options?: { worker?: boolean }) => Engine;
      /** load/generate/reset in a Worker of their own (where the CPU backend may run threads). */
      worker: typeof workerChat;
    };
  }
}
if (typeof window === "undefined") {
  if (isHelperThread()) runHelperThread();
  else serveWorkerCalls();
} else {
  window.webkilnChat = {
    load,
    generate,
    encode,
    reset: () => model().reset(),
    renderChat,
    createEngine: (options = {}) => (options.worker === false ? createInPageEngine() : createEngine()),
    worker: workerChat,
  };
}

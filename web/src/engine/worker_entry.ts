// The engine's Worker side: runs a LocalEngine and answers the messages of
// worker_client.ts (see protocol.ts). Loaded as site/assets/engine-worker.js.
// The same script is the CPU backend's helper threads (compiled/threads.ts): started under
// the helper name, it runs parallel tasks instead of an engine.

import { isHelperThread, runHelperThread } from "../compiled/threads";
import type { ChatCompletionChunk } from "./api";
import { LocalEngine } from "./local_engine";
import {
  serializeError,
  type FromWorker,
  type MethodArgs,
  type MethodName,
  type MethodResult,
  type ToWorker,
} from "./protocol";

function startEngine(): void {
  const engine = new LocalEngine(undefined, { threadHelperUrl: import.meta.url });
  const aborts = new Map<number, AbortController>();
  const scope = self as unknown as {
    postMessage(message: FromWorker, transfer?: Transferable[]): void;
    onmessage: ((e: MessageEvent<ToWorker>) => void) | null;
  };
  const post = (message: FromWorker, transfer: Transferable[] = []) => scope.postMessage(message, transfer);

  engine.onEvent((event) => post({ kind: "event", event }));

  /** A call in flight: its id (for the messages that answer its callbacks) and abort signal. */
  interface CallContext {
    id: number;
    signal: AbortSignal;
  }

  // One handler per method of EngineMethods: a missing, extra or mistyped one does not compile.
  const handlers: { [K in MethodName]: (args: MethodArgs<K>, call: CallContext) => Promise<MethodResult<K>> } = {
    chat: async ([request], { id, signal }) => {
      const result = await engine.chat.completions.create(request, { signal });
      if (!request.stream) return result as Awaited<MethodResult<"chat">>;
      for await (const chunk of result as AsyncIterable<ChatCompletionChunk>) post({ kind: "chunk", id, chunk });
      return undefined;
    },
    "images.generate": async ([request, wants], { id, signal }) =>
      engine.images.generate(request, {
        signal,
        onProgress: wants.progress ? (step, total) => post({ kind: "step", id, step, total }) : undefined,
        // Each preview's pixels are its own buffer: moved to the page, not copied.
        onPreview: wants.preview ? (preview) => post({ kind: "preview", id, preview }, [preview.rgba.buffer]) : undefined,
        previewEvery: wants.previewEvery,
      }),
    listModels: ([options]) => engine.listModels(options),
    loadModel: ([model, backend, threads], { id, signal }) =>
      engine.loadModel(model, { backend, threads, signal, onProgress: (event) => post({ kind: "progress", id, event }) }),
    unloadModel: () => engine.unloadModel(),
    loadedModel: () => engine.loadedModel(),
    resetChat: () => engine.resetChat(),
    "cache.list": ([models]) => engine.cache.list(models),
    "cache.delete": ([model]) => engine.cache.delete(model),
    "cache.clear": () => engine.cache.clear(),
    "cache.storage": () => engine.cache.storage(),
    simulateDeviceLoss: () => engine.simulateDeviceLoss(),
  };

  async function dispatch(message: Extract<ToWorker, { kind: "call" }>, call: CallContext): Promise<unknown> {
    const handler = handlers[message.method] as
      | ((args: MethodArgs<MethodName>, call: CallContext) => Promise<unknown>)
      | undefined;
    // A message from another version of the page: refused rather than guessed at.
    if (!handler) throw new Error(`unknown engine method '${String(message.method)}'`);
    // TypeScript cannot pair a union's method with its args; CallMessage pairs them.
    return handler(message.args, call);
  }

  scope.onmessage = (e: MessageEvent<ToWorker>) => {
    const message = e.data;
    if (message.kind === "abort") {
      aborts.get(message.id)?.abort();
      return;
    }
    const controller = new AbortController();
    aborts.set(message.id, controller);
    dispatch(message, { id: message.id, signal: controller.signal }).then(
      (value) => post({ kind: "result", id: message.id, value: value as MethodResult<MethodName> }),
      (error: unknown) => post({ kind: "error", id: message.id, error: serializeError(error) }),
    ).finally(() => aborts.delete(message.id));
  };
}

if (isHelperThread()) runHelperThread();
else startEngine();

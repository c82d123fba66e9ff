// The engine's Worker side: runs a LocalEngine and answers the messages of
// worker_client.ts (see protocol.ts). Loaded as site/assets/engine-worker.js.

import type { ChatCompletionChunk, ChatCompletionRequest, ImageGenerateRequest } from "./api";
import { LocalEngine } from "./local_engine";
import { serializeError, type FromWorker, type ImageCallOptions, type ToWorker } from "./protocol";

const engine = new LocalEngine();
const aborts = new Map<number, AbortController>();
const scope = self as unknown as {
  postMessage(message: FromWorker, transfer?: Transferable[]): void;
  onmessage: ((e: MessageEvent<ToWorker>) => void) | null;
};
const post = (message: FromWorker, transfer: Transferable[] = []) => scope.postMessage(message, transfer);

engine.onEvent((event) => post({ kind: "event", event }));

async function call(id: number, method: string, args: unknown[], signal: AbortSignal): Promise<unknown> {
  switch (method) {
    case "chat": {
      const request = args[0] as ChatCompletionRequest;
      const result = await engine.chat.completions.create(request, { signal });
      if (request.stream) {
        for await (const chunk of result as AsyncIterable<ChatCompletionChunk>) post({ kind: "chunk", id, chunk });
        return undefined;
      }
      return result;
    }
    case "images.generate": {
      const [request, wants] = args as [ImageGenerateRequest, ImageCallOptions];
      return engine.images.generate(request, {
        signal,
        onProgress: wants.progress ? (step, total) => post({ kind: "step", id, step, total }) : undefined,
        // Each preview's pixels are its own buffer: moved to the page, not copied.
        onPreview: wants.preview ? (preview) => post({ kind: "preview", id, preview }, [preview.rgba.buffer]) : undefined,
        previewEvery: wants.previewEvery,
      });
    }
    case "listModels":
      return engine.listModels(args[0] as Parameters<LocalEngine["listModels"]>[0]);
    case "loadModel": {
      const [model, backend] = args as [string, string | undefined];
      return engine.loadModel(model, { backend, signal, onProgress: (event) => post({ kind: "progress", id, event }) });
    }
    case "unloadModel":
      return engine.unloadModel();
    case "loadedModel":
      return engine.loadedModel();
    case "resetChat":
      return engine.resetChat();
    case "cache.list":
      return engine.cache.list(args[0] as Parameters<LocalEngine["cache"]["list"]>[0]);
    case "cache.delete":
      return engine.cache.delete(args[0] as string);
    case "cache.clear":
      return engine.cache.clear();
    case "cache.storage":
      return engine.cache.storage();
    case "simulateDeviceLoss":
      return engine.simulateDeviceLoss();
    default:
      throw new Error(`unknown engine method '${method}'`);
  }
}

scope.onmessage = (e: MessageEvent<ToWorker>) => {
  const message = e.data;
  if (message.kind === "abort") {
    aborts.get(message.id)?.abort();
    return;
  }
  const controller = new AbortController();
  aborts.set(message.id, controller);
  call(message.id, message.method, message.args, controller.signal).then(
    (value) => post({ kind: "result", id: message.id, value }),
    (error: unknown) => post({ kind: "error", id: message.id, error: serializeError(error) }),
  ).finally(() => aborts.delete(message.id));
};

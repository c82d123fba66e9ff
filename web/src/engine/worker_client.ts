// The page side of an engine running in a Web Worker: the same Engine interface,
// each call forwarded as a message (protocol.ts). Requests are validated here too,
// so a malformed request fails at once with the same typed error.

import type {
  CachedModel,
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionRequest,
  Engine,
  EngineEvent,
  ImageGenerateOptions,
  ImageGenerateRequest,
  ImagePreview,
  ImagesResponse,
  LoadedModel,
  LoadModelOptions,
  LoadProgressEvent,
  ModelInfo,
  RequestOptions,
  StorageInfo,
} from "./api";
import { EngineCrashedError } from "../base/errors";
import { validateChatRequest } from "./openai";
import {
  deserializeError,
  type CallMessage,
  type FromWorker,
  type ImageCallOptions,
  type MethodArgs,
  type MethodName,
  type MethodResult,
  type ToWorker,
} from "./protocol";
import { streamChunks } from "./stream";

interface Pending {
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
  onChunk?: (chunk: ChatCompletionChunk) => void;
  onProgress?: (event: LoadProgressEvent) => void;
  onStep?: (step: number, total: number) => void;
  onPreview?: (preview: ImagePreview) => void;
  /** The caller aborted: step and preview messages already on their way are dropped. */
  aborted?: boolean;
}

export class WorkerEngine implements Engine {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly listeners = new Set<(event: EngineEvent) => void>();
  private crashed: Error | null = null;

  constructor(private readonly worker: Worker) {
    worker.onmessage = (e: MessageEvent<FromWorker>) => this.receive(e.data);
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.crash(`The engine's worker failed: ${e.message || "unknown error"} (${e.filename || "engine-worker.js"}:${e.lineno ?? "?"}). Reload the page.`);
    };
    worker.onmessageerror = () => this.crash("The engine's worker sent a message that could not be read. Reload the page.");
  }

  private crash(message: string): void {
    this.crashed = new EngineCrashedError(message);
    for (const p of this.pending.values()) p.reject(this.crashed);
    this.pending.clear();
  }

  private receive(message: FromWorker): void {
    if (message.kind === "event") {
      for (const listener of this.listeners) listener(message.event);
      return;
    }
    const p = this.pending.get(message.id);
    if (!p) return;
    switch (message.kind) {
      case "chunk":
        p.onChunk?.(message.chunk);
        break;
      case "progress":
        p.onProgress?.(message.event);
        break;
      // After an abort the caller sees no more progress of work it gave up, as in the page
      // engine (where the next step sees the signal at once); the Worker may have sent some
      // before the abort message reached it.
      case "step":
        if (!p.aborted) p.onStep?.(message.step, message.total);
        break;
      case "preview":
        if (!p.aborted) p.onPreview?.(message.preview);
        break;
      case "result":
        this.pending.delete(message.id);
        p.resolve(message.value);
        break;
      case "error":
        this.pending.delete(message.id);
        p.reject(deserializeError(message.error));
        break;
    }
  }

  /** Sends one call; `done` settles with its result (typed by EngineMethods) or its typed error. */
  private call<K extends MethodName>(
    method: K,
    args: MethodArgs<K>,
    extra: Omit<Pending, "resolve" | "reject"> = {},
    signal?: AbortSignal,
  ): { id: number; done: Promise<MethodResult<K>> } {
    const id = this.nextId++;
    const done = new Promise<MethodResult<K>>((resolve, reject) => {
      if (this.crashed) {
        reject(this.crashed);
        return;
      }
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, ...extra });
      // CallMessage pairs each method with its args; TypeScript cannot see that K's do.
      this.worker.postMessage({ kind: "call", id, method, args } as CallMessage satisfies ToWorker);
    });
    if (signal) {
      const abort = () => {
        const p = this.pending.get(id);
        if (p) p.aborted = true;
        this.worker.postMessage({ kind: "abort", id } satisfies ToWorker);
      };
      if (signal.aborted) abort();
      else signal.addEventListener("abort", abort, { once: true });
      void done.catch(() => undefined).finally(() => signal.removeEventListener("abort", abort));
    }
    return { id, done };
  }

  readonly chat = {
    completions: {
      create: ((request: ChatCompletionRequest, options: RequestOptions = {}) =>
        this.createCompletion(request, options)) as Engine["chat"]["completions"]["create"],
    },
  };

  private async createCompletion(
    request: ChatCompletionRequest,
    options: RequestOptions,
  ): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>> {
    const params = validateChatRequest(request);
    if (!params.stream) {
      const completion = await this.call("chat", [request], {}, options.signal).done;
      if (!completion) throw new Error("the engine's worker returned no completion"); // non-streaming calls return one
      return completion;
    }
    return streamChunks<ChatCompletionChunk>(
      (push, signal) => this.call("chat", [request], { onChunk: push }, signal).done.then(() => undefined),
      options.signal,
    );
  }

  // The worker checks image requests (the size depends on the loaded model); its typed
  // errors come back as the same classes.
  readonly images = {
    generate: (request: ImageGenerateRequest, options: ImageGenerateOptions = {}): Promise<ImagesResponse> =>
      this.call(
        "images.generate",
        [
          request,
          {
            progress: options.onProgress !== undefined,
            preview: options.onPreview !== undefined,
            previewEvery: options.previewEvery,
          } satisfies ImageCallOptions,
        ],
        { onStep: options.onProgress, onPreview: options.onPreview },
        options.signal,
      ).done,
  };

  listModels(options: { indexUrl?: string; extraManifestUrls?: string[] } = {}): Promise<ModelInfo[]> {
    // The worker's own URL is under assets/: resolve page-relative URLs here.
    const base = globalThis.location?.href;
    return this.call("listModels", [
      {
        indexUrl: new URL(options.indexUrl ?? "models/index.json", base).href,
        extraManifestUrls: options.extraManifestUrls?.map((u) => new URL(u, base).href),
      },
    ]).done;
  }

  loadModel(model: string, options: LoadModelOptions = {}): Promise<LoadedModel> {
    const target = model.endsWith(".json") || model.includes("/") ? new URL(model, globalThis.location?.href).href : model;
    return this.call("loadModel", [target, options.backend, options.threads], { onProgress: options.onProgress }, options.signal).done;
  }

  unloadModel(): Promise<void> {
    return this.call("unloadModel", []).done;
  }

  loadedModel(): Promise<LoadedModel | null> {
    return this.call("loadedModel", []).done;
  }

  resetChat(): Promise<void> {
    return this.call("resetChat", []).done;
  }

  /** Test hook: destroys the worker's GPU device as a driver reset would. */
  simulateDeviceLoss(): Promise<void> {
    return this.call("simulateDeviceLoss", []).done;
  }

  readonly cache = {
    list: (models?: ModelInfo[]): Promise<CachedModel[]> => this.call("cache.list", [models]).done,
    delete: (model: string): Promise<void> => this.call("cache.delete", [model]).done,
    clear: (): Promise<void> => this.call("cache.clear", []).done,
    storage: (): Promise<StorageInfo> => this.call("cache.storage", []).done,
  };

  onEvent(listener: (event: EngineEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  terminate(): void {
    this.worker.terminate();
    this.crash("The engine was terminated.");
  }
}

// Messages between worker_client.ts (page) and worker_entry.ts (Worker), and how
// typed errors cross that boundary (structured clone drops their classes).
//
// EngineMethods is the one list of calls: the client's call() and the Worker's handler
// table are both typed from it, so a method (or an argument) changed on one side and
// not the other does not compile.

import { ERROR_CLASSES, WebkilnError } from "../base/errors";
import type {
  CachedModel,
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionRequest,
  Engine,
  EngineEvent,
  ImageGenerateRequest,
  ImagePreview,
  ImagesResponse,
  LoadedModel,
  LoadProgressEvent,
  ModelInfo,
  StorageInfo,
} from "./api";

/** What images.generate asks of the worker besides the request (callbacks stay on the page). */
export interface ImageCallOptions {
  progress: boolean;
  preview: boolean;
  previewEvery?: number;
}

/**
 * Each call's arguments and result, as plain data (callbacks stay on the page: the Worker
 * answers them with "chunk", "progress", "step" and "preview" messages instead).
 */
export interface EngineMethods {
  /** Streaming requests return undefined; their chunks come as "chunk" messages. */
  chat(request: ChatCompletionRequest): ChatCompletion | undefined;
  "images.generate"(request: ImageGenerateRequest, wants: ImageCallOptions): ImagesResponse;
  listModels(options: NonNullable<Parameters<Engine["listModels"]>[0]>): ModelInfo[];
  /** Progress comes as "progress" messages. */
  loadModel(model: string, backend: string | undefined, threads: number | undefined): LoadedModel;
  unloadModel(): void;
  loadedModel(): LoadedModel | null;
  resetChat(): void;
  "cache.list"(models: ModelInfo[] | undefined): CachedModel[];
  "cache.delete"(model: string): void;
  "cache.clear"(): void;
  "cache.storage"(): StorageInfo;
  /** Test hook (LocalEngine.simulateDeviceLoss). */
  simulateDeviceLoss(): void;
}

export type MethodName = keyof EngineMethods;
export type MethodArgs<K extends MethodName> = Parameters<EngineMethods[K]>;
export type MethodResult<K extends MethodName> = ReturnType<EngineMethods[K]>;

/** One "call" message per method, its args typed by EngineMethods. */
export type CallMessage = {
  [K in MethodName]: { kind: "call"; id: number; method: K; args: MethodArgs<K> };
}[MethodName];

export type ToWorker = CallMessage | { kind: "abort"; id: number };

export type FromWorker =
  | { kind: "result"; id: number; value: MethodResult<MethodName> }
  | { kind: "error"; id: number; error: SerializedError }
  | { kind: "chunk"; id: number; chunk: ChatCompletionChunk }
  | { kind: "progress"; id: number; event: LoadProgressEvent }
  /** images.generate: a denoising step finished. */
  | { kind: "step"; id: number; step: number; total: number }
  /** images.generate: a preview (its rgba buffer is transferred, not copied). */
  | { kind: "preview"; id: number; preview: ImagePreview }
  | { kind: "event"; event: EngineEvent };

export interface SerializedError {
  /** The webkiln error class to rebuild (a key of ERROR_CLASSES); null for other errors. */
  webkilnClass: string | null;
  name: string;
  message: string;
  stack?: string;
  /** Own data fields of the error (InvalidRequestError.param, NetworkError.url/status, ...). */
  fields: Record<string, unknown>;
}

const STANDARD_FIELDS = new Set(["name", "message", "stack"]);

/** The key of `error`'s own class in ERROR_CLASSES (by prototype: names can be renamed by a minifier). */
function webkilnClassOf(error: WebkilnError): string | null {
  const prototype = Object.getPrototypeOf(error) as unknown;
  for (const [key, cls] of Object.entries(ERROR_CLASSES)) {
    if (cls.prototype === prototype) return key;
  }
  return null;
}

export function serializeError(error: unknown): SerializedError {
  if (error instanceof Error) {
    const fields: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(error)) {
      const plain = value === null || ["string", "number", "boolean"].includes(typeof value);
      if (!STANDARD_FIELDS.has(key) && plain) fields[key] = value;
    }
    const webkilnClass = error instanceof WebkilnError ? webkilnClassOf(error) : null;
    return { webkilnClass, name: error.name, message: error.message, stack: error.stack, fields };
  }
  return { webkilnClass: null, name: "Error", message: String(error), fields: {} };
}

// Built-in classes worth keeping across the boundary (a caller may test instanceof).
const BUILTIN_CLASSES: Record<string, { prototype: Error }> = { TypeError, RangeError };

/** The same error class on this side (instanceof works), with the original message and fields. */
export function deserializeError(s: SerializedError): Error {
  const cls = (s.webkilnClass !== null ? ERROR_CLASSES[s.webkilnClass] : undefined) ?? BUILTIN_CLASSES[s.name];
  if (!cls) {
    // fetch's and AbortSignal's aborts: the same DOMException a caller gets in the page.
    if (s.name === "AbortError") return new DOMException(s.message, "AbortError");
    return Object.assign(new Error(s.message), { name: s.name });
  }
  // Built without the constructor: constructors that decorate the message
  // (WebGPUUnavailableError) must not do it twice.
  const error = Object.create(cls.prototype) as Error;
  Object.defineProperty(error, "message", { value: s.message, writable: true, configurable: true });
  Object.defineProperty(error, "name", { value: s.name, writable: true, configurable: true });
  if (s.stack) Object.defineProperty(error, "stack", { value: s.stack, writable: true, configurable: true });
  Object.assign(error, s.fields);
  return error;
}

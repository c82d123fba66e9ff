// Messages between worker_client.ts (page) and worker_entry.ts (Worker), and how
// typed errors cross that boundary (structured clone drops their classes).

import type { ChatCompletionChunk, EngineEvent, ImagePreview, LoadProgressEvent } from "./api";
import { ERROR_CLASSES, WebkilnError } from "../base/errors";

export type ToWorker =
  | { kind: "call"; id: number; method: string; args: unknown[] }
  | { kind: "abort"; id: number };

export type FromWorker =
  | { kind: "result"; id: number; value: unknown }
  | { kind: "error"; id: number; error: SerializedError }
  | { kind: "chunk"; id: number; chunk: ChatCompletionChunk }
  | { kind: "progress"; id: number; event: LoadProgressEvent }
  /** images.generate: a denoising step finished. */
  | { kind: "step"; id: number; step: number; total: number }
  /** images.generate: a preview (its rgba buffer is transferred, not copied). */
  | { kind: "preview"; id: number; preview: ImagePreview }
  | { kind: "event"; event: EngineEvent };

/** What images.generate asks of the worker besides the request (callbacks stay on the page). */
export interface ImageCallOptions {
  progress: boolean;
  preview: boolean;
  previewEvery?: number;
}

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

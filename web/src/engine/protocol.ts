// Messages between worker_client.ts (page) and worker_entry.ts (Worker), and how
// typed errors cross that boundary (structured clone drops their classes).

import type { ChatCompletionChunk, EngineEvent, ImagePreview, LoadProgressEvent } from "./api";
import { ERROR_CLASSES, InvalidRequestError, NetworkError, WebGPUUnavailableError, WebkilnError } from "./errors";

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
  name: string;
  message: string;
  stack?: string;
  /** Extra fields of typed errors (InvalidRequestError.param, NetworkError.url/status). */
  fields: Record<string, unknown>;
}

export function serializeError(error: unknown): SerializedError {
  if (error instanceof Error) {
    const fields: Record<string, unknown> = {};
    for (const key of ["param", "url", "status"]) {
      const value = (error as unknown as Record<string, unknown>)[key];
      if (value !== undefined) fields[key] = value;
    }
    return { name: error.name, message: error.message, stack: error.stack, fields };
  }
  return { name: "Error", message: String(error), fields: {} };
}

const CLASSES: Record<string, new (message: string) => Error> = {
  ...ERROR_CLASSES,
  InvalidRequestError,
  NetworkError: NetworkError as unknown as new (message: string) => Error,
  WebGPUUnavailableError: WebGPUUnavailableError as unknown as new (message: string) => Error,
  TypeError,
  RangeError,
};

/** The same error class on this side (instanceof works), with the original message. */
export function deserializeError(s: SerializedError): Error {
  const cls = CLASSES[s.name] ?? (s.name === "AbortError" ? null : Error);
  if (cls === null) return new DOMException(s.message, "AbortError");
  // Built without the constructor: constructors that decorate the message
  // (WebGPUUnavailableError) must not do it twice.
  const error = Object.create(cls.prototype) as Error;
  Object.defineProperty(error, "message", { value: s.message, writable: true, configurable: true });
  Object.defineProperty(error, "name", { value: s.name, writable: true, configurable: true });
  if (s.stack) Object.defineProperty(error, "stack", { value: s.stack, writable: true, configurable: true });
  Object.assign(error, s.fields);
  return error instanceof WebkilnError || cls !== Error ? error : Object.assign(new Error(s.message), { name: s.name });
}

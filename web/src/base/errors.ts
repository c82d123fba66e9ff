// Typed errors: each names what went wrong and what the user can do about it.

export class WebkilnError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

export class WebGPUUnavailableError extends WebkilnError {
  constructor(readonly detail: string) {
    super(
      `WebGPU is not available in this browser (${detail}). ` +
        "Use a browser with WebGPU enabled (Chrome/Edge 113+), or choose the CPU (wasm-cpu) backend.",
    );
  }
}

export class ModuleLoadError extends WebkilnError {}

// Downloaded bytes did not match the manifest. Never retried silently: the server
// is serving something other than what the model was built with.
export class IntegrityError extends WebkilnError {}

// A file could not be fetched (offline, blocked, HTTP error). Names the URL and status.
export class NetworkError extends WebkilnError {
  constructor(
    message: string,
    readonly url: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

// The browser will not give this origin enough storage for the model's files.
export class StorageQuotaError extends WebkilnError {}

/** A model's manifest or files are unusable (wrong task, missing file, bad record). */
export class ModelLoadError extends WebkilnError {}

/** The device lacks a feature or limit the model needs; the message says which and what to pick instead. */
export class UnsupportedDeviceError extends WebkilnError {}

/** A request does not fit in the model's context window. */
export class ContextWindowError extends WebkilnError {}

/** A request is malformed or asks for something unsupported; `param` names the field. */
export class InvalidRequestError extends WebkilnError {
  constructor(
    message: string,
    readonly param: string | null = null,
  ) {
    super(message);
  }
}

/** No model is loaded, or the request names a model other than the loaded one. */
export class ModelNotLoadedError extends WebkilnError {}

/** The GPU device was lost (driver reset, GPU process crash, too much memory). The model can be reloaded. */
export class DeviceLostError extends WebkilnError {}

/** The GPU ran out of memory while loading or running the model. */
export class OutOfMemoryError extends WebkilnError {}

/** The engine's Worker failed or was terminated. */
export class EngineCrashedError extends WebkilnError {}

/** A scheduler config value the browser cannot use; `field` is the config key. */
export class SchedulerConfigError extends WebkilnError {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`scheduler config: ${field}: ${message}`);
  }
}

/**
 * An image run stopped through its AbortSignal. Named "AbortError", as fetch's aborts are,
 * so callers test one name for every kind of abort.
 */
export class ImageGenerationAborted extends WebkilnError {
  override name = "AbortError";
  constructor(readonly step: number) {
    super(`image generation aborted before step ${step + 1}`);
  }
}

/**
 * Every error class above by its class name, to rebuild typed errors that crossed a
 * Worker boundary (structured clone keeps only plain data). Keyed by class name, not by
 * `error.name`: ImageGenerationAborted's name is "AbortError".
 */
export const ERROR_CLASSES: Record<string, { prototype: WebkilnError }> = {
  WebkilnError,
  WebGPUUnavailableError,
  ModuleLoadError,
  IntegrityError,
  NetworkError,
  StorageQuotaError,
  ModelLoadError,
  UnsupportedDeviceError,
  ContextWindowError,
  InvalidRequestError,
  ModelNotLoadedError,
  DeviceLostError,
  OutOfMemoryError,
  EngineCrashedError,
  SchedulerConfigError,
  ImageGenerationAborted,
};

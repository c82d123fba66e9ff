// Typed engine errors shown plainly: the error's name, its message, and what the
// user can do about it (with a "Reload model" button where that is the fix).

import { el } from "./dom";

export interface Described {
  name: string;
  message: string;
  hint: string;
  reload: boolean;
}

const HINTS: Record<string, string> = {
  WebGPUUnavailableError:
    "This needs WebGPU: choose Automatic or CPU (WebAssembly) under Settings → Backend for a model with a CPU backend, " +
    "or use a recent Chrome or Edge (113+), or Safari/Firefox with WebGPU enabled, on a device with a GPU.",
  UnsupportedDeviceError:
    "This device cannot run this build (a GPU feature or limit, or the CPU backend's 4 GiB WebAssembly memory; the message says which): " +
    "another choice under Settings → Backend may run it, or choose a smaller model.",
  StorageQuotaError:
    "The browser will not store this model: delete cached models under Models & storage, free disk space, or use a smaller model.",
  IntegrityError:
    "A downloaded file does not match the model's manifest (a broken download or a changed server). It was not used; reload to download it again.",
  NetworkError: "A file could not be downloaded. Check the connection (or the server), then try again.",
  DeviceLostError: "The GPU device was lost (driver reset, GPU process crash, or too little memory). Reload the model to continue.",
  OutOfMemoryError: "The GPU ran out of memory. Close other GPU-heavy tabs or pick a smaller model, then reload.",
  EngineCrashedError: "The engine stopped. Reload the model to continue.",
  ContextWindowError: "The conversation no longer fits the model's context window: start a new chat or lower max tokens.",
  ModelNotLoadedError: "Load a model first (pick one above).",
  ModelLoadError: "The model's files are unusable; rebuild the model or pick another.",
  ModuleLoadError: "The model's compiled library could not be loaded; rebuild the model or pick another.",
  InvalidRequestError: "A setting has a value the engine refuses: check Settings.",
};

const RELOADABLE = new Set(["DeviceLostError", "OutOfMemoryError", "EngineCrashedError", "ModelNotLoadedError"]);

export function describeError(error: unknown): Described {
  const name = error instanceof Error ? error.name : typeof error === "object" && error && "name" in error ? String(error.name) : "Error";
  const message =
    error instanceof Error ? error.message : typeof error === "object" && error && "message" in error ? String(error.message) : String(error);
  let hint = HINTS[name] ?? "";
  if (/shader-f16/i.test(message)) {
    hint = "This build needs the shader-f16 GPU feature, which this device lacks: use the f32 build of the model (e.g. q4f32 instead of q4f16).";
  }
  return { name, message, hint, reload: RELOADABLE.has(name) };
}

export function isAbort(error: unknown): boolean {
  return typeof error === "object" && error !== null && "name" in error && (error as { name: string }).name === "AbortError";
}

/** The error banner (#error) below the top bar. */
export class ErrorBanner {
  private readonly root = el<HTMLDivElement>("error");
  private readonly name = el<HTMLElement>("error-name");
  private readonly message = el<HTMLElement>("error-message");
  private readonly hint = el<HTMLElement>("error-hint");
  private readonly reload = el<HTMLButtonElement>("reload-model");

  constructor(onReload: () => void) {
    this.reload.addEventListener("click", () => {
      this.clear();
      onReload();
    });
    el<HTMLButtonElement>("error-dismiss").addEventListener("click", () => this.clear());
  }

  show(error: unknown, options: { reload?: boolean } = {}): Described {
    const d = describeError(error);
    this.name.textContent = d.name;
    this.message.textContent = d.message;
    this.hint.textContent = d.hint;
    this.hint.hidden = !d.hint;
    this.reload.hidden = !(options.reload ?? d.reload);
    this.root.hidden = false;
    return d;
  }

  clear(): void {
    this.root.hidden = true;
  }
}

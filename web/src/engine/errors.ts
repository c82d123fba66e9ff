// Typed errors: each names what went wrong and what the user can do about it.

export class WebkilnError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

export class WebGPUUnavailableError extends WebkilnError {
  constructor(detail: string) {
    super(
      `WebGPU is not available in this browser (${detail}). ` +
        "Use a browser with WebGPU enabled (Chrome/Edge 113+), or choose the CPU (wasm-cpu) backend.",
    );
  }
}

export class ModuleLoadError extends WebkilnError {}

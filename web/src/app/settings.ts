// The system prompt, sampling settings and the backend, bound to their inputs and kept in
// localStorage. An empty field means "the model's default".

const KEY = "webkiln.settings";

/**
 * Where models run (loadModel's `backend`): "auto" lets the engine decide (WebGPU on a
 * real GPU, else the CPU; base/backend_choice.ts), the others insist.
 */
export type BackendSetting = "auto" | "webgpu" | "wasm-cpu";
const BACKENDS: readonly BackendSetting[] = ["auto", "webgpu", "wasm-cpu"];
/** As the settings' select names them (site/index.html). */
const BACKEND_LABELS: Record<BackendSetting, string> = { auto: "Automatic", webgpu: "WebGPU (GPU)", "wasm-cpu": "CPU (WebAssembly)" };

/** "Backend setting “CPU (WebAssembly)”", for status lines. */
export function backendLabel(backend: BackendSetting): string {
  return `Backend setting “${BACKEND_LABELS[backend]}”`;
}

export interface Settings {
  systemPrompt: string;
  temperature: number | null;
  topP: number | null;
  maxTokens: number | null;
  seed: number | null;
  backend: BackendSetting;
}

const EMPTY: Settings = { systemPrompt: "", temperature: null, topP: null, maxTokens: null, seed: null, backend: "auto" };

function backendOf(value: unknown): BackendSetting {
  return BACKENDS.includes(value as BackendSetting) ? (value as BackendSetting) : "auto";
}

function load(): Settings {
  try {
    const saved = JSON.parse(localStorage.getItem(KEY) ?? "{}") as Partial<Settings>;
    // A value saved by another version (or edited by hand) falls back to "auto", not to a load error.
    return { ...EMPTY, ...saved, backend: backendOf(saved.backend) };
  } catch {
    return { ...EMPTY };
  }
}

function numberOrNull(input: HTMLInputElement, integer: boolean): number | null {
  if (input.value.trim() === "") return null;
  const value = integer ? Number.parseInt(input.value, 10) : Number.parseFloat(input.value);
  if (!Number.isFinite(value)) return null;
  const min = input.min === "" ? -Infinity : Number(input.min);
  const max = input.max === "" ? Infinity : Number(input.max);
  return Math.min(max, Math.max(min, value));
}

export interface SettingsInputs {
  systemPrompt: HTMLTextAreaElement;
  temperature: HTMLInputElement;
  topP: HTMLInputElement;
  maxTokens: HTMLInputElement;
  seed: HTMLInputElement;
  backend: HTMLSelectElement;
  reset: HTMLButtonElement;
}

export class SettingsPanel {
  private values: Settings;
  /** Called when the backend setting changes (by its select or by Reset): the shown tab reloads its model. */
  onBackendChange: ((backend: BackendSetting) => void) | null = null;

  constructor(private readonly inputs: SettingsInputs) {
    this.values = load();
    this.show();
    const save = () => {
      const before = this.values.backend;
      this.values = this.read();
      try {
        localStorage.setItem(KEY, JSON.stringify(this.values));
      } catch {
        // Storage full or disabled: settings last until reload.
      }
      if (this.values.backend !== before) this.onBackendChange?.(this.values.backend);
    };
    for (const input of [inputs.systemPrompt, inputs.temperature, inputs.topP, inputs.maxTokens, inputs.seed]) {
      input.addEventListener("input", save);
      input.addEventListener("change", save);
    }
    inputs.backend.addEventListener("change", save);
    inputs.reset.addEventListener("click", () => {
      this.values = { ...EMPTY, backend: this.values.backend };
      this.inputs.backend.value = "auto";
      this.show(false);
      save();
    });
  }

  /** Puts the values into the inputs (`backend`: the select too; Reset sets it itself so save() sees the change). */
  private show(backend = true): void {
    const { systemPrompt, temperature, topP, maxTokens, seed } = this.inputs;
    systemPrompt.value = this.values.systemPrompt;
    temperature.value = this.values.temperature === null ? "" : String(this.values.temperature);
    topP.value = this.values.topP === null ? "" : String(this.values.topP);
    maxTokens.value = this.values.maxTokens === null ? "" : String(this.values.maxTokens);
    seed.value = this.values.seed === null ? "" : String(this.values.seed);
    if (backend) this.inputs.backend.value = this.values.backend;
  }

  private read(): Settings {
    const { systemPrompt, temperature, topP, maxTokens, seed, backend } = this.inputs;
    return {
      systemPrompt: systemPrompt.value,
      temperature: numberOrNull(temperature, false),
      topP: numberOrNull(topP, false),
      maxTokens: numberOrNull(maxTokens, true),
      seed: numberOrNull(seed, true),
      backend: backendOf(backend.value),
    };
  }

  /** The current settings (read from the inputs, so a value typed a moment ago counts). */
  get(): Settings {
    this.values = this.read();
    return { ...this.values };
  }

  /** The backend setting, as loadModel's `backend` option. */
  get backend(): BackendSetting {
    return backendOf(this.inputs.backend.value);
  }

  /** Disabled while a reply or an image is being made (a change would reload the model under it). */
  setBackendDisabled(disabled: boolean): void {
    this.inputs.backend.disabled = disabled;
  }
}

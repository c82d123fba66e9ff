// The system prompt and sampling settings, bound to their inputs and kept in
// localStorage. An empty field means "the model's default".

const KEY = "webkiln.settings";

export interface Settings {
  systemPrompt: string;
  temperature: number | null;
  topP: number | null;
  maxTokens: number | null;
  seed: number | null;
}

const EMPTY: Settings = { systemPrompt: "", temperature: null, topP: null, maxTokens: null, seed: null };

function load(): Settings {
  try {
    const saved = JSON.parse(localStorage.getItem(KEY) ?? "{}") as Partial<Settings>;
    return { ...EMPTY, ...saved };
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
  reset: HTMLButtonElement;
}

export class SettingsPanel {
  private values: Settings;

  constructor(private readonly inputs: SettingsInputs) {
    this.values = load();
    this.show();
    const save = () => {
      this.values = this.read();
      try {
        localStorage.setItem(KEY, JSON.stringify(this.values));
      } catch {
        // Storage full or disabled: settings last until reload.
      }
    };
    for (const input of [inputs.systemPrompt, inputs.temperature, inputs.topP, inputs.maxTokens, inputs.seed]) {
      input.addEventListener("input", save);
      input.addEventListener("change", save);
    }
    inputs.reset.addEventListener("click", () => {
      this.values = { ...EMPTY };
      this.show();
      save();
    });
  }

  private show(): void {
    const { systemPrompt, temperature, topP, maxTokens, seed } = this.inputs;
    systemPrompt.value = this.values.systemPrompt;
    temperature.value = this.values.temperature === null ? "" : String(this.values.temperature);
    topP.value = this.values.topP === null ? "" : String(this.values.topP);
    maxTokens.value = this.values.maxTokens === null ? "" : String(this.values.maxTokens);
    seed.value = this.values.seed === null ? "" : String(this.values.seed);
  }

  private read(): Settings {
    const { systemPrompt, temperature, topP, maxTokens, seed } = this.inputs;
    return {
      systemPrompt: systemPrompt.value,
      temperature: numberOrNull(temperature, false),
      topP: numberOrNull(topP, false),
      maxTokens: numberOrNull(maxTokens, true),
      seed: numberOrNull(seed, true),
    };
  }

  /** The current settings (read from the inputs, so a value typed a moment ago counts). */
  get(): Settings {
    this.values = this.read();
    return { ...this.values };
  }
}

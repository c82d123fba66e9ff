// The widgets' attributes: each one parsed and checked in one place, so a bad value is
// reported (in the element and the console) instead of being silently replaced.

export type Theme = "light" | "dark" | "auto";
export type Layout = "inline" | "bubble";
/** When the model is downloaded: on the first interaction with the widget (default), on page load, or only by its Load button / element.load(). */
export type Autoload = "interaction" | "eager" | "manual";
/** Where the model runs (loadModel's `backend`): "auto" lets the engine decide (WebGPU on a real GPU, else the CPU). */
export type Backend = "auto" | "webgpu" | "wasm-cpu";

/** The result of parsing one attribute: its value, or why the given text is refused. */
export type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string };

export interface AttributeSpec<T> {
  /** The attribute's name (the property is its camelCase form). */
  name: string;
  /** The value when the attribute is absent (or refused). */
  fallback: T;
  parse(text: string): Parsed<T>;
}

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
const no = <T>(reason: string): Parsed<T> => ({ ok: false, reason });

export function text(name: string, fallback = ""): AttributeSpec<string> {
  return { name, fallback, parse: (t) => ok(t) };
}

export function choice<T extends string>(name: string, values: readonly T[], fallback: T): AttributeSpec<T> {
  return {
    name,
    fallback,
    parse: (t) => ((values as readonly string[]).includes(t) ? ok(t as T) : no(`must be one of ${values.map((v) => `"${v}"`).join(", ")}`)),
  };
}

/** A number in [min, max]; `integer` refuses fractions. An empty attribute counts as absent. */
export function number(
  name: string,
  fallback: number | null,
  limits: { min: number; max: number; integer?: boolean },
): AttributeSpec<number | null> {
  return {
    name,
    fallback,
    parse: (t) => {
      if (t.trim() === "") return ok(fallback);
      const value = Number(t);
      const kind = limits.integer ? "an integer" : "a number";
      if (!Number.isFinite(value) || (limits.integer && !Number.isInteger(value))) return no(`must be ${kind}`);
      if (value < limits.min || value > limits.max) return no(`must be ${kind} from ${limits.min} to ${limits.max}`);
      return ok(value);
    },
  };
}

/** An absolute or page-relative URL (resolved against the page). */
export function url(name: string): AttributeSpec<string | null> {
  return {
    name,
    fallback: null,
    parse: (t) => {
      try {
        return ok(new URL(t, document.baseURI).href);
      } catch {
        return no("is not a URL");
      }
    },
  };
}

/** "WxH" in pixels. */
export function size(name: string): AttributeSpec<string | null> {
  return {
    name,
    fallback: null,
    parse: (t) => (t.trim() === "" ? ok(null) : /^[1-9]\d{0,4}x[1-9]\d{0,4}$/.test(t) ? ok(t) : no('must be "WIDTHxHEIGHT" in pixels, e.g. "512x512"')),
  };
}

export const COMMON = {
  model: text("model"),
  modelsUrl: url("models-url"),
  theme: choice<Theme>("theme", ["light", "dark", "auto"], "auto"),
  layout: choice<Layout>("layout", ["inline", "bubble"], "inline"),
  autoload: choice<Autoload>("autoload", ["interaction", "eager", "manual"], "interaction"),
  backend: choice<Backend>("backend", ["auto", "webgpu", "wasm-cpu"], "auto"),
  placeholder: text("placeholder"),
};

export const CHAT = {
  ...COMMON,
  systemPrompt: text("system-prompt"),
  greeting: text("greeting"),
  temperature: number("temperature", 0.7, { min: 0, max: 2 }),
  maxTokens: number("max-tokens", 512, { min: 1, max: 32768, integer: true }),
};

export const IMAGE = {
  ...COMMON,
  // The model's own defaults and limits apply where these are absent; they are checked
  // against the model once its description has been read (ImageDefaults).
  steps: number("steps", null, { min: 1, max: 1000, integer: true }),
  guidance: number("guidance", null, { min: 0, max: 50 }),
  seed: number("seed", null, { min: 0, max: 2 ** 32 - 1, integer: true }),
  size: size("size"),
};

export type Specs = Record<string, AttributeSpec<unknown>>;

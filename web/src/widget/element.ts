// What <webkiln-chat> and <webkiln-image> share: the open shadow root and its stylesheet,
// attributes reflected as validated properties, theme and layout (inline box or bubble:
// a launcher button that opens a panel), the "before download" card (name, size, which
// backend would run it here and why), loading on first interaction, the progress bar, the error box
// and the DOM events. Each subclass adds its own body (a chat log, an image) and form.

import type { Engine, LoadedModel, LoadProgressEvent, ModelInfo } from "../engine";
import { InvalidRequestError } from "../engine";
import { fitOf, probeDevice, type DeviceInfo, type Fit } from "../ui/device";
import { formatBytes } from "../ui/format";
import { COMMON, type AttributeSpec, type Autoload, type Backend, type Layout, type Theme } from "./attributes";
import { sharedModel, type SharedModel } from "./shared";
import { widgetStyles } from "./styles";

/** Where widgets find the engine's Worker and the models unless an element says otherwise (define()). */
export interface WidgetLocations {
  modelsUrl: string;
  workerUrl: string;
}

export const locations: WidgetLocations = {
  // widget.js sits at the site's top level, next to models/ and assets/.
  modelsUrl: new URL("./models/", import.meta.url).href,
  workerUrl: new URL("./assets/engine-worker.js", import.meta.url).href,
};

/** h("div", { class: "x" }, child...): text children are always text (never parsed as HTML). */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: Array<Node | string>
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

/** A typed error as the events carry it: { name, message }. */
export interface ErrorDetail {
  name: string;
  message: string;
}

function detailOf(error: unknown): ErrorDetail {
  if (error instanceof Error) return { name: error.name, message: error.message };
  if (typeof error === "object" && error && "message" in error) {
    return { name: String((error as { name?: unknown }).name ?? "Error"), message: String(error.message) };
  }
  return { name: "Error", message: String(error) };
}

let devicePromise: Promise<DeviceInfo> | null = null;
/** The WebGPU adapter's features and limits (or why there is none), probed once per page. */
const device = (): Promise<DeviceInfo> => (devicePromise ??= probeDevice());

let nextId = 1;

export abstract class WidgetElement extends HTMLElement {
  protected abstract readonly task: "chat" | "image";
  protected abstract readonly specs: Record<string, AttributeSpec<unknown>>;
  /** The noun in labels: "chat", "image generator". */
  protected abstract readonly label: string;

  protected readonly shadow: ShadowRoot;
  protected readonly uid = `w${nextId++}`;
  private readonly values = new Map<string, unknown>();
  private readonly attributeErrors = new Map<string, string>();
  private sharedRef: SharedModel | null = null;
  private infoRef: ModelInfo | null = null;
  /** Which backend would run the model here, and why (before loading). */
  private fitRef: Fit | null = null;
  private loadedRef: LoadedModel | null = null;
  private loadPromise: Promise<LoadedModel> | null = null;
  /** The last load failure (already reported): a request that fails because of it does not report it again. */
  protected lastLoadError: unknown = null;
  private connected = false;
  private unsubscribe: (() => void) | null = null;
  private media: MediaQueryList | null = null;

  protected readonly root = h("div", { class: "root", part: "root" });
  protected readonly launcher = h("button", { class: "launcher", part: "launcher", type: "button", "aria-expanded": "false" });
  protected readonly panel = h("section", { class: "panel", part: "panel" });
  protected readonly titleEl = h("span", { class: "title", part: "title" });
  protected readonly closeButton = h("button", { class: "secondary close", type: "button", part: "close", "aria-label": "Close" }, "✕");
  protected readonly info = h("div", { class: "info", part: "info" });
  protected readonly loadButton = h("button", { type: "button", part: "load-button" }, "Load model");
  protected readonly progress = h("div", { class: "progress", part: "progress", hidden: "" });
  protected readonly fill = h("div", { class: "fill" });
  protected readonly progressText = h("span", {});
  protected readonly errorBox = h("div", { class: "error", part: "error", role: "alert", hidden: "" });
  protected readonly status = h("div", { class: "status", part: "status", role: "status", "aria-live": "polite" });

  constructor() {
    super();
    this.shadow = this.attachShadow({ mode: "open" });
    this.shadow.adoptedStyleSheets = [widgetStyles()];
    const bar = h("div", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": "0" }, this.fill);
    this.progress.append(bar, this.progressText);
    this.panel.id = `${this.uid}-panel`;
    this.launcher.setAttribute("aria-controls", this.panel.id);
    this.root.append(this.panel);
    this.loadButton.addEventListener("click", () => void this.load().catch(() => {}));
    this.launcher.addEventListener("click", () => this.setOpen(this.root.hidden));
    this.closeButton.addEventListener("click", () => this.setOpen(false));
    this.root.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.layout === "bubble" && !this.root.hidden) {
        event.stopPropagation();
        this.setOpen(false);
      }
    });
    // Loading on first interaction: any pointer press, focus or key inside the widget.
    const interact = () => {
      if (this.autoload === "interaction" && !this.loadPromise) void this.load().catch(() => {});
    };
    for (const type of ["pointerdown", "focusin", "keydown"]) this.panel.addEventListener(type, interact);
  }

  // ------------------------------------------------------------- attributes

  protected attributeValue<T>(key: string): T {
    const spec = this.specs[key]!;
    return (this.values.has(spec.name) ? this.values.get(spec.name) : spec.fallback) as T;
  }

  attributeChangedCallback(name: string, _old: string | null, value: string | null): void {
    const spec = Object.values(this.specs).find((s) => s.name === name);
    if (!spec) return;
    this.values.delete(name);
    this.attributeErrors.delete(name);
    if (value !== null) {
      const parsed = spec.parse(value);
      if (parsed.ok) this.values.set(name, parsed.value);
      else this.refuseAttribute(name, `${JSON.stringify(value)} ${parsed.reason}`);
    }
    // These choose the engine and model the widget is bound to (shared.ts).
    const binding = name === "model" || name === "models-url" || name === "backend";
    if (!this.connected) {
      if (binding) this.sharedRef = null; // rebound on connect
      return;
    }
    if (name === "theme") this.applyTheme();
    else if (name === "layout") this.applyLayout();
    else if (binding) this.rebind();
    this.attributeChanged(name);
  }

  /** A bad attribute value: shown in the element, logged, and reported as webkiln-error. */
  protected refuseAttribute(name: string, reason: string): void {
    const message = `<${this.localName}> attribute ${name}: ${reason}; using the default instead.`;
    this.attributeErrors.set(name, message);
    console.error(message);
    if (this.connected) this.report(new InvalidRequestError(message, name));
    // (Before connectedCallback, the error is reported when the element is connected.)
  }

  /** Subclasses react to their own attributes here. */
  protected attributeChanged(_name: string): void {}

  get theme(): Theme {
    return this.attributeValue("theme");
  }
  set theme(value: Theme) {
    this.setAttribute("theme", value);
  }
  get layout(): Layout {
    return this.attributeValue("layout");
  }
  set layout(value: Layout) {
    this.setAttribute("layout", value);
  }
  get autoload(): Autoload {
    return this.attributeValue("autoload");
  }
  set autoload(value: Autoload) {
    this.setAttribute("autoload", value);
  }
  get backend(): Backend {
    return this.attributeValue("backend");
  }
  set backend(value: Backend) {
    this.setAttribute("backend", value);
  }
  get model(): string {
    return this.attributeValue("model");
  }
  set model(value: string) {
    this.setAttribute("model", value);
  }
  get modelsUrl(): string {
    return this.attributeValue<string | null>("modelsUrl") ?? locations.modelsUrl;
  }
  set modelsUrl(value: string) {
    this.setAttribute("models-url", value);
  }
  get placeholder(): string {
    return this.attributeValue("placeholder");
  }
  set placeholder(value: string) {
    this.setAttribute("placeholder", value);
  }

  // ------------------------------------------------------------- lifecycle

  connectedCallback(): void {
    if (this.connected) return;
    this.connected = true;
    const built = this.shadow.firstChild !== null;
    if (!built) this.build();
    this.applyTheme();
    this.applyLayout();
    // Reconnected (moved in the page): keep the conversation and the loaded model.
    if (built && this.sharedRef) return;
    this.rebind();
    for (const [name, message] of this.attributeErrors) this.report(new InvalidRequestError(message, name));
  }

  disconnectedCallback(): void {
    this.connected = false;
    this.media?.removeEventListener("change", this.onScheme);
  }

  /** Builds the shadow tree: header, info card, progress, the subclass's body and form, status. */
  private build(): void {
    const header = h("div", { class: "header", part: "header" }, this.titleEl, this.closeButton);
    this.panel.setAttribute("aria-label", `webkiln ${this.label}`);
    this.panel.append(header, this.info, this.progress, ...this.body(), this.errorBox, this.status);
    this.shadow.append(this.launcher, this.root);
  }

  /** The subclass's part of the panel (log or image, then its form). */
  protected abstract body(): HTMLElement[];

  private readonly onScheme = () => this.applyTheme();

  private applyTheme(): void {
    if (!this.media) {
      this.media = window.matchMedia("(prefers-color-scheme: dark)");
    }
    this.media.removeEventListener("change", this.onScheme);
    if (this.theme === "auto") this.media.addEventListener("change", this.onScheme);
    const dark = this.theme === "dark" || (this.theme === "auto" && this.media.matches);
    this.root.classList.toggle("dark", dark);
    this.launcher.classList.toggle("dark", dark);
  }

  private applyLayout(): void {
    const bubble = this.layout === "bubble";
    this.root.classList.toggle("bubble", bubble);
    this.root.classList.toggle("inline", !bubble);
    this.launcher.hidden = !bubble;
    this.closeButton.hidden = !bubble;
    this.launcher.textContent = this.launcherText();
    this.launcher.setAttribute("aria-label", `Open the ${this.label}`);
    if (bubble) {
      this.panel.setAttribute("role", "dialog");
      this.setOpen(false, false);
    } else {
      this.panel.setAttribute("role", "region");
      this.root.hidden = false;
    }
  }

  protected abstract launcherText(): string;

  /** Opens or closes the bubble's panel; focus goes to the input, and back to the launcher on close. */
  setOpen(open: boolean, moveFocus = true): void {
    if (this.layout !== "bubble") return;
    this.root.hidden = !open;
    this.launcher.setAttribute("aria-expanded", String(open));
    this.launcher.setAttribute("aria-label", `${open ? "Close" : "Open"} the ${this.label}`);
    if (!moveFocus) return;
    if (open) this.focusInput();
    else this.launcher.focus();
  }

  /** The bubble's panel is showing (always true for the inline layout). */
  get open(): boolean {
    return !this.root.hidden;
  }

  protected abstract focusInput(): void;

  // ------------------------------------------------------------- the model

  /** The engine this widget runs on (shared by every widget of the same model on the page). */
  get engine(): Engine {
    return this.shared().engine;
  }

  /** The model as loaded, or null before load() finishes. */
  get loadedModel(): LoadedModel | null {
    return this.loadedRef;
  }

  /** The model's description from the index (null until it has been read). */
  get modelInfo(): ModelInfo | null {
    return this.infoRef;
  }

  private shared(): SharedModel {
    this.sharedRef ??= sharedModel(locations.workerUrl, new URL("index.json", this.modelsUrl).href, this.model, this.task, this.backend);
    return this.sharedRef;
  }

  /** A new model or models-url: forget the old binding, describe the new model. */
  private rebind(): void {
    this.sharedRef = null;
    this.infoRef = null;
    this.fitRef = null;
    this.loadedRef = null;
    this.loadPromise = null;
    this.clearError();
    this.progress.hidden = true;
    // The card comes back (a load hid it) and describes the new binding.
    this.info.hidden = false;
    this.status.textContent = "";
    this.setReady(false);
    this.unsubscribe?.();
    const shared = this.shared();
    // Another widget of the same model loading it: follow (same download, same progress).
    this.unsubscribe = shared.onStart(() => {
      if (this.sharedRef === shared && this.infoRef) void this.load().catch(() => {});
    });
    this.titleEl.textContent = this.model || `webkiln ${this.label}`;
    this.info.replaceChildren(h("span", {}, "Reading the model list…"));
    void Promise.all([shared.info(), device()]).then(
      ([info, dev]) => {
        if (shared !== this.sharedRef) return;
        this.infoRef = info;
        this.titleEl.textContent = info.name ?? info.id;
        // The engine's own decision for this backend attribute, before anything is downloaded.
        const fit = fitOf(info, dev, this.backend);
        this.fitRef = fit;
        this.info.replaceChildren(
          h("span", { part: "model-name" }, info.name && info.name !== info.id ? `${info.name} (${info.id})` : info.id),
          h("span", { part: "download-size" }, `${formatBytes(info.download_bytes)} download`),
          h("span", { class: `fit fit-${fit.level}`, part: "fit" }, fit.text),
          this.loadButton,
        );
        this.loadButton.textContent = `Load model (${formatBytes(info.download_bytes)})`;
        this.described(info);
        if (this.autoload === "eager" || shared.started) void this.load().catch(() => {});
      },
      (error: unknown) => {
        if (shared !== this.sharedRef) return;
        this.info.replaceChildren();
        this.report(error);
      },
    );
  }

  /** The subclass checks its attributes against the model (image: steps, size). */
  protected described(_info: ModelInfo): void {}

  /** Downloads (or takes from the cache) and loads the model; once per model per page. */
  load(): Promise<LoadedModel> {
    if (this.loadPromise) return this.loadPromise;
    const shared = this.shared();
    this.clearError();
    this.loadButton.disabled = true;
    this.progress.hidden = false;
    const on = this.fitRef?.backend;
    this.status.textContent = on ? `Loading the model on ${on}…` : "Loading the model…";
    const promise = shared.load((event) => this.showProgress(event));
    this.loadPromise = promise;
    promise.then(
      (loaded) => {
        if (this.loadPromise !== promise) return;
        this.loadedRef = loaded;
        this.progress.hidden = true;
        this.info.hidden = true;
        this.status.textContent = `${loaded.id} ready on ${loaded.backend}: ${loaded.backendReason}`;
        this.setReady(true);
        this.emit("webkiln-ready", { model: loaded });
      },
      (error: unknown) => {
        if (this.loadPromise !== promise) return;
        this.lastLoadError = error;
        this.loadPromise = null;
        this.loadButton.disabled = false;
        this.progress.hidden = true;
        this.status.textContent = "";
        this.report(error);
      },
    );
    return promise;
  }

  private showProgress(event: LoadProgressEvent): void {
    const percent = event.totalBytes > 0 ? Math.round((100 * event.loadedBytes) / event.totalBytes) : 0;
    this.fill.style.width = `${event.stage === "download" ? percent : 100}%`;
    this.fill.parentElement!.setAttribute("aria-valuenow", String(event.stage === "download" ? percent : 100));
    this.progressText.textContent = event.text;
    this.emit("webkiln-progress", event);
  }

  /** Enables the form once the model is loaded (subclasses). */
  protected abstract setReady(ready: boolean): void;

  // ------------------------------------------------------------- errors and events

  /** Shows a typed error in the widget and fires webkiln-error { name, message }. */
  protected report(error: unknown): ErrorDetail {
    const detail = detailOf(error);
    if (detail.name === "EngineCrashedError" && !this.loadedRef) {
      // The Worker never ran: on a host page, nearly always its CSP or missing CORS headers.
      const origin = new URL(locations.workerUrl).origin;
      detail.message +=
        ` The engine's Worker (${locations.workerUrl}) could not start: the page's Content-Security-Policy must allow` +
        ` worker-src ${origin} blob:, and that file must be served with Access-Control-Allow-Origin for this page (docs/WIDGET.md).`;
    }
    this.showError(detail);
    this.emit("webkiln-error", detail);
    return detail;
  }

  private showError(detail: ErrorDetail): void {
    this.errorBox.append(
      h("div", { class: "error-entry" }, h("strong", { part: "error-name" }, detail.name), h("span", { part: "error-message" }, detail.message)),
    );
    this.errorBox.hidden = false;
  }

  /** Clears the error box; refused attributes stay listed until they are fixed. */
  protected clearError(): void {
    this.errorBox.replaceChildren();
    this.errorBox.hidden = true;
    for (const message of this.attributeErrors.values()) this.showError({ name: "InvalidRequestError", message });
  }

  protected emit(type: string, detail: unknown): void {
    this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }
}

/** The attribute names a subclass observes (its specs'). */
export function observed(specs: Record<string, AttributeSpec<unknown>>): string[] {
  return Object.values(specs).map((s) => s.name);
}

export { COMMON };

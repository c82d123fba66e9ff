// The model picker (#model-select and the line under it), the load progress bar,
// and the "Models & storage" panel: every model (chat and image, each labelled with
// its task) with its size, quantization, backends, which backend runs it here and why
// (the engine's own decision for the Backend setting, base/backend_choice.ts), what is
// cached, and buttons to delete one model's files or all of them.

import type { BackendRequest } from "../base/backend_choice";
import type { CachedModel, Engine, LoadedModel, LoadProgressEvent, ModelInfo } from "../engine/api";
import { fitOf, requiredFeatures, type DeviceInfo, type Fit } from "../ui/device";
import { confirmTwice, el, formatBytes, formatSeconds, h } from "./dom";

export interface PickerCallbacks {
  /** The user picked another model in the select. */
  onChoose(id: string): void;
  onError(error: unknown): void;
}

export const modelLabel = (m: ModelInfo): string => m.name ?? m.id;

export interface PickerElements {
  /** The select's id (default "model-select"). */
  select?: string;
  /** The info line's id (default "model-info"). */
  info?: string;
  /** Whether this picker renders the "Models & storage" panel (default true). */
  panel?: boolean;
}

export class ModelPicker {
  readonly select: HTMLSelectElement;
  private readonly info: HTMLElement;
  private readonly panel: boolean;
  private readonly progressBox = el<HTMLElement>("load-progress");
  private readonly progressBar = el<HTMLProgressElement>("load-bar");
  private readonly progressText = el<HTMLElement>("load-text");
  private readonly list = el<HTMLUListElement>("model-list");
  private readonly storage = el<HTMLElement>("storage-usage");
  private readonly clearAll = el<HTMLButtonElement>("cache-clear");
  private models: ModelInfo[] = [];
  /** The panel's models: every task's (setPanelModels), else the select's. */
  private panelModels: ModelInfo[] | null = null;
  private cached = new Map<string, CachedModel>();
  private loadedId: string | null = null;
  /** The loaded model's backend and why (from the engine), shown on its card instead of the prediction. */
  private loadedInfo: LoadedModel | null = null;
  /** The Backend setting: what fitOf predicts for (loadModel's `backend`). */
  private backend: BackendRequest = "auto";
  /** Extra words for a model's info line (the image size of an image model). */
  private details: Record<string, string> = {};

  constructor(
    private readonly engine: Engine,
    private readonly device: DeviceInfo,
    private readonly callbacks: PickerCallbacks,
    elements: PickerElements = {},
  ) {
    this.select = el<HTMLSelectElement>(elements.select ?? "model-select");
    this.info = el<HTMLElement>(elements.info ?? "model-info");
    this.panel = elements.panel ?? true;
    this.select.addEventListener("change", () => {
      this.showInfo(this.select.value);
      callbacks.onChoose(this.select.value);
    });
    if (this.panel) confirmTwice(this.clearAll, "Click again to delete all", async () => {
      try {
        await this.engine.cache.clear();
      } catch (error) {
        this.callbacks.onError(error);
      }
      await this.refreshCache();
    });
  }

  fit(id: string): Fit | null {
    const model = this.find(id);
    return model ? fitOf(model, this.device, this.backend) : null;
  }

  /** A new Backend setting: every line that says where a model runs is redone. */
  setBackend(backend: BackendRequest): void {
    if (backend === this.backend) return;
    this.backend = backend;
    const chosen = this.select.value;
    this.setModels(this.models); // the options' "not supported here" marks
    if (chosen) this.choose(chosen);
  }

  find(id: string): ModelInfo | undefined {
    return this.models.find((m) => m.id === id);
  }

  setModels(models: ModelInfo[]): void {
    this.models = models;
    this.select.replaceChildren(
      ...models.map((m) => {
        const fit = fitOf(m, this.device, this.backend);
        const mark = fit.level === "no" ? " — not supported here" : "";
        const size = m.download_bytes ? ` · ${formatBytes(m.download_bytes)}` : "";
        return h("option", { value: m.id }, `${modelLabel(m)} (${m.quantization ?? "?"}${size})${mark}`);
      }),
    );
    this.renderList();
  }

  /** The models the "Models & storage" panel lists (all tasks; the select keeps its own). */
  setPanelModels(models: ModelInfo[]): void {
    this.panelModels = models;
    this.renderList();
  }

  private get listed(): ModelInfo[] {
    return this.panelModels ?? this.models;
  }

  /** The model to load first: the remembered one if it still exists and fits, else the first that fits. */
  initialChoice(remembered: string | null): ModelInfo | undefined {
    const usable = this.models.filter((m) => fitOf(m, this.device, this.backend).level !== "no");
    return usable.find((m) => m.id === remembered) ?? usable[0];
  }

  choose(id: string): void {
    this.select.value = id;
    this.showInfo(id);
  }

  /** The model the engine holds (its info says which backend runs it and why), or null. */
  setLoaded(id: string | null, info: LoadedModel | null = null): void {
    this.loadedId = id;
    this.loadedInfo = id !== null && info?.id === id ? info : null;
    this.renderList();
  }

  showInfo(id: string): void {
    const m = this.find(id);
    if (!m) {
      this.info.replaceChildren();
      return;
    }
    const fit = fitOf(m, this.device, this.backend);
    const parts = [m.quantization ?? "?", `${formatBytes(m.download_bytes)} download`];
    if (m.task === "image" && this.details[m.id]) parts.push(this.details[m.id]!);
    if (m.context_window) parts.push(`${m.context_window.toLocaleString()} token context`);
    this.info.replaceChildren(
      h("span", {}, parts.join(" · ")),
      h("span", { class: `fit fit-${fit.level}` }, fit.level === "fits" ? "✓ " : fit.level === "maybe" ? "⚠ " : "✕ ", fit.text),
    );
  }

  setDetail(id: string, text: string): void {
    this.details[id] = text;
    if (this.select.value === id) this.showInfo(id);
  }

  setDisabled(disabled: boolean): void {
    this.select.disabled = disabled || this.models.length === 0;
  }

  progress(event: LoadProgressEvent | null): void {
    if (!event) {
      this.progressBox.hidden = true;
      return;
    }
    this.progressBox.hidden = false;
    const label = modelLabel(this.find(event.model) ?? ({ id: event.model } as ModelInfo));
    if (event.stage === "download" && event.totalBytes > 0) {
      this.progressBar.max = event.totalBytes;
      this.progressBar.value = event.loadedBytes;
      const eta = event.etaSeconds !== null && event.etaSeconds > 0 ? ` · about ${formatSeconds(event.etaSeconds)} left` : "";
      const cached = event.cachedBytes > 0 ? ` · ${formatBytes(event.cachedBytes)} from cache` : "";
      this.progressText.textContent =
        `Downloading ${label}: ${formatBytes(event.loadedBytes)} of ${formatBytes(event.totalBytes)} · ` +
        `${event.filesDone}/${event.totalFiles} files${cached}${eta}`;
    } else {
      // Initialization has no byte count: an indeterminate bar.
      this.progressBar.removeAttribute("value");
      const backend = this.fit(event.model)?.backend;
      this.progressText.textContent =
        event.stage === "ready" ? `${label} is ready.` : `Preparing ${label}${backend ? ` on ${backend}` : ""}…`;
    }
  }

  async refreshCache(): Promise<void> {
    if (!this.panel) return;
    try {
      const [cached, storage] = await Promise.all([this.engine.cache.list(this.listed), this.engine.cache.storage()]);
      this.cached = new Map(cached.map((c) => [c.id, c]));
      const usage =
        storage.usageBytes === null
          ? "Storage use unknown"
          : `Using ${formatBytes(storage.usageBytes)}` + (storage.quotaBytes ? ` of ${formatBytes(storage.quotaBytes)}` : "");
      const persisted = storage.persisted === true ? " (persistent)" : storage.persisted === false ? " (may be evicted)" : "";
      this.storage.textContent = usage + persisted;
      this.clearAll.disabled = cached.length === 0;
    } catch (error) {
      this.storage.textContent = `Storage: ${error instanceof Error ? error.message : String(error)}`;
    }
    this.renderList();
  }

  private renderList(): void {
    if (!this.panel) return;
    const models = this.listed;
    if (models.length === 0) {
      this.list.replaceChildren(h("li", { class: "muted" }, "No models."));
      return;
    }
    this.list.replaceChildren(
      ...models.map((m) => {
        const fit = fitOf(m, this.device, this.backend);
        const running = m.id === this.loadedId ? this.loadedInfo : null;
        const cache = this.cached.get(m.id);
        const cacheText = cache
          ? `${formatBytes(cache.cachedBytes)} cached${cache.complete ? "" : ` of ${formatBytes(cache.totalBytes)}`}`
          : "not cached";
        const remove = h("button", { type: "button", class: "small danger", "aria-label": `Delete the cached files of ${modelLabel(m)}` }, "Delete");
        remove.disabled = !cache;
        confirmTwice(remove, "Confirm", async () => {
          try {
            await this.engine.cache.delete(m.id);
          } catch (error) {
            this.callbacks.onError(error);
          }
          await this.refreshCache();
        });
        const loaded = m.id === this.loadedId ? h("span", { class: "badge" }, running ? `loaded · ${running.backend}` : "loaded") : "";
        const task = h("span", { class: "badge task-badge", "data-task": m.task }, m.task === "image" ? "Image" : "Chat");
        return h(
          "li",
          { class: "model-card", "data-model": m.id, "data-task": m.task },
          h(
            "div",
            { class: "model-card-title" },
            h("strong", {}, modelLabel(m)),
            h("span", { class: "model-card-badges" }, task, loaded),
          ),
          h(
            "dl",
            {},
            h("dt", {}, "Quantization"),
            h("dd", {}, m.quantization ?? "?"),
            h("dt", {}, "Download"),
            h("dd", {}, formatBytes(m.download_bytes)),
            h("dt", {}, "Memory"),
            h("dd", {}, m.memory_bytes ? `~${formatBytes(m.memory_bytes)}` : "?"),
            h("dt", {}, "Backends"),
            h("dd", {}, requiredFeatures(m)),
          ),
          // Loaded: what the engine did; else what it would do with the Backend setting.
          running
            ? h("p", { class: "fit fit-fits" }, `running on ${running.backend}: ${running.backendReason}`)
            : h("p", { class: `fit fit-${fit.level}` }, fit.text),
          h("div", { class: "model-card-cache" }, h("span", { class: "cache-size" }, cacheText), remove),
        );
      }),
    );
  }
}

// The Images tab: an image-model picker (in the top bar), the generation form (with
// "Images": 1-4 per run, seeds seed, seed + 1, ...), a per-step progress bar, a preview
// of the image being made (a canvas in the result area, replaced by the final image),
// the result with a PNG download, and the gallery (gallery.ts).
// The engine holds one model at a time: this tab loads its model when it is shown.

import { SCHEDULER_LABELS } from "../base/scheduler_labels";
import type {
  Engine,
  ImageDefaults,
  ImageGenerateRequest,
  ImagePreview,
  ImageSchedulerName,
  LoadedModel,
  ModelInfo,
} from "../engine/api";
import type { DeviceInfo } from "../ui/device";
import { el, h } from "./dom";
import { isAbort, type ErrorBanner } from "./errors";
import { GalleryStore, newGalleryId, type GalleryItem, type ImageParameters } from "./gallery";
import { rememberedModel, TabModelLoader } from "./model_load";
import { modelLabel, ModelPicker } from "./model_picker";
import { backendLabel, type SettingsPanel } from "./settings";

const MODEL_KEY = "webkiln.imageModel";
type Busy = "idle" | "loading" | "generating";

/** A gallery item's sampler as shown: items saved before the API's names may hold any string. */
function schedulerLabel(name: string): string {
  return Object.prototype.hasOwnProperty.call(SCHEDULER_LABELS, name) ? SCHEDULER_LABELS[name as keyof typeof SCHEDULER_LABELS] : name;
}


function decodeBase64(b64: string): Uint8Array<ArrayBuffer> {
  const text = atob(b64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

function numberOrNull(input: HTMLInputElement): number | null {
  const text = input.value.trim();
  if (!text) return null;
  const value = Number(text);
  return Number.isFinite(value) ? value : null;
}

export class ImagesView {
  readonly root = el<HTMLElement>("images-view");
  private readonly modelArea = el<HTMLElement>("image-model-area");
  private readonly form = el<HTMLFormElement>("image-form");
  private readonly prompt = el<HTMLTextAreaElement>("image-prompt");
  private readonly negative = el<HTMLTextAreaElement>("image-negative");
  private readonly steps = el<HTMLInputElement>("image-steps");
  private readonly guidance = el<HTMLInputElement>("image-guidance");
  private readonly seed = el<HTMLInputElement>("image-seed");
  private readonly scheduler = el<HTMLSelectElement>("image-scheduler");
  private readonly size = el<HTMLInputElement>("image-size");
  private readonly count = el<HTMLSelectElement>("image-count");
  private readonly generateButton = el<HTMLButtonElement>("image-generate");
  private readonly stopButton = el<HTMLButtonElement>("image-stop");
  private readonly progressBar = el<HTMLProgressElement>("image-progress");
  private readonly progressText = el<HTMLElement>("image-progress-text");
  private readonly status = el<HTMLElement>("image-status");
  private readonly result = el<HTMLImageElement>("image-result");
  private readonly preview = el<HTMLCanvasElement>("image-preview");
  private readonly resultBox = el<HTMLElement>("image-result-box");
  private readonly download = el<HTMLAnchorElement>("image-download");
  private readonly meta = el<HTMLElement>("image-meta");
  private readonly gallery = el<HTMLUListElement>("gallery");
  private readonly picker: ModelPicker;

  private models: ModelInfo[] = [];
  private busy: Busy = "idle";
  private loaded: string | null = null;
  private wanted: string | null = null;
  private active = false;
  private readonly loader: TabModelLoader;
  private generation: AbortController | null = null;
  /** Object URLs of the gallery's images, by item id (revoked when an item goes). */
  private urls = new Map<string, string>();
  private shownId: string | null = null;
  /** Called when this tab's model is loaded (its info) or let go (null): the Models & storage panel. */
  onModelChange: ((info: LoadedModel | null) => void) | null = null;

  constructor(
    private readonly engine: Engine | null,
    device: DeviceInfo,
    private readonly store: GalleryStore,
    private readonly errors: ErrorBanner,
    /** The sidebar's settings: their Backend applies to this tab's loads too. */
    private readonly settings: SettingsPanel,
  ) {
    this.picker = new ModelPicker(
      engine as Engine,
      device,
      {
        onChoose: (id) => {
          this.showDefaults(id);
          void this.load(id);
        },
        onError: (error) => this.errors.show(error),
      },
      { select: "image-model-select", info: "image-model-info", panel: false },
    );
    this.loader = new TabModelLoader({
      picker: this.picker,
      errors: this.errors,
      setStatus: (text, isError) => this.setStatus(text, isError),
      rememberAs: MODEL_KEY,
      backend: () => this.settings.backend,
    });
    this.picker.setBackend(settings.backend);
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.generate();
    });
    this.prompt.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        void this.generate();
      }
    });
    this.stopButton.addEventListener("click", () => this.generation?.abort());
    el<HTMLButtonElement>("cancel-load").addEventListener("click", () => {
      if (this.active) this.loader.cancel();
    });
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.active && this.busy === "generating") {
        event.preventDefault();
        this.generation?.abort();
      }
    });
    engine?.onEvent((event) => {
      if (event.type !== "device-lost" || !this.active) return;
      this.loaded = null;
      this.generation?.abort();
      this.errors.show({ name: "DeviceLostError", message: event.message }, { reload: true });
      this.setStatus("The GPU device was lost: reload the model to continue.", true);
      this.sync();
    });
    this.sync();
  }

  get generating(): boolean {
    return this.busy === "generating";
  }

  async start(models: ModelInfo[]): Promise<void> {
    this.models = models;
    this.picker.setModels(models);
    await this.renderGallery();
    if (models.length === 0) {
      this.setStatus("No image model is built yet: build one with build_web --model <a diffusers folder>, then reload.", true);
      this.sync();
      return;
    }
    const first = this.picker.initialChoice(rememberedModel(MODEL_KEY)) ?? models[0]!;
    this.wanted = first.id;
    this.picker.choose(first.id);
    this.showDefaults(first.id);
    this.sync();
  }

  /** The Images tab is shown: load its model unless it is loaded. */
  activate(): void {
    this.active = true;
    this.modelArea.hidden = false;
    if (this.loaded || this.busy !== "idle" || !this.wanted) {
      this.sync();
      return;
    }
    const fit = this.picker.fit(this.wanted);
    if (fit?.level === "no") {
      this.setStatus(`This image model does not run here: ${fit.text}`, true);
      this.sync();
      return;
    }
    void this.load(this.wanted);
  }

  /** The Backend setting changed: as the Chat tab (ChatController.backendChanged). */
  backendChanged(): void {
    this.picker.setBackend(this.settings.backend);
    if (!this.active || !this.wanted || this.busy === "generating") return;
    const fit = this.picker.fit(this.wanted);
    if (fit?.level === "no") {
      const kept = this.loaded ? " The model stays loaded as it was." : "";
      this.setStatus(`${backendLabel(this.settings.backend)}: ${fit.text.replace(/\.$/, "")}.${kept}`, true);
      return;
    }
    void this.load(this.wanted);
  }

  deactivate(): void {
    this.active = false;
    this.modelArea.hidden = true;
    if (this.loader.drop()) this.busy = "idle";
    if (this.loaded) this.onModelChange?.(null);
    this.loaded = null;
    this.sync();
  }

  reload(): void {
    if (this.wanted) void this.load(this.wanted);
  }

  // ---- the model ------------------------------------------------------------------

  /** The model's generation defaults, as the engine listed them (from its manifest). */
  private defaultsOf(id: string): ImageDefaults | undefined {
    return this.models.find((m) => m.id === id)?.image;
  }

  private showDefaults(id: string): void {
    const d = this.defaultsOf(id);
    if (!d) return;
    this.picker.setDetail(id, `${d.width}×${d.height} px`);
    this.size.value = `${d.width} × ${d.height}`;
    this.steps.value = String(d.steps);
    this.steps.max = String(d.max_steps);
    this.guidance.value = String(d.guidance_scale);
    const first = this.scheduler.options[0];
    if (first) first.textContent = `Model default (${SCHEDULER_LABELS[d.scheduler]})`;
  }

  async load(id: string): Promise<void> {
    if (!this.engine || this.busy === "generating" || !this.active) return;
    this.wanted = id;
    this.loaded = null;
    this.busy = "loading";
    this.errors.clear();
    this.picker.choose(id);
    this.sync();
    await this.loader.load(this.engine, id, (info) => {
      if (info) {
        this.loaded = id;
        this.onModelChange?.(info);
      }
      this.busy = "idle";
      this.sync();
    });
  }


  // ---- generating -------------------------------------------------------------------

  private request(): ImageGenerateRequest {
    const request: ImageGenerateRequest = { prompt: this.prompt.value.trim(), response_format: "b64_json" };
    const negative = this.negative.value.trim();
    if (negative) request.negative_prompt = negative;
    const steps = numberOrNull(this.steps);
    if (steps !== null) request.steps = Math.round(steps);
    const guidance = numberOrNull(this.guidance);
    if (guidance !== null) request.guidance_scale = guidance;
    const seed = numberOrNull(this.seed);
    if (seed !== null) request.seed = Math.round(seed);
    if (this.scheduler.value) request.scheduler = this.scheduler.value as ImageSchedulerName;
    const n = Number(this.count.value);
    if (Number.isInteger(n) && n > 1) request.n = n;
    return request;
  }

  private async generate(): Promise<void> {
    if (!this.engine || !this.loaded || this.busy !== "idle") return;
    const request = this.request();
    if (!request.prompt) {
      this.setStatus("Write a prompt first.", true);
      this.prompt.focus();
      return;
    }
    const model = this.loaded;
    const controller = new AbortController();
    this.generation = controller;
    this.busy = "generating";
    this.errors.clear();
    const n = request.n ?? 1;
    const steps = request.steps ?? this.defaultsOf(model)?.steps ?? 0;
    this.showProgress(0, n * steps);
    this.setStatus("Encoding the prompt…");
    this.sync();
    const started = performance.now();
    try {
      const response = await this.engine.images.generate(request, {
        signal: controller.signal,
        onProgress: (step, total) => {
          this.showProgress(step, total);
          const per = total / n; // steps per image
          const image = Math.ceil(step / per);
          const of = n > 1 ? `Image ${image} of ${n}: ` : "";
          const inImage = step - (image - 1) * per;
          this.setStatus(inImage < per ? `${of}denoising: step ${inImage} of ${per}` : `${of}decoding the image…`);
        },
        onPreview: (preview) => {
          if (this.generation === controller) this.showPreview(preview);
        },
      });
      if (response.data.length === 0) throw new Error("The engine returned no image.");
      const extra = response.usage?.extra;
      const d = this.defaultsOf(model);
      const created = (response.created || Math.floor(Date.now() / 1000)) * 1000;
      const now = Date.now();
      const items = response.data.map((item, i): GalleryItem => {
        const seed = extra?.seeds?.[i] ?? (extra?.seed ?? request.seed ?? 0) + i;
        const parameters: ImageParameters = {
          model,
          prompt: request.prompt,
          negativePrompt: request.negative_prompt ?? "",
          steps: extra?.steps ?? request.steps ?? steps,
          guidanceScale: extra?.guidance_scale ?? request.guidance_scale ?? d?.guidance_scale ?? 0,
          seed,
          scheduler: extra?.scheduler ?? request.scheduler ?? d?.scheduler ?? "euler",
          width: extra?.width ?? d?.width ?? 0,
          height: extra?.height ?? d?.height ?? 0,
        };
        return {
          id: newGalleryId(created),
          // The gallery lists newest first: image 0 gets the latest time, so it keeps the request's order.
          created: now + (response.data.length - 1 - i),
          png: new Blob([decodeBase64(item.b64_json)], { type: "image/png" }),
          parameters,
        };
      });
      const seconds = (performance.now() - started) / 1000;
      for (const galleryItem of items) {
        try {
          await this.store.put(galleryItem);
        } catch (error) {
          this.errors.show(error);
        }
      }
      const first = items[0]!;
      await this.renderGallery(items);
      this.hidePreview();
      this.show(first);
      const seedText = items.length > 1
        ? `seeds ${first.parameters.seed}–${items[items.length - 1]!.parameters.seed}`
        : `seed ${first.parameters.seed}`;
      this.setStatus(`Done in ${seconds.toFixed(1)} s · ${items.length > 1 ? `${items.length} images · ` : ""}${seedText}.`);
    } catch (error) {
      this.hidePreview();
      if (isAbort(error) || controller.signal.aborted) {
        this.setStatus("Stopped.");
      } else {
        this.errors.show(error);
        this.setStatus("The image failed.", true);
      }
    } finally {
      this.generation = null;
      this.busy = "idle";
      this.sync();
    }
  }

  /** Shows a preview in the result area, over (instead of) the image shown before. */
  private showPreview(preview: ImagePreview): void {
    const { width, height, rgba } = preview;
    const canvas = this.preview;
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const context = canvas.getContext("2d");
    if (!context) return;
    context.putImageData(new ImageData(new Uint8ClampedArray(rgba), width, height), 0, 0);
    canvas.classList.toggle("pixelated", Math.max(width, height) < 256);
    canvas.style.aspectRatio = `${width} / ${height}`;
    canvas.dataset.step = String(preview.step);
    canvas.dataset.total = String(preview.total);
    canvas.dataset.index = String(preview.index);
    canvas.hidden = false;
    this.result.hidden = true;
    this.download.hidden = true;
    this.resultBox.dataset.empty = "false";
  }

  /** Back to the image (if any) shown before the run; the final image replaces the preview. */
  private hidePreview(): void {
    if (this.preview.hidden) return;
    this.preview.hidden = true;
    delete this.preview.dataset.step;
    if (this.shownId !== null) {
      this.result.hidden = false;
      this.download.hidden = false;
    } else {
      this.resultBox.dataset.empty = "true";
    }
  }

  private showProgress(step: number, total: number): void {
    this.progressBar.max = Math.max(total, 1);
    this.progressBar.value = step;
    this.progressBar.dataset.step = String(step);
    this.progressBar.dataset.total = String(total);
    const text = total > 0 ? `step ${step} of ${total}` : "";
    this.progressBar.setAttribute("aria-valuetext", text);
    this.progressText.textContent = text;
  }

  // ---- result and gallery ------------------------------------------------------------

  private urlOf(item: GalleryItem): string {
    let url = this.urls.get(item.id);
    if (!url) {
      url = URL.createObjectURL(item.png);
      this.urls.set(item.id, url);
    }
    return url;
  }

  /** Shows an image (new or from the gallery) with its parameters and a download link. */
  private show(item: GalleryItem): void {
    const p = item.parameters;
    const url = this.urlOf(item);
    this.shownId = item.id;
    this.result.src = url;
    this.result.alt = p.prompt;
    this.result.width = p.width;
    this.result.height = p.height;
    this.result.classList.toggle("pixelated", Math.max(p.width, p.height) < 256);
    this.result.style.aspectRatio = p.width && p.height ? `${p.width} / ${p.height}` : "";
    this.result.hidden = false;
    this.download.href = url;
    this.download.download = `webkiln-${p.seed}.png`;
    this.download.hidden = false;
    this.resultBox.dataset.empty = "false";
    this.meta.replaceChildren(
      h("p", { class: "image-meta-prompt" }, p.prompt),
      p.negativePrompt ? h("p", { class: "hint" }, `Negative: ${p.negativePrompt}`) : "",
      h(
        "p",
        { class: "hint" },
        `Seed ${p.seed} · ${p.steps} steps · ${schedulerLabel(p.scheduler)} · CFG ${p.guidanceScale} · ` +
          `${p.width}×${p.height} · ${p.model}`,
      ),
    );
    for (const node of this.gallery.querySelectorAll<HTMLElement>(".gallery-item")) {
      node.classList.toggle("current", node.dataset.id === item.id);
    }
  }

  private clearResult(): void {
    this.shownId = null;
    this.result.hidden = true;
    this.result.removeAttribute("src");
    this.download.hidden = true;
    this.download.removeAttribute("href");
    this.resultBox.dataset.empty = "true";
    this.meta.replaceChildren();
  }

  private async renderGallery(fresh: GalleryItem[] = []): Promise<void> {
    let items: GalleryItem[];
    try {
      items = await this.store.list();
    } catch (error) {
      this.errors.show(error);
      items = fresh;
    }
    const keep = new Set(items.map((i) => i.id));
    for (const [id, url] of this.urls) {
      if (!keep.has(id)) {
        URL.revokeObjectURL(url);
        this.urls.delete(id);
      }
    }
    if (items.length === 0) {
      this.gallery.replaceChildren(h("li", { class: "gallery-empty muted" }, "Generated images are kept here, in this browser."));
      return;
    }
    this.gallery.replaceChildren(
      ...items.map((item) => {
        const p = item.parameters;
        const thumb = h("img", { src: this.urlOf(item), alt: p.prompt, width: p.width, height: p.height });
        if (Math.max(p.width, p.height) < 256) thumb.classList.add("pixelated");
        const view = h("button", { type: "button", class: "gallery-view", "aria-label": `View: ${p.prompt} (seed ${p.seed})`, title: p.prompt }, thumb);
        view.addEventListener("click", () => this.show(item));
        const remove = h("button", { type: "button", class: "gallery-delete icon-button", "aria-label": `Delete: ${p.prompt} (seed ${p.seed})` });
        remove.append(svgCross());
        remove.addEventListener("click", () => void this.remove(item.id));
        const li = h("li", { class: "gallery-item", "data-id": item.id }, view, remove);
        if (item.id === this.shownId) li.classList.add("current");
        return li;
      }),
    );
  }

  private async remove(id: string): Promise<void> {
    try {
      await this.store.delete(id);
    } catch (error) {
      this.errors.show(error);
    }
    if (this.shownId === id) this.clearResult();
    await this.renderGallery();
  }

  // ---- state --------------------------------------------------------------------------

  private setStatus(text: string, isError = false): void {
    this.status.textContent = text;
    this.status.classList.toggle("error", isError);
  }

  private sync(): void {
    const generating = this.busy === "generating";
    this.generateButton.disabled = !(this.busy === "idle" && this.loaded !== null);
    this.stopButton.disabled = !generating;
    this.picker.setDisabled(generating);
    if (this.active) this.settings.setBackendDisabled(generating);
    this.form.dataset.busy = String(generating);
    this.root.setAttribute("aria-busy", String(generating));
    this.progressBar.closest<HTMLElement>(".image-progress")!.hidden = !generating && this.progressBar.dataset.step === undefined;
  }
}

function svgCross(): SVGSVGElement {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", "M6 6l12 12M18 6L6 18");
  svg.append(path);
  return svg;
}

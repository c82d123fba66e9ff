// <webkiln-image>: text-to-image on the engine. steps, guidance, seed and size are checked
// against what the model allows (its manifest's defaults and limits, ModelInfo.image); the
// image shows as it is made (the engine's previews) and is kept as a PNG blob.

import type { ImageDefaults, ImageUsage, ModelInfo } from "../engine";
import { IMAGE } from "./attributes";
import { h, observed, WidgetElement } from "./element";

/** webkiln-reply's detail for an image: the PNG (base64, with its parameters chunk) and usage. */
export interface ImageReplyDetail {
  b64_json: string;
  usage: ImageUsage | null;
}

export class WebkilnImageElement extends WidgetElement {
  static readonly observedAttributes = observed(IMAGE);
  protected readonly task = "image";
  protected readonly specs = IMAGE;
  protected readonly label = "image generator";

  private readonly picture = h("img", { part: "image", alt: "" });
  private readonly canvas = h("canvas", { part: "preview", hidden: "" });
  private readonly figure = h("div", { class: "image", part: "image-box", role: "img", "aria-label": "No image yet" }, this.canvas, this.picture);
  private readonly input = h("input", { part: "input", type: "text" });
  private readonly goButton = h("button", { type: "submit", part: "send-button" }, "Generate");
  private readonly stopButton = h("button", { type: "button", part: "stop-button", class: "secondary", hidden: "" }, "Stop");
  private readonly form = h("form", { part: "form" }, this.input, this.goButton, this.stopButton);
  private controller: AbortController | null = null;
  private busy: Promise<ImageReplyDetail> | null = null;
  private objectUrl: string | null = null;

  constructor() {
    super();
    this.picture.hidden = true;
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      const prompt = this.input.value.trim();
      if (!prompt || this.busy) return;
      void this.send(prompt).catch(() => {});
    });
    this.stopButton.addEventListener("click", () => this.stop());
  }

  protected body(): HTMLElement[] {
    this.updatePlaceholder();
    return [this.figure, this.form];
  }

  protected launcherText(): string {
    return "Images";
  }

  protected focusInput(): void {
    this.input.focus();
  }

  protected setReady(ready: boolean): void {
    this.goButton.disabled = !ready && this.autoload === "manual";
  }

  protected override attributeChanged(name: string): void {
    if (name === "placeholder") this.updatePlaceholder();
    if (["steps", "size"].includes(name) && this.modelInfo) this.described(this.modelInfo);
  }

  private updatePlaceholder(): void {
    this.input.placeholder = this.placeholder || "Describe an image…";
    this.input.setAttribute("aria-label", this.placeholder || "Image prompt");
  }

  /** Checks steps and size against the model (the attributes alone cannot know its limits). */
  protected override described(info: ModelInfo): void {
    const d = info.image;
    if (!d) return;
    const steps = this.attributeValue<number | null>("steps");
    if (steps !== null && steps > d.max_steps) {
      this.refuseAttribute("steps", `${steps} is more than this model's max_steps (${d.max_steps})`);
    }
    const size = this.attributeValue<string | null>("size");
    if (size !== null && size !== `${d.width}x${d.height}`) {
      this.refuseAttribute("size", `"${size}" is not this model's size (it was built for ${d.width}x${d.height})`);
    }
  }

  get steps(): number | null {
    return this.valid("steps", (v: number, d) => v <= d.max_steps);
  }
  set steps(value: number | null) {
    this.setOrRemove("steps", value);
  }
  get guidance(): number | null {
    return this.attributeValue("guidance");
  }
  set guidance(value: number | null) {
    this.setOrRemove("guidance", value);
  }
  get seed(): number | null {
    return this.attributeValue("seed");
  }
  set seed(value: number | null) {
    this.setOrRemove("seed", value);
  }
  get size(): string | null {
    return this.valid("size", (v: string, d) => v === `${d.width}x${d.height}`);
  }
  set size(value: string | null) {
    this.setOrRemove("size", value);
  }

  /** An attribute's value if the model allows it, else null (the model's default). */
  private valid<T>(key: string, allowed: (value: T, defaults: ImageDefaults) => boolean): T | null {
    const value = this.attributeValue<T | null>(key);
    const d = this.modelInfo?.image;
    return value === null || !d || allowed(value, d) ? value : null;
  }

  private setOrRemove(name: string, value: number | string | null): void {
    if (value === null) this.removeAttribute(name);
    else this.setAttribute(name, String(value));
  }

  /** Makes an image of `prompt` (loading the model first if needed); resolves with webkiln-reply's detail. */
  async send(prompt: string): Promise<ImageReplyDetail> {
    if (this.busy) throw new Error("an image is still being made: wait for it or call stop()");
    const run = this.run(prompt);
    this.busy = run;
    try {
      return await run;
    } finally {
      this.busy = null;
    }
  }

  private async run(prompt: string): Promise<ImageReplyDetail> {
    this.clearError();
    this.controller = new AbortController();
    this.stopButton.hidden = false;
    this.goButton.hidden = true;
    try {
      await this.load();
      this.status.textContent = "Generating…";
      const result = await this.engine.images.generate(
        {
          prompt,
          ...(this.steps !== null ? { steps: this.steps } : {}),
          ...(this.guidance !== null ? { guidance_scale: this.guidance } : {}),
          ...(this.seed !== null ? { seed: this.seed } : {}),
          ...(this.size !== null ? { size: this.size } : {}),
          response_format: "b64_json",
        },
        {
          signal: this.controller.signal,
          onProgress: (step, total) => (this.status.textContent = `Step ${step} of ${total}`),
          onPreview: (preview) => this.showPreview(preview.rgba, preview.width, preview.height),
        },
      );
      const b64 = result.data[0]!.b64_json;
      this.showImage(b64, prompt);
      const usage = result.usage ?? null;
      this.status.textContent = usage ? `Done · seed ${usage.extra.seed} · ${usage.extra.steps} steps · ${(usage.extra.total_ms / 1000).toFixed(1)} s` : "Done";
      const detail: ImageReplyDetail = { b64_json: b64, usage };
      this.emit("webkiln-reply", detail);
      return detail;
    } catch (error) {
      this.status.textContent = "";
      if (error !== this.lastLoadError) this.report(error);
      throw error;
    } finally {
      this.controller = null;
      this.stopButton.hidden = true;
      this.goButton.hidden = false;
    }
  }

  private showPreview(rgba: Uint8ClampedArray, width: number, height: number): void {
    this.canvas.width = width;
    this.canvas.height = height;
    this.canvas.getContext("2d")?.putImageData(new ImageData(new Uint8ClampedArray(rgba), width, height), 0, 0);
    this.canvas.hidden = false;
    this.picture.hidden = true;
  }

  private showImage(b64: string, prompt: string): void {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
    this.objectUrl = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
    this.picture.src = this.objectUrl;
    this.picture.alt = prompt;
    this.figure.setAttribute("aria-label", `Generated image: ${prompt}`);
    this.picture.hidden = false;
    this.canvas.hidden = true;
  }

  /** Stops the image being made. */
  stop(): void {
    this.controller?.abort();
  }

  /** Clears the image and the status. */
  async reset(): Promise<void> {
    this.stop();
    await this.busy?.catch(() => {});
    this.picture.hidden = true;
    this.picture.removeAttribute("src");
    if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
    this.objectUrl = null;
    this.canvas.hidden = true;
    this.figure.setAttribute("aria-label", "No image yet");
    this.clearError();
    this.status.textContent = "";
  }
}

// A loaded image model: a built Stable Diffusion-family pipeline (docs/FORMAT.md, "Image
// models") from its manifest.json: the backend's library (encode_text, unet, vae_decode
// in one module), its weight set, the CLIP tokenizer, and an ImagePipeline on top.

import type * as tvmjs from "@mlc-ai/web-runtime";
import { InvalidRequestError, ModelLoadError } from "../base/errors";
import {
  defaultScheduler,
  type ImageBackendEntry,
  type ImageComponentName,
  type ImageManifest,
  type SchedulerName,
} from "../base/manifest";
import type { Tokenizer } from "../base/tokenizer";
import { fetchManifest, loadCompiledModel, type CpuThreads, type LoadCompiledOptions } from "../compiled/load";
import { uploadWeights } from "../compiled/weights";
import { type DecodedImage, type GenerateResult, ImagePipeline } from "./pipeline";
import type { SchedulerConfig } from "./schedulers";

export type LoadImageOptions = LoadCompiledOptions;

export interface ImageGenerateOptions {
  prompt: string;
  /** Default: the manifest's generation.negative_prompt (""). */
  negativePrompt?: string;
  /** Default: the manifest's generation.steps; at most generation.max_steps. */
  steps?: number;
  /** Default: the manifest's generation.guidance_scale. */
  guidanceScale?: number;
  /** Default: a random one (returned in the result). */
  seed?: number | bigint;
  /** Default: the model's scheduler class when the browser has it, else Euler. */
  scheduler?: SchedulerName;
  onStep?: (step: number, total: number) => void;
  /**
   * A preview after every `previewEvery`-th step (default 1) except the last (the final image
   * is that one): the VAE decode of the clean latents the model predicted at that step (the
   * scheduler's pred_original_sample), which shows the picture taking shape rather than
   * the mostly-noise latents of early steps. One VAE call each. Awaited.
   */
  onPreview?: (step: number, total: number, image: DecodedImage) => void | Promise<void>;
  previewEvery?: number;
  signal?: AbortSignal;
}

export interface ImageGeneration extends GenerateResult {
  image: DecodedImage;
  prompt: string;
  negativePrompt: string;
  steps: number;
  guidanceScale: number;
  seed: number | bigint;
  scheduler: SchedulerName;
  /** Prompt tokens fed to the text encoder (without <bos>/<eos>, after truncation). */
  promptTokens: number;
  /** Time spent decoding previews (not in timings.stepMs). */
  previewMs: number;
}

export class ImageModel {
  private constructor(
    readonly manifest: ImageManifest,
    readonly backend: string,
    /** Why that backend runs here (base/backend_choice.ts). */
    readonly backendReason: string,
    readonly tokenizer: Tokenizer,
    readonly pipeline: ImagePipeline,
    /** The CPU threads it runs (null on WebGPU). */
    readonly threads: CpuThreads | null,
  ) {}

  get width(): number {
    return this.manifest.image.width;
  }

  get height(): number {
    return this.manifest.image.height;
  }

  /** The scheduler a request without one gets: the model's own class, else Euler. */
  get defaultScheduler(): SchedulerName {
    return defaultScheduler(this.manifest);
  }

  static async load(manifestUrl: string, options: LoadImageOptions = {}): Promise<ImageModel> {
    const manifest = await fetchManifest(manifestUrl, "image", options.signal);
    const weightSet = (backend: string, entry: ImageBackendEntry) => {
      const weights = manifest.tensors[entry.tensors];
      if (!weights) throw new ModelLoadError(`${manifest.id}: backend ${backend} reads weight set '${entry.tensors}', which the manifest lacks.`);
      return weights;
    };
    const compiled = await loadCompiledModel(
      manifestUrl,
      manifest,
      { shardsOf: (backend, entry) => weightSet(backend, entry).shards, smaller: "a smaller image size or model" },
      options,
    );
    const { backend, entry, mod, tokenizer } = compiled;
    const weights = weightSet(backend, entry);
    const params: tvmjs.TVMArray[] = [];
    try {
      const byComponent = (c: ImageComponentName) => weights.records.filter((r) => r.component === c);
      const [te, unet, vae] = (["text_encoder", "unet", "vae"] as const).map((c) => {
        const p = uploadWeights(mod, byComponent(c), compiled.shards);
        params.push(p);
        return p;
      }) as [tvmjs.TVMArray, tvmjs.TVMArray, tvmjs.TVMArray];
      await mod.device.sync();
      const c = manifest.components;
      const textOut = c.text_encoder.output.shape;
      const pipeline = new ImagePipeline({
        textEncoder: { mod, params: te, entry: c.text_encoder.entry },
        unet: { mod, params: unet, entry: c.unet.entry, batch: c.unet.batch },
        vae: { mod, params: vae, entry: c.vae.entry },
        constants: {
          latentChannels: manifest.image.latent_channels,
          latentHeight: manifest.image.latent_height,
          latentWidth: manifest.image.latent_width,
          textLength: manifest.tokenizer.max_length,
          textHidden: textOut[textOut.length - 1] as number,
          vaeScalingFactor: c.vae.scaling_factor,
          vaeShiftFactor: c.vae.shift_factor,
          dtype: entry.activation_dtype,
        },
        // The manifest carries diffusers' scheduler_config.json as it is; createScheduler
        // checks each field it reads (SchedulerConfigError names a bad one).
        schedulerConfig: {
          ...manifest.scheduler,
          _class_name: manifest.scheduler.class ?? manifest.scheduler._class_name,
        } as SchedulerConfig,
      });
      return new ImageModel(manifest, backend, compiled.backendReason, tokenizer, pipeline, compiled.threads);
    } catch (error) {
      for (const p of params) p.dispose();
      compiled.dispose();
      throw error;
    }
  }

  /** Prompt token ids (no <bos>/<eos>), truncated to what fits between them. */
  promptTokens(text: string): number[] {
    const { bos_token_id: bos, eos_token_id: eos, max_length: length } = this.manifest.tokenizer;
    let ids = Array.from(this.tokenizer.encode(text));
    // The build's tokenizer.json puts <bos> ... <eos> around every encoding (as CLIP's does).
    if (ids[0] === bos) ids = ids.slice(1);
    if (ids.length > 0 && ids[ids.length - 1] === eos) ids = ids.slice(0, -1);
    return ids.slice(0, length - 2);
  }

  /**
   * The text encoder's input for `text`, as diffusers' pipelines make it
   * (`tokenizer(text, padding="max_length", max_length=77, truncation=True)`):
   * <bos>, at most 75 tokens, <eos>, then <pad> up to 77.
   */
  encodePrompt(text: string): Int32Array {
    const { bos_token_id: bos, eos_token_id: eos, pad_token_id: pad, max_length: length } = this.manifest.tokenizer;
    const ids = [bos, ...this.promptTokens(text), eos];
    while (ids.length < length) ids.push(pad);
    return Int32Array.from(ids);
  }

  async generate(options: ImageGenerateOptions): Promise<ImageGeneration> {
    const gen = this.manifest.generation;
    const steps = options.steps ?? gen.steps;
    if (!Number.isInteger(steps) || steps < 1 || steps > gen.max_steps) {
      throw new InvalidRequestError(`steps must be an integer from 1 to ${gen.max_steps} for ${this.manifest.id}, got ${steps}`, "steps");
    }
    const guidanceScale = options.guidanceScale ?? gen.guidance_scale;
    if (typeof guidanceScale !== "number" || !Number.isFinite(guidanceScale) || guidanceScale < 0) {
      throw new InvalidRequestError(`guidance_scale must be a number >= 0, got ${guidanceScale}`, "guidance_scale");
    }
    const seed = options.seed ?? Math.floor(Math.random() * 2 ** 32);
    const scheduler = options.scheduler ?? this.defaultScheduler;
    const negativePrompt = options.negativePrompt ?? gen.negative_prompt ?? "";
    const { onStep, onPreview, signal } = options;
    const every = options.previewEvery ?? 1;
    if (!Number.isInteger(every) || every < 1) {
      throw new InvalidRequestError(`previewEvery must be an integer >= 1, got ${every}`, "previewEvery");
    }
    let previewMs = 0;
    const result = await this.pipeline.generate({
      promptIds: this.encodePrompt(options.prompt),
      negativeIds: this.encodePrompt(negativePrompt),
      steps,
      guidanceScale,
      seed,
      scheduler,
      signal,
      onStep:
        onStep || onPreview
          ? async (step, total, _latents, predicted) => {
              onStep?.(step, total);
              if (!onPreview || step === total || step % every !== 0 || signal?.aborted) return;
              const t = performance.now();
              const image = await this.pipeline.decode(predicted);
              previewMs += performance.now() - t;
              if (!signal?.aborted) await onPreview(step, total, image);
            }
          : undefined,
    });
    if (!result.image) throw new Error("the pipeline returned no image"); // decode defaults to true
    return {
      ...result,
      image: result.image,
      prompt: options.prompt,
      negativePrompt,
      steps,
      guidanceScale,
      seed,
      scheduler,
      promptTokens: this.promptTokens(options.prompt).length,
      previewMs,
    };
  }

  dispose(): void {
    this.pipeline.dispose();
    this.tokenizer.dispose();
  }
}

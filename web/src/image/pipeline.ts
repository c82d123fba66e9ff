// A Stable Diffusion-family text-to-image pipeline on loaded tvmjs modules, equal to
// diffusers' StableDiffusionPipeline (tests/test_image_browser.py compares them).
//
// Components (python/webkiln/models/diffusion, compiled by webkiln):
//   encode_text(input_ids int32 [1, L], params)                      -> [1, L, H]
//   unet(latents [B, C, h, w], timestep f32 [B], text_embeds [B, L, H], params) -> [B, C, h, w]
//   vae_decode(latents [1, C, h, w], params)                          -> [1, 3, h*f, w*f] in [-1, 1]
// each its own module with its own packed parameters, or one module with all three entry
// points (pass the same LoadedModule three times). The UNet is compiled for a fixed batch:
// 2 (classifier-free guidance in one call) and/or 1. With only a batch-2 UNet a run without
// guidance feeds the conditional embeddings twice; with only a batch-1 UNet a guided run
// calls it twice (uncond, then cond).
//
// generate() does what diffusers' pipeline does, in the same order and precision:
//   prompt_embeds = [encode(negative); encode(prompt)]  (only when guidance_scale > 1)
//   latents = GaussianNoise(seed) * init_noise_sigma     (latents.ts: the initial draw)
//   for each timestep t:
//     x = scheduler.scale_model_input(latents)           (float32, on the CPU)
//     eps = unet([x; x], t, prompt_embeds)               (on the module's device: WebGPU or the CPU)
//     eps = uncond + g * (cond - uncond)                 (float32, on the CPU)
//     latents = scheduler.step(eps, t, latents, noise)   (ancestral noise: same generator)
//   image = vae_decode(latents / scaling_factor [+ shift_factor])
//   rgb = round((image / 2 + 0.5).clamp(0, 1) * 255)    (half to even, as numpy)
// The text embeddings are uploaded to the UNet's device once per run and stay there; per
// step only the scaled latents go up and the noise prediction comes back (the schedulers
// run in float32 on the CPU, where they match diffusers to float32 rounding). The latents
// are a few hundred KiB even at 1024x1024 (C x h/8 x w/8 floats), so this costs little
// next to a UNet call.
//
// Nothing here depends on the device: the same calls run a webgpu library or a wasm-cpu
// one (the module's device is tvm.cpu(), tensors are copied the same way). One difference
// matters to callers: a CPU library runs synchronously inside each call, so a run on the
// CPU yields to the event loop once per step (nextTask) for messages, such as a Worker's
// abort, to get through.

import type * as tvmjs from "@mlc-ai/web-runtime";
import type { LoadedModule } from "../base/tvm";
import { ImageGenerationAborted, InvalidRequestError } from "../base/errors";
import { nextTask } from "../base/next_task";
import type { FloatDType, SchedulerName } from "../base/manifest_types";
import { GaussianNoise, initialLatents } from "./latents";
import {
  classifierFreeGuidance,
  createScheduler,
  type Scheduler,
  type SchedulerConfig,
} from "./schedulers";
import { download, upload } from "./tensors";

const f32 = Math.fround;

/** One compiled component: its module and packed parameters (on that module's device). */
export interface ImageComponent {
  mod: LoadedModule;
  params: tvmjs.TVMArray;
  /** Entry point name (default encode_text / unet / vae_decode). */
  entry?: string;
}

export interface UNetComponent extends ImageComponent {
  /** The batch the UNet was compiled for (1 or 2). */
  batch: number;
}

/** Shapes and constants of the model (from its configs; the manifest loader fills these). */
export interface ImageModelConstants {
  latentChannels: number; // unet in_channels = vae latent_channels
  latentHeight: number; // the size the UNet and VAE were compiled for
  latentWidth: number;
  textLength: number; // text encoder max_position_embeddings (77)
  textHidden: number; // text encoder hidden_size = unet cross_attention_dim
  vaeScalingFactor: number; // vae/config.json scaling_factor (0.18215 for SD 1.x)
  vaeShiftFactor?: number | null; // vae/config.json shift_factor (null for SD 1.x / 2.x)
  dtype?: FloatDType; // activations / inputs of the build (default float32)
}

export interface ImagePipelineParts {
  textEncoder: ImageComponent;
  /** One or both batch sizes. */
  unet: UNetComponent | UNetComponent[];
  vae: ImageComponent;
  constants: ImageModelConstants;
  /** The model's scheduler_config.json (a scheduler kind in generate() overrides its class). */
  schedulerConfig: SchedulerConfig;
}

/** A decoded image: RGBA bytes, row-major (ImageData's layout). */
export interface DecodedImage {
  width: number;
  height: number;
  rgba: Uint8ClampedArray;
}

/** A decoded image before 8-bit rounding: diffusers' output_type "np" ([H, W, 3] in [0, 1]). */
export interface FloatImage {
  width: number;
  height: number;
  rgb: Float32Array;
}

export interface GenerateOptions {
  promptIds: number[] | Int32Array;
  /** The negative prompt's ids (diffusers encodes "" when there is none). Required when guidanceScale > 1. */
  negativeIds?: number[] | Int32Array;
  steps: number;
  /** Classifier-free guidance scale; <= 1 runs the conditional branch only (as diffusers). */
  guidanceScale: number;
  seed: number | bigint;
  /** A scheduler kind (built from the model's scheduler config) or a ready Scheduler. */
  scheduler?: SchedulerName | Scheduler;
  /**
   * After each step: 1-based step, total steps, the latents after it, and the clean latents
   * the model predicted in that step (the scheduler's predictedOriginal; do not modify either).
   * A returned promise is awaited before the next step, e.g.
   * `(s, n, x, x0) => pipe.decode(x0).then(show)` for a preview (costs one VAE call).
   */
  onStep?: (step: number, total: number, latents: Float32Array, predicted: Float32Array) => void | Promise<void>;
  signal?: AbortSignal;
  /** Decode the final latents (default true). */
  decode?: boolean;
}

export interface GenerateResult {
  /** Final latents [1, C, h, w] (before the VAE scaling). */
  latents: Float32Array;
  image?: DecodedImage;
  /** The same image as floats ([H, W, 3] in [0, 1]) - diffusers' output_type "np". */
  imageFloat?: FloatImage;
  timesteps: number[];
  timings: { encodeMs: number; stepMs: number[]; decodeMs: number; totalMs: number };
}

function throwIfAborted(signal: AbortSignal | undefined, step: number): void {
  if (signal?.aborted) throw new ImageGenerationAborted(step);
}

/** diffusers' VaeImageProcessor postprocess: [1, 3, H, W] in [-1, 1] -> [H, W, 3] in [0, 1]. */
export function postprocess(chw: Float32Array, height: number, width: number): Float32Array {
  const plane = height * width;
  if (chw.length !== 3 * plane) throw new RangeError(`expected 3x${height}x${width} values, got ${chw.length}`);
  const out = new Float32Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < plane; i++) {
      const v = f32(f32((chw[c * plane + i] as number) * 0.5) + 0.5);
      out[i * 3 + c] = v < 0 ? 0 : v > 1 ? 1 : v;
    }
  }
  return out;
}

/** numpy_to_pil: round(x * 255) (half to even) as bytes, plus alpha 255. */
export function toRgba(image: FloatImage): DecodedImage {
  const { width, height, rgb } = image;
  const rgba = new Uint8ClampedArray(width * height * 4);
  for (let i = 0; i < width * height; i++) {
    for (let c = 0; c < 3; c++) {
      const x = f32((rgb[i * 3 + c] as number) * 255);
      const floor = Math.floor(x);
      const diff = x - floor;
      rgba[i * 4 + c] = diff > 0.5 || (diff === 0.5 && floor % 2 === 1) ? floor + 1 : floor;
    }
    rgba[i * 4 + 3] = 255;
  }
  return { width, height, rgba };
}

export class ImagePipeline {
  readonly constants: Required<ImageModelConstants>;
  readonly schedulerConfig: SchedulerConfig;
  private readonly textEncoder: ImageComponent;
  private readonly unets: Map<number, UNetComponent>;
  private readonly vae: ImageComponent;
  private readonly fns = new Map<LoadedModule, Map<string, tvmjs.PackedFunc>>();

  constructor(parts: ImagePipelineParts) {
    this.textEncoder = parts.textEncoder;
    this.vae = parts.vae;
    this.unets = new Map();
    for (const u of Array.isArray(parts.unet) ? parts.unet : [parts.unet]) {
      if (u.batch !== 1 && u.batch !== 2) throw new RangeError(`UNet batch must be 1 or 2, got ${u.batch}`);
      this.unets.set(u.batch, u);
    }
    if (this.unets.size === 0) throw new RangeError("the pipeline needs a UNet");
    const c = parts.constants;
    this.constants = { ...c, vaeShiftFactor: c.vaeShiftFactor ?? null, dtype: c.dtype ?? "float32" };
    this.schedulerConfig = parts.schedulerConfig;
  }

  // tvmjs scopes are a stack per instance: device calls that await inside a scope must not
  // interleave, so each one (encode, UNet, decode) runs alone, in call order. Whole runs may
  // interleave (e.g. a preview decode from onStep, or two runs at once).
  private queue: Promise<unknown> = Promise.resolve();

  private exclusive<T>(run: () => Promise<T>): Promise<T> {
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  /** Number of latent values of one image (C x h x w). */
  get latentSize(): number {
    const c = this.constants;
    return c.latentChannels * c.latentHeight * c.latentWidth;
  }

  /** The entry point of a component (looked up once; components may share a module). */
  private fn(component: ImageComponent, fallback: string): tvmjs.PackedFunc {
    const name = component.entry ?? fallback;
    let byName = this.fns.get(component.mod);
    if (!byName) {
      byName = new Map();
      this.fns.set(component.mod, byName);
    }
    let f = byName.get(name);
    if (!f) {
      const { tvm, vm } = component.mod;
      f = tvm.withNewScope(() => tvm.detachFromCurrentScope(vm.getFunction(name)));
      byName.set(name, f);
    }
    return f;
  }

  /** Text embeddings [1, L, H] of `ids` (exactly textLength ids: bos, tokens, eos, padding). */
  async encodeText(ids: number[] | Int32Array): Promise<Float32Array> {
    const { textLength } = this.constants;
    if (ids.length !== textLength) {
      throw new InvalidRequestError(`the text encoder takes ${textLength} token ids, got ${ids.length}`, "prompt");
    }
    const mod = this.textEncoder.mod;
    const f = this.fn(this.textEncoder, "encode_text");
    return this.exclusive(async () => {
      mod.tvm.beginScope();
      try {
        const input = mod.tvm.empty([1, textLength], "int32", mod.device).copyFrom(Int32Array.from(ids));
        const out = f(input, this.textEncoder.params) as tvmjs.Tensor;
        return await download(mod, out);
      } finally {
        mod.tvm.endScope();
      }
    });
  }

  /**
   * Noise prediction for a batch of latents [B, C, h, w] with text embeddings [B, L, H]
   * (B = 1 or 2) at timestep(s) `t` (one per batch entry, or one for all).
   */
  async predictNoise(latents: Float32Array, t: number | number[], embeds: Float32Array): Promise<Float32Array> {
    const batch = latents.length / this.latentSize;
    if (batch !== 1 && batch !== 2) {
      throw new RangeError(`latents must hold 1 or 2 images of ${this.latentSize} values, got ${latents.length}`);
    }
    const textSize = this.constants.textLength * this.constants.textHidden;
    if (embeds.length !== batch * textSize) {
      throw new RangeError(`text embeddings must hold ${batch} x ${textSize} values, got ${embeds.length}`);
    }
    const timesteps = Array.isArray(t) ? t : new Array<number>(batch).fill(t);
    if (timesteps.length !== batch) throw new RangeError(`need ${batch} timesteps, got ${timesteps.length}`);
    const one = this.unets.get(1);
    const two = this.unets.get(2);
    const size = this.latentSize;
    if (batch === 2 && !two) {
      // Only a batch-1 UNet: one call per image.
      const out = new Float32Array(2 * size);
      for (let b = 0; b < 2; b++) {
        const part = await this.predictNoise(latents.subarray(b * size, (b + 1) * size), timesteps[b] as number,
          embeds.subarray(b * textSize, (b + 1) * textSize));
        out.set(part, b * size);
      }
      return out;
    }
    const unet = (batch === 1 ? (one ?? two) : two) as UNetComponent;
    let x = latents;
    let e = embeds;
    let ts = timesteps;
    if (unet.batch === 2 && batch === 1) {
      // Only a batch-2 UNet: the same image twice, keep the first.
      x = new Float32Array(2 * size);
      x.set(latents, 0);
      x.set(latents, size);
      e = new Float32Array(2 * textSize);
      e.set(embeds, 0);
      e.set(embeds, textSize);
      ts = [timesteps[0] as number, timesteps[0] as number];
    }
    const embedsDev = this.uploadEmbeds(unet, e);
    try {
      const out = await this.runUnet(unet, x, ts, embedsDev);
      return batch === unet.batch ? out : out.slice(0, size);
    } finally {
      embedsDev.dispose();
    }
  }

  /** Text embeddings on a UNet's device, outside any scope (the caller disposes them). */
  private uploadEmbeds(unet: UNetComponent, values: Float32Array): tvmjs.Tensor {
    const { tvm } = unet.mod;
    const c = this.constants;
    return tvm.withNewScope(() =>
      tvm.detachFromCurrentScope(upload(unet.mod, values, [unet.batch, c.textLength, c.textHidden], c.dtype)),
    );
  }

  private async runUnet(
    unet: UNetComponent,
    latents: Float32Array,
    timesteps: number[],
    embeds: tvmjs.Tensor,
  ): Promise<Float32Array> {
    const { tvm, device } = unet.mod;
    const c = this.constants;
    const f = this.fn(unet, "unet");
    return this.exclusive(async () => {
      tvm.beginScope();
      try {
        const x = upload(unet.mod, latents, [unet.batch, c.latentChannels, c.latentHeight, c.latentWidth], c.dtype);
        const t = tvm.empty([unet.batch], "float32", device).copyFrom(Float32Array.from(timesteps));
        const out = f(x, t, embeds, unet.params) as tvmjs.Tensor;
        return await download(unet.mod, out);
      } finally {
        tvm.endScope();
      }
    });
  }

  /** The VAE decoder on `z` as given (no scaling): [1, 3, H, W] in about [-1, 1]. */
  async decodeRaw(z: Float32Array): Promise<{ width: number; height: number; chw: Float32Array }> {
    if (z.length !== this.latentSize) throw new RangeError(`latents must hold ${this.latentSize} values, got ${z.length}`);
    const mod = this.vae.mod;
    const c = this.constants;
    const f = this.fn(this.vae, "vae_decode");
    return this.exclusive(async () => {
      mod.tvm.beginScope();
      try {
        const x = upload(mod, z, [1, c.latentChannels, c.latentHeight, c.latentWidth], c.dtype);
        const out = f(x, this.vae.params) as tvmjs.Tensor;
        const [, , height, width] = out.shape as [number, number, number, number];
        return { width, height, chw: await download(mod, out) };
      } finally {
        mod.tvm.endScope();
      }
    });
  }

  /** Final latents -> diffusers' output_type "np" image ([H, W, 3] floats in [0, 1]). */
  async decodeFloat(latents: Float32Array): Promise<FloatImage> {
    const scale = f32(this.constants.vaeScalingFactor);
    const shift = this.constants.vaeShiftFactor;
    const z = new Float32Array(latents.length);
    for (let i = 0; i < z.length; i++) {
      const v = f32((latents[i] as number) / scale);
      z[i] = shift === null ? v : f32(v + shift);
    }
    const { width, height, chw } = await this.decodeRaw(z);
    return { width, height, rgb: postprocess(chw, height, width) };
  }

  /** Final latents -> RGBA bytes (diffusers' output_type "pil" values). */
  async decode(latents: Float32Array): Promise<DecodedImage> {
    return toRgba(await this.decodeFloat(latents));
  }

  /** A scheduler for a run: the given one, or one of `kind` from the model's config. */
  createScheduler(kind?: SchedulerName): Scheduler {
    return createScheduler(this.schedulerConfig, kind);
  }

  async generate(options: GenerateOptions): Promise<GenerateResult> {
    const t0 = performance.now();
    const { steps, guidanceScale, signal, onStep } = options;
    const guided = guidanceScale > 1; // diffusers' do_classifier_free_guidance
    if (guided && options.negativeIds === undefined) {
      throw new InvalidRequestError(
        "guidance_scale > 1 needs the negative prompt's ids (those of \"\" for none)",
        "negative_prompt",
      );
    }
    const scheduler =
      options.scheduler === undefined || typeof options.scheduler === "string"
        ? this.createScheduler(options.scheduler)
        : options.scheduler;
    scheduler.setTimesteps(steps);
    throwIfAborted(signal, 0);

    const cond = await this.encodeText(options.promptIds);
    const uncond = guided ? await this.encodeText(options.negativeIds as number[] | Int32Array) : null;
    const t1 = performance.now();

    const size = this.latentSize;
    const noise = new GaussianNoise(options.seed);
    let latents = initialLatents(noise, size, scheduler.initNoiseSigma);

    // Which UNet calls each step makes: [uncond; cond] in one batch-2 call when there is a
    // batch-2 UNet, else one batch-1 call per branch; without guidance the cond branch only.
    const textSize = this.constants.textLength * this.constants.textHidden;
    const calls: { unet: UNetComponent; embeds: tvmjs.Tensor; images: number }[] = [];
    try {
      const two = this.unets.get(2);
      const one = this.unets.get(1);
      if (guided && two) {
        const both = new Float32Array(2 * textSize);
        both.set(uncond as Float32Array, 0);
        both.set(cond, textSize);
        calls.push({ unet: two, embeds: this.uploadEmbeds(two, both), images: 2 });
      } else if (guided && one) {
        calls.push({ unet: one, embeds: this.uploadEmbeds(one, uncond as Float32Array), images: 1 });
        calls.push({ unet: one, embeds: this.uploadEmbeds(one, cond), images: 1 });
      } else if (one) {
        calls.push({ unet: one, embeds: this.uploadEmbeds(one, cond), images: 1 });
      } else {
        const twice = new Float32Array(2 * textSize);
        twice.set(cond, 0);
        twice.set(cond, textSize);
        calls.push({ unet: two as UNetComponent, embeds: this.uploadEmbeds(two as UNetComponent, twice), images: 1 });
      }

      const stepMs: number[] = [];
      const total = scheduler.timesteps.length;
      const onCpu = this.components().some((c) => c.mod.backend === "wasm-cpu");
      for (let i = 0; i < total; i++) {
        if (onCpu) await nextTask();
        throwIfAborted(signal, i);
        const ts = performance.now();
        const t = scheduler.timesteps[i] as number;
        const input = scheduler.scaleModelInput(latents, i);
        const outputs: Float32Array[] = [];
        for (const call of calls) {
          const batchInput = new Float32Array(call.unet.batch * size);
          for (let b = 0; b < call.unet.batch; b++) batchInput.set(input, b * size);
          const out = await this.runUnet(call.unet, batchInput, new Array<number>(call.unet.batch).fill(t), call.embeds);
          for (let b = 0; b < call.images; b++) outputs.push(out.subarray(b * size, (b + 1) * size));
        }
        const eps = guided
          ? classifierFreeGuidance(outputs[0] as Float32Array, outputs[1] as Float32Array, guidanceScale)
          : (outputs[0] as Float32Array);
        latents = scheduler.step(eps, i, latents, scheduler.needsNoise ? noise : undefined);
        stepMs.push(performance.now() - ts);
        await onStep?.(i + 1, total, latents, scheduler.predictedOriginal ?? latents);
      }
      if (onCpu) await nextTask();
      throwIfAborted(signal, total);
      const t2 = performance.now();
      let image: DecodedImage | undefined;
      let imageFloat: FloatImage | undefined;
      if (options.decode !== false) {
        imageFloat = await this.decodeFloat(latents);
        image = toRgba(imageFloat);
      }
      const t3 = performance.now();
      return {
        latents,
        image,
        imageFloat,
        timesteps: Array.from(scheduler.timesteps),
        timings: { encodeMs: t1 - t0, stepMs, decodeMs: t3 - t2, totalMs: t3 - t0 },
      };
    } finally {
      for (const call of calls) call.embeds.dispose();
    }
  }

  private components(): ImageComponent[] {
    return [this.textEncoder, ...this.unets.values(), this.vae];
  }

  /** Frees the parameters, functions and modules (each once, even when shared). */
  dispose(): void {
    for (const byName of this.fns.values()) for (const f of byName.values()) f.dispose();
    this.fns.clear();
    const components = this.components();
    const params = new Set(components.map((c) => c.params));
    for (const p of params) p.dispose();
    const mods = new Set(components.map((c) => c.mod));
    for (const m of mods) m.dispose();
  }
}

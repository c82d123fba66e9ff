// images.generate on the loaded image model: n images one after another (seeds seed,
// seed + 1, ...), progress and previews counted over all of them, each PNG with its
// parameters, and the usage timings.

import { InvalidRequestError } from "../base/errors";
import { SCHEDULER_LABELS } from "../base/scheduler_labels";
import type { ImageGeneration } from "../image/image_model";
import { encodePng, toBase64 } from "../image/png";
import type { ImageGenerateOptions, ImageGenerateRequest, ImagesResponse } from "./api";
import { validateImageOptions, validateImageRequest, type ImageParams } from "./image_request";
import type { ModelSession } from "./session";

export class ImageService {
  constructor(private readonly session: ModelSession) {}

  /** Checks `request` at once (a bad field fails before the queue), then runs it in turn. */
  generate(request: ImageGenerateRequest, options: ImageGenerateOptions = {}): Promise<ImagesResponse> {
    const params = validateImageRequest(request);
    validateImageOptions(options);
    return this.session.exclusive(() => this.run(params, options));
  }

  private async run(params: ImageParams, options: ImageGenerateOptions): Promise<ImagesResponse> {
    const loaded = this.session.require(params.model, "image");
    const model = loaded.model;
    const { width, height } = model;
    if (params.size !== null && params.size !== `${width}x${height}`) {
      throw new InvalidRequestError(
        `size '${params.size}' is not available: ${model.manifest.id} was built for ${width}x${height} images (rebuild it with --size for another size).`,
        "size",
      );
    }
    const maxSteps = model.manifest.generation.max_steps;
    if (params.steps !== null && params.steps > maxSteps) {
      throw new InvalidRequestError(`steps must be at most ${maxSteps} for ${model.manifest.id}, got ${params.steps}`, "steps");
    }
    const n = params.n;
    // n images one after another, seeds seed, seed + 1, ... (a random first seed when none is given).
    const firstSeed = params.seed ?? Math.floor(Math.random() * 2 ** 32);
    if (!Number.isSafeInteger(firstSeed + n - 1)) {
      throw new InvalidRequestError(`seed + n - 1 must be at most ${Number.MAX_SAFE_INTEGER}, got seed ${firstSeed}`, "seed");
    }
    const { onProgress, onPreview, signal } = options;
    const previewEvery = options.previewEvery ?? (width * height <= 256 * 256 ? 1 : 5);
    const t0 = performance.now();
    const data: Array<{ b64_json: string }> = [];
    const seeds: number[] = [];
    const stepMs: number[] = [];
    let encodeMs = 0;
    let decodeMs = 0;
    let previewMs = 0;
    let pngMs = 0;
    let first: ImageGeneration | null = null;
    for (let index = 0; index < n; index++) {
      const seed = firstSeed + index;
      let result: ImageGeneration;
      try {
        result = await model.generate({
          prompt: params.prompt,
          negativePrompt: params.negativePrompt ?? undefined,
          steps: params.steps ?? undefined,
          guidanceScale: params.guidanceScale ?? undefined,
          seed,
          scheduler: params.scheduler ?? undefined,
          signal,
          onStep: onProgress ? (step, total) => onProgress(index * total + step, n * total) : undefined,
          onPreview: onPreview
            ? (step, total, image) =>
                onPreview({ index, step: index * total + step, total: n * total, ...image })
            : undefined,
          previewEvery,
        });
      } catch (error) {
        throw this.session.runFailure(error);
      }
      first ??= result;
      const t1 = performance.now();
      const sampler = SCHEDULER_LABELS[result.scheduler];
      const lines = [result.prompt];
      if (result.negativePrompt) lines.push(`Negative prompt: ${result.negativePrompt}`);
      lines.push(
        `Steps: ${result.steps}, Sampler: ${sampler}, CFG scale: ${result.guidanceScale}, Seed: ${result.seed}, ` +
          `Size: ${width}x${height}, Model: ${model.manifest.id}`,
      );
      const { image } = result;
      const png = await encodePng(image.rgba, image.width, image.height, {
        parameters: lines.join("\n"),
        Software: "webkiln",
      });
      data.push({ b64_json: toBase64(png) });
      pngMs += performance.now() - t1;
      // The last preview of an image is the image itself (no extra decode); a copy, as the
      // receiver owns it.
      if (onPreview) {
        const total = result.steps;
        onPreview({ index, step: (index + 1) * total, total: n * total, width: image.width, height: image.height,
          rgba: new Uint8ClampedArray(image.rgba) });
      }
      seeds.push(Number(result.seed));
      stepMs.push(...result.timings.stepMs);
      encodeMs += result.timings.encodeMs;
      decodeMs += result.timings.decodeMs;
      previewMs += result.previewMs;
    }
    const result = first as ImageGeneration;
    const t2 = performance.now();
    const stepsMs = stepMs.reduce((a, b) => a + b, 0);
    return {
      created: Math.floor(Date.now() / 1000),
      data,
      usage: {
        input_tokens: result.promptTokens,
        output_tokens: 0,
        total_tokens: result.promptTokens,
        extra: {
          seed: seeds[0] as number,
          seeds,
          steps: result.steps,
          scheduler: result.scheduler,
          guidance_scale: result.guidanceScale,
          width,
          height,
          encode_ms: encodeMs,
          step_ms: stepMs,
          decode_ms: decodeMs,
          preview_ms: previewMs,
          png_ms: pngMs,
          total_ms: t2 - t0,
          steps_per_s: stepsMs > 0 ? (stepMs.length * 1000) / stepsMs : 0,
        },
      },
    };
  }
}

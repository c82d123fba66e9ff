// images.generate requests: each field checked (InvalidRequestError names a bad one)
// before anything runs, and defaults left unresolved (null: the loaded model's).
// What depends on the model (its size, its max_steps) is checked by the image service.

import { InvalidRequestError } from "../base/errors";
import type { SchedulerName } from "../base/manifest";
import type { ImageGenerateOptions, ImageGenerateRequest, ImageSchedulerName } from "./api";

// The request's scheduler names: the API's own, plus "euler_ancestral", an input alias of
// "euler_a" that older callers send. This is the one place the alias is turned into the name.
const SCHEDULER_NAMES: Record<ImageSchedulerName, SchedulerName> = {
  euler: "euler",
  euler_a: "euler_a",
  euler_ancestral: "euler_a",
  dpmpp_2m: "dpmpp_2m",
};

/** Most images one images.generate request makes (they run one after another). */
export const MAX_IMAGES = 8;

export interface ImageParams {
  model: string | null;
  n: number;
  prompt: string;
  negativePrompt: string | null;
  size: string | null;
  seed: number | null;
  steps: number | null;
  guidanceScale: number | null;
  scheduler: SchedulerName | null;
}

const IMAGE_FIELDS = new Set([
  "model",
  "prompt",
  "negative_prompt",
  "n",
  "size",
  "seed",
  "steps",
  "guidance_scale",
  "scheduler",
  "response_format",
]);

/** Checks an images.generate request; InvalidRequestError names the bad field. */
export function validateImageRequest(request: ImageGenerateRequest): ImageParams {
  if (typeof request !== "object" || request === null) throw new InvalidRequestError("the request must be an object");
  for (const key of Object.keys(request)) {
    if (!IMAGE_FIELDS.has(key)) throw new InvalidRequestError(`unknown field '${key}'`, key);
  }
  const given = (v: unknown) => v !== undefined && v !== null;
  if (given(request.model) && typeof request.model !== "string") throw new InvalidRequestError("model must be a string", "model");
  if (typeof request.prompt !== "string") throw new InvalidRequestError("prompt must be a string", "prompt");
  if (given(request.negative_prompt) && typeof request.negative_prompt !== "string") {
    throw new InvalidRequestError("negative_prompt must be a string", "negative_prompt");
  }
  if (given(request.n) && (!Number.isInteger(request.n) || (request.n as number) < 1 || (request.n as number) > MAX_IMAGES)) {
    throw new InvalidRequestError(`n must be an integer from 1 to ${MAX_IMAGES}, got ${JSON.stringify(request.n)}`, "n");
  }
  if (given(request.size) && (typeof request.size !== "string" || !/^\d+x\d+$/.test(request.size))) {
    throw new InvalidRequestError(`size must be "WIDTHxHEIGHT" (e.g. "512x512"), got ${JSON.stringify(request.size)}`, "size");
  }
  if (given(request.seed) && (!Number.isSafeInteger(request.seed) || (request.seed as number) < 0)) {
    throw new InvalidRequestError(`seed must be an integer >= 0, got ${JSON.stringify(request.seed)}`, "seed");
  }
  if (given(request.steps) && (!Number.isInteger(request.steps) || (request.steps as number) < 1)) {
    throw new InvalidRequestError(`steps must be an integer >= 1, got ${JSON.stringify(request.steps)}`, "steps");
  }
  const g = request.guidance_scale;
  if (given(g) && (typeof g !== "number" || !Number.isFinite(g) || g < 0)) {
    throw new InvalidRequestError(`guidance_scale must be a number >= 0, got ${JSON.stringify(g)}`, "guidance_scale");
  }
  let scheduler: SchedulerName | null = null;
  if (given(request.scheduler)) {
    const kind = typeof request.scheduler === "string" ? SCHEDULER_NAMES[request.scheduler] : undefined;
    if (!kind || !Object.prototype.hasOwnProperty.call(SCHEDULER_NAMES, request.scheduler as string)) {
      throw new InvalidRequestError(
        `unknown scheduler ${JSON.stringify(request.scheduler)} (expected "euler", "euler_a" or "dpmpp_2m")`,
        "scheduler",
      );
    }
    scheduler = kind;
  }
  if (given(request.response_format) && request.response_format !== "b64_json") {
    throw new InvalidRequestError(
      `response_format ${JSON.stringify(request.response_format)} is not supported: only "b64_json" (images are made in the browser; there is no URL to serve them from)`,
      "response_format",
    );
  }
  return {
    model: request.model ?? null,
    n: request.n ?? 1,
    prompt: request.prompt,
    negativePrompt: request.negative_prompt ?? null,
    size: request.size ?? null,
    seed: request.seed ?? null,
    steps: request.steps ?? null,
    guidanceScale: g ?? null,
    scheduler,
  };
}

/** Checks images.generate's options (the part that is not the request). */
export function validateImageOptions(options: ImageGenerateOptions): void {
  const every = options.previewEvery;
  if (every !== undefined && (!Number.isInteger(every) || every < 1)) {
    throw new InvalidRequestError(`previewEvery must be an integer >= 1, got ${JSON.stringify(every)}`, "previewEvery");
  }
}

// The engine's public interface: one shape whether the engine runs in this page
// (createInPageEngine()) or in a Web Worker (createEngine()). Request and
// response shapes follow OpenAI's Chat Completions API so existing code ports over.

import type { BackendRequest } from "../base/backend_choice";
import type { SchedulerName } from "../base/manifest_types";
import type { CachedModel, ModelInfo, StorageInfo } from "../base/types";
import type { LoadProgress } from "../storage/loader";

// Types the lower layers share (storage lists cached models by ModelInfo) live in base/.
export type { CachedModel, ImageDefaults, ModelInfo, StorageInfo } from "../base/types";
export type { SchedulerName } from "../base/manifest_types";

export type Role = "system" | "user" | "assistant";

export interface ChatMessage {
  role: Role;
  content: string;
}

export interface ChatCompletionRequest {
  /** A model id from listModels(); default: the loaded model. */
  model?: string;
  messages: ChatMessage[];
  stream?: boolean;
  max_tokens?: number | null;
  /** OpenAI's newer name for max_tokens; either may be given, not both. */
  max_completion_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
  stream_options?: { include_usage?: boolean } | null;
  n?: 1 | null;
  /**
   * webkiln extension (as vLLM's): further variables for the model's chat template, as
   * transformers' `apply_chat_template(..., **kwargs)` takes them, e.g. `{enable_thinking: false}`
   * for Qwen3. The template's own variables (messages, add_generation_prompt, bos_token,
   * eos_token) cannot be set here.
   */
  chat_template_kwargs?: Record<string, unknown> | null;
}

export type FinishReason = "stop" | "length" | "abort";

export interface CompletionUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** webkiln additions: prompt tokens actually computed (the rest came from the KV cache), speeds. */
  extra: {
    prefilled_tokens: number;
    cached_prompt_tokens: number;
    prefill_tokens_per_s: number;
    decode_tokens_per_s: number;
  };
}

export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  choices: Array<{
    index: 0;
    message: { role: "assistant"; content: string };
    finish_reason: FinishReason;
    logprobs: null;
  }>;
  usage: CompletionUsage;
}

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  choices: Array<{
    index: 0;
    delta: { role?: "assistant"; content?: string };
    finish_reason: FinishReason | null;
    logprobs: null;
  }>;
  /** Only on the last chunk, and only with stream_options.include_usage (null on the others then). */
  usage?: CompletionUsage | null;
}

export interface RequestOptions {
  signal?: AbortSignal;
}

/** The download's byte and file counts (storage's LoadProgress), plus what the engine adds. */
export interface LoadProgressEvent
  extends Pick<LoadProgress, "loadedBytes" | "totalBytes" | "filesDone" | "totalFiles" | "cachedBytes" | "networkBytes"> {
  model: string;
  stage: "download" | "initialize" | "ready";
  /** Seconds left at the current network rate; null when unknown. */
  etaSeconds: number | null;
  /** One line for a status bar. */
  text: string;
}

export interface LoadedModel {
  id: string;
  /** What the model does: chat.completions ("chat") or images.generate ("image"). */
  task?: "chat" | "image";
  /** The backend that runs it: "webgpu-f16", "webgpu-f32" or "wasm-cpu". */
  backend: string;
  /** Where that backend runs: WebGPU or the CPU (WebAssembly SIMD). */
  device: "webgpu" | "cpu";
  /**
   * Why that backend was chosen here, in one line ("the only WebGPU adapter ... is a CPU
   * fallback ..."); on the CPU, also how many threads run and why ("...; 2 threads (cross-origin isolated)").
   */
  backendReason: string;
  /** CPU threads running the model (wasm-cpu only): more than 1 only where the page is cross-origin isolated. */
  threads?: number;
  /**
   * Parallel tasks the helper threads have run since the model loaded (wasm-cpu only; 0 on
   * one thread): read it again after a request to see that the threads worked.
   */
  threadTasks?: number;
  manifestUrl: string;
  contextWindow: number;
  millis: number;
}

export interface LoadModelOptions {
  /**
   * "auto" (default): WebGPU on a real GPU, the CPU backend (wasm-cpu) where WebGPU is
   * missing, is a CPU fallback adapter (SwiftShader) or the model does not fit the GPU;
   * "webgpu" or "wasm-cpu" to insist; or a backend's name ("webgpu-f16", "webgpu-f32").
   */
  backend?: BackendRequest;
  /**
   * Threads for the CPU backend (wasm-cpu): default, the device's cores (at most 8) where the
   * page is cross-origin isolated (COOP/COEP headers: `webkiln serve --isolate`) and the
   * engine runs in its Worker (createEngine()); 1 otherwise. LoadedModel says what ran.
   */
  threads?: number;
  onProgress?: (event: LoadProgressEvent) => void;
  signal?: AbortSignal;
}

// ------------------------------------------------------------------ images
// Request and response shapes follow OpenAI's Images API (images.generate).

/**
 * A request's scheduler: Euler, Euler ancestral ("euler_a"), DPM++ 2M. "euler_ancestral" is
 * accepted as an input alias of "euler_a" (older callers used it); responses always say "euler_a".
 */
export type ImageSchedulerName = SchedulerName | "euler_ancestral";

export interface ImageGenerateRequest {
  /** A model id; default: the loaded model (which must be an image model). */
  model?: string;
  prompt: string;
  negative_prompt?: string | null;
  /**
   * Images per request, 1 to 8 (default 1). They are made one after another with seeds
   * seed, seed + 1, ..., seed + n - 1 (each PNG's "parameters" chunk names its own seed).
   */
  n?: number | null;
  /** "WxH": must be the size the model was built for (default: that size). */
  size?: string | null;
  seed?: number | null;
  /** Default: the model's (25; 1 for Turbo models), at most its max_steps. */
  steps?: number | null;
  /** Classifier-free guidance scale; default: the model's (7.5; 0 for Turbo models). */
  guidance_scale?: number | null;
  /** Default: the model's own scheduler class when supported, else "euler". */
  scheduler?: ImageSchedulerName | null;
  /** Only "b64_json" (there is no server to host a URL). */
  response_format?: "b64_json" | null;
}

/** A preview of an image being made (ImageGenerateOptions.onPreview). */
export interface ImagePreview {
  /** Which image of the request (0-based; n > 1 makes several one after another). */
  index: number;
  /** After which step, counted as onProgress counts (over all n images: 1 .. n x steps). */
  step: number;
  /** n x steps. */
  total: number;
  width: number;
  height: number;
  /**
   * RGBA bytes, row-major (ImageData's layout): the VAE decode of the clean latents the
   * model predicted at this step (the scheduler's pred_original_sample), rounded as the
   * final image is. The preview after an image's last step is that image.
   * Yours to keep (transferred from the Worker, not shared with the engine).
   */
  rgba: Uint8ClampedArray;
}

export interface ImageGenerateOptions extends RequestOptions {
  /**
   * After each denoising step: 1-based step and the number of steps, counted over all n
   * images (image i's step s is reported as i x steps + s, of n x steps).
   */
  onProgress?: (step: number, total: number) => void;
  /**
   * Opt-in previews: after every previewEvery-th step of each image and after its last
   * step. Each intermediate preview costs one VAE decode (timed in usage.extra.preview_ms; sizeable at
   * 512x512); the last one of an image is the final decode, free.
   */
  onPreview?: (preview: ImagePreview) => void;
  /** Steps between previews, an integer >= 1; default 1 up to 256x256 pixels, else 5. */
  previewEvery?: number;
}

export interface ImageUsage {
  /** Prompt tokens fed to the text encoder (CLIP: at most 75). */
  input_tokens: number;
  output_tokens: number;
  total_tokens: number;
  /** webkiln additions: what was run and how long each part took. */
  extra: {
    /** The first image's seed (seeds[0]). */
    seed: number;
    /** Each image's seed: seed, seed + 1, ..., seed + n - 1. */
    seeds: number[];
    /** Steps per image. */
    steps: number;
    scheduler: SchedulerName;
    guidance_scale: number;
    width: number;
    height: number;
    /** Text encoding, final VAE decodes and PNG encoding: summed over the n images. */
    encode_ms: number;
    /** Every denoising step of every image, in order (n x steps entries; previews not included). */
    step_ms: number[];
    decode_ms: number;
    /** VAE decodes for intermediate previews (0 without onPreview). */
    preview_ms: number;
    png_ms: number;
    total_ms: number;
    steps_per_s: number;
  };
}

export interface ImagesResponse {
  created: number;
  /** n PNG files, base64; each carries its generation parameters in a "parameters" text chunk (A1111 style). */
  data: Array<{ b64_json: string }>;
  usage?: ImageUsage;
}

/** Events the engine reports outside any one request. */
export type EngineEvent =
  | { type: "device-lost"; message: string; model: string | null }
  | { type: "corrupt-cache-entry"; model: string; path: string; expectedSha256: string; actualSha256: string };

export interface Engine {
  chat: {
    completions: {
      create(request: ChatCompletionRequest & { stream: true }, options?: RequestOptions): Promise<AsyncIterable<ChatCompletionChunk>>;
      create(request: ChatCompletionRequest & { stream?: false | null }, options?: RequestOptions): Promise<ChatCompletion>;
      create(request: ChatCompletionRequest, options?: RequestOptions): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>>;
    };
  };
  images: {
    generate(request: ImageGenerateRequest, options?: ImageGenerateOptions): Promise<ImagesResponse>;
  };
  /** Models in `indexUrl` (default: models/index.json next to the page) plus custom manifest URLs. */
  listModels(options?: { indexUrl?: string; extraManifestUrls?: string[] }): Promise<ModelInfo[]>;
  /** Loads a model by id (from the last listModels()) or manifest URL; unloads the previous one. */
  loadModel(model: string, options?: LoadModelOptions): Promise<LoadedModel>;
  unloadModel(): Promise<void>;
  loadedModel(): Promise<LoadedModel | null>;
  /** Forgets the conversation held in the KV cache. */
  resetChat(): Promise<void>;
  cache: {
    list(models?: ModelInfo[]): Promise<CachedModel[]>;
    delete(model: string): Promise<void>;
    clear(): Promise<void>;
    storage(): Promise<StorageInfo>;
  };
  onEvent(listener: (event: EngineEvent) => void): () => void;
  /** Ends the worker (if any) and frees the GPU. */
  terminate(): void;
}

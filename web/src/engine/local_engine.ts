// The engine itself: the Engine interface implemented on this thread. In a Worker it
// sits behind worker_entry.ts; in a page it is used directly (createInPageEngine() in in_page.ts).

import { parseManifest, type ModelIndexEntry, type SchedulerName } from "../base/manifest";
import { type ImageGeneration, ImageModel } from "../image/image_model";
import { encodePng, toBase64 } from "../image/png";
import { ChatModel } from "../llm/chat_model";
import { ChatTemplate } from "../llm/chat_template";
import {
  clearCachedModels,
  deleteCachedModel,
  fetchJsonCached,
  formatBytes,
  listCachedModels,
  storageInfo,
  type LoadProgress,
} from "../storage";
import type {
  CachedModel,
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionRequest,
  CompletionUsage,
  Engine,
  EngineEvent,
  FinishReason,
  ImageGenerateOptions,
  ImageGenerateRequest,
  ImageSchedulerName,
  ImagesResponse,
  LoadedModel,
  LoadModelOptions,
  LoadProgressEvent,
  ModelInfo,
  RequestOptions,
  StorageInfo,
} from "./api";
import { Channel } from "./channel";
import {
  ContextWindowError,
  DeviceLostError,
  InvalidRequestError,
  ModelLoadError,
  ModelNotLoadedError,
  OutOfMemoryError,
} from "../base/errors";
import {
  completionId,
  makeChunk,
  makeCompletion,
  makeUsageChunk,
  StopStringMatcher,
  validateChatRequest,
  type ChatParams,
} from "./openai";
import { createWebGPUDevice, type GPUContext } from "../base/tvm";

type Loaded =
  | { task: "chat"; model: ChatModel; template: ChatTemplate; gpu: GPUContext; info: LoadedModel }
  | { task: "image"; model: ImageModel; gpu: GPUContext; info: LoadedModel };

function infoFromManifest(manifest: ReturnType<typeof parseManifest>, manifestUrl: string): ModelInfo {
  return {
    id: manifest.id,
    task: manifest.task,
    manifestUrl,
    name: manifest.name,
    architecture: manifest.architecture,
    quantization: manifest.quantization,
    download_bytes: manifest.files.reduce((n, f) => n + f.size, 0),
    memory_bytes: manifest.memory.total_bytes,
    context_window: manifest.task === "chat" ? manifest.context_window : undefined,
    backends: Object.fromEntries(
      Object.entries(manifest.backends).map(([k, v]) => [k, { required_features: v.required_features }]),
    ),
  };
}

/** Progress of a load, as one event: bytes, files, and an ETA from the network rate so far. */
class ProgressTracker {
  private readonly started = performance.now();

  constructor(
    private readonly model: string,
    private readonly emit?: (event: LoadProgressEvent) => void,
  ) {}

  files(p: LoadProgress): void {
    const seconds = (performance.now() - this.started) / 1000;
    const rate = seconds > 0 ? p.networkBytes / seconds : 0;
    const left = p.totalBytes - p.loadedBytes;
    const etaSeconds = p.networkBytes > 0 && rate > 0 ? left / rate : null;
    const from = p.networkBytes > 0 ? "Downloading" : "Reading from cache";
    const eta = etaSeconds !== null && left > 0 ? `, about ${Math.ceil(etaSeconds)} s left` : "";
    this.send({
      stage: "download",
      loadedBytes: p.loadedBytes,
      totalBytes: p.totalBytes,
      filesDone: p.filesDone,
      totalFiles: p.totalFiles,
      cachedBytes: p.cachedBytes,
      networkBytes: p.networkBytes,
      etaSeconds,
      text: `${from} ${this.model}: ${formatBytes(p.loadedBytes)} of ${formatBytes(p.totalBytes)} (${p.filesDone}/${p.totalFiles} files)${eta}`,
    });
  }

  stage(stage: "initialize" | "ready", last: LoadProgressEvent | null, text: string): void {
    this.send({
      stage,
      loadedBytes: last?.loadedBytes ?? 0,
      totalBytes: last?.totalBytes ?? 0,
      filesDone: last?.filesDone ?? 0,
      totalFiles: last?.totalFiles ?? 0,
      cachedBytes: last?.cachedBytes ?? 0,
      networkBytes: last?.networkBytes ?? 0,
      etaSeconds: 0,
      text,
    });
  }

  last: LoadProgressEvent | null = null;

  private send(event: Omit<LoadProgressEvent, "model">): void {
    const full = { model: this.model, ...event };
    this.last = full;
    this.emit?.(full);
  }
}

interface RunSink {
  begin?: (id: string, created: number, model: string) => void;
  delta: (text: string) => void;
  end: (end: { finishReason: FinishReason; usage: CompletionUsage; id: string; created: number; model: string }) => void;
}

export class LocalEngine implements Engine {
  private loaded: Loaded | null = null;
  private lostMessage: string | null = null;
  private releasing = false;
  private readonly known = new Map<string, ModelInfo>();
  private readonly listeners = new Set<(event: EngineEvent) => void>();
  // One KV cache, one GPU queue: requests and loads run one at a time, in order.
  private tail: Promise<unknown> = Promise.resolve();

  constructor(private readonly baseUrl: string = globalThis.location?.href ?? "") {}

  private exclusive<T>(task: () => Promise<T>): Promise<T> {
    const run = this.tail.then(task, task);
    this.tail = run.catch(() => undefined);
    return run;
  }

  private emit(event: EngineEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (error) {
        console.error("webkiln: an engine event listener threw", error);
      }
    }
  }

  onEvent(listener: (event: EngineEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  // ------------------------------------------------------------------ models

  async listModels(options: { indexUrl?: string; extraManifestUrls?: string[] } = {}): Promise<ModelInfo[]> {
    const indexUrl = new URL(options.indexUrl ?? "models/index.json", this.baseUrl).href;
    const models: ModelInfo[] = [];
    let index: { models?: ModelIndexEntry[] } = {};
    try {
      index = (await fetchJsonCached(indexUrl)).data as { models?: ModelIndexEntry[] };
    } catch (error) {
      // No index (nothing built, or offline before a first visit): custom URLs may still work.
      if (!options.extraManifestUrls?.length) throw error;
    }
    for (const e of index.models ?? []) {
      models.push({
        id: e.id,
        task: e.task,
        manifestUrl: new URL(e.manifest, indexUrl).href,
        name: e.name,
        architecture: e.architecture,
        quantization: e.quantization,
        download_bytes: e.download_bytes,
        memory_bytes: e.memory_bytes,
        context_window: e.context_window,
        backends: e.backends ?? {},
      });
    }
    for (const url of options.extraManifestUrls ?? []) {
      const manifestUrl = new URL(url, this.baseUrl).href;
      const manifest = parseManifest((await fetchJsonCached(manifestUrl)).data, manifestUrl);
      models.push(infoFromManifest(manifest, manifestUrl));
    }
    for (const m of models) this.known.set(m.id, m);
    return models;
  }

  private resolveModel(model: string): string {
    const known = this.known.get(model);
    if (known) return known.manifestUrl;
    if (model.endsWith(".json") || model.includes("/")) return new URL(model, this.baseUrl).href;
    throw new ModelLoadError(
      `Unknown model '${model}'. Call listModels() first, or pass the URL of the model's manifest.json.`,
    );
  }

  loadModel(model: string, options: LoadModelOptions = {}): Promise<LoadedModel> {
    return this.exclusive(async () => {
      const manifestUrl = this.resolveModel(model);
      this.release();
      this.lostMessage = null;
      const started = performance.now();
      const gpu = await createWebGPUDevice();
      const tracker = new ProgressTracker(model, options.onProgress);
      const loadOptions = {
        backend: options.backend,
        gpu,
        signal: options.signal,
        onProgress: (p: LoadProgress) => {
          tracker.files(p);
          if (p.filesDone === p.totalFiles) tracker.stage("initialize", tracker.last, `Preparing ${model} on the GPU…`);
        },
        onCorruptCacheEntry: (entry: { path: string; expectedSha256: string; actualSha256: string }) =>
          this.emit({
            type: "corrupt-cache-entry",
            model,
            path: entry.path,
            expectedSha256: entry.expectedSha256,
            actualSha256: entry.actualSha256,
          }),
      };
      let loaded: Loaded | undefined;
      gpu.device.pushErrorScope("out-of-memory");
      try {
        // The manifest says what kind of model it is (fetchJsonCached: the loaders read it again from memory/cache).
        const manifest = parseManifest((await fetchJsonCached(manifestUrl, { signal: options.signal })).data, manifestUrl);
        if (manifest.task === "image") {
          const image = await ImageModel.load(manifestUrl, loadOptions);
          loaded = {
            task: "image",
            model: image,
            gpu,
            info: {
              id: image.manifest.id,
              task: "image",
              backend: image.backend,
              manifestUrl,
              contextWindow: 0,
              millis: 0,
            },
          };
        } else {
          const chat = await ChatModel.load(manifestUrl, loadOptions);
          loaded = {
            task: "chat",
            model: chat,
            template: new ChatTemplate(chat.manifest, chat.tokenizer),
            gpu,
            info: {
              id: chat.manifest.id,
              task: "chat",
              backend: chat.backend,
              manifestUrl,
              contextWindow: chat.manifest.context_window,
              millis: 0,
            },
          };
        }
      } catch (error) {
        gpu.device.destroy();
        throw error;
      } finally {
        const oom = await gpu.device.popErrorScope().catch(() => null);
        if (oom) {
          loaded?.model.dispose();
          gpu.device.destroy();
          throw new OutOfMemoryError(
            `The GPU ran out of memory loading ${model} (${oom.message}). Close other GPU-heavy tabs, or choose a smaller model or quantization.`,
          );
        }
      }
      if (!loaded) throw new ModelLoadError(`${model} did not load`); // unreachable: load threw
      loaded.info.millis = performance.now() - started;
      const info = loaded.info;
      const current = loaded;
      this.loaded = current;
      void gpu.device.lost.then((lost) => this.onDeviceLost(current, lost));
      tracker.stage("ready", tracker.last, `${info.id} is ready (${info.backend})`);
      return info;
    });
  }

  private onDeviceLost(loaded: Loaded, lost: GPUDeviceLostInfo): void {
    if (this.releasing || this.loaded !== loaded) return; // we destroyed it ourselves
    this.lostMessage = lost.message || `reason: ${lost.reason}`;
    this.loaded = null;
    try {
      loaded.model.dispose();
    } catch {
      // Freeing objects of a dead device may fail; they are gone either way.
    }
    this.emit({ type: "device-lost", message: this.lostMessage, model: loaded.info.id });
  }

  /** Frees the loaded model and its device. */
  private release(): void {
    const loaded = this.loaded;
    if (!loaded) return;
    this.loaded = null;
    this.releasing = true;
    try {
      loaded.model.dispose();
      loaded.gpu.device.destroy();
    } finally {
      this.releasing = false;
    }
  }

  unloadModel(): Promise<void> {
    return this.exclusive(async () => this.release());
  }

  async loadedModel(): Promise<LoadedModel | null> {
    return this.loaded?.info ?? null;
  }

  resetChat(): Promise<void> {
    return this.exclusive(async () => {
      if (this.loaded?.task === "chat") this.loaded.model.reset();
    });
  }

  /** Test hook: destroys the GPU device as a driver reset would. */
  async simulateDeviceLoss(): Promise<void> {
    this.loaded?.gpu.device.destroy();
  }

  private require(model: string | null, task: "chat"): Extract<Loaded, { task: "chat" }>;
  private require(model: string | null, task: "image"): Extract<Loaded, { task: "image" }>;
  private require(model: string | null, task: "chat" | "image"): Loaded {
    if (!this.loaded) {
      if (this.lostMessage !== null) {
        throw new DeviceLostError(
          `The GPU device was lost (${this.lostMessage}), so the model was unloaded. Load it again with loadModel(); no page reload is needed.`,
        );
      }
      throw new ModelNotLoadedError("No model is loaded. Call loadModel() with a model id from listModels() first.");
    }
    if (model !== null && model !== this.loaded.info.id) {
      throw new ModelNotLoadedError(
        `The request asks for model '${model}' but '${this.loaded.info.id}' is loaded. Load it with loadModel('${model}') first.`,
      );
    }
    if (this.loaded.task !== task) {
      const id = this.loaded.info.id;
      throw new ModelNotLoadedError(
        task === "chat"
          ? `'${id}' is an image model: use images.generate() with it, or load a chat model with loadModel() for chat.completions.`
          : `'${id}' is a chat model: use chat.completions.create() with it, or load an image model with loadModel() for images.generate().`,
      );
    }
    return this.loaded;
  }

  // ------------------------------------------------------------------ chat

  readonly chat = {
    completions: {
      create: ((request: ChatCompletionRequest, options: RequestOptions = {}) =>
        this.createCompletion(request, options)) as Engine["chat"]["completions"]["create"],
    },
  };

  private async createCompletion(
    request: ChatCompletionRequest,
    options: RequestOptions,
  ): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>> {
    const params = validateChatRequest(request);
    if (!params.stream) {
      let content = "";
      const ends: Parameters<RunSink["end"]>[0][] = [];
      await this.exclusive(() =>
        this.run(params, options.signal, { delta: (text) => (content += text), end: (end) => ends.push(end) }),
      );
      const f = ends[0];
      if (!f) throw new Error("generation ended without a result"); // run() always calls end()
      return makeCompletion(f.id, f.created, f.model, content, f.finishReason, f.usage);
    }
    const channel = new Channel<ChatCompletionChunk>();
    const inner = new AbortController();
    const forward = () => inner.abort(options.signal?.reason);
    options.signal?.addEventListener("abort", forward, { once: true });
    channel.onCancel = () => inner.abort();
    // Errors before the first token (no model, context too long) reject create() itself.
    let started: (() => void) | undefined;
    let failedEarly: ((error: unknown) => void) | undefined;
    const firstChunk = new Promise<void>((resolve, reject) => {
      started = resolve;
      failedEarly = reject;
    });
    let sentRole = false;
    const meta = { id: "", created: 0, model: "" };
    void this.exclusive(() =>
      this.run(params, inner.signal, {
        begin: (id, created, model) => {
          Object.assign(meta, { id, created, model });
          channel.push(makeChunk(id, created, model, { role: "assistant", content: "" }, null, params.includeUsage ? null : undefined));
          sentRole = true;
          started?.();
        },
        delta: (text) => {
          if (text) channel.push(makeChunk(meta.id, meta.created, meta.model, { content: text }, null, params.includeUsage ? null : undefined));
        },
        end: ({ finishReason, usage }) => {
          channel.push(makeChunk(meta.id, meta.created, meta.model, {}, finishReason, params.includeUsage ? null : undefined));
          if (params.includeUsage) channel.push(makeUsageChunk(meta.id, meta.created, meta.model, usage));
        },
      }),
    ).then(
      () => channel.close(),
      (error) => {
        if (sentRole) channel.fail(error);
        else failedEarly?.(error);
      },
    ).finally(() => options.signal?.removeEventListener("abort", forward));
    await firstChunk;
    return channel;
  }

  /** One completion: template, tokenize, generate with stop strings; reports through `sink`. */
  private async run(
    params: ChatParams,
    signal: AbortSignal | undefined,
    sink: RunSink,
  ): Promise<void> {
    const loaded = this.require(params.model, "chat");
    const { model, template } = loaded;
    const manifest = model.manifest;
    const prompt = Array.from(model.tokenizer.encode(template.render(params.messages)));
    const room = manifest.context_window - prompt.length;
    if (room < 1) {
      throw new ContextWindowError(
        `The conversation is ${prompt.length} tokens but ${manifest.id}'s context window is ${manifest.context_window}, leaving no room for a reply. Start a new conversation or remove earlier messages.`,
      );
    }
    const requested = params.maxTokens ?? manifest.generation.max_tokens;
    const id = completionId();
    const created = Math.floor(Date.now() / 1000);
    sink.begin?.(id, created, manifest.id);

    const matcher = new StopStringMatcher(params.stop);
    const stopper = new AbortController();
    const onAbort = () => stopper.abort(signal?.reason);
    if (signal?.aborted) stopper.abort(signal.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    let result;
    try {
      result = await model.generate(prompt, {
        maxTokens: Math.min(requested, room),
        temperature: params.temperature ?? undefined,
        topP: params.topP ?? undefined,
        seed: params.seed ?? undefined,
        signal: stopper.signal,
        onToken: (_token, text) => {
          const out = matcher.push(text);
          if (out) sink.delta(out);
          if (matcher.stopped) stopper.abort();
        },
      });
    } catch (error) {
      if (this.lostMessage !== null) {
        throw new DeviceLostError(
          `The GPU device was lost during generation (${this.lostMessage ?? "unknown reason"}). Load the model again with loadModel().`,
        );
      }
      throw error;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
    const rest = matcher.flush();
    if (rest) sink.delta(rest);
    const finishReason: FinishReason = matcher.stopped ? "stop" : result.finishReason;
    const completion = result.tokens.length;
    const cached = result.promptTokens - result.prefilledTokens;
    const usage: CompletionUsage = {
      prompt_tokens: result.promptTokens,
      completion_tokens: completion,
      total_tokens: result.promptTokens + completion,
      extra: {
        prefilled_tokens: result.prefilledTokens,
        cached_prompt_tokens: cached,
        prefill_tokens_per_s: result.prefillMillis > 0 ? (result.prefilledTokens * 1000) / result.prefillMillis : 0,
        decode_tokens_per_s:
          result.decodeMillis > 0 && completion > 1 ? ((completion - 1) * 1000) / result.decodeMillis : 0,
      },
    };
    sink.end({ finishReason, usage, id, created, model: manifest.id });
  }

  // ------------------------------------------------------------------ images

  readonly images = {
    generate: (request: ImageGenerateRequest, options: ImageGenerateOptions = {}): Promise<ImagesResponse> => {
      const params = validateImageRequest(request);
      const every = options.previewEvery;
      if (every !== undefined && (!Number.isInteger(every) || every < 1)) {
        throw new InvalidRequestError(`previewEvery must be an integer >= 1, got ${JSON.stringify(every)}`, "previewEvery");
      }
      return this.exclusive(() => this.generateImage(params, options));
    },
  };

  private async generateImage(params: ImageParams, options: ImageGenerateOptions): Promise<ImagesResponse> {
    const loaded = this.require(params.model, "image");
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
        if (this.lostMessage !== null) {
          throw new DeviceLostError(
            `The GPU device was lost during generation (${this.lostMessage}). Load the model again with loadModel().`,
          );
        }
        throw error;
      }
      first ??= result;
      const t1 = performance.now();
      const sampler = SAMPLER_NAMES[result.scheduler];
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

  // ------------------------------------------------------------------ storage

  readonly cache = {
    list: async (models?: ModelInfo[]): Promise<CachedModel[]> => listCachedModels(models ?? [...this.known.values()]),
    delete: async (model: string): Promise<void> => {
      const info = this.known.get(model);
      if (!info) throw new ModelLoadError(`Unknown model '${model}'. Call listModels() first.`);
      await deleteCachedModel(info, [...this.known.values()]);
    },
    clear: async (): Promise<void> => {
      await clearCachedModels();
    },
    storage: async (): Promise<StorageInfo> => storageInfo(),
  };

  terminate(): void {
    this.release();
  }
}

// ------------------------------------------------------------------ image requests

const SAMPLER_NAMES: Record<SchedulerName, string> = { euler: "Euler", euler_a: "Euler a", dpmpp_2m: "DPM++ 2M" };
const SCHEDULER_KINDS: Record<ImageSchedulerName, SchedulerName> = {
  euler: "euler",
  euler_a: "euler_a",
  euler_ancestral: "euler_a",
  dpmpp_2m: "dpmpp_2m",
};

/** Most images one images.generate request makes (they run one after another). */
export const MAX_IMAGES = 8;

interface ImageParams {
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
    const kind = typeof request.scheduler === "string" ? SCHEDULER_KINDS[request.scheduler] : undefined;
    if (!kind || !Object.prototype.hasOwnProperty.call(SCHEDULER_KINDS, request.scheduler as string)) {
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

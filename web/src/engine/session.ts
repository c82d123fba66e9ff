// The one loaded model and its GPU device: loading (with progress and the device's
// out-of-memory scope), unloading, and what happens when the device is lost (the model
// is dropped, an event says so, and later requests get a DeviceLostError that says to
// reload). Requests and loads run one at a time, in order: one KV cache, one GPU queue.

import { DeviceLostError, InvalidRequestError, ModelLoadError, ModelNotLoadedError, OutOfMemoryError } from "../base/errors";
import { parseManifest } from "../base/manifest";
import { probeWebGPU, type GPUContext, type WebGPUProbe } from "../base/tvm";
import { ImageModel } from "../image/image_model";
import { ChatModel } from "../llm/chat_model";
import { ChatTemplate } from "../llm/chat_template";
import { fetchJsonCached, type LoadProgress } from "../storage";
import type { EngineEvent, LoadedModel, LoadModelOptions } from "./api";
import { ProgressTracker } from "./progress";

// `gpu`: the WebGPU device the model runs on; null on the CPU backend.
export type LoadedChat = { task: "chat"; model: ChatModel; template: ChatTemplate; gpu: GPUContext | null; info: LoadedModel };
export type LoadedImage = { task: "image"; model: ImageModel; gpu: GPUContext | null; info: LoadedModel };
type Loaded = LoadedChat | LoadedImage;

export class ModelSession {
  private loaded: Loaded | null = null;
  /** Why the device was lost, while no model has been loaded since; null otherwise. */
  private lostMessage: string | null = null;
  private releasing = false;
  private tail: Promise<unknown> = Promise.resolve();

  /** `threadHelperUrl`: the script CPU helper threads start (LoadCompiledOptions.threadHelperUrl); none: one thread. */
  constructor(
    private readonly emit: (event: EngineEvent) => void,
    private readonly threadHelperUrl?: string,
  ) {}

  /** Runs `task` after every task queued before it. */
  exclusive<T>(task: () => Promise<T>): Promise<T> {
    const run = this.tail.then(task, task);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Loads the model at `manifestUrl` (`model`: the name the caller used), after freeing the current one. */
  async load(model: string, manifestUrl: string, options: LoadModelOptions): Promise<LoadedModel> {
    // Checked before anything is freed: a bad call leaves the loaded model as it was.
    const threads = options.threads;
    if (threads !== undefined && (!Number.isInteger(threads) || threads < 1)) {
      throw new InvalidRequestError(
        `Invalid request: 'threads' must be a positive whole number of CPU threads, not ${JSON.stringify(threads)}`,
        "threads",
      );
    }
    this.release();
    this.lostMessage = null;
    const started = performance.now();
    const backend = options.backend ?? "auto";
    // Probed before the choice (which reads the adapter) and kept to watch for device loss.
    const webgpu: WebGPUProbe = backend === "wasm-cpu" ? { gpu: null, unavailable: "not needed" } : await probeWebGPU();
    const probed = webgpu.gpu;
    const tracker = new ProgressTracker(model, options.onProgress);
    const loadOptions = {
      backend,
      webgpu,
      threads: options.threads,
      threadHelperUrl: this.threadHelperUrl,
      signal: options.signal,
      onProgress: (p: LoadProgress) => {
        tracker.files(p);
        if (p.filesDone === p.totalFiles) tracker.stage("initialize", tracker.last, `Preparing ${model}…`);
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
    probed?.device.pushErrorScope("out-of-memory");
    try {
      // The manifest says what kind of model it is (the loaders read it again from memory/cache).
      const manifest = parseManifest((await fetchJsonCached(manifestUrl, { signal: options.signal })).data, manifestUrl);
      if (manifest.task === "image") {
        const image = await ImageModel.load(manifestUrl, loadOptions);
        const device = image.manifest.backends[image.backend]!.device;
        loaded = {
          task: "image",
          model: image,
          gpu: device === "webgpu" ? probed : null,
          info: {
            id: image.manifest.id,
            task: "image",
            backend: image.backend,
            device,
            backendReason: image.backendReason,
            ...(image.threads ? { threads: image.threads.count } : {}),
            manifestUrl,
            contextWindow: 0,
            millis: 0,
          },
        };
      } else {
        const chat = await ChatModel.load(manifestUrl, loadOptions);
        const device = chat.manifest.backends[chat.backend]!.device;
        loaded = {
          task: "chat",
          model: chat,
          template: new ChatTemplate(chat.manifest, chat.tokenizer),
          gpu: device === "webgpu" ? probed : null,
          info: {
            id: chat.manifest.id,
            task: "chat",
            backend: chat.backend,
            device,
            backendReason: chat.backendReason,
            ...(chat.threads ? { threads: chat.threads.count } : {}),
            manifestUrl,
            contextWindow: chat.manifest.context_window,
            millis: 0,
          },
        };
      }
    } catch (error) {
      probed?.device.destroy();
      throw error;
    } finally {
      const oom = probed ? await probed.device.popErrorScope().catch(() => null) : null;
      if (oom && probed) {
        loaded?.model.dispose();
        probed.device.destroy();
        throw new OutOfMemoryError(
          `The GPU ran out of memory loading ${model} (${oom.message}). Close other GPU-heavy tabs, or choose a smaller model or quantization.`,
        );
      }
    }
    if (!loaded) throw new ModelLoadError(`${model} did not load`); // unreachable: load threw
    loaded.info.millis = performance.now() - started;
    const current = loaded;
    this.loaded = current;
    // A device probed only to decide (the CPU backend runs) is not kept.
    if (probed && !current.gpu) probed.device.destroy();
    const gpu = current.gpu;
    if (gpu) void gpu.device.lost.then((lost) => this.onDeviceLost(current, lost));
    tracker.stage("ready", tracker.last, `${current.info.id} is ready (${current.info.backend})`);
    return current.info;
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
  release(): void {
    const loaded = this.loaded;
    if (!loaded) return;
    this.loaded = null;
    this.releasing = true;
    try {
      loaded.model.dispose();
      loaded.gpu?.device.destroy();
    } finally {
      this.releasing = false;
    }
  }

  info(): LoadedModel | null {
    const loaded = this.loaded;
    if (!loaded) return null;
    const threads = loaded.model.threads;
    return threads ? { ...loaded.info, threadTasks: threads.helperTasks() } : loaded.info;
  }

  resetChat(): void {
    if (this.loaded?.task === "chat") this.loaded.model.reset();
  }

  /** Test hook: destroys the GPU device as a driver reset would. */
  simulateDeviceLoss(): void {
    this.loaded?.gpu?.device.destroy();
  }

  /**
   * A failure while the model ran: a DeviceLostError when the device was lost meanwhile
   * (the failure is only its symptom), else `error` itself.
   */
  runFailure(error: unknown): unknown {
    if (this.lostMessage === null) return error;
    return new DeviceLostError(
      `The GPU device was lost during generation (${this.lostMessage}). Load the model again with loadModel().`,
    );
  }

  /** The loaded model, which must be of `task` (and be `model` when one is named). */
  require(model: string | null, task: "chat"): LoadedChat;
  require(model: string | null, task: "image"): LoadedImage;
  require(model: string | null, task: "chat" | "image"): Loaded {
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
}

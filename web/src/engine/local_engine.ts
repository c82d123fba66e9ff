// The engine itself: the Engine interface implemented on this thread, composed of the
// model registry (what can be loaded, the cache), the session (the loaded model, its
// device and its loss), and the chat and image services. In a Worker it sits behind
// worker_entry.ts; in a page it is used directly (createInPageEngine() in in_page.ts).

import type {
  CachedModel,
  ChatCompletionRequest,
  Engine,
  EngineEvent,
  ImageGenerateOptions,
  ImageGenerateRequest,
  ImagesResponse,
  LoadedModel,
  LoadModelOptions,
  ModelInfo,
  RequestOptions,
  StorageInfo,
} from "./api";
import { ChatService } from "./chat_service";
import { ImageService } from "./image_service";
import { ModelRegistry, type ListModelsOptions } from "./registry";
import { ModelSession } from "./session";

export class LocalEngine implements Engine {
  private readonly listeners = new Set<(event: EngineEvent) => void>();
  private readonly registry: ModelRegistry;
  private readonly session: ModelSession;
  private readonly chatService: ChatService;
  private readonly imageService: ImageService;

  /**
   * `threadHelperUrl`: the script the CPU backend's helper threads start, one that runs
   * runHelperThread() when isHelperThread() (worker_entry.ts passes its own URL); without it
   * the CPU backend runs one thread.
   */
  constructor(baseUrl: string = globalThis.location?.href ?? "", options: { threadHelperUrl?: string } = {}) {
    this.registry = new ModelRegistry(baseUrl);
    this.session = new ModelSession((event) => this.emit(event), options.threadHelperUrl);
    this.chatService = new ChatService(this.session);
    this.imageService = new ImageService(this.session);
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

  listModels(options: ListModelsOptions = {}): Promise<ModelInfo[]> {
    return this.registry.list(options);
  }

  loadModel(model: string, options: LoadModelOptions = {}): Promise<LoadedModel> {
    return this.session.exclusive(() => this.session.load(model, this.registry.resolve(model), options));
  }

  unloadModel(): Promise<void> {
    return this.session.exclusive(async () => this.session.release());
  }

  async loadedModel(): Promise<LoadedModel | null> {
    return this.session.info();
  }

  resetChat(): Promise<void> {
    return this.session.exclusive(async () => this.session.resetChat());
  }

  /** Test hook: destroys the GPU device as a driver reset would. */
  async simulateDeviceLoss(): Promise<void> {
    this.session.simulateDeviceLoss();
  }

  readonly chat = {
    completions: {
      create: ((request: ChatCompletionRequest, options?: RequestOptions) =>
        this.chatService.create(request, options)) as Engine["chat"]["completions"]["create"],
    },
  };

  readonly images = {
    generate: (request: ImageGenerateRequest, options?: ImageGenerateOptions): Promise<ImagesResponse> =>
      this.imageService.generate(request, options),
  };

  readonly cache: Engine["cache"] = {
    list: (models?: ModelInfo[]): Promise<CachedModel[]> => this.registry.cache.list(models),
    delete: (model: string): Promise<void> => this.registry.cache.delete(model),
    clear: (): Promise<void> => this.registry.cache.clear(),
    storage: (): Promise<StorageInfo> => this.registry.cache.storage(),
  };

  terminate(): void {
    this.session.release();
  }
}

// One engine per model on a page: every widget showing the same model (same worker, same
// models folder, same id, same backend) talks to the same Worker, which downloads and loads
// the model once. The engine holds one model at a time, so widgets of different models (a chat and an
// image widget) get a Worker each instead of unloading each other's model on every request.
//
// The Worker (several MB: tvmjs, the tokenizer's wasm) starts only when a model is loaded or
// element.engine is used: before that, the "before download" card reads models/index.json
// in the page, through the engine's own registry (the same ModelInfo the engine computes).

import { createEngine, ModelLoadError, type Engine, type LoadedModel, type LoadProgressEvent, type ModelInfo } from "../engine";
import type { Backend } from "./attributes";
import { ModelRegistry } from "../engine/registry";

const listings = new Map<string, Promise<ModelInfo[]>>();

/** The models of one index, read once per page for all widgets (a failure is retried next time). */
function listModels(indexUrl: string): Promise<ModelInfo[]> {
  let listing = listings.get(indexUrl);
  if (!listing) {
    listing = new ModelRegistry(document.baseURI).list({ indexUrl });
    listings.set(indexUrl, listing);
    const failed = listing;
    failed.catch(() => {
      if (listings.get(indexUrl) === failed) listings.delete(indexUrl);
    });
  }
  return listing;
}

export class SharedModel {
  private engineRef: Engine | null = null;
  private loading: Promise<LoadedModel> | null = null;
  private lastProgress: LoadProgressEvent | null = null;
  private readonly watchers = new Set<(event: LoadProgressEvent) => void>();
  private readonly starters = new Set<() => void>();

  constructor(
    private readonly workerUrl: string,
    readonly indexUrl: string,
    /** The model id the widgets asked for; "" for the index's first model of `task`. */
    private readonly wanted: string,
    private readonly task: "chat" | "image",
    /** loadModel's `backend` (the widgets' backend attribute). */
    private readonly backend: Backend,
  ) {}

  /** The engine (its Worker starts on first use). */
  get engine(): Engine {
    this.engineRef ??= createEngine({ workerUrl: this.workerUrl });
    return this.engineRef;
  }

  /** The model's description from the index. */
  info(): Promise<ModelInfo> {
    return listModels(this.indexUrl).then((models) => {
      const found = this.wanted ? models.find((m) => m.id === this.wanted) : models.find((m) => m.task === this.task);
      if (!found) {
        const ids = models.map((m) => `${m.id} (${m.task})`).join(", ") || "none";
        throw new ModelLoadError(
          this.wanted
            ? `Unknown model '${this.wanted}': ${this.indexUrl} lists ${ids}. Check the model attribute (or models-url).`
            : `No ${this.task} model in ${this.indexUrl} (it lists ${ids}). Build one, or check models-url.`,
        );
      }
      if (found.task !== this.task) {
        throw new ModelLoadError(`Model '${found.id}' is a ${found.task} model; <webkiln-${this.task}> needs a ${this.task} model.`);
      }
      return found;
    });
  }

  /** Loads the model once; every caller gets the same promise and every watcher its progress. */
  load(onProgress: (event: LoadProgressEvent) => void): Promise<LoadedModel> {
    this.watchers.add(onProgress);
    if (this.lastProgress) onProgress(this.lastProgress);
    if (!this.loading) {
      const loading = this.info().then(async (info) => {
        // The Worker's registry learns the index too (ids resolve, engine.cache.list() knows the model).
        await this.engine.listModels({ indexUrl: this.indexUrl });
        return this.engine.loadModel(info.id, {
          backend: this.backend,
          onProgress: (event) => {
            this.lastProgress = event;
            for (const watcher of this.watchers) watcher(event);
          },
        });
      });
      this.loading = loading;
      // Tell the other widgets of this model (after this call returns, so the caller is set up first).
      queueMicrotask(() => {
        for (const starter of this.starters) starter();
      });
      loading.then(
        () => this.watchers.clear(),
        () => {
          // Let a later interaction try again (after a network failure, say).
          this.watchers.clear();
          this.lastProgress = null;
          if (this.loading === loading) this.loading = null;
        },
      );
    }
    return this.loading;
  }

  /** Calls `listener` whenever some widget starts loading this model; returns the unsubscribe. */
  onStart(listener: () => void): () => void {
    this.starters.add(listener);
    return () => this.starters.delete(listener);
  }

  /** The model is loaded (or loading): the widget may skip its "before download" card. */
  get started(): boolean {
    return this.loading !== null;
  }
}

const shared = new Map<string, SharedModel>();

export function sharedModel(
  workerUrl: string,
  indexUrl: string,
  model: string,
  task: "chat" | "image",
  backend: Backend,
): SharedModel {
  // A widget asking for another backend gets its own engine (one engine holds one loaded model).
  const key = JSON.stringify([workerUrl, indexUrl, model, task, backend]);
  let found = shared.get(key);
  if (!found) {
    found = new SharedModel(workerUrl, indexUrl, model, task, backend);
    shared.set(key, found);
  }
  return found;
}

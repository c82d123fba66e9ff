// The models the engine knows: the entries of models/index.json and custom manifest
// URLs, what each offers (ModelInfo, with an image model's generation defaults), how a
// model id resolves to its manifest, and the browser's cache of their files.

import { ModelLoadError } from "../base/errors";
import {
  defaultScheduler,
  parseManifest,
  parseModelIndex,
  type ImageManifest,
  type Manifest,
  type ModelIndex,
  type ModelIndexEntry,
} from "../base/manifest";
import type { CachedModel, ImageDefaults, ModelInfo, StorageInfo } from "../base/types";
import {
  clearCachedModels,
  deleteCachedModel,
  fetchJsonCached,
  listCachedModels,
  peekJson,
  storageInfo,
} from "../storage";

export interface ListModelsOptions {
  indexUrl?: string;
  extraManifestUrls?: string[];
}

/** What a request that leaves a field out gets: the manifest's own generation defaults. */
function imageDefaults(manifest: ImageManifest): ImageDefaults {
  const g = manifest.generation;
  return {
    width: g.width,
    height: g.height,
    steps: g.steps,
    max_steps: g.max_steps,
    guidance_scale: g.guidance_scale,
    scheduler: defaultScheduler(manifest),
    negative_prompt: g.negative_prompt,
  };
}

function infoFromManifest(manifest: Manifest, manifestUrl: string): ModelInfo {
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
      Object.entries(manifest.backends).map(([k, v]) => [k, { device: v.device, required_features: v.required_features }]),
    ),
    image: manifest.task === "image" ? imageDefaults(manifest) : undefined,
  };
}

function infoFromIndex(entry: ModelIndexEntry, indexUrl: string): ModelInfo {
  return {
    id: entry.id,
    task: entry.task,
    manifestUrl: new URL(entry.manifest, indexUrl).href,
    name: entry.name,
    architecture: entry.architecture,
    quantization: entry.quantization,
    download_bytes: entry.download_bytes,
    memory_bytes: entry.memory_bytes,
    context_window: entry.context_window,
    backends: entry.backends ?? {},
  };
}

/**
 * An image model's defaults from its manifest, read without storing it (only loading a
 * model stores its manifest for offline use). Undefined when it cannot be read: the
 * model is still listed, and loading it will say what is wrong.
 */
async function readImageDefaults(manifestUrl: string): Promise<ImageDefaults | undefined> {
  const peeked = await peekJson(manifestUrl);
  if (peeked === null) return undefined;
  try {
    const manifest = parseManifest(peeked.data, manifestUrl);
    return manifest.task === "image" ? imageDefaults(manifest) : undefined;
  } catch (error) {
    console.warn("webkiln: could not read the manifest of", manifestUrl, error);
    return undefined;
  }
}

export class ModelRegistry {
  private readonly known = new Map<string, ModelInfo>();

  constructor(private readonly baseUrl: string) {}

  /** Models in `indexUrl` (default: models/index.json next to the page) plus custom manifest URLs. */
  async list(options: ListModelsOptions = {}): Promise<ModelInfo[]> {
    const indexUrl = new URL(options.indexUrl ?? "models/index.json", this.baseUrl).href;
    const models: ModelInfo[] = [];
    let index: ModelIndex = { format: 0, models: [] };
    try {
      index = parseModelIndex((await fetchJsonCached(indexUrl)).data, indexUrl);
    } catch (error) {
      // No index (nothing built, or offline before a first visit): custom URLs may still work.
      if (!options.extraManifestUrls?.length) throw error;
    }
    for (const entry of index.models) {
      const info = infoFromIndex(entry, indexUrl);
      if (info.task === "image") info.image = await readImageDefaults(info.manifestUrl);
      models.push(info);
    }
    for (const url of options.extraManifestUrls ?? []) {
      const manifestUrl = new URL(url, this.baseUrl).href;
      const manifest = parseManifest((await fetchJsonCached(manifestUrl)).data, manifestUrl);
      models.push(infoFromManifest(manifest, manifestUrl));
    }
    for (const m of models) this.known.set(m.id, m);
    return models;
  }

  /** The manifest URL of a model id from the last list(), or of a URL given directly. */
  resolve(model: string): string {
    const known = this.known.get(model);
    if (known) return known.manifestUrl;
    if (model.endsWith(".json") || model.includes("/")) return new URL(model, this.baseUrl).href;
    throw new ModelLoadError(
      `Unknown model '${model}'. Call listModels() first, or pass the URL of the model's manifest.json.`,
    );
  }

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
}

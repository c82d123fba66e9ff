// Plain data shapes that more than one layer uses: the engine's API returns them, storage
// computes cached-model listings from them. Kept here so storage needs nothing above base.

import type { SchedulerName } from "./manifest_types";

/** An image model's generation defaults, as its manifest states them. */
export interface ImageDefaults {
  width: number;
  height: number;
  steps: number;
  max_steps: number;
  guidance_scale: number;
  scheduler: SchedulerName;
  negative_prompt: string;
}

/** A model the app can offer: an entry of models/index.json or a custom manifest URL. */
export interface ModelInfo {
  id: string;
  task: "chat" | "image";
  /** Absolute URL of the model's manifest.json. */
  manifestUrl: string;
  name?: string;
  architecture?: string;
  quantization?: string;
  /** Bytes to download (all files of the f32 backend, weights included). */
  download_bytes?: number;
  /** Estimated GPU memory at the default context. */
  memory_bytes?: number;
  context_window?: number | null;
  /** Each backend's device ("webgpu" or "cpu") and the WebGPU features it needs. */
  backends: Record<string, { device: "webgpu" | "cpu"; required_features: string[] }>;
  /** Image models: what a request that leaves a field out gets (from the manifest). */
  image?: ImageDefaults;
}

/** A model with files in the browser's cache. */
export interface CachedModel {
  id: string;
  manifestUrl: string;
  /** Bytes of this model's files that are cached (shared shards count for each model). */
  cachedBytes: number;
  totalBytes: number;
  complete: boolean;
}

export interface StorageInfo {
  usageBytes: number | null;
  quotaBytes: number | null;
  persisted: boolean | null;
}

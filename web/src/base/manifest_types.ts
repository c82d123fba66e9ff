// The shape of a built model's manifest.json and of models/index.json (docs/FORMAT.md):
// the one description of a model that the engine, the app and the tests read.
// Python's package/manifest.py owns the schema; `python -m webkiln.package.manifest_ts`
// regenerates this file from it (until then these are the hand-written types it replaces).

/** The manifest format this engine reads (manifest.json and models/index.json "format"). */
export const MANIFEST_FORMAT = 1;

/** diffusers scheduler classes the browser runs, by the API's scheduler name. */
export const SCHEDULER_CLASSES = {
  EulerDiscreteScheduler: "euler",
  EulerAncestralDiscreteScheduler: "euler_a",
  DPMSolverMultistepScheduler: "dpmpp_2m",
} as const;

export type SchedulerName = "euler" | "euler_a" | "dpmpp_2m";

/** One file of a built model, as listed in its manifest.json. */
export interface ManifestFile {
  /** Relative to the manifest's folder, e.g. "params/<sha256>.bin" or "tokenizer.json". */
  path: string;
  /** Exact size in bytes. */
  size: number;
  /** Lower-case hex SHA-256 of the file's bytes. */
  sha256: string;
}

export interface TensorPiece {
  shard: number;
  offset: number;
  nbytes: number;
}

export interface TensorRecord {
  name: string;
  shape: number[];
  dtype: string;
  nbytes: number;
  pieces: TensorPiece[];
}

export interface BackendEntry {
  wasm: string;
  required_features: string[];
  required_limits: Record<string, number>;
}

export interface ChatManifest {
  format: number;
  id: string;
  task: "chat";
  name: string;
  architecture: string;
  config: { hidden_size: number; vocab_size: number; num_hidden_layers: number; [key: string]: unknown };
  quantization: string;
  activation_dtype: string;
  context_window: number;
  prefill_chunk_size: number;
  kv_cache: { page_size: number; dtype: string };
  chat_template: string | null;
  bos_token_id: number | null;
  stop_token_ids: number[];
  generation: { temperature: number; top_p: number; max_tokens: number; [key: string]: unknown };
  backends: Record<string, BackendEntry>;
  memory: { weights_bytes: number; kv_cache_bytes: number; activations_bytes: number; total_bytes: number };
  tensors: { shards: string[]; records: TensorRecord[] };
  files: ManifestFile[];
}

export interface ImageBackendEntry extends BackendEntry {
  activation_dtype: "float32" | "float16";
  /** The weight set it reads: a key of `tensors`. */
  tensors: string;
  memory?: { weights_bytes: number; activations_bytes: number; total_bytes: number };
}

export type ImageComponentName = "text_encoder" | "unet" | "vae";

export interface ImageTensorRecord extends TensorRecord {
  component: ImageComponentName;
  split?: { of: string; axis: number; rows: [number, number] };
}

export interface ImageManifest {
  format: number;
  id: string;
  task: "image";
  name: string;
  architecture: string;
  pipeline_class?: string;
  quantization: string;
  image: {
    height: number;
    width: number;
    latent_channels: number;
    latent_height: number;
    latent_width: number;
    vae_scale_factor: number;
  };
  components: {
    text_encoder: { entry: string; output: { shape: number[] }; [key: string]: unknown };
    unet: { entry: string; batch: number; [key: string]: unknown };
    vae: { entry: string; scaling_factor: number; shift_factor: number | null; [key: string]: unknown };
  };
  tokenizer: {
    file: string;
    kind: string;
    max_length: number;
    bos_token_id: number;
    eos_token_id: number;
    pad_token_id: number;
  };
  /** diffusers' scheduler_config.json, with `class` the scheduler the model was made with. */
  scheduler: { class?: string | null; _class_name?: string; [key: string]: unknown };
  generation: {
    steps: number;
    max_steps: number;
    guidance_scale: number;
    turbo: boolean;
    width: number;
    height: number;
    negative_prompt: string;
  };
  backends: Record<string, ImageBackendEntry>;
  memory: { weights_bytes: number; activations_bytes: number; total_bytes: number };
  tensors: Record<string, { shards: string[]; records: ImageTensorRecord[] }>;
  files: ManifestFile[];
}

/** One model of models/index.json (written by the build from the model's manifest). */
export interface ModelIndexEntry {
  id: string;
  task: "chat" | "image";
  name?: string;
  architecture?: string;
  quantization?: string;
  /** The manifest's URL, relative to the index. */
  manifest: string;
  download_bytes?: number;
  memory_bytes?: number;
  context_window?: number | null;
  backends?: Record<string, { required_features: string[] }>;
}

export interface ModelIndex {
  format: number;
  models: ModelIndexEntry[];
}

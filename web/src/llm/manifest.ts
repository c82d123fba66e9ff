// The shape of a built chat model's manifest.json (docs/FORMAT.md): the one
// description of a model that the engine, the app and the tests read.

import type { ModelFile } from "../storage";

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
  files: ModelFile[];
}

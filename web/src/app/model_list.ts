// The engine's model list as the app's tabs share it: asked for once at startup (each
// tab filters it by task), an empty list when the engine cannot list models.

import type { Engine, ModelInfo } from "../engine/api";

let modelList: Promise<ModelInfo[]> | null = null;

/** The engine's models (both tasks), asked for once. */
export function listModels(engine: Engine): Promise<ModelInfo[]> {
  modelList ??= engine.listModels().catch((error: unknown) => {
    console.warn("listModels failed", error);
    return [];
  });
  return modelList;
}

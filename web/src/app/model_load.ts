// Loading a tab's model, as both tabs do it: with the Backend setting, the picker shows
// the progress, the status line says what happens (which backend runs and why), failures
// go to the error banner, and the model a tab loaded is remembered for the next visit.
// Each tab keeps its own state around it.

import type { Engine, LoadedModel, ModelInfo } from "../engine/api";
import type { BackendSetting } from "./settings";
import { isAbort, type ErrorBanner } from "./errors";
import { modelLabel, type ModelPicker } from "./model_picker";

/** The model remembered under `key` (localStorage), if any. */
export function rememberedModel(key: string): string | null {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

function rememberModel(key: string, id: string): void {
  try {
    localStorage.setItem(key, id);
  } catch {
    // Not remembered (storage disabled): the next visit picks the first model.
  }
}

/** What a tab lends its loader. */
export interface LoadingTab {
  picker: ModelPicker;
  errors: ErrorBanner;
  setStatus: (text: string, isError?: boolean) => void;
  /** The localStorage key the loaded model is remembered under. */
  rememberAs: string;
  /** The Backend setting at the time of the load (loadModel's `backend`). */
  backend: () => BackendSetting;
}

/** A tab's one model load at a time: a new load supersedes the one in flight. */
export class TabModelLoader {
  private loading: AbortController | null = null;

  constructor(private readonly tab: LoadingTab) {}

  get busy(): boolean {
    return this.loading !== null;
  }

  /** The Cancel button: the load in flight stops and says it was cancelled. */
  cancel(): void {
    this.loading?.abort();
  }

  /** The tab is hidden: the load in flight stops silently (its outcome is ignored). True if there was one. */
  drop(): boolean {
    const controller = this.loading;
    if (!controller) return false;
    this.loading = null;
    controller.abort();
    this.tab.picker.progress(null);
    return true;
  }

  /**
   * Loads `id` on `engine`. `settled` gets the loaded model's info, or null when the load
   * failed or was cancelled; it is not called when another load superseded this one or
   * the tab dropped it.
   */
  async load(engine: Engine, id: string, settled: (info: LoadedModel | null) => void): Promise<void> {
    this.loading?.abort();
    const controller = new AbortController();
    this.loading = controller;
    const isCurrent = () => this.loading === controller;
    let info: LoadedModel | null = null;
    try {
      info = await loadTabModel(engine, id, controller.signal, isCurrent, this.tab);
    } finally {
      if (isCurrent()) {
        this.loading = null;
        settled(info);
      }
    }
  }
}

/** Loads `id`; its info once loaded, or null when it failed, was cancelled or was superseded. */
async function loadTabModel(
  engine: Engine,
  id: string,
  signal: AbortSignal,
  isCurrent: () => boolean,
  tab: LoadingTab,
): Promise<LoadedModel | null> {
  const { picker, setStatus } = tab;
  const label = modelLabel(picker.find(id) ?? ({ id } as ModelInfo));
  // Before the load: the engine's decision as the picker predicts it (the engine decides again).
  const fit = picker.fit(id);
  setStatus(fit?.backend ? `Loading ${label} on ${fit.backend} — ${fit.reason}…` : `Loading ${label}…`);
  try {
    const info = await engine.loadModel(id, {
      backend: tab.backend(),
      signal,
      onProgress: (event) => {
        if (isCurrent()) picker.progress(event);
      },
    });
    if (!isCurrent()) return null;
    rememberModel(tab.rememberAs, id);
    setStatus(`${label} is ready on ${info.backend} — ${info.backendReason}. Loaded in ${(info.millis / 1000).toFixed(1)} s.`);
    return info;
  } catch (error) {
    if (!isCurrent()) return null;
    if (isAbort(error) || signal.aborted) {
      setStatus(`Loading ${label} was cancelled.`);
    } else {
      tab.errors.show(error);
      setStatus(`Loading ${label} failed.`, true);
    }
    return null;
  } finally {
    if (isCurrent()) picker.progress(null);
  }
}

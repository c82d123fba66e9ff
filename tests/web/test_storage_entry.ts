// Test-only bundle (tests/site/test-storage.html, tests/test_offline.py): the storage
// management and offline functions on `window.webkilnStorageTest`, with results and
// errors as JSON-friendly values for Playwright's page.evaluate. No tokenizer or GPU
// code, so the bundle stays small.

import * as errors from "../../web/src/base/errors";
import type { ManifestFile } from "../../web/src/base/manifest_types";
import * as storage from "../../web/src/storage/index";
import { type ErrorInfo, describeError } from "./error_info";

/** Runs `f`; its value, or the error it threw, as data. */
async function attempt<T>(f: () => Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: ErrorInfo }> {
  try {
    return { ok: true, value: await f() };
  } catch (error) {
    return { ok: false, error: describeError(error) };
  }
}

/** Fetches a manifest (fetchJsonCached) and loads all its files into the cache; returns the byte counts. */
async function loadModel(manifestUrl: string) {
  const { data, fromCache } = await storage.fetchJsonCached(manifestUrl);
  const files = (data as { files: ManifestFile[] }).files;
  const loaded = await storage.loadFiles(manifestUrl, files);
  let bytes = 0;
  for (const buffer of new Set(loaded.values())) bytes += buffer.byteLength;
  return { fromCache, files: loaded.size, bytes };
}

const api = {
  errors,
  storage,
  describeError,
  attempt,
  loadModel,
  registerServiceWorker: storage.registerServiceWorker,
  /** Set when this bundle ran: the offline test checks for it after a reload. */
  loadedAt: Date.now(),
};

declare global {
  // eslint-disable-next-line no-var
  var webkilnStorageTest: typeof api;
}

// globalThis, not window: tests also import this bundle into a Web Worker.
globalThis.webkilnStorageTest = api;

// Managing what this browser has stored for models: JSON documents (manifest.json,
// models/index.json) kept by URL so a cached model loads offline, and per-model views
// of the content-addressed file store (sizes, deletion that spares shared shards).
// No DOM use: works in a page and in a Web Worker.

import type { CachedModel, ModelInfo, StorageInfo } from "../base/types";
import { NetworkError, WebkilnError } from "../base/errors";
import { DEFAULT_CACHE_NAME, cacheAvailable, cacheKey } from "./cache";
import type { ManifestFile } from "../base/manifest_types";
import { checkModelFile } from "./files";

/**
 * The Cache API store for JSON documents, keyed by their own URL. Separate from the
 * content store (DEFAULT_CACHE_NAME) so every entry there stays keyed by its hash.
 */
export const MANIFEST_CACHE_NAME = "webkiln-manifests-v1";

export interface FetchJsonOptions {
  /** Cache API store for the stored copy. Default MANIFEST_CACHE_NAME. */
  cacheName?: string;
  signal?: AbortSignal;
}

export interface FetchedJson {
  data: unknown;
  /** True when the network failed and the copy stored by an earlier fetch was used. */
  fromCache: boolean;
}

/**
 * Fetches and parses a JSON document, network first (revalidating any HTTP-cached
 * copy), and stores what it got so the next call works offline. When the network
 * fails or answers with an error status, the stored copy is returned instead.
 *
 * Throws NetworkError (naming the URL and the HTTP status or network failure, or that
 * the server's copy is not valid JSON) when neither works, and the signal's reason
 * when aborted. Relative URLs are resolved against the page's (or worker's) location.
 */
export async function fetchJsonCached(url: string, options: FetchJsonOptions = {}): Promise<FetchedJson> {
  const cacheName = options.cacheName ?? MANIFEST_CACHE_NAME;
  const href = absoluteUrl(url);
  options.signal?.throwIfAborted();

  let failure: string;
  let status: number | undefined;
  try {
    const response = await fetch(href, { cache: "no-cache", signal: options.signal });
    status = response.status;
    if (response.ok) {
      const text = await response.text();
      const parsed = parseJson(text);
      if (parsed.ok) {
        await storeJson(cacheName, href, text);
        return { data: parsed.value, fromCache: false };
      }
      failure = `the server's copy is not valid JSON (${parsed.error})`;
    } else {
      failure = `HTTP ${response.status} ${response.statusText}`.trimEnd();
    }
  } catch (error) {
    if (options.signal?.aborted) {
      throw options.signal.reason ?? error;
    }
    failure = `network failure (${String(error)})`;
  }

  const stored = await readStoredJson(href, cacheName);
  if (stored !== undefined) {
    return { data: stored, fromCache: true };
  }
  throw new NetworkError(
    `Could not fetch ${href}: ${failure}, and this browser has no stored copy of it. ` +
      "A model must be loaded once while online before it can be used offline.",
    href,
    status,
  );
}

/**
 * The copy of `url` that fetchJsonCached stored, parsed; undefined if there is none
 * (or it is unreadable). Never touches the network.
 */
export async function readStoredJson(url: string, cacheName: string = MANIFEST_CACHE_NAME): Promise<unknown> {
  if (!cacheAvailable()) {
    return undefined;
  }
  try {
    if (!(await caches.has(cacheName))) {
      return undefined; // do not create the store just to look in it
    }
    const cache = await caches.open(cacheName);
    const response = await cache.match(absoluteUrl(url));
    if (!response) {
      return undefined;
    }
    const parsed = parseJson(await response.text());
    return parsed.ok ? parsed.value : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A JSON document for reading only: the copy fetchJsonCached stored, else (unless
 * storedOnly) the network's, without storing it, so looking at a model never makes it
 * count as stored for offline use (only loading it does). Null when neither can be read.
 */
export async function peekJson(
  url: string,
  options: { storedOnly?: boolean } = {},
): Promise<{ data: unknown; stored: boolean } | null> {
  const stored = await readStoredJson(url);
  if (stored !== undefined) return { data: stored, stored: true };
  if (options.storedOnly) return null;
  try {
    const response = await fetch(absoluteUrl(url), { cache: "no-cache" });
    if (!response.ok) return null;
    return { data: (await response.json()) as unknown, stored: false };
  } catch {
    return null;
  }
}

/**
 * The models of `models` with at least one file in the content store, with how many
 * of their bytes are stored. Manifests are read from their stored copies (from the
 * network, without storing them, for models never loaded); a model whose manifest
 * cannot be read is left out.
 *
 * totalBytes counts each distinct file of the manifest once (every backend's library
 * included); cachedBytes those of them stored, shared files counting for each model.
 * `complete` is true when the model can be loaded without the network: its manifest
 * is stored and so is every file one of its backends needs.
 */
export async function listCachedModels(
  models: readonly ModelInfo[],
  cacheName: string = DEFAULT_CACHE_NAME,
): Promise<CachedModel[]> {
  const stored = await storedKeys(cacheName);
  if (stored.size === 0) {
    return [];
  }
  const listed = await Promise.all(
    models.map(async (model) => {
      const manifest = await manifestFiles(model.manifestUrl);
      return manifest ? describe(model, manifest, stored) : null;
    }),
  );
  return listed.filter((m): m is CachedModel => m !== null && m.cachedBytes > 0);
}

/**
 * Deletes `model`'s files from the content store and the stored copy of its manifest,
 * but keeps the files that another model of `all` still uses: one that is cached (its
 * manifest stored, as loading it does, and some of its files). A shared shard thus
 * survives until the last model using it is deleted. Returns the bytes freed.
 */
export async function deleteCachedModel(
  model: ModelInfo,
  all: readonly ModelInfo[],
  cacheName: string = DEFAULT_CACHE_NAME,
): Promise<number> {
  let freed = 0;
  const href = absoluteUrl(model.manifestUrl);
  const manifest = await manifestFiles(href);
  const stored = manifest ? await storedKeys(cacheName) : new Set<string>();
  if (manifest && stored.size > 0) {
    const others = all.filter((m) => m.id !== model.id && absoluteUrl(m.manifestUrl) !== href);
    const keep = new Set<string>();
    for (const other of await Promise.all(others.map((m) => manifestFiles(m.manifestUrl, { storedOnly: true })))) {
      if (other && other.files.some((f) => stored.has(cacheKey(f.sha256)))) {
        for (const f of other.files) keep.add(f.sha256);
      }
    }
    const cache = await caches.open(cacheName);
    for (const file of distinct(manifest.files)) {
      if (!keep.has(file.sha256) && (await cache.delete(cacheKey(file.sha256)))) {
        freed += file.size;
      }
    }
  }
  if (cacheAvailable() && (await caches.has(MANIFEST_CACHE_NAME))) {
    await (await caches.open(MANIFEST_CACHE_NAME)).delete(href);
  }
  return freed;
}

/** Deletes every stored model file and every stored manifest / model index. */
export async function clearCachedModels(
  cacheName: string = DEFAULT_CACHE_NAME,
  manifestCacheName: string = MANIFEST_CACHE_NAME,
): Promise<void> {
  if (!cacheAvailable()) {
    return;
  }
  await caches.delete(cacheName);
  await caches.delete(manifestCacheName);
}

/**
 * Bytes this origin uses and may use (navigator.storage.estimate()), and whether its
 * storage is persistent (exempt from eviction); null for what the browser cannot tell.
 */
export async function storageInfo(): Promise<StorageInfo> {
  const manager = typeof navigator === "undefined" ? undefined : navigator.storage;
  let usageBytes: number | null = null;
  let quotaBytes: number | null = null;
  let persisted: boolean | null = null;
  if (typeof manager?.estimate === "function") {
    try {
      const estimate = await manager.estimate();
      usageBytes = typeof estimate.usage === "number" ? estimate.usage : null;
      quotaBytes = typeof estimate.quota === "number" ? estimate.quota : null;
    } catch {
      // leave them unknown
    }
  }
  if (typeof manager?.persisted === "function") {
    try {
      persisted = await manager.persisted();
    } catch {
      // leave it unknown
    }
  }
  return { usageBytes, quotaBytes, persisted };
}

// ---------------------------------------------------------------- helpers

function absoluteUrl(url: string): string {
  return new URL(url, globalThis.location?.href).href;
}

function parseJson(text: string): { ok: true; value: unknown } | { ok: false; error: string } {
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch (error) {
    return { ok: false, error: String(error) };
  }
}

async function storeJson(cacheName: string, href: string, text: string): Promise<void> {
  if (!cacheAvailable()) {
    return;
  }
  try {
    const cache = await caches.open(cacheName);
    await cache.put(href, new Response(text, { headers: { "Content-Type": "application/json" } }));
  } catch (error) {
    // Storing is what makes offline use possible, but the document itself is fine.
    console.warn(`webkiln: could not store ${href} for offline use.`, error);
  }
}

// The keys (URLs) in the content store; empty if it does not exist.
async function storedKeys(cacheName: string): Promise<Set<string>> {
  if (!cacheAvailable() || !(await caches.has(cacheName))) {
    return new Set();
  }
  const cache = await caches.open(cacheName);
  return new Set((await cache.keys()).map((request) => request.url));
}

interface ManifestFiles {
  files: ManifestFile[];
  /**
   * Model library files, any one of which a backend loads ("webgpu-f32.wasm", ..., and a CPU
   * backend's threaded link "wasm-cpu-threads.wasm"); empty if none are named.
   */
  libraries: string[];
  /** Whether the manifest came from the stored copy (the model was loaded and not deleted). */
  stored: boolean;
}

// A manifest's files and backend libraries: its stored copy, else (unless storedOnly)
// the network, without storing it: only loading a model stores its manifest. Null if
// it cannot be read or is malformed.
async function manifestFiles(manifestUrl: string, options: { storedOnly?: boolean } = {}): Promise<ManifestFiles | null> {
  const peeked = await peekJson(manifestUrl, options);
  if (peeked === null) return null;
  const { data: manifest, stored } = peeked;
  const m = manifest as { files?: unknown; backends?: unknown } | null;
  if (typeof m !== "object" || m === null || !Array.isArray(m.files)) {
    return null;
  }
  const files: ManifestFile[] = [];
  for (const file of m.files as ManifestFile[]) {
    try {
      checkModelFile(file);
    } catch (error) {
      if (error instanceof WebkilnError) return null;
      throw error;
    }
    files.push({ path: file.path, size: file.size, sha256: file.sha256 });
  }
  const libraries: string[] = [];
  if (typeof m.backends === "object" && m.backends !== null) {
    for (const entry of Object.values(m.backends as Record<string, { wasm?: unknown; threads_wasm?: unknown } | null>)) {
      if (typeof entry?.wasm === "string") libraries.push(entry.wasm);
      if (typeof entry?.threads_wasm === "string") libraries.push(entry.threads_wasm);
    }
  }
  return { files, libraries, stored };
}

function describe(model: ModelInfo, manifest: ManifestFiles, stored: Set<string>): CachedModel {
  const { files, libraries } = manifest;
  const has = (f: ManifestFile) => stored.has(cacheKey(f.sha256));
  let cachedBytes = 0;
  let totalBytes = 0;
  for (const file of distinct(files)) {
    totalBytes += file.size;
    if (has(file)) cachedBytes += file.size;
  }
  // Offline, the manifest must be stored; a backend needs every file but the other
  // backends' libraries.
  const backendComplete =
    libraries.length === 0
      ? files.every(has)
      : libraries.some((own) => files.every((f) => has(f) || (f.path !== own && libraries.includes(f.path))));
  const complete = manifest.stored && backendComplete;
  return { id: model.id, manifestUrl: model.manifestUrl, cachedBytes, totalBytes, complete };
}

// One entry per distinct content (the store keeps identical files once).
function distinct(files: readonly ManifestFile[]): ManifestFile[] {
  const seen = new Map<string, ManifestFile>();
  for (const file of files) {
    if (!seen.has(file.sha256)) seen.set(file.sha256, file);
  }
  return [...seen.values()];
}

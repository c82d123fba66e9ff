// Fetching a model's files: from the content-addressed cache when a verified copy is
// there, otherwise from the network; every byte is checked against the manifest
// before it is used or cached.

import { IntegrityError, NetworkError, WebkilnError } from "../base/errors";
import { DEFAULT_CACHE_NAME, cacheAvailable, cacheKey, cacheResponse } from "./cache";
import type { ManifestFile } from "../base/manifest_types";
import { checkModelFile } from "./files";
import { sha256Hex } from "./integrity";
import { runLimited } from "./pool";
import { requestPersistentStorage, storageEstimate } from "./quota";

export interface LoadProgress {
  /** The file this update is about. */
  path: string;
  source: "cache" | "network";
  /** Bytes read so far, from both sources (network bytes count as they arrive). */
  loadedBytes: number;
  totalBytes: number;
  /** Files verified so far. Files with identical contents count once. */
  filesDone: number;
  totalFiles: number;
  /** Parts of loadedBytes that came from the cache / from the network. */
  cachedBytes: number;
  networkBytes: number;
}

export interface CorruptCacheEntry {
  path: string;
  expectedSha256: string;
  actualSha256: string;
  actualSize: number;
}

export interface LoadOptions {
  /** Cache API store to use; null: no caching. Default "webkiln-v1". */
  cacheName?: string | null;
  /** Most files read or downloaded at once. Default 4. */
  concurrency?: number;
  /** Check the storage quota for the bytes not yet cached before downloading. Default true. */
  checkQuota?: boolean;
  signal?: AbortSignal;
  onProgress?: (progress: LoadProgress) => void;
  /** A cached copy failed verification: it was deleted and the file is downloaded again. */
  onCorruptCacheEntry?: (entry: CorruptCacheEntry) => void;
  /** Verified bytes could not be stored (e.g. quota); the load goes on without caching them. */
  onCacheWriteError?: (path: string, error: unknown) => void;
}

export const DEFAULT_CONCURRENCY = 4;

// Distinct contents to load, and every manifest path that names them.
interface Content {
  file: ManifestFile; // the first entry with this sha256
  paths: string[];
  cached?: Response;
}

/**
 * Loads `files` (entries of a manifest) relative to `baseUrl` — the manifest's own
 * URL or its folder with a trailing slash — and returns their verified bytes by path.
 *
 * Throws IntegrityError if the server's bytes do not match the manifest, NetworkError
 * if a file cannot be fetched, StorageQuotaError if the missing files will not fit.
 * On failure, files verified so far stay cached; nothing unverified ever is.
 */
export async function loadFiles(
  baseUrl: string,
  files: readonly ManifestFile[],
  options: LoadOptions = {},
): Promise<Map<string, ArrayBuffer>> {
  const concurrency = options.concurrency ?? DEFAULT_CONCURRENCY;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new RangeError(`concurrency must be a whole number >= 1, got ${concurrency}`);
  }
  const contents = groupByContent(files);
  const base = new URL(baseUrl, globalThis.location?.href);
  const cache = await openCache(options.cacheName === undefined ? DEFAULT_CACHE_NAME : options.cacheName);
  if (cache) {
    // Look up (without reading) what is cached, to know what must be downloaded.
    await Promise.all(
      [...contents.values()].map(async (c) => {
        c.cached = await cache.match(cacheKey(c.file.sha256));
      }),
    );
    const missing = [...contents.values()].filter((c) => !c.cached).reduce((n, c) => n + c.file.size, 0);
    if (missing > 0) {
      if (options.checkQuota ?? true) {
        await storageEstimate(missing);
      }
      void requestPersistentStorage();
    }
  }

  const progress: LoadProgress = {
    path: "",
    source: "network",
    loadedBytes: 0,
    totalBytes: [...contents.values()].reduce((n, c) => n + c.file.size, 0),
    filesDone: 0,
    totalFiles: contents.size,
    cachedBytes: 0,
    networkBytes: 0,
  };
  const report = (path: string, source: LoadProgress["source"]) => {
    options.onProgress?.({ ...progress, path, source });
  };

  // Cancels downloads still running when the caller aborts.
  const controller = new AbortController();
  const abortFromCaller = () => controller.abort(options.signal?.reason);
  options.signal?.throwIfAborted();
  options.signal?.addEventListener("abort", abortFromCaller, { once: true });

  const results = new Map<string, ArrayBuffer>();
  try {
    await runLimited(
      [...contents.values()],
      concurrency,
      async (content) => {
        const { file } = content;
        let bytes = content.cached ? await readCached(content, cache!, options) : null;
        content.cached = undefined;
        if (bytes) {
          progress.loadedBytes += bytes.byteLength;
          progress.cachedBytes += bytes.byteLength;
          progress.filesDone++;
          report(file.path, "cache");
        } else {
          const url = new URL(file.path, base).href;
          bytes = await download(file, url, controller.signal, (n) => {
            progress.loadedBytes += n;
            progress.networkBytes += n;
            report(file.path, "network");
          });
          await verify(file, url, bytes);
          if (cache) {
            try {
              await cache.put(cacheKey(file.sha256), cacheResponse(bytes));
            } catch (error) {
              (options.onCacheWriteError ?? warnCacheWrite)(file.path, error);
            }
          }
          progress.filesDone++;
          report(file.path, "network");
        }
        const buffer = exactBuffer(bytes);
        for (const path of content.paths) {
          results.set(path, buffer);
        }
      },
      // One file failing starts no new downloads, but those already running finish
      // and are cached: the next attempt resumes with only the missing files.
    );
  } finally {
    options.signal?.removeEventListener("abort", abortFromCaller);
  }
  return results;
}

// Checks the entries and groups them by SHA-256: identical contents load once.
function groupByContent(files: readonly ManifestFile[]): Map<string, Content> {
  const contents = new Map<string, Content>();
  const paths = new Set<string>();
  for (const file of files) {
    checkModelFile(file);
    if (paths.has(file.path)) {
      throw new WebkilnError(`manifest lists "${file.path}" twice`);
    }
    paths.add(file.path);
    const content = contents.get(file.sha256);
    if (content === undefined) {
      contents.set(file.sha256, { file, paths: [file.path] });
    } else if (content.file.size !== file.size) {
      throw new WebkilnError(`manifest gives sha256 ${file.sha256} two sizes ("${content.file.path}", "${file.path}")`);
    } else {
      content.paths.push(file.path);
    }
  }
  return contents;
}

// The store, or null: caching turned off, no Cache API (insecure context), or a
// browser that refuses it (some private modes). Loading then works without a cache.
async function openCache(name: string | null): Promise<Cache | null> {
  if (name === null || !cacheAvailable()) {
    return null;
  }
  try {
    return await caches.open(name);
  } catch (error) {
    console.warn("webkiln: the Cache API is unavailable; model files will not be cached.", error);
    return null;
  }
}

// The cached bytes if they still match the manifest; otherwise deletes the entry,
// reports it, and returns null so the file is downloaded again.
async function readCached(content: Content, cache: Cache, options: LoadOptions): Promise<Uint8Array | null> {
  const { file } = content;
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await content.cached!.arrayBuffer());
  } catch {
    return null; // evicted or unreadable since it was looked up: just download it
  }
  const actual = await sha256Hex(bytes);
  if (bytes.byteLength === file.size && actual === file.sha256) {
    return bytes;
  }
  await cache.delete(cacheKey(file.sha256));
  options.onCorruptCacheEntry?.({
    path: file.path,
    expectedSha256: file.sha256,
    actualSha256: actual,
    actualSize: bytes.byteLength,
  });
  return null;
}

async function download(
  file: ManifestFile,
  url: string,
  signal: AbortSignal,
  onBytes: (n: number) => void,
): Promise<Uint8Array> {
  let response: Response;
  try {
    // no-store: the verified copy lives in our cache; a second copy in the HTTP
    // cache would double the disk use, and a bad one there could be served again.
    response = await fetch(url, { cache: "no-store", signal });
  } catch (error) {
    if (signal.aborted) {
      throw error;
    }
    throw new NetworkError(`Could not download "${file.path}" from ${url}: ${String(error)}`, url);
  }
  if (!response.ok) {
    throw new NetworkError(
      `Could not download "${file.path}" from ${url}: HTTP ${response.status} ${response.statusText}`.trimEnd(),
      url,
      response.status,
    );
  }
  try {
    return await readBody(response, file.size, onBytes);
  } catch (error) {
    if (signal.aborted) {
      throw error;
    }
    throw new NetworkError(`Download of "${file.path}" from ${url} broke off: ${String(error)}`, url, response.status);
  }
}

// Reads a body chunk by chunk (for progress) into one buffer of the expected size,
// growing it only if the server sends more than the manifest says.
async function readBody(response: Response, expected: number, onBytes: (n: number) => void): Promise<Uint8Array> {
  if (!response.body) {
    const bytes = new Uint8Array(await response.arrayBuffer());
    onBytes(bytes.byteLength);
    return bytes;
  }
  let buffer = new Uint8Array(expected);
  let length = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) {
      break;
    }
    if (length + value.byteLength > buffer.byteLength) {
      const grown = new Uint8Array(Math.max(2 * buffer.byteLength, length + value.byteLength));
      grown.set(buffer.subarray(0, length));
      buffer = grown;
    }
    buffer.set(value, length);
    length += value.byteLength;
    onBytes(value.byteLength);
  }
  return length === buffer.byteLength ? buffer : buffer.slice(0, length);
}

async function verify(file: ManifestFile, url: string, bytes: Uint8Array): Promise<void> {
  const actual = await sha256Hex(bytes);
  if (actual !== file.sha256 || bytes.byteLength !== file.size) {
    throw new IntegrityError(
      `Integrity check failed for "${file.path}" (${url}): expected sha256 ${file.sha256} (${file.size} bytes), ` +
        `got sha256 ${actual} (${bytes.byteLength} bytes). The server's copy does not match the model's manifest; ` +
        "it was not cached.",
    );
  }
}

function exactBuffer(bytes: Uint8Array): ArrayBuffer {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength
    ? (bytes.buffer as ArrayBuffer)
    : (bytes.slice().buffer as ArrayBuffer);
}

function warnCacheWrite(path: string, error: unknown): void {
  console.warn(`webkiln: could not cache "${path}"; it will be downloaded again next time.`, error);
}

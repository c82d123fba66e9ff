// The Cache API store for verified model files, keyed by content (SHA-256), so a
// shard shared by two models, or two paths of one model, is stored and downloaded once.

import { isSha256Hex } from "./files";

export const DEFAULT_CACHE_NAME = "webkiln-v1";

// A synthetic URL on a reserved domain (RFC 2606 ".invalid"): it can never be
// fetched or collide with a real resource, and it does not depend on where the
// model is hosted, which is what makes the cache content-addressed.
const KEY_PREFIX = "https://webkiln.invalid/sha256/";

/** The Cache API key under which the file with this SHA-256 is stored. */
export function cacheKey(sha256: string): string {
  return KEY_PREFIX + sha256;
}

/** False in insecure contexts (plain http on a non-local host), where `caches` is absent. */
export function cacheAvailable(): boolean {
  return typeof caches !== "undefined";
}

export interface CachedEntry {
  sha256: string;
  /** Bytes stored, from the entry's Content-Length (-1 if it was not recorded). */
  size: number;
}

/** Every file in the store. Reads headers only, never the bodies. */
export async function listCached(cacheName: string = DEFAULT_CACHE_NAME): Promise<CachedEntry[]> {
  if (!cacheAvailable() || !(await caches.has(cacheName))) {
    return [];
  }
  const cache = await caches.open(cacheName);
  const entries: CachedEntry[] = [];
  for (const request of await cache.keys()) {
    if (!request.url.startsWith(KEY_PREFIX)) {
      continue; // not ours: someone else shares the cache name
    }
    const sha256 = request.url.slice(KEY_PREFIX.length);
    if (!isSha256Hex(sha256)) {
      continue;
    }
    const response = await cache.match(request);
    const length = Number(response?.headers.get("Content-Length") ?? NaN);
    entries.push({ sha256, size: Number.isSafeInteger(length) ? length : -1 });
  }
  return entries;
}

/** Deletes the given files from the store; returns how many were there. */
export async function deleteCached(
  sha256s: Iterable<string>,
  cacheName: string = DEFAULT_CACHE_NAME,
): Promise<number> {
  if (!cacheAvailable() || !(await caches.has(cacheName))) {
    return 0;
  }
  const cache = await caches.open(cacheName);
  let deleted = 0;
  for (const sha256 of sha256s) {
    if (await cache.delete(cacheKey(sha256))) {
      deleted++;
    }
  }
  return deleted;
}

/** A Response holding verified bytes, in the form the store keeps. */
export function cacheResponse(bytes: Uint8Array): Response {
  return new Response(bytes as BufferSource, {
    headers: {
      "Content-Type": "application/octet-stream",
      // Recorded so listCached() can report sizes without reading bodies.
      "Content-Length": String(bytes.byteLength),
    },
  });
}

// Fetching a built model's files, verified against its manifest and cached by content.

export { loadFiles, DEFAULT_CONCURRENCY } from "./loader";
export type { LoadOptions, LoadProgress, CorruptCacheEntry } from "./loader";
export { DEFAULT_CACHE_NAME, cacheKey, cacheAvailable, listCached, deleteCached } from "./cache";
export type { CachedEntry } from "./cache";
export { storageEstimate, requestPersistentStorage, formatBytes } from "./quota";
export type { StorageEstimate } from "./quota";
export { checkModelFile } from "./files";
export { sha256Hex } from "./integrity";
export {
  MANIFEST_CACHE_NAME,
  fetchJsonCached,
  readStoredJson,
  peekJson,
  listCachedModels,
  deleteCachedModel,
  clearCachedModels,
  storageInfo,
} from "./manage";
export type { FetchJsonOptions, FetchedJson } from "./manage";
export { registerServiceWorker } from "./offline";
export type { RegisterOptions, CacheShellMessage } from "./offline";

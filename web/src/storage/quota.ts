// Checking, before a download starts, that the browser will let us store it: a quota
// error halfway through a multi-GB download wastes the user's time and bandwidth.

import { StorageQuotaError } from "../base/errors";

export interface StorageEstimate {
  /** Bytes this origin uses now. */
  usage: number;
  /** Bytes this origin may use in all. */
  quota: number;
  /** quota - usage, never negative. */
  available: number;
}

/**
 * `navigator.storage.estimate()`, and a check that `bytesToDownload` more bytes fit.
 * Throws StorageQuotaError if they do not. Returns null where the browser cannot
 * tell (no StorageManager); then nothing is checked.
 */
export async function storageEstimate(bytesToDownload = 0): Promise<StorageEstimate | null> {
  if (typeof navigator === "undefined" || typeof navigator.storage?.estimate !== "function") {
    return null;
  }
  const { usage, quota } = await navigator.storage.estimate();
  if (typeof usage !== "number" || typeof quota !== "number") {
    return null;
  }
  const estimate = { usage, quota, available: Math.max(0, quota - usage) };
  if (bytesToDownload > estimate.available) {
    throw new StorageQuotaError(
      `Not enough browser storage: this model needs ${formatBytes(bytesToDownload)} more, ` +
        `but only ${formatBytes(estimate.available)} is free ` +
        `(this site may use ${formatBytes(quota)} and already uses ${formatBytes(usage)}). ` +
        "Free disk space or delete cached models, then reload.",
    );
  }
  return estimate;
}

let persistRequest: Promise<boolean> | undefined;

/**
 * Asks once per page that this origin's storage not be evicted under pressure.
 * Browsers may say no (headless Chromium always does); that only means the cache
 * can be evicted, so the answer is returned but need not be acted on.
 */
export function requestPersistentStorage(): Promise<boolean> {
  persistRequest ??=
    typeof navigator !== "undefined" && typeof navigator.storage?.persist === "function"
      ? navigator.storage.persist().catch(() => false)
      : Promise.resolve(false);
  return persistRequest;
}

export function formatBytes(bytes: number): string {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

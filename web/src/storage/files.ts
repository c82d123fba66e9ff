// What a model's manifest.json says about each file it needs, and the checks that
// make an entry safe to fetch and to use as a cache key.

import { WebkilnError } from "../base/errors";
import type { ManifestFile } from "../base/manifest_types";

const SHA256_HEX = /^[0-9a-f]{64}$/;

export function isSha256Hex(value: string): boolean {
  return SHA256_HEX.test(value);
}

/**
 * Throws unless `file` is a well-formed entry. The path must stay inside the
 * model's folder: a manifest must not be able to point the loader at another site
 * or another model's files.
 */
export function checkModelFile(file: ManifestFile): void {
  const where = `manifest entry ${JSON.stringify(file?.path)}`;
  if (typeof file?.path !== "string" || file.path === "") {
    throw new WebkilnError(`${where}: "path" must be a non-empty string`);
  }
  const segments = file.path.split("/");
  if (
    /^[a-z][a-z0-9+.-]*:/i.test(file.path) ||
    file.path.startsWith("/") ||
    file.path.includes("\\") ||
    segments.some((s) => s === "" || s === "." || s === "..")
  ) {
    throw new WebkilnError(`${where}: "path" must be relative to the manifest's folder, without "." or ".."`);
  }
  if (!Number.isSafeInteger(file.size) || file.size < 0) {
    throw new WebkilnError(`${where}: "size" must be a whole number of bytes`);
  }
  if (typeof file.sha256 !== "string" || !isSha256Hex(file.sha256)) {
    throw new WebkilnError(`${where}: "sha256" must be 64 lower-case hex digits`);
  }
}

// Reading a manifest.json: the one place fetched JSON becomes a typed manifest. It checks
// what every later step relies on (the format version and the task) so a manifest of
// another webkiln version fails here with a message that says what to do, not later
// with a missing field.

import { ModelLoadError } from "./errors";
import {
  MANIFEST_FORMAT,
  SCHEDULER_CLASSES,
  type ChatManifest,
  type ImageManifest,
  type ModelIndex,
  type SchedulerName,
} from "./manifest_types";

export * from "./manifest_types";

export type Manifest = ChatManifest | ImageManifest;

function asObject(json: unknown, url: string, what: string): Record<string, unknown> {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new ModelLoadError(`${url} is not a webkiln ${what}: expected a JSON object.`);
  }
  return json as Record<string, unknown>;
}

function refuseOtherFormat(format: unknown, url: string, what: string): void {
  if (format !== MANIFEST_FORMAT) {
    throw new ModelLoadError(
      `${url} is a ${what} of format ${JSON.stringify(format ?? null)}, but this engine reads format ${MANIFEST_FORMAT}. ` +
        "Rebuild the model with this version's build_web, or use a webkiln engine that matches the model's version.",
    );
  }
}

/** The manifest at `url`, checked for format and task; ModelLoadError when it is not one this engine reads. */
export function parseManifest(json: unknown, url: string): Manifest {
  const record = asObject(json, url, "manifest");
  refuseOtherFormat(record.format, url, "manifest");
  const task = record.task;
  if (task !== "chat" && task !== "image") {
    throw new ModelLoadError(`${url}: unknown task ${JSON.stringify(task ?? null)} (expected "chat" or "image").`);
  }
  // The format version fixes the shape; the build that wrote it is the one source of the fields.
  return record as unknown as Manifest;
}

/**
 * models/index.json. A hand-written index (custom models listed by a site) may leave out
 * "format": only an index that names another format is refused.
 */
export function parseModelIndex(json: unknown, url: string): ModelIndex {
  const record = asObject(json, url, "model index");
  if (record.format !== undefined) refuseOtherFormat(record.format, url, "model index");
  if (record.models !== undefined && !Array.isArray(record.models)) {
    throw new ModelLoadError(`${url}: "models" must be a list.`);
  }
  return { format: MANIFEST_FORMAT, models: (record.models as ModelIndex["models"] | undefined) ?? [] };
}

/** The scheduler a request without one gets: the model's own class when the browser runs it, else Euler. */
export function defaultScheduler(manifest: ImageManifest): SchedulerName {
  const cls = manifest.scheduler.class ?? manifest.scheduler._class_name;
  if (typeof cls === "string" && Object.prototype.hasOwnProperty.call(SCHEDULER_CLASSES, cls)) {
    return SCHEDULER_CLASSES[cls as keyof typeof SCHEDULER_CLASSES];
  }
  return "euler";
}

/** Chat manifests of this format name no tokenizer: theirs is always this file (docs/FORMAT.md). */
const CHAT_TOKENIZER_FILE = "tokenizer.json";

/** The manifest's tokenizer file (a path of `files`). */
export function tokenizerFile(manifest: Manifest): string {
  return manifest.task === "image" ? manifest.tokenizer.file : CHAT_TOKENIZER_FILE;
}

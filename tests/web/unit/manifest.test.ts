// parseManifest / parseModelIndex (web/src/base/manifest.ts): a manifest of another format
// version is refused with a message naming both versions and what to do; so is an unknown
// task; a manifest of this format comes back as the typed manifest it is.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ModelLoadError } from "../../../web/src/base/errors";
import {
  defaultScheduler,
  MANIFEST_FORMAT,
  parseManifest,
  parseModelIndex,
  tokenizerFile,
  type ImageManifest,
} from "../../../web/src/base/manifest";

const URL = "https://example.test/models/tiny/manifest.json";

function refusal(run: () => unknown): ModelLoadError {
  try {
    run();
  } catch (error) {
    assert.ok(error instanceof ModelLoadError, `expected a ModelLoadError, got ${String(error)}`);
    return error;
  }
  assert.fail("expected the manifest to be refused");
}

test("a manifest of another format is refused, naming both versions and the way out", () => {
  const other = MANIFEST_FORMAT + 1;
  const error = refusal(() => parseManifest({ format: other, id: "tiny", task: "chat" }, URL));
  assert.match(error.message, new RegExp(`format ${other}\\b`));
  assert.match(error.message, new RegExp(`reads format ${MANIFEST_FORMAT}\\b`));
  assert.match(error.message, /build_web/);
  assert.ok(error.message.includes(URL), error.message);
});

test("a manifest without a format, or not an object, is refused", () => {
  assert.match(refusal(() => parseManifest({ id: "tiny", task: "chat" }, URL)).message, /format null/);
  assert.match(refusal(() => parseManifest([], URL)).message, /expected a JSON object/);
  assert.match(refusal(() => parseManifest(null, URL)).message, /expected a JSON object/);
});

test("an unknown task is refused", () => {
  const error = refusal(() => parseManifest({ format: MANIFEST_FORMAT, id: "x", task: "audio" }, URL));
  assert.match(error.message, /unknown task "audio"/);
});

test("a manifest of this format is returned as it is, typed by its task", () => {
  const json = { format: MANIFEST_FORMAT, id: "tiny", task: "chat", context_window: 512 };
  const manifest = parseManifest(json, URL);
  assert.equal(manifest, json);
  assert.equal(manifest.task, "chat");
  assert.equal(tokenizerFile(manifest), "tokenizer.json");
});

test("an image manifest names its tokenizer and its default scheduler", () => {
  // Only the fields these functions read; parseManifest checks format and task, not the rest.
  const image = (scheduler: Record<string, unknown>) =>
    parseManifest({ format: MANIFEST_FORMAT, id: "img", task: "image", tokenizer: { file: "clip.json" }, scheduler }, URL) as ImageManifest;
  assert.equal(tokenizerFile(image({})), "clip.json");
  assert.equal(defaultScheduler(image({ class: "EulerAncestralDiscreteScheduler" })), "euler_a");
  assert.equal(defaultScheduler(image({ _class_name: "DPMSolverMultistepScheduler" })), "dpmpp_2m");
  assert.equal(defaultScheduler(image({ class: "PNDMScheduler" })), "euler");
  assert.equal(defaultScheduler(image({ class: "toString" })), "euler"); // not an inherited key
});

test("the model index: another format is refused; one without a format is read", () => {
  const error = refusal(() => parseModelIndex({ format: MANIFEST_FORMAT + 1, models: [] }, URL));
  assert.match(error.message, /model index of format/);
  assert.deepEqual(parseModelIndex({ models: [] }, URL).models, []);
  assert.match(refusal(() => parseModelIndex({ format: MANIFEST_FORMAT, models: {} }, URL)).message, /must be a list/);
});

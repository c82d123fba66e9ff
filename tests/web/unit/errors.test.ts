// How typed errors cross the Worker boundary (engine/protocol.ts): serialised, structured-
// cloned as postMessage does, and rebuilt, every webkiln error keeps its class, name,
// message and fields. The table below must name every class of base/errors.ts.
import assert from "node:assert/strict";
import { test } from "node:test";

import * as errors from "../../../web/src/base/errors";
import { ERROR_CLASSES, WebkilnError } from "../../../web/src/base/errors";
import { deserializeError, serializeError } from "../../../web/src/engine/protocol";

/** One instance of each error class, with the fields it must keep. */
const SAMPLES: Record<string, { error: WebkilnError; fields: Record<string, unknown> }> = {
  WebkilnError: { error: new errors.WebkilnError("base"), fields: {} },
  WebGPUUnavailableError: { error: new errors.WebGPUUnavailableError("no adapter"), fields: { detail: "no adapter" } },
  ModuleLoadError: { error: new errors.ModuleLoadError("bad wasm"), fields: {} },
  IntegrityError: { error: new errors.IntegrityError("sha256 mismatch"), fields: {} },
  NetworkError: { error: new errors.NetworkError("HTTP 404", "https://x/a.bin", 404), fields: { url: "https://x/a.bin", status: 404 } },
  StorageQuotaError: { error: new errors.StorageQuotaError("no room"), fields: {} },
  ModelLoadError: { error: new errors.ModelLoadError("wrong task"), fields: {} },
  UnsupportedDeviceError: { error: new errors.UnsupportedDeviceError("needs shader-f16"), fields: {} },
  ContextWindowError: { error: new errors.ContextWindowError("too long"), fields: {} },
  InvalidRequestError: { error: new errors.InvalidRequestError("bad top_p", "top_p"), fields: { param: "top_p" } },
  ModelNotLoadedError: { error: new errors.ModelNotLoadedError("load first"), fields: {} },
  DeviceLostError: { error: new errors.DeviceLostError("lost"), fields: {} },
  OutOfMemoryError: { error: new errors.OutOfMemoryError("oom"), fields: {} },
  EngineCrashedError: { error: new errors.EngineCrashedError("worker died"), fields: {} },
  SchedulerConfigError: { error: new errors.SchedulerConfigError("beta_schedule", "bad"), fields: { field: "beta_schedule" } },
  ImageGenerationAborted: { error: new errors.ImageGenerationAborted(3), fields: { step: 3 } },
};

/** What postMessage does to the serialised form. */
const roundTrip = (error: unknown): Error => deserializeError(structuredClone(serializeError(error)));

test("the table covers every exported error class, and ERROR_CLASSES lists them all", () => {
  const exported = Object.entries(errors)
    .filter(([, value]) => typeof value === "function" && (value === WebkilnError || value.prototype instanceof WebkilnError))
    .map(([name]) => name)
    .sort();
  assert.deepEqual(Object.keys(ERROR_CLASSES).sort(), exported);
  assert.deepEqual(Object.keys(SAMPLES).sort(), exported);
});

for (const [className, { error, fields }] of Object.entries(SAMPLES)) {
  test(`${className} round-trips with its class, name, message and fields`, () => {
    assert.ok(error instanceof WebkilnError, `${className} extends WebkilnError`);
    const cls = ERROR_CLASSES[className] as { prototype: WebkilnError };
    assert.equal(Object.getPrototypeOf(error), cls.prototype);
    const back = roundTrip(error);
    assert.equal(Object.getPrototypeOf(back), cls.prototype, "same class");
    assert.ok(back instanceof WebkilnError);
    assert.equal(back.name, error.name);
    assert.equal(back.message, error.message); // not decorated twice (WebGPUUnavailableError)
    assert.equal(back.stack, error.stack);
    for (const [key, value] of Object.entries(fields)) {
      assert.equal((back as unknown as Record<string, unknown>)[key], value, `${className}.${key}`);
    }
  });
}

test("error names are the class names, except aborts, which are AbortError like fetch's", () => {
  assert.equal(new errors.NetworkError("x", "u").name, "NetworkError");
  assert.equal(new errors.ImageGenerationAborted(0).name, "AbortError");
  assert.equal(serializeError(new errors.ImageGenerationAborted(0)).webkilnClass, "ImageGenerationAborted");
});

test("own fields holding plain values cross; fields holding objects do not", () => {
  const error = Object.assign(new errors.ModelLoadError("x"), { code: 7, ok: true, none: null, nested: { a: 1 } });
  const back = roundTrip(error) as errors.ModelLoadError & Record<string, unknown>;
  assert.equal(back.code, 7);
  assert.equal(back.ok, true);
  assert.equal(back.none, null);
  assert.equal(back.nested, undefined);
});

test("other errors keep what can be kept", () => {
  const typeError = roundTrip(new TypeError("not a function"));
  assert.ok(typeError instanceof TypeError);
  assert.equal(typeError.message, "not a function");

  const abort = roundTrip(new DOMException("stopped", "AbortError"));
  assert.ok(abort instanceof DOMException);
  assert.equal(abort.name, "AbortError");
  assert.equal(abort.message, "stopped");

  const custom = roundTrip(Object.assign(new Error("odd"), { name: "OddError" }));
  assert.equal(Object.getPrototypeOf(custom), Error.prototype);
  assert.equal(custom.name, "OddError");
  assert.equal(custom.message, "odd");

  const thrownString = roundTrip("just a string");
  assert.equal(thrownString.name, "Error");
  assert.equal(thrownString.message, "just a string");
});

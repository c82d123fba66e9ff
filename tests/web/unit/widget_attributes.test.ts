// widget/attributes.ts: every attribute value is either accepted as documented in
// docs/WIDGET.md's attribute table or refused with a reason (never silently replaced).
import assert from "node:assert/strict";
import { test } from "node:test";

import { CHAT, IMAGE } from "../../../web/src/widget/attributes";

test("enumerated attributes accept exactly their documented values", () => {
  for (const v of ["light", "dark", "auto"]) assert.deepEqual(CHAT.theme.parse(v), { ok: true, value: v });
  for (const v of ["inline", "bubble"]) assert.deepEqual(CHAT.layout.parse(v), { ok: true, value: v });
  for (const v of ["interaction", "eager", "manual"]) assert.deepEqual(CHAT.autoload.parse(v), { ok: true, value: v });
  for (const v of ["auto", "webgpu", "wasm-cpu"]) {
    assert.deepEqual(CHAT.backend.parse(v), { ok: true, value: v });
    assert.deepEqual(IMAGE.backend.parse(v), { ok: true, value: v });
  }
  // Backend library names and other spellings are refused (the attribute names a device, not a build).
  const backendBad = [[CHAT.backend, "cpu"], [CHAT.backend, "webgpu-f32"], [CHAT.backend, "WebGPU"], [IMAGE.backend, ""]] as const;
  for (const [spec, bad] of [[CHAT.theme, "Dark"], [CHAT.layout, "sideways"], [CHAT.autoload, ""], ...backendBad] as const) {
    const parsed = spec.parse(bad);
    assert.equal(parsed.ok, false);
    assert.match((parsed as { reason: string }).reason, /^must be one of "/);
  }
  assert.equal(CHAT.theme.fallback, "auto");
  assert.equal(CHAT.layout.fallback, "inline");
  assert.equal(CHAT.autoload.fallback, "interaction");
  assert.equal(CHAT.backend.fallback, "auto");
  assert.deepEqual(CHAT.backend.parse("gpu"), { ok: false, reason: 'must be one of "auto", "webgpu", "wasm-cpu"' });
});

test("numbers: ranges and integers as documented", () => {
  assert.deepEqual(CHAT.temperature.parse("0"), { ok: true, value: 0 });
  assert.deepEqual(CHAT.temperature.parse("2"), { ok: true, value: 2 });
  assert.deepEqual(CHAT.temperature.parse("0.35"), { ok: true, value: 0.35 });
  assert.deepEqual(CHAT.temperature.parse(""), { ok: true, value: 0.7 }); // empty = absent
  assert.deepEqual(CHAT.temperature.parse("hot"), { ok: false, reason: "must be a number" });
  assert.deepEqual(CHAT.temperature.parse("2.5"), { ok: false, reason: "must be a number from 0 to 2" });
  assert.deepEqual(CHAT.temperature.parse("Infinity"), { ok: false, reason: "must be a number" });
  assert.deepEqual(CHAT.maxTokens.parse("64"), { ok: true, value: 64 });
  assert.deepEqual(CHAT.maxTokens.parse("6.5"), { ok: false, reason: "must be an integer" });
  assert.deepEqual(CHAT.maxTokens.parse("0"), { ok: false, reason: "must be an integer from 1 to 32768" });
  assert.deepEqual(IMAGE.seed.parse("4294967295"), { ok: true, value: 4294967295 });
  assert.deepEqual(IMAGE.seed.parse("-1"), { ok: false, reason: "must be an integer from 0 to 4294967295" });
  assert.deepEqual(IMAGE.steps.parse(""), { ok: true, value: null }); // the model's default
  assert.deepEqual(IMAGE.guidance.parse("7.5"), { ok: true, value: 7.5 });
});

test("size is WIDTHxHEIGHT", () => {
  assert.deepEqual(IMAGE.size.parse("512x512"), { ok: true, value: "512x512" });
  assert.deepEqual(IMAGE.size.parse(""), { ok: true, value: null });
  for (const bad of ["512", "512X512", "0x512", "512x", " 512x512", "512x512px"]) {
    assert.equal(IMAGE.size.parse(bad).ok, false, bad);
  }
});

test("text attributes take any text; every attribute has a distinct name", () => {
  assert.deepEqual(CHAT.systemPrompt.parse("<b>hi</b>"), { ok: true, value: "<b>hi</b>" });
  for (const specs of [CHAT, IMAGE]) {
    const names = Object.values(specs).map((s) => s.name);
    assert.equal(new Set(names).size, names.length);
  }
  assert.deepEqual(Object.values(CHAT).map((s) => s.name).sort(), [
    "autoload", "backend", "greeting", "layout", "max-tokens", "model", "models-url", "placeholder", "system-prompt", "temperature", "theme",
  ]);
  assert.deepEqual(Object.values(IMAGE).map((s) => s.name).sort(), [
    "autoload", "backend", "guidance", "layout", "model", "models-url", "placeholder", "seed", "size", "steps", "theme",
  ]);
});

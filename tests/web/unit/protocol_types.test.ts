// The Worker protocol's types (engine/protocol.ts): every call message is typed by
// EngineMethods, so a method name or argument the map does not have is a compile error.
// The @ts-expect-error lines are the test: if the types loosened (say to `method: string`),
// they would no longer be errors and `npm run typecheck` (tests/test_toolchain.py) would fail.
import assert from "node:assert/strict";
import { test } from "node:test";

import type { CallMessage, EngineMethods, MethodArgs, MethodName, ToWorker } from "../../../web/src/engine/protocol";

/** What the Worker's handler table must be: one handler per method, typed by the map. */
type HandlerTable = { [K in MethodName]: (args: MethodArgs<K>) => unknown };

test("call messages are typed by the method map", () => {
  const calls: ToWorker[] = [
    { kind: "call", id: 1, method: "loadModel", args: ["tiny", undefined, undefined] },
    { kind: "call", id: 2, method: "cache.delete", args: ["tiny"] },
    { kind: "call", id: 3, method: "unloadModel", args: [] },
    { kind: "abort", id: 1 },
  ];
  // @ts-expect-error: no such method
  const unknownMethod: CallMessage = { kind: "call", id: 4, method: "loadModle", args: [] };
  // @ts-expect-error: cache.delete takes a model id
  const wrongArgs: CallMessage = { kind: "call", id: 5, method: "cache.delete", args: [42] };
  // @ts-expect-error: arguments of another method
  const otherArgs: CallMessage = { kind: "call", id: 6, method: "unloadModel", args: ["tiny"] };
  assert.equal(calls.length, 4);
  assert.ok(unknownMethod && wrongArgs && otherArgs);
});

test("a handler table must have every method", () => {
  const noop = () => undefined;
  const methods = ["chat", "images.generate", "listModels", "loadModel", "unloadModel", "loadedModel", "resetChat",
    "cache.list", "cache.delete", "cache.clear", "cache.storage", "simulateDeviceLoss"] as const;
  const table = Object.fromEntries(methods.map((name) => [name, noop])) as unknown as HandlerTable;
  // @ts-expect-error: a table without loadModel does not type
  const missing: HandlerTable = { ...table, loadModel: undefined };
  assert.equal(Object.keys(table).length, methods.length);
  assert.ok(missing);
  // `methods` is exactly the map's methods: a name it lacks, or one the map lacks, does not compile.
  const listed: readonly MethodName[] = methods;
  const complete: [keyof EngineMethods] extends [(typeof methods)[number]] ? true : false = true;
  assert.ok(complete && listed.length === methods.length);
});

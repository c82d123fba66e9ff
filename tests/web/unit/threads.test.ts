// How many threads the CPU backend plans (compiled/threads.ts planThreads), and the reason it
// gives the user, in the cases Node can stand for: no Worker scope here, as on a page's main
// thread. The threaded runs themselves are tested in Chromium (tests/test_chat_browser.py).
import assert from "node:assert/strict";
import { test } from "node:test";

import { MAX_THREADS, planThreads, threadCount } from "../../../web/src/compiled/threads";

test("one thread asked for is one thread, as asked", () => {
  assert.deepEqual(planThreads(1, "https://x/engine-worker.js", true), { threads: 1, reason: "1 thread, as asked" });
});

test("a build without a threaded library runs one thread and says so", () => {
  const plan = planThreads(2, "https://x/engine-worker.js", false);
  assert.equal(plan.threads, 1);
  assert.match(plan.reason, /no threaded CPU library/);
});

test("outside a Worker the engine runs one thread and names the fix", () => {
  for (const url of ["https://x/engine-worker.js", undefined]) {
    const plan = planThreads(4, url, true);
    assert.equal(plan.threads, 1);
    assert.match(plan.reason, /main thread/);
    assert.match(plan.reason, /createEngine\(\)/);
  }
});

test("thread counts are positive integers, capped", () => {
  assert.equal(threadCount(3), 3);
  assert.equal(threadCount(64), MAX_THREADS);
  assert.throws(() => threadCount(0), /positive integer/);
  assert.throws(() => threadCount(1.5), /positive integer/);
});

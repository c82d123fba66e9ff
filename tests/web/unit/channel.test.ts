// engine/channel.ts: the one-consumer async queue behind streaming completions.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Channel } from "../../../web/src/engine/channel";

async function collect<T>(channel: Channel<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of channel) items.push(item);
  return items;
}

test("items pushed before iteration are delivered in order, then the end", async () => {
  const channel = new Channel<number>();
  channel.push(1);
  channel.push(2);
  channel.close();
  assert.deepEqual(await collect(channel), [1, 2]);
});

test("a waiting consumer is woken by push and by close", async () => {
  const channel = new Channel<string>();
  const items = collect(channel);
  await Promise.resolve();
  channel.push("a");
  await new Promise((resolve) => setTimeout(resolve, 0));
  channel.push("b");
  channel.close();
  channel.push("ignored after close");
  assert.deepEqual(await items, ["a", "b"]);
});

test("fail delivers the items before it, then throws once, then ends", async () => {
  const channel = new Channel<number>();
  const boom = new Error("boom");
  channel.push(1);
  channel.fail(boom);
  channel.push(2); // ignored: the channel is done
  const iterator = channel[Symbol.asyncIterator]();
  assert.deepEqual(await iterator.next(), { value: 1, done: false });
  await assert.rejects(iterator.next(), (error) => error === boom);
  assert.deepEqual(await iterator.next(), { value: undefined, done: true });
});

test("fail rejects a waiting consumer", async () => {
  const channel = new Channel<number>();
  const boom = new Error("boom");
  const next = channel[Symbol.asyncIterator]().next();
  channel.fail(boom);
  await assert.rejects(next, (error) => error === boom);
});

test("a consumer that stops early cancels the producer once", async () => {
  const channel = new Channel<number>();
  let cancelled = 0;
  channel.onCancel = () => cancelled++;
  channel.push(1);
  channel.push(2);
  for await (const item of channel) {
    assert.equal(item, 1);
    break;
  }
  assert.equal(cancelled, 1);
  await channel[Symbol.asyncIterator]().return?.();
  assert.equal(cancelled, 1);
});

test("finishing normally does not cancel", async () => {
  const channel = new Channel<number>();
  let cancelled = 0;
  channel.onCancel = () => cancelled++;
  channel.close();
  assert.deepEqual(await collect(channel), []);
  assert.equal(cancelled, 0);
});

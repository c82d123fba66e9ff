// The one adapter from a producer of chunks (a generation on this thread, or Worker
// messages) to the AsyncIterable a streaming create() returns. Shared by LocalEngine and
// WorkerEngine so both settle create() the same way: on the first chunk, or with the
// error the producer fails with before any chunk (no model, context too long).

import { Channel } from "./channel";

/**
 * Runs `produce`, which pushes chunks and settles when the stream ends. Its signal aborts
 * when `outer` does or when the consumer stops iterating early (break/return).
 */
export async function streamChunks<T>(
  produce: (push: (chunk: T) => void, signal: AbortSignal) => Promise<void>,
  outer?: AbortSignal,
): Promise<AsyncIterable<T>> {
  const channel = new Channel<T>();
  const inner = new AbortController();
  const forward = () => inner.abort(outer?.reason);
  outer?.addEventListener("abort", forward, { once: true });
  channel.onCancel = () => inner.abort();
  let first: (() => void) | undefined;
  const started = new Promise<void>((resolve) => (first = resolve));
  const finished = produce((chunk) => {
    channel.push(chunk);
    first?.();
  }, inner.signal).then(
    () => channel.close(),
    (error: unknown) => {
      channel.fail(error);
      throw error;
    },
  );
  finished.finally(() => outer?.removeEventListener("abort", forward)).catch(() => undefined);
  await Promise.race([started, finished]);
  return channel;
}

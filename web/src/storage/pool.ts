// Runs async jobs with a fixed number in flight. Starting every shard download at
// once is a known failure mode in browsers ("Cache.add() network error", stalls).

/**
 * Calls `job` for each item with at most `limit` running at once. On the first
 * failure no new jobs start, `onFirstError` runs (to cancel running ones), and once
 * every started job has settled the returned promise rejects with that error, so no
 * work is left running in the background after the call returns.
 */
export async function runLimited<T>(
  items: readonly T[],
  limit: number,
  job: (item: T) => Promise<void>,
  onFirstError?: (error: unknown) => void,
): Promise<void> {
  let next = 0;
  let failed = false;
  let firstError: unknown;

  async function lane(): Promise<void> {
    while (!failed && next < items.length) {
      const item = items[next++] as T;
      try {
        await job(item);
      } catch (error) {
        if (!failed) {
          failed = true;
          firstError = error;
          onFirstError?.(error);
        }
      }
    }
  }

  const lanes = Math.max(1, Math.min(Math.floor(limit), items.length));
  await Promise.all(Array.from({ length: lanes }, lane));
  if (failed) {
    throw firstError;
  }
}

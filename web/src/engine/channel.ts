// A one-consumer async queue: a producer pushes values (or fails) while a consumer
// iterates with `for await`. Bridges callback-style generation and Worker messages to
// the AsyncIterable that streaming completions return.

export class Channel<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private waiting: ((result: IteratorResult<T>) => void) | null = null;
  private rejectWaiting: ((error: unknown) => void) | null = null;
  private done = false;
  private error: unknown = undefined;
  private failed = false;

  /** Called when the consumer stops early (break/return): e.g. to abort the producer. */
  onCancel: (() => void) | null = null;

  push(item: T): void {
    if (this.done) return;
    if (this.waiting) {
      const resolve = this.waiting;
      this.waiting = this.rejectWaiting = null;
      resolve({ value: item, done: false });
    } else {
      this.items.push(item);
    }
  }

  close(): void {
    this.done = true;
    if (this.waiting && this.items.length === 0) {
      const resolve = this.waiting;
      this.waiting = this.rejectWaiting = null;
      resolve({ value: undefined, done: true });
    }
  }

  fail(error: unknown): void {
    if (this.done) return;
    this.done = true;
    this.failed = true;
    this.error = error;
    if (this.rejectWaiting && this.items.length === 0) {
      const reject = this.rejectWaiting;
      this.waiting = this.rejectWaiting = null;
      reject(error);
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => {
        const item = this.items.shift();
        if (item !== undefined) return Promise.resolve({ value: item, done: false });
        if (this.done) {
          if (this.failed) {
            this.failed = false; // throw once, then end
            return Promise.reject(this.error);
          }
          return Promise.resolve({ value: undefined, done: true });
        }
        return new Promise<IteratorResult<T>>((resolve, reject) => {
          this.waiting = resolve;
          this.rejectWaiting = reject;
        });
      },
      return: () => {
        if (!this.done) {
          this.done = true;
          this.onCancel?.();
        }
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}

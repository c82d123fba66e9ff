// Records kept in this browser by id (one IndexedDB object store): the app's conversations
// and its image gallery. Falls back to memory when IndexedDB is unavailable (some private
// modes), so the app still works, just without persistence.

function promised<T>(request: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new DOMException("The transaction was aborted.", "AbortError"));
  });
}

/** A new record id: a UUID where the browser has one, else time plus randomness. */
export function newRecordId(now: number): string {
  return typeof crypto.randomUUID === "function" ? crypto.randomUUID() : `${now}-${Math.random().toString(36).slice(2)}`;
}

export interface StoreLayout<T> {
  database: string;
  store: string;
  /** The field listings sort on, newest (largest) first; also indexed. */
  order: keyof T & string;
}

export class LocalStore<T extends { id: string }> {
  private memory = new Map<string, T>();

  private constructor(
    private readonly db: IDBDatabase | null,
    private readonly layout: StoreLayout<T>,
  ) {}

  static async open<T extends { id: string }>(layout: StoreLayout<T>): Promise<LocalStore<T>> {
    try {
      const request = indexedDB.open(layout.database, 1);
      request.onupgradeneeded = () => {
        const store = request.result.createObjectStore(layout.store, { keyPath: "id" });
        store.createIndex(layout.order, layout.order);
      };
      return new LocalStore<T>(await promised(request), layout);
    } catch {
      return new LocalStore<T>(null, layout);
    }
  }

  get persistent(): boolean {
    return this.db !== null;
  }

  private objects(mode: IDBTransactionMode): IDBObjectStore {
    return this.db!.transaction(this.layout.store, mode).objectStore(this.layout.store);
  }

  /** All records, the largest `order` field first. */
  async list(): Promise<T[]> {
    const all = this.db ? await promised(this.objects("readonly").getAll() as IDBRequest<T[]>) : [...this.memory.values()];
    const key = this.layout.order;
    return all.sort((a, b) => (b[key] as number) - (a[key] as number));
  }

  async get(id: string): Promise<T | undefined> {
    if (!this.db) return this.memory.get(id);
    return (await promised(this.objects("readonly").get(id))) as T | undefined;
  }

  async put(record: T): Promise<void> {
    if (!this.db) {
      this.memory.set(record.id, record);
      return;
    }
    const store = this.objects("readwrite");
    store.put(record);
    await done(store.transaction);
  }

  async delete(id: string): Promise<void> {
    if (!this.db) {
      this.memory.delete(id);
      return;
    }
    const store = this.objects("readwrite");
    store.delete(id);
    await done(store.transaction);
  }
}

// Generated images kept in this browser (IndexedDB, database "webkiln-gallery"): the
// PNG bytes as the engine made them (with their "parameters" text chunk), what was asked
// for, and when. Falls back to memory when IndexedDB is unavailable.

export interface ImageParameters {
  model: string;
  prompt: string;
  negativePrompt: string;
  steps: number;
  guidanceScale: number;
  seed: number;
  scheduler: string;
  width: number;
  height: number;
}

export interface GalleryItem {
  id: string;
  created: number;
  png: Blob;
  parameters: ImageParameters;
}

const DB_NAME = "webkiln-gallery";
const STORE = "images";

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

export function newGalleryId(created: number): string {
  return typeof crypto.randomUUID === "function" ? crypto.randomUUID() : `${created}-${Math.random().toString(36).slice(2)}`;
}

export class GalleryStore {
  private memory = new Map<string, GalleryItem>();

  private constructor(private readonly db: IDBDatabase | null) {}

  static async open(): Promise<GalleryStore> {
    try {
      const request = indexedDB.open(DB_NAME, 1);
      request.onupgradeneeded = () => {
        const store = request.result.createObjectStore(STORE, { keyPath: "id" });
        store.createIndex("created", "created");
      };
      return new GalleryStore(await promised(request));
    } catch {
      return new GalleryStore(null);
    }
  }

  get persistent(): boolean {
    return this.db !== null;
  }

  /** All images, newest first. */
  async list(): Promise<GalleryItem[]> {
    const all = this.db
      ? await promised(this.db.transaction(STORE, "readonly").objectStore(STORE).getAll() as IDBRequest<GalleryItem[]>)
      : [...this.memory.values()];
    return all.sort((a, b) => b.created - a.created);
  }

  async put(item: GalleryItem): Promise<void> {
    if (!this.db) {
      this.memory.set(item.id, item);
      return;
    }
    const tx = this.db.transaction(STORE, "readwrite");
    tx.objectStore(STORE).put(item);
    await done(tx);
  }

  async delete(id: string): Promise<void> {
    if (!this.db) {
      this.memory.delete(id);
      return;
    }
    const tx = this.db.transaction(STORE, "readwrite");
    tx.objectStore(STORE).delete(id);
    await done(tx);
  }
}

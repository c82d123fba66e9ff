// Conversations kept in this browser (IndexedDB, database "webkiln-app"): a list in
// the sidebar, surviving reloads. Falls back to memory when IndexedDB is unavailable
// (some private modes), so the app still works, just without persistence.

import type { FinishReason, Role } from "../engine/api";

export interface MessageStats {
  model: string;
  promptTokens: number | null;
  cachedPromptTokens: number | null;
  completionTokens: number;
  decodeTokensPerS: number | null;
  prefillTokensPerS: number | null;
  finishReason: FinishReason | null;
  seconds: number;
}

export interface StoredMessage {
  role: Exclude<Role, "system">;
  content: string;
  stats?: MessageStats;
}

export interface Conversation {
  id: string;
  title: string;
  created: number;
  updated: number;
  messages: StoredMessage[];
}

const DB_NAME = "webkiln-app";
const STORE = "conversations";

function promised<T>(request: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

export function newConversation(): Conversation {
  const now = Date.now();
  const id = typeof crypto.randomUUID === "function" ? crypto.randomUUID() : `${now}-${Math.random().toString(36).slice(2)}`;
  return { id, title: "New chat", created: now, updated: now, messages: [] };
}

/** A title from the first user message: its first line, shortened. */
export function titleFrom(text: string): string {
  const line = text.trim().split("\n")[0]!.replace(/\s+/g, " ");
  return line.length > 48 ? `${line.slice(0, 47)}…` : line || "New chat";
}

export class ConversationStore {
  private memory = new Map<string, Conversation>();

  private constructor(private readonly db: IDBDatabase | null) {}

  static async open(): Promise<ConversationStore> {
    try {
      const request = indexedDB.open(DB_NAME, 1);
      request.onupgradeneeded = () => {
        const store = request.result.createObjectStore(STORE, { keyPath: "id" });
        store.createIndex("updated", "updated");
      };
      return new ConversationStore(await promised(request));
    } catch {
      return new ConversationStore(null);
    }
  }

  get persistent(): boolean {
    return this.db !== null;
  }

  private store(mode: IDBTransactionMode): IDBObjectStore {
    return this.db!.transaction(STORE, mode).objectStore(STORE);
  }

  /** All conversations, most recently updated first. */
  async list(): Promise<Conversation[]> {
    const all = this.db ? await promised(this.store("readonly").getAll() as IDBRequest<Conversation[]>) : [...this.memory.values()];
    return all.sort((a, b) => b.updated - a.updated);
  }

  async get(id: string): Promise<Conversation | undefined> {
    if (!this.db) return this.memory.get(id);
    return (await promised(this.store("readonly").get(id))) as Conversation | undefined;
  }

  async put(conversation: Conversation): Promise<void> {
    // Stored as plain data (a structured clone), never the live object.
    const copy: Conversation = JSON.parse(JSON.stringify(conversation));
    if (!this.db) {
      this.memory.set(copy.id, copy);
      return;
    }
    await promised(this.store("readwrite").put(copy));
  }

  async delete(id: string): Promise<void> {
    if (!this.db) {
      this.memory.delete(id);
      return;
    }
    await promised(this.store("readwrite").delete(id));
  }
}

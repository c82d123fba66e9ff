// Conversations kept in this browser (IndexedDB, database "webkiln-app", through
// LocalStore): a list in the sidebar, surviving reloads.

import type { FinishReason, Role } from "../engine/api";
import { LocalStore, newRecordId } from "./local_store";

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

export function newConversation(): Conversation {
  const now = Date.now();
  return { id: newRecordId(now), title: "New chat", created: now, updated: now, messages: [] };
}

/** A title from the first user message: its first line, shortened. */
export function titleFrom(text: string): string {
  const line = text.trim().split("\n")[0]!.replace(/\s+/g, " ");
  return line.length > 48 ? `${line.slice(0, 47)}…` : line || "New chat";
}

/** The conversations, most recently updated first (IndexedDB database "webkiln-app"). */
export class ConversationStore {
  private constructor(private readonly records: LocalStore<Conversation>) {}

  static async open(): Promise<ConversationStore> {
    return new ConversationStore(await LocalStore.open<Conversation>({ database: "webkiln-app", store: "conversations", order: "updated" }));
  }

  get persistent(): boolean {
    return this.records.persistent;
  }

  list(): Promise<Conversation[]> {
    return this.records.list();
  }

  get(id: string): Promise<Conversation | undefined> {
    return this.records.get(id);
  }

  put(conversation: Conversation): Promise<void> {
    // Stored as plain data (a structured clone), never the live object.
    return this.records.put(JSON.parse(JSON.stringify(conversation)) as Conversation);
  }

  delete(id: string): Promise<void> {
    return this.records.delete(id);
  }
}

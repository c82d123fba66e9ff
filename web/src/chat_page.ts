// The chat page: `window.webkilnChat` (the handle the tests drive) and, on pages
// that have the chat UI elements (site/index.html), the chat UI itself. Both share
// one loaded model.

import { createEngine, type CreateEngineOptions, type Engine } from "./engine";
import { ChatModel, type GenerateOptions, type LoadChatOptions } from "./llm/chat_model";
import { ChatTemplate, type TemplateMessage } from "./llm/chat_template";
import type { ChatManifest } from "./llm/manifest";
import { Tokenizer } from "./llm/tokenizer";
import { startChatUI } from "./chat_ui";

let current: ChatModel | undefined;

/** Loads a model (disposing the previous one); the UI and `window.webkilnChat` share it. */
export async function loadModel(manifestUrl: string, options: LoadChatOptions = {}): Promise<ChatModel> {
  current?.dispose();
  current = undefined;
  current = await ChatModel.load(manifestUrl, options);
  return current;
}

/** The loaded model, if any. */
export function currentModel(): ChatModel | undefined {
  return current;
}

async function load(manifestUrl: string, backend?: string) {
  const started = performance.now();
  const m = await loadModel(manifestUrl, { backend });
  return { id: m.manifest.id, backend: m.backend, millis: performance.now() - started };
}

function model(): ChatModel {
  if (!current) throw new Error("no model loaded: call load() first");
  return current;
}

async function generate(promptIds: number[], options: Omit<GenerateOptions, "onToken" | "signal"> = {}) {
  const deltas: string[] = [];
  const result = await model().generate(promptIds, { ...options, onToken: (_id, delta) => deltas.push(delta) });
  return { ...result, deltas };
}

function encode(text: string): number[] {
  return Array.from(model().tokenizer.encode(text));
}

/** The prompt text the engine builds for `messages` with the model's chat template (reads only the manifest and tokenizer). */
async function renderChat(manifestUrl: string, messages: TemplateMessage[], addGenerationPrompt = true): Promise<string> {
  const manifest = (await (await fetch(manifestUrl)).json()) as ChatManifest;
  const tokenizer = await Tokenizer.fromJSON(await (await fetch(new URL("tokenizer.json", new URL(manifestUrl, location.href)))).arrayBuffer());
  try {
    return new ChatTemplate(manifest, tokenizer).render(messages, addGenerationPrompt);
  } finally {
    tokenizer.dispose();
  }
}

declare global {
  interface Window {
    webkilnChat: {
      load: typeof load;
      generate: typeof generate;
      encode: typeof encode;
      reset: () => void;
      renderChat: typeof renderChat;
      createEngine: (options?: CreateEngineOptions) => Engine;
    };
  }
}
window.webkilnChat = { load, generate, encode, reset: () => model().reset(), renderChat, createEngine };

if (document.getElementById("chat")) {
  void startChatUI({ loadModel, currentModel });
}

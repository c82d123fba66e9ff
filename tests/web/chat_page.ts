// tests/site/chat.html's `window.webkilnChat`: direct access to a ChatModel, the chat
// template and both engine flavours, for tests and benchmarks. (The app is site/index.html.)

import { createEngine, type Engine } from "../../web/src/engine";
import { createInPageEngine } from "../../web/src/engine/in_page";
import { ChatModel, type GenerateOptions, type LoadChatOptions } from "../../web/src/llm/chat_model";
import { ChatTemplate, type TemplateMessage } from "../../web/src/llm/chat_template";
import type { ChatManifest } from "../../web/src/base/manifest_types";
import { Tokenizer } from "../../web/src/base/tokenizer";

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
  return { id: m.manifest.id, backend: m.backend, backendReason: m.backendReason, millis: performance.now() - started };
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
      /** The Worker engine, or with {worker: false} the same engine on this thread. */
      createEngine: (options?: { worker?: boolean }) => Engine;
    };
  }
}
window.webkilnChat = {
  load,
  generate,
  encode,
  reset: () => model().reset(),
  renderChat,
  createEngine: (options = {}) => (options.worker === false ? createInPageEngine() : createEngine()),
};

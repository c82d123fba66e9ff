// The chat page (a simple one; the full app is its own piece of work) and the
// `window.webkiln.chat` handle the tests drive.

import { ChatModel, type GenerateOptions } from "./llm/chat_model";

let current: ChatModel | undefined;

async function load(manifestUrl: string, backend?: string) {
  current?.dispose();
  current = undefined;
  const started = performance.now();
  current = await ChatModel.load(manifestUrl, { backend });
  return { id: current.manifest.id, backend: current.backend, millis: performance.now() - started };
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

declare global {
  interface Window {
    webkilnChat: { load: typeof load; generate: typeof generate; encode: typeof encode; reset: () => void };
  }
}
window.webkilnChat = { load, generate, encode, reset: () => model().reset() };

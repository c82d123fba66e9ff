// The chat UI of site/index.html: pick a built model from models/index.json, load
// it with progress, and chat with it. Model output is only ever set as textContent.

import { Template } from "@huggingface/jinja";
import { WebkilnError } from "./engine/errors";
import type { ChatModel, LoadChatOptions } from "./llm/chat_model";
import type { LoadProgress } from "./storage";

export interface ChatHost {
  loadModel(manifestUrl: string, options?: LoadChatOptions): Promise<ChatModel>;
  currentModel(): ChatModel | undefined;
}

interface IndexEntry {
  id: string;
  task: string;
  name?: string;
  quantization?: string;
  manifest: string;
  download_bytes?: number;
}

interface Message {
  role: "user" | "assistant" | "system";
  content: string;
}

const NO_MODEL =
  "No model is built yet. Run ./scripts/serve.sh (it builds the default model) or build_web --model … to build one, then reload this page.";

function el<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`the page has no #${id}`);
  return found as T;
}

const mb = (bytes: number) => (bytes / 1e6).toFixed(1);

function describeError(error: unknown): string {
  if (error instanceof WebkilnError) return error.message;
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}

async function readIndex(): Promise<IndexEntry[]> {
  let response: Response;
  try {
    response = await fetch("models/index.json", { cache: "no-cache" });
  } catch {
    return [];
  }
  if (!response.ok) return [];
  try {
    const index = (await response.json()) as { models?: IndexEntry[] };
    return (index.models ?? []).filter((m) => m.task === "chat");
  } catch {
    return [];
  }
}

export async function startChatUI(host: ChatHost): Promise<void> {
  const status = el<HTMLParagraphElement>("status");
  const log = el<HTMLDivElement>("chat");
  const select = el<HTMLSelectElement>("model-select");
  const form = el<HTMLFormElement>("composer");
  const input = el<HTMLTextAreaElement>("prompt");
  const send = el<HTMLButtonElement>("send");
  const stop = el<HTMLButtonElement>("stop");
  const newChat = el<HTMLButtonElement>("new-chat");
  const temperatureInput = el<HTMLInputElement>("temperature");
  const maxTokensInput = el<HTMLInputElement>("max-tokens");

  let messages: Message[] = [];
  let template: Template | undefined;
  let specialTokens: Record<string, string> = {};
  let busy = false;
  let controller: AbortController | undefined;

  const setStatus = (text: string, isError = false) => {
    status.textContent = text;
    status.classList.toggle("error", isError);
  };
  const setReady = (ready: boolean) => {
    input.disabled = !ready;
    send.disabled = !ready;
    newChat.disabled = !ready;
    select.disabled = busy;
  };

  function bubble(role: Message["role"], text: string): HTMLDivElement {
    const div = document.createElement("div");
    div.className = `msg ${role}`;
    const body = document.createElement("div");
    body.className = "text";
    body.textContent = text;
    div.append(body);
    log.append(div);
    log.scrollTop = log.scrollHeight;
    return div;
  }

  function renderPrompt(model: ChatModel): string {
    if (!template) {
      // No template in the manifest: a plain transcript.
      return messages.map((m) => `${m.role}: ${m.content}\n`).join("") + "assistant: ";
    }
    return template.render({ messages, add_generation_prompt: true, ...specialTokens });
  }

  async function loadEntry(entry: IndexEntry): Promise<void> {
    busy = true;
    setReady(false);
    messages = [];
    log.replaceChildren();
    const label = entry.name ?? entry.id;
    setStatus(`Loading ${label}…`);
    try {
      const model = await host.loadModel(`models/${entry.manifest}`, {
        onProgress: (p: LoadProgress) => {
          const files = `${p.filesDone}/${p.totalFiles} files`;
          setStatus(
            p.filesDone === p.totalFiles
              ? `Loaded ${mb(p.totalBytes)} MB (${files}); preparing the GPU…`
              : `Loading ${label}: ${mb(p.loadedBytes)} / ${mb(p.totalBytes)} MB, ${files}`,
          );
        },
      });
      const m = model.manifest;
      template = m.chat_template ? new Template(m.chat_template) : undefined;
      const token = (id: number | null | undefined) => (id === null || id === undefined ? "" : model.tokenizer.idToToken(id));
      specialTokens = { bos_token: token(m.bos_token_id), eos_token: token(m.stop_token_ids[0]) };
      temperatureInput.value = String(m.generation.temperature);
      if (!maxTokensInput.value) maxTokensInput.value = String(m.generation.max_tokens);
      setStatus(`${label} is ready (${model.backend}).`);
      busy = false;
      setReady(true);
      input.focus();
    } catch (error) {
      busy = false;
      setReady(false);
      select.disabled = false;
      setStatus(`Loading ${label} failed: ${describeError(error)}`, true);
    }
  }

  async function submit(): Promise<void> {
    const model = host.currentModel();
    const text = input.value.trim();
    if (!model || busy || !text) return;
    busy = true;
    setReady(false);
    stop.disabled = false;
    input.value = "";
    messages.push({ role: "user", content: text });
    bubble("user", text);
    const reply = bubble("assistant", "");
    reply.classList.add("pending");
    const body = reply.querySelector<HTMLDivElement>(".text")!;
    setStatus("Thinking…");
    controller = new AbortController();
    try {
      const ids = Array.from(model.tokenizer.encode(renderPrompt(model)));
      const temperature = Number.parseFloat(temperatureInput.value);
      const maxTokens = Number.parseInt(maxTokensInput.value, 10);
      let streamed = "";
      const result = await model.generate(ids, {
        signal: controller.signal,
        temperature: Number.isFinite(temperature) ? temperature : undefined,
        maxTokens: Number.isFinite(maxTokens) && maxTokens > 0 ? maxTokens : undefined,
        onToken: (_id, delta) => {
          streamed += delta;
          body.textContent = streamed;
          log.scrollTop = log.scrollHeight;
        },
      });
      body.textContent = result.text;
      messages.push({ role: "assistant", content: result.text });
      const n = result.tokens.length;
      const rate = result.decodeMillis > 0 ? (n / result.decodeMillis) * 1000 : 0;
      const stats = document.createElement("div");
      stats.className = "stats";
      stats.textContent =
        `${n} tokens · ${rate.toFixed(2)} tokens/s · prefill ${result.prefilledTokens} tokens in ${(result.prefillMillis / 1000).toFixed(1)} s` +
        (result.finishReason === "abort" ? " · stopped" : result.finishReason === "length" ? " · length limit" : "");
      reply.append(stats);
      setStatus("");
    } catch (error) {
      messages.pop(); // the user turn that failed; the bubble stays for reference
      reply.classList.add("failed");
      setStatus(describeError(error), true);
    } finally {
      reply.classList.remove("pending");
      controller = undefined;
      busy = false;
      stop.disabled = true;
      setReady(true);
      input.focus();
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void submit();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      void submit();
    }
  });
  stop.addEventListener("click", () => controller?.abort());
  newChat.addEventListener("click", () => {
    if (busy) return;
    messages = [];
    log.replaceChildren();
    host.currentModel()?.reset();
    setStatus("New conversation.");
    input.focus();
  });

  setReady(false);
  stop.disabled = true;
  const models = await readIndex();
  if (models.length === 0) {
    (select.closest("label") ?? select).hidden = true;
    setStatus(NO_MODEL, true);
    return;
  }
  for (const m of models) {
    const option = document.createElement("option");
    option.value = m.id;
    const size = m.download_bytes ? `, ${mb(m.download_bytes)} MB` : "";
    option.textContent = `${m.id} (${m.quantization ?? "?"}${size})`;
    select.append(option);
  }
  select.addEventListener("change", () => {
    const entry = models.find((m) => m.id === select.value);
    if (entry && !busy) void loadEntry(entry);
  });
  await loadEntry(models[0]!);
}

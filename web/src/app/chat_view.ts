// The message list (#chat): user messages as plain text, assistant messages as
// sanitized markdown re-rendered while they stream, and each reply's stats.

import type { MessageStats, StoredMessage } from "./conversations";
import { h } from "./dom";
import { handleCopyClicks, renderMarkdownInto, StreamingMarkdown } from "../ui/markdown";

export function statsText(stats: MessageStats): string {
  const parts = [`${stats.completionTokens} tokens`];
  if (stats.decodeTokensPerS !== null) parts.push(`${stats.decodeTokensPerS.toFixed(2)} tokens/s`);
  if (stats.promptTokens !== null) {
    const cached = stats.cachedPromptTokens ? `, ${stats.cachedPromptTokens} cached` : "";
    parts.push(`prompt ${stats.promptTokens} tokens${cached}`);
  }
  parts.push(`${stats.seconds.toFixed(1)} s`);
  if (stats.finishReason === "abort") parts.push("stopped");
  else if (stats.finishReason === "length") parts.push("hit the max tokens limit");
  return parts.join(" · ");
}

const SUGGESTIONS = [
  "What is the capital of France?",
  "Write a haiku about GPUs.",
  "Explain WebGPU in two sentences.",
  "Give me a Python one-liner to reverse a string.",
];

export class ChatView {
  private stickToBottom = true;

  constructor(
    private readonly root: HTMLElement,
    private readonly onSuggestion: (text: string) => void,
  ) {
    handleCopyClicks(root);
    root.addEventListener("scroll", () => {
      this.stickToBottom = root.scrollHeight - root.scrollTop - root.clientHeight < 48;
    });
  }

  /** Shows a whole conversation (or the welcome screen when it is empty). */
  show(messages: StoredMessage[], modelLabel: string | null): void {
    this.root.replaceChildren();
    if (messages.length === 0) {
      this.root.append(this.welcome(modelLabel));
      return;
    }
    for (const m of messages) this.append(m);
    this.stickToBottom = true;
    this.scroll();
  }

  private welcome(modelLabel: string | null): HTMLElement {
    const chips = SUGGESTIONS.map((text) => {
      const chip = h("button", { type: "button", class: "suggestion" }, text);
      chip.addEventListener("click", () => this.onSuggestion(text));
      return chip;
    });
    return h(
      "div",
      { class: "welcome" },
      h("div", { class: "welcome-mark", "aria-hidden": "true" }, "◆"),
      h("h2", {}, "Chat with a model that runs in your browser"),
      h(
        "p",
        {},
        modelLabel
          ? `${modelLabel} runs on this device's GPU with WebGPU: nothing you type leaves this page.`
          : "Models run on this device's GPU with WebGPU: nothing you type leaves this page.",
      ),
      h("div", { class: "suggestions" }, ...chips),
    );
  }

  /** Appends one message; returns its element. */
  append(message: StoredMessage): HTMLElement {
    this.root.querySelector(".welcome")?.remove();
    const text = h("div", { class: message.role === "assistant" ? "text markdown" : "text" });
    const node = h(
      "article",
      { class: `msg ${message.role}`, "aria-label": message.role === "user" ? "You said" : "Assistant replied" },
      text,
    );
    if (message.role === "assistant") {
      node.dataset.raw = message.content;
      renderMarkdownInto(text, message.content);
    }
    else text.textContent = message.content;
    if (message.stats) node.append(h("div", { class: "stats" }, statsText(message.stats)));
    this.root.append(node);
    this.scroll();
    return node;
  }

  /** Starts a streaming assistant message; returns a handle to update and finish it. */
  stream(): StreamingReply {
    const node = this.append({ role: "assistant", content: "" });
    node.classList.add("pending");
    node.setAttribute("aria-busy", "true");
    return new StreamingReply(node, () => this.scroll());
  }

  removeLast(count: number): void {
    for (let i = 0; i < count; i++) {
      const all = this.root.querySelectorAll(".msg");
      all[all.length - 1]?.remove();
    }
  }

  scroll(force = false): void {
    if (force || this.stickToBottom) this.root.scrollTop = this.root.scrollHeight;
  }
}

export class StreamingReply {
  private readonly markdown: StreamingMarkdown;
  readonly text: HTMLElement;

  constructor(
    readonly node: HTMLElement,
    onRender: () => void,
  ) {
    this.text = node.querySelector<HTMLElement>(".text")!;
    this.markdown = new StreamingMarkdown(this.text, onRender);
  }

  update(content: string): void {
    this.node.dataset.raw = content;
    this.markdown.update(content);
  }

  finish(content: string, stats: MessageStats | null, failed = false): void {
    this.node.dataset.raw = content;
    this.markdown.update(content);
    this.markdown.flush();
    this.node.classList.remove("pending");
    this.node.removeAttribute("aria-busy");
    if (failed) this.node.classList.add("failed");
    if (stats) this.node.append(h("div", { class: "stats" }, statsText(stats)));
  }
}

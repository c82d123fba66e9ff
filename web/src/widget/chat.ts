// <webkiln-chat>: a chat box on the engine. Replies stream in as markdown, sanitized by
// the same module as the app's chat view (ui/markdown.ts); the conversation lives in the
// element (element.messages) and in the engine's KV cache.

import type { ChatCompletionChunk, ChatMessage, CompletionUsage, FinishReason } from "../engine";
import { handleCopyClicks, renderMarkdownInto, StreamingMarkdown } from "../ui/markdown";
import { CHAT } from "./attributes";
import { h, observed, WidgetElement } from "./element";

/** webkiln-reply's detail. */
export interface ReplyDetail {
  text: string;
  usage: CompletionUsage | null;
  finish_reason: FinishReason | null;
}

export class WebkilnChatElement extends WidgetElement {
  static readonly observedAttributes = observed(CHAT);
  protected readonly task = "chat";
  protected readonly specs = CHAT;
  protected readonly label = "chat";

  private readonly log = h("div", { class: "log", part: "log", role: "log", "aria-live": "polite", tabindex: "0" });
  private readonly input = h("textarea", { part: "input", rows: "2" });
  private readonly sendButton = h("button", { type: "submit", part: "send-button" }, "Send");
  private readonly stopButton = h("button", { type: "button", part: "stop-button", class: "secondary", hidden: "" }, "Stop");
  private readonly form = h("form", { part: "form" }, this.input, this.sendButton, this.stopButton);
  private readonly history: ChatMessage[] = [];
  private greetingEl: HTMLElement | null = null;
  private controller: AbortController | null = null;
  private busy: Promise<ReplyDetail> | null = null;

  constructor() {
    super();
    this.log.setAttribute("aria-label", "Conversation");
    handleCopyClicks(this.log);
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = this.input.value.trim();
      if (!text || this.busy) return;
      this.input.value = "";
      void this.send(text).catch(() => {});
    });
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.form.requestSubmit();
      }
    });
    this.stopButton.addEventListener("click", () => this.stop());
  }

  protected body(): HTMLElement[] {
    this.updatePlaceholder();
    this.showGreeting();
    return [this.log, this.form];
  }

  protected launcherText(): string {
    return "Chat";
  }

  protected focusInput(): void {
    this.input.focus();
  }

  protected setReady(ready: boolean): void {
    this.sendButton.disabled = !ready && this.autoload === "manual";
  }

  protected override attributeChanged(name: string): void {
    if (name === "placeholder") this.updatePlaceholder();
    if (name === "greeting") this.showGreeting();
  }

  private updatePlaceholder(): void {
    const text = this.placeholder || "Ask something…";
    this.input.placeholder = text;
    this.input.setAttribute("aria-label", this.placeholder || "Message");
  }

  /** The greeting is shown as the assistant's first message (markdown, sanitized like replies); it is not sent to the model. */
  private showGreeting(): void {
    this.greetingEl?.remove();
    this.greetingEl = null;
    if (!this.greeting) return;
    const el = h("div", { class: "msg assistant greeting", part: "message assistant-message" });
    renderMarkdownInto(el, this.greeting);
    this.greetingEl = el;
    this.log.prepend(el);
  }

  get systemPrompt(): string {
    return this.attributeValue("systemPrompt");
  }
  set systemPrompt(value: string) {
    this.setAttribute("system-prompt", value);
  }
  get greeting(): string {
    return this.attributeValue("greeting");
  }
  set greeting(value: string) {
    this.setAttribute("greeting", value);
  }
  get temperature(): number {
    return this.attributeValue<number>("temperature");
  }
  set temperature(value: number) {
    this.setAttribute("temperature", String(value));
  }
  get maxTokens(): number {
    return this.attributeValue<number>("maxTokens");
  }
  set maxTokens(value: number) {
    this.setAttribute("max-tokens", String(value));
  }

  /** The conversation so far (user and assistant turns; the system prompt and greeting are not in it). */
  get messages(): ChatMessage[] {
    return this.history.map((m) => ({ ...m }));
  }

  /**
   * Sends `text` as the user's next message (loading the model first if needed) and streams
   * the reply into the log. Resolves with webkiln-reply's detail; rejects with the typed error.
   */
  async send(text: string): Promise<ReplyDetail> {
    if (this.busy) throw new Error("a reply is still being generated: wait for it or call stop()");
    const run = this.run(text);
    this.busy = run;
    try {
      return await run;
    } finally {
      this.busy = null;
    }
  }

  private async run(text: string): Promise<ReplyDetail> {
    this.clearError();
    this.history.push({ role: "user", content: text });
    this.log.append(h("div", { class: "msg user", part: "message user-message" }, text));
    const bubble = h("div", { class: "msg assistant pending", part: "message assistant-message", "aria-busy": "true" });
    this.log.append(bubble);
    this.scrollDown();
    const markdown = new StreamingMarkdown(bubble, () => this.scrollDown());
    this.controller = new AbortController();
    this.stopButton.hidden = false;
    this.sendButton.hidden = true;
    let reply = "";
    try {
      await this.load();
      const messages: ChatMessage[] = [
        ...(this.systemPrompt ? [{ role: "system" as const, content: this.systemPrompt }] : []),
        ...this.history,
      ];
      this.status.textContent = "Generating…";
      const stream = await this.engine.chat.completions.create(
        {
          messages,
          stream: true,
          stream_options: { include_usage: true },
          temperature: this.temperature,
          max_tokens: this.maxTokens,
        },
        { signal: this.controller.signal },
      );
      let usage: CompletionUsage | null = null;
      let finish: FinishReason | null = null;
      for await (const chunk of stream as AsyncIterable<ChatCompletionChunk>) {
        const choice = chunk.choices[0];
        if (choice?.delta.content) {
          reply += choice.delta.content;
          markdown.update(reply);
        }
        if (choice?.finish_reason) finish = choice.finish_reason;
        if (chunk.usage) usage = chunk.usage;
      }
      markdown.update(reply);
      markdown.flush();
      this.history.push({ role: "assistant", content: reply });
      const speed = usage ? ` · ${usage.completion_tokens} tokens, ${usage.extra.decode_tokens_per_s.toFixed(1)} tokens/s` : "";
      this.status.textContent = (finish === "abort" ? "Stopped" : "Done") + speed;
      const detail: ReplyDetail = { text: reply, usage, finish_reason: finish };
      this.emit("webkiln-reply", detail);
      return detail;
    } catch (error) {
      markdown.flush();
      // The failed turn leaves the conversation as it was before it.
      this.history.pop();
      if (!reply) bubble.remove();
      this.status.textContent = "";
      if (error !== this.lastLoadError) this.report(error);
      throw error;
    } finally {
      bubble.classList.remove("pending");
      bubble.removeAttribute("aria-busy");
      this.controller = null;
      this.stopButton.hidden = true;
      this.sendButton.hidden = false;
    }
  }

  /** Stops the reply being generated (it keeps what was written so far). */
  stop(): void {
    this.controller?.abort();
  }

  /** Forgets the conversation: clears the log and the engine's KV cache of it. */
  async reset(): Promise<void> {
    this.stop();
    await this.busy?.catch(() => {});
    this.history.length = 0;
    this.log.replaceChildren();
    this.showGreeting();
    this.clearError();
    this.status.textContent = "";
    if (this.loadedModel) await this.engine.resetChat();
  }

  private scrollDown(): void {
    this.log.scrollTop = this.log.scrollHeight;
  }
}

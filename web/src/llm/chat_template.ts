// Turning OpenAI-style messages into the prompt text the model was trained on, with
// the manifest's Jinja chat template rendered by @huggingface/jinja, as transformers'
// `apply_chat_template(messages, add_generation_prompt=True, tokenize=False)` does.

import { Template } from "@huggingface/jinja";
import { InvalidRequestError } from "../base/errors";
import type { ChatManifest } from "../base/manifest";
import type { Tokenizer } from "../base/tokenizer";

export interface TemplateMessage {
  role: string;
  content: string;
}

export class ChatTemplate {
  private readonly template: Template | null;
  private readonly specialTokens: Record<string, string>;

  constructor(manifest: ChatManifest, tokenizer: Tokenizer) {
    this.template = manifest.chat_template ? new Template(manifest.chat_template) : null;
    const token = (id: number | null | undefined) => (id === null || id === undefined ? "" : tokenizer.idToToken(id));
    // transformers passes the tokenizer's special tokens to every template.
    this.specialTokens = { bos_token: token(manifest.bos_token_id), eos_token: token(manifest.stop_token_ids[0]) };
  }

  /** `variables`: further template variables (a request's `chat_template_kwargs`). */
  render(messages: readonly TemplateMessage[], addGenerationPrompt = true, variables: Record<string, unknown> = {}): string {
    if (!this.template) {
      // A model without a template (a base model): a plain transcript.
      return messages.map((m) => `${m.role}: ${m.content}\n`).join("") + (addGenerationPrompt ? "assistant: " : "");
    }
    try {
      return this.template.render({
        ...variables,
        messages: messages.map((m) => ({ role: m.role, content: m.content })),
        add_generation_prompt: addGenerationPrompt,
        ...this.specialTokens,
      });
    } catch (error) {
      // Templates reject conversations they do not support (e.g. roles out of order) with raise_exception.
      throw new InvalidRequestError(
        `The model's chat template rejected these messages: ${error instanceof Error ? error.message : String(error)}`,
        "messages",
      );
    }
  }
}

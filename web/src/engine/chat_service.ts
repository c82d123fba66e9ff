// chat.completions.create on the loaded chat model: the chat template, tokenizing, the
// context-window check, generation with stop strings, and the OpenAI-shaped result
// (one completion, or a stream of chunks).

import { ContextWindowError } from "../base/errors";
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionRequest,
  CompletionUsage,
  FinishReason,
  RequestOptions,
} from "./api";
import {
  completionId,
  makeChunk,
  makeCompletion,
  makeUsageChunk,
  StopStringMatcher,
  validateChatRequest,
  type ChatParams,
} from "./openai";
import type { ModelSession } from "./session";
import { streamChunks } from "./stream";

interface Completed {
  finishReason: FinishReason;
  usage: CompletionUsage;
  id: string;
  created: number;
  model: string;
}

/** Where one completion reports: its id once known, each text delta, then how it ended. */
interface RunSink {
  begin?: (id: string, created: number, model: string) => void;
  delta: (text: string) => void;
  end: (end: Completed) => void;
}

export class ChatService {
  constructor(private readonly session: ModelSession) {}

  async create(
    request: ChatCompletionRequest,
    options: RequestOptions = {},
  ): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>> {
    const params = validateChatRequest(request);
    if (!params.stream) {
      let content = "";
      const ends: Completed[] = [];
      await this.session.exclusive(() =>
        this.run(params, options.signal, { delta: (text) => (content += text), end: (end) => ends.push(end) }),
      );
      const f = ends[0];
      if (!f) throw new Error("generation ended without a result"); // run() always calls end()
      return makeCompletion(f.id, f.created, f.model, content, f.finishReason, f.usage);
    }
    // With include_usage every chunk has "usage": null but the last one, which has only usage.
    const usage = params.includeUsage ? null : undefined;
    return streamChunks<ChatCompletionChunk>((push, signal) => {
      const meta = { id: "", created: 0, model: "" };
      return this.session.exclusive(() =>
        this.run(params, signal, {
          begin: (id, created, model) => {
            Object.assign(meta, { id, created, model });
            push(makeChunk(id, created, model, { role: "assistant", content: "" }, null, usage));
          },
          delta: (text) => {
            if (text) push(makeChunk(meta.id, meta.created, meta.model, { content: text }, null, usage));
          },
          end: (end) => {
            push(makeChunk(meta.id, meta.created, meta.model, {}, end.finishReason, usage));
            if (params.includeUsage) push(makeUsageChunk(meta.id, meta.created, meta.model, end.usage));
          },
        }),
      );
    }, options.signal);
  }

  /** One completion: template, tokenize, generate with stop strings; reports through `sink`. */
  private async run(params: ChatParams, signal: AbortSignal | undefined, sink: RunSink): Promise<void> {
    const { model, template } = this.session.require(params.model, "chat");
    const manifest = model.manifest;
    const prompt = Array.from(model.tokenizer.encode(template.render(params.messages, true, params.templateVariables)));
    const room = manifest.context_window - prompt.length;
    if (room < 1) {
      throw new ContextWindowError(
        `The conversation is ${prompt.length} tokens but ${manifest.id}'s context window is ${manifest.context_window}, leaving no room for a reply. Start a new conversation or remove earlier messages.`,
      );
    }
    const requested = params.maxTokens ?? manifest.generation.max_tokens;
    const id = completionId();
    const created = Math.floor(Date.now() / 1000);
    sink.begin?.(id, created, manifest.id);

    const matcher = new StopStringMatcher(params.stop);
    const stopper = new AbortController();
    const onAbort = () => stopper.abort(signal?.reason);
    if (signal?.aborted) stopper.abort(signal.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    let result;
    try {
      result = await model.generate(prompt, {
        maxTokens: Math.min(requested, room),
        temperature: params.temperature ?? undefined,
        topP: params.topP ?? undefined,
        seed: params.seed ?? undefined,
        signal: stopper.signal,
        onToken: (_token, text) => {
          const out = matcher.push(text);
          if (out) sink.delta(out);
          if (matcher.stopped) stopper.abort();
        },
      });
    } catch (error) {
      throw this.session.runFailure(error);
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
    const rest = matcher.flush();
    if (rest) sink.delta(rest);
    const finishReason: FinishReason = matcher.stopped ? "stop" : result.finishReason;
    const completion = result.tokens.length;
    const cached = result.promptTokens - result.prefilledTokens;
    const usage: CompletionUsage = {
      prompt_tokens: result.promptTokens,
      completion_tokens: completion,
      total_tokens: result.promptTokens + completion,
      extra: {
        prefilled_tokens: result.prefilledTokens,
        cached_prompt_tokens: cached,
        prefill_tokens_per_s: result.prefillMillis > 0 ? (result.prefilledTokens * 1000) / result.prefillMillis : 0,
        decode_tokens_per_s:
          result.decodeMillis > 0 && completion > 1 ? ((completion - 1) * 1000) / result.decodeMillis : 0,
      },
    };
    sink.end({ finishReason, usage, id, created, model: manifest.id });
  }
}

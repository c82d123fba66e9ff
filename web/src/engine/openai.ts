// OpenAI Chat Completions request validation and response/chunk construction.
// Unknown or unsupported fields are refused with an error naming the field rather
// than ignored: a silently dropped `tools` or `n: 3` would return the wrong thing.

import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionRequest,
  ChatMessage,
  CompletionUsage,
  FinishReason,
} from "./api";
import { InvalidRequestError } from "../base/errors";

const SUPPORTED = new Set([
  "model",
  "messages",
  "stream",
  "max_tokens",
  "max_completion_tokens",
  "temperature",
  "top_p",
  "seed",
  "stop",
  "stream_options",
  "n",
  "chat_template_kwargs",
]);
// Variables the template gets from the engine itself (llm/chat_template.ts).
const TEMPLATE_OWN = new Set(["messages", "add_generation_prompt", "bos_token", "eos_token"]);

// OpenAI fields a user may reasonably send, with why they are refused.
const UNSUPPORTED: Record<string, string> = {
  tools: "tool calling is not supported",
  tool_choice: "tool calling is not supported",
  functions: "function calling is not supported",
  function_call: "function calling is not supported",
  logprobs: "log probabilities are not returned",
  top_logprobs: "log probabilities are not returned",
  logit_bias: "logit bias is not supported",
  response_format: "structured output (response_format) is not supported",
  frequency_penalty: "frequency_penalty is not supported",
  presence_penalty: "presence_penalty is not supported",
  audio: "audio output is not supported",
  modalities: "only text output is supported",
  parallel_tool_calls: "tool calling is not supported",
};

const ROLES = new Set(["system", "user", "assistant"]);
const MAX_STOP_STRINGS = 4; // as OpenAI

/** A validated request with defaults still unresolved (null: use the model's). */
export interface ChatParams {
  model: string | null;
  messages: ChatMessage[];
  stream: boolean;
  includeUsage: boolean;
  maxTokens: number | null;
  temperature: number | null;
  topP: number | null;
  seed: number | null;
  stop: string[];
  /** Further chat template variables (`chat_template_kwargs`). */
  templateVariables: Record<string, unknown>;
}

function fail(param: string, message: string): never {
  throw new InvalidRequestError(`Invalid request: '${param}' ${message}`, param);
}

function optionalNumber(
  body: Record<string, unknown>,
  param: string,
  check: (v: number) => boolean,
  rule: string,
): number | null {
  const value = body[param];
  if (value === undefined || value === null) return null;
  if (typeof value !== "number" || !Number.isFinite(value) || !check(value)) {
    fail(param, `must be ${rule}, got ${JSON.stringify(value)}`);
  }
  return value;
}

export function validateChatRequest(request: unknown): ChatParams {
  if (typeof request !== "object" || request === null || Array.isArray(request)) {
    throw new InvalidRequestError("Invalid request: the body must be an object with at least 'messages'", null);
  }
  const body = request as Record<string, unknown>;
  for (const key of Object.keys(body)) {
    if (body[key] === undefined) continue;
    if (key in UNSUPPORTED) fail(key, `is not supported by webkiln: ${UNSUPPORTED[key]}`);
    if (!SUPPORTED.has(key)) fail(key, "is not a Chat Completions field webkiln knows");
  }

  const model = body.model;
  if (model !== undefined && model !== null && (typeof model !== "string" || model === "")) {
    fail("model", "must be a model id string");
  }

  if (!Array.isArray(body.messages)) fail("messages", "must be an array of {role, content} objects");
  const messages: ChatMessage[] = body.messages.map((m: unknown, i: number) => {
    const where = `messages[${i}]`;
    if (typeof m !== "object" || m === null) fail(where, "must be an object with 'role' and 'content'");
    const msg = m as Record<string, unknown>;
    for (const key of Object.keys(msg)) {
      if (key !== "role" && key !== "content" && key !== "name" && msg[key] !== undefined) {
        fail(`${where}.${key}`, "is not supported (only role and content)");
      }
    }
    if (typeof msg.role !== "string" || !ROLES.has(msg.role)) {
      fail(`${where}.role`, `must be one of system, user, assistant; got ${JSON.stringify(msg.role)}`);
    }
    let content = msg.content;
    // OpenAI also accepts content as an array of parts; text parts are joined.
    if (Array.isArray(content)) {
      content = content
        .map((part: unknown, j: number) => {
          const p = part as Record<string, unknown> | null;
          if (!p || p.type !== "text" || typeof p.text !== "string") {
            fail(`${where}.content[${j}]`, "must be a {type: 'text', text} part (images and audio are not supported)");
          }
          return p.text as string;
        })
        .join("");
    }
    if (typeof content !== "string") fail(`${where}.content`, "must be a string");
    return { role: msg.role as ChatMessage["role"], content };
  });
  if (messages.length === 0) fail("messages", "must contain at least one message");

  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== "boolean") {
    fail("stream", "must be true or false");
  }
  const stream = body.stream === true;
  let includeUsage = false;
  const so = body.stream_options;
  if (so !== undefined && so !== null) {
    if (!stream) fail("stream_options", "is only allowed when 'stream' is true");
    if (typeof so !== "object" || Array.isArray(so)) fail("stream_options", "must be an object");
    for (const key of Object.keys(so)) {
      if (key !== "include_usage") fail(`stream_options.${key}`, "is not supported");
    }
    const iu = (so as Record<string, unknown>).include_usage;
    if (iu !== undefined && typeof iu !== "boolean") fail("stream_options.include_usage", "must be true or false");
    includeUsage = iu === true;
  }

  const n = optionalNumber(body, "n", (v) => v === 1, "1 (one choice per request)");
  void n;
  const positiveInt = (v: number) => Number.isInteger(v) && v >= 1;
  const maxTokens = optionalNumber(body, "max_tokens", positiveInt, "a whole number >= 1");
  const maxCompletion = optionalNumber(body, "max_completion_tokens", positiveInt, "a whole number >= 1");
  if (maxTokens !== null && maxCompletion !== null) {
    fail("max_completion_tokens", "cannot be given together with 'max_tokens'");
  }
  const temperature = optionalNumber(body, "temperature", (v) => v >= 0 && v <= 2, "a number from 0 to 2");
  const topP = optionalNumber(body, "top_p", (v) => v > 0 && v <= 1, "a number in (0, 1]");
  const seed = optionalNumber(body, "seed", Number.isSafeInteger, "an integer");

  let stop: string[] = [];
  if (typeof body.stop === "string") stop = [body.stop];
  else if (Array.isArray(body.stop)) stop = body.stop as string[];
  else if (body.stop !== undefined && body.stop !== null) fail("stop", "must be a string or an array of strings");
  if (stop.length > MAX_STOP_STRINGS) fail("stop", `may hold at most ${MAX_STOP_STRINGS} strings`);
  stop.forEach((s, i) => {
    if (typeof s !== "string" || s === "") fail(`stop[${i}]`, "must be a non-empty string");
  });

  const kwargs = body.chat_template_kwargs;
  const templateVariables: Record<string, unknown> = {};
  if (kwargs !== undefined && kwargs !== null) {
    if (typeof kwargs !== "object" || Array.isArray(kwargs)) {
      fail("chat_template_kwargs", "must be an object of template variables, e.g. {\"enable_thinking\": false}");
    }
    for (const [key, value] of Object.entries(kwargs)) {
      if (TEMPLATE_OWN.has(key)) fail(`chat_template_kwargs.${key}`, "is set by the engine and cannot be given");
      if (value !== undefined) templateVariables[key] = value;
    }
  }

  return {
    model: (model as string | undefined) ?? null,
    messages,
    stream,
    includeUsage,
    maxTokens: maxTokens ?? maxCompletion,
    temperature,
    topP,
    seed: seed === null ? null : Math.abs(seed) % 2 ** 32,
    stop,
    templateVariables,
  };
}

/** Finds stop strings in streamed text: `push` returns the text safe to emit. */
export class StopStringMatcher {
  private held = "";
  stopped = false;

  constructor(private readonly stops: readonly string[]) {}

  push(delta: string): string {
    if (this.stopped) return "";
    const text = this.held + delta;
    let cut = -1;
    for (const s of this.stops) {
      const at = text.indexOf(s);
      if (at !== -1 && (cut === -1 || at < cut)) cut = at;
    }
    if (cut !== -1) {
      this.stopped = true;
      this.held = "";
      return text.slice(0, cut);
    }
    // Hold back the longest tail that could start a stop string.
    let keep = 0;
    for (const s of this.stops) {
      for (let k = Math.min(s.length - 1, text.length); k > keep; k--) {
        if (s.startsWith(text.slice(text.length - k))) {
          keep = k;
          break;
        }
      }
    }
    this.held = text.slice(text.length - keep);
    return text.slice(0, text.length - keep);
  }

  /** Text still held back when generation ends without a stop string. */
  flush(): string {
    const rest = this.stopped ? "" : this.held;
    this.held = "";
    return rest;
  }
}

let counter = 0;

export function completionId(): string {
  counter++;
  const random = Math.floor(Math.random() * 2 ** 32).toString(36);
  return `chatcmpl-${Date.now().toString(36)}${random}${counter}`;
}

export function makeChunk(
  id: string,
  created: number,
  model: string,
  delta: ChatCompletionChunk["choices"][0]["delta"],
  finishReason: FinishReason | null,
  usage?: CompletionUsage | null,
): ChatCompletionChunk {
  const chunk: ChatCompletionChunk = {
    id,
    object: "chat.completion.chunk",
    created,
    model,
    choices: [{ index: 0, delta, finish_reason: finishReason, logprobs: null }],
  };
  if (usage !== undefined) chunk.usage = usage;
  return chunk;
}

/** The chunk OpenAI sends last with include_usage: no choices, only usage. */
export function makeUsageChunk(id: string, created: number, model: string, usage: CompletionUsage): ChatCompletionChunk {
  return { id, object: "chat.completion.chunk", created, model, choices: [], usage };
}

export function makeCompletion(
  id: string,
  created: number,
  model: string,
  content: string,
  finishReason: FinishReason,
  usage: CompletionUsage,
): ChatCompletion {
  return {
    id,
    object: "chat.completion",
    created,
    model,
    choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: finishReason, logprobs: null }],
    usage,
  };
}

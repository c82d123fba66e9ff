// engine/openai.ts: request validation, stop strings across chunk boundaries, and the
// OpenAI chunk/completion shapes the engine streams and returns.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { InvalidRequestError } from "../../../web/src/base/errors";
import type { CompletionUsage } from "../../../web/src/engine/api";
import {
  StopStringMatcher,
  completionId,
  makeChunk,
  makeCompletion,
  makeUsageChunk,
  validateChatRequest,
} from "../../../web/src/engine/openai";

const hello = [{ role: "user", content: "hi" }];

/** Runs `body` and returns the InvalidRequestError it must throw. */
function refused(body: () => unknown): InvalidRequestError {
  try {
    body();
  } catch (error) {
    assert.ok(error instanceof InvalidRequestError, `expected InvalidRequestError, got ${String(error)}`);
    return error;
  }
  assert.fail("expected an InvalidRequestError");
}

describe("validateChatRequest", () => {
  test("leaves unset fields to the model's defaults", () => {
    assert.deepEqual(validateChatRequest({ messages: hello }), {
      model: null,
      messages: [{ role: "user", content: "hi" }],
      stream: false,
      includeUsage: false,
      maxTokens: null,
      temperature: null,
      topP: null,
      seed: null,
      stop: [],
      templateVariables: {},
    });
  });

  test("passes chat_template_kwargs to the template, but not the engine's own variables", () => {
    const params = validateChatRequest({ messages: hello, chat_template_kwargs: { enable_thinking: false, tools: [] } });
    assert.deepEqual(params.templateVariables, { enable_thinking: false, tools: [] });
    for (const bad of [[1], "x", 3]) {
      assert.throws(() => validateChatRequest({ messages: hello, chat_template_kwargs: bad }), (e: unknown) =>
        e instanceof InvalidRequestError && e.param === "chat_template_kwargs" && /template variables/.test(e.message));
    }
    assert.throws(
      () => validateChatRequest({ messages: hello, chat_template_kwargs: { add_generation_prompt: false } }),
      (e: unknown) => e instanceof InvalidRequestError && e.param === "chat_template_kwargs.add_generation_prompt",
    );
  });

  test("reads every supported field", () => {
    const params = validateChatRequest({
      model: "m",
      messages: [{ role: "system", content: [{ type: "text", text: "a" }, { type: "text", text: "b" }] }],
      stream: true,
      stream_options: { include_usage: true },
      max_completion_tokens: 7,
      temperature: 0.5,
      top_p: 0.9,
      seed: -5,
      stop: "END",
      n: 1,
    });
    assert.equal(params.model, "m");
    assert.deepEqual(params.messages, [{ role: "system", content: "ab" }]); // text parts joined
    assert.equal(params.stream, true);
    assert.equal(params.includeUsage, true);
    assert.equal(params.maxTokens, 7);
    assert.equal(params.temperature, 0.5);
    assert.equal(params.topP, 0.9);
    assert.equal(params.seed, 5); // |seed| mod 2^32
    assert.deepEqual(params.stop, ["END"]);
    assert.equal(validateChatRequest({ messages: hello, seed: 2 ** 32 + 3 }).seed, 3);
  });

  test("refuses unsupported OpenAI fields, naming the field and why", () => {
    const error = refused(() => validateChatRequest({ messages: hello, tools: [] }));
    assert.equal(error.param, "tools");
    assert.match(error.message, /'tools'.*tool calling is not supported/);
    assert.equal(refused(() => validateChatRequest({ messages: hello, colour: "red" })).param, "colour");
  });

  test("refuses malformed values", () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ messages: [] }, "messages"],
      [{ messages: [{ role: "tool", content: "x" }] }, "messages[0].role"],
      [{ messages: [{ role: "user", content: 3 }] }, "messages[0].content"],
      [{ messages: [{ role: "user", content: "x", extra: 1 }] }, "messages[0].extra"],
      [{ messages: [{ role: "user", content: [{ type: "image_url" }] }] }, "messages[0].content[0]"],
      [{ messages: hello, n: 2 }, "n"],
      [{ messages: hello, temperature: 3 }, "temperature"],
      [{ messages: hello, top_p: 0 }, "top_p"],
      [{ messages: hello, max_tokens: 0 }, "max_tokens"],
      [{ messages: hello, max_tokens: 1, max_completion_tokens: 1 }, "max_completion_tokens"],
      [{ messages: hello, stream_options: { include_usage: true } }, "stream_options"],
      [{ messages: hello, stop: ["a", "b", "c", "d", "e"] }, "stop"],
      [{ messages: hello, stop: [""] }, "stop[0]"],
      [{ messages: hello, seed: 1.5 }, "seed"],
    ];
    for (const [body, param] of cases) {
      assert.equal(refused(() => validateChatRequest(body)).param, param, JSON.stringify(body));
    }
    assert.equal(refused(() => validateChatRequest([])).param, null);
  });
});

describe("StopStringMatcher", () => {
  test("holds back a possible stop string across chunks and cuts at it", () => {
    const matcher = new StopStringMatcher(["</s>"]);
    assert.equal(matcher.push("Hello <"), "Hello ");
    assert.equal(matcher.push("/"), "");
    assert.equal(matcher.push("s> and more"), "");
    assert.equal(matcher.stopped, true);
    assert.equal(matcher.push("after"), "");
    assert.equal(matcher.flush(), "");
  });

  test("releases held text once it cannot start a stop string", () => {
    const matcher = new StopStringMatcher(["</s>"]);
    assert.equal(matcher.push("a<"), "a");
    assert.equal(matcher.push("b"), "<b");
    assert.equal(matcher.push("c</"), "c");
    assert.equal(matcher.stopped, false);
    assert.equal(matcher.flush(), "</"); // generation ended: the held tail is text after all
  });

  test("cuts at the earliest of several stop strings", () => {
    const matcher = new StopStringMatcher(["world", "lo w"]);
    assert.equal(matcher.push("hello world"), "hel");
    assert.equal(matcher.stopped, true);
  });

  test("without stop strings passes everything through", () => {
    const matcher = new StopStringMatcher([]);
    assert.equal(matcher.push("abc"), "abc");
    assert.equal(matcher.flush(), "");
  });
});

describe("response shapes", () => {
  const usage: CompletionUsage = {
    prompt_tokens: 3,
    completion_tokens: 2,
    total_tokens: 5,
    extra: { prefilled_tokens: 1, cached_prompt_tokens: 2, prefill_tokens_per_s: 10, decode_tokens_per_s: 20 },
  };

  test("a streamed chunk carries usage only when given", () => {
    assert.deepEqual(makeChunk("id1", 10, "m", { content: "x" }, null), {
      id: "id1",
      object: "chat.completion.chunk",
      created: 10,
      model: "m",
      choices: [{ index: 0, delta: { content: "x" }, finish_reason: null, logprobs: null }],
    });
    assert.equal("usage" in makeChunk("id1", 10, "m", {}, "stop"), false);
    assert.equal(makeChunk("id1", 10, "m", {}, "stop", null).usage, null);
    assert.deepEqual(makeChunk("id1", 10, "m", {}, "length", usage).usage, usage);
  });

  test("the usage chunk has no choices", () => {
    assert.deepEqual(makeUsageChunk("id2", 11, "m", usage), {
      id: "id2",
      object: "chat.completion.chunk",
      created: 11,
      model: "m",
      choices: [],
      usage,
    });
  });

  test("a completion holds one assistant message and the usage", () => {
    assert.deepEqual(makeCompletion("id3", 12, "m", "text", "length", usage), {
      id: "id3",
      object: "chat.completion",
      created: 12,
      model: "m",
      choices: [{ index: 0, message: { role: "assistant", content: "text" }, finish_reason: "length", logprobs: null }],
      usage,
    });
  });

  test("completion ids are distinct and OpenAI-prefixed", () => {
    const ids = new Set(Array.from({ length: 100 }, () => completionId()));
    assert.equal(ids.size, 100);
    for (const id of ids) assert.match(id, /^chatcmpl-[0-9a-z]+$/);
  });
});

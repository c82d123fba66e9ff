// A loaded chat model: weights on the device, a paged KV cache, prefill and decode.
// The VM entry points are those of python/webkiln/models/llm.py.

import type * as tvmjs from "@mlc-ai/web-runtime";
import { ContextWindowError } from "../base/errors";
import type { ChatManifest } from "../base/manifest";
import { Pcg32 } from "../base/prng";
import type { Tokenizer } from "../base/tokenizer";
import { nextTask } from "../base/next_task";
import type { LoadedModule } from "../base/tvm";
import { fetchManifest, loadCompiledModel, type CpuThreads, type LoadCompiledOptions } from "../compiled/load";
import { uploadWeights } from "../compiled/weights";
import { argmax, sample } from "./sampling";

export type LoadChatOptions = LoadCompiledOptions;

export interface GenerateOptions {
  maxTokens?: number;
  temperature?: number; // 0: greedy
  topP?: number;
  seed?: number;
  stopTokenIds?: number[];
  signal?: AbortSignal;
  onToken?: (id: number, textDelta: string) => void;
  /** Record, per generated token, the gap between the two largest logits (for numerical checks). */
  recordMargins?: boolean;
}

export interface Generation {
  tokens: number[];
  text: string;
  finishReason: "stop" | "length" | "abort";
  promptTokens: number;
  /** Prompt tokens actually prefilled (less than promptTokens when a cached prefix was reused). */
  prefilledTokens: number;
  prefillMillis: number;
  decodeMillis: number;
  /** top-1 minus top-2 logit at each step, when requested. */
  margins?: number[];
}

function topTwoGap(logits: Float32Array): number {
  let a = -Infinity;
  let b = -Infinity;
  for (const v of logits) {
    if (v > a) {
      b = a;
      a = v;
    } else if (v > b) {
      b = v;
    }
  }
  return a - b;
}

export class ChatModel {
  private kv: tvmjs.TVMObject;
  private params: tvmjs.TVMArray;
  private fEmbed: tvmjs.PackedFunc;
  private fPrefill: tvmjs.PackedFunc;
  private fDecode: tvmjs.PackedFunc;
  private fBegin: tvmjs.PackedFunc;
  private fEnd: tvmjs.PackedFunc;
  private fAdd: tvmjs.PackedFunc;
  private fPopN: tvmjs.PackedFunc;
  /** Tokens whose keys/values are in the KV cache, in order. */
  private cachedTokens: number[] = [];

  private constructor(
    readonly manifest: ChatManifest,
    readonly backend: string,
    /** Why that backend runs here (base/backend_choice.ts). */
    readonly backendReason: string,
    readonly tokenizer: Tokenizer,
    private readonly mod: LoadedModule,
    params: tvmjs.TVMArray,
    /** The CPU threads it runs (null on WebGPU). */
    readonly threads: CpuThreads | null,
  ) {
    const { tvm, vm } = mod;
    this.params = params;
    // Functions returned by tvmjs belong to a scope; these live as long as the model.
    const fn = (get: () => tvmjs.PackedFunc) => tvm.withNewScope(() => tvm.detachFromCurrentScope(get()));
    this.fEmbed = fn(() => vm.getFunction("embed"));
    this.fPrefill = fn(() => vm.getFunction("prefill"));
    this.fDecode = fn(() => vm.getFunction("decode"));
    this.fBegin = fn(() => tvm.getGlobalFunc("vm.builtin.kv_state_begin_forward"));
    this.fEnd = fn(() => tvm.getGlobalFunc("vm.builtin.kv_state_end_forward"));
    this.fAdd = fn(() => tvm.getGlobalFunc("vm.builtin.kv_state_add_sequence"));
    this.fPopN = fn(() => tvm.getGlobalFunc("vm.builtin.kv_state_popn"));
    const m = manifest;
    this.kv = tvm.withNewScope(() =>
      tvm.detachFromCurrentScope(
        vm.getFunction("create_paged_kv_cache")(
          tvm.makeShapeTuple([1]),
          tvm.makeShapeTuple([m.context_window]),
          tvm.makeShapeTuple([m.prefill_chunk_size]),
          tvm.makeShapeTuple([m.kv_cache.page_size]),
          tvm.makeShapeTuple([0]),
        ) as tvmjs.TVMObject,
      ),
    );
    this.fAdd(this.kv, tvm.scalar(0, "int64"));
  }

  static async load(manifestUrl: string, options: LoadChatOptions = {}): Promise<ChatModel> {
    const manifest = await fetchManifest(manifestUrl, "chat", options.signal);
    const compiled = await loadCompiledModel(
      manifestUrl,
      manifest,
      { shardsOf: () => manifest.tensors.shards, smaller: "a smaller model or quantization" },
      options,
    );
    try {
      const params = uploadWeights(compiled.mod, manifest.tensors.records, compiled.shards);
      await compiled.mod.device.sync();
      return new ChatModel(manifest, compiled.backend, compiled.backendReason, compiled.tokenizer, compiled.mod, params,
        compiled.threads);
    } catch (error) {
      compiled.dispose();
      throw error;
    }
  }

  /** Runs `ids` through the model after the cached tokens; returns the last position's logits. */
  private async forward(ids: number[]): Promise<Float32Array> {
    const { tvm, device } = this.mod;
    const chunk = this.manifest.prefill_chunk_size;
    const hidden = this.manifest.config.hidden_size;
    let logits: Float32Array | undefined;
    for (let start = 0; start < ids.length; start += chunk) {
      const part = ids.slice(start, start + chunk);
      if (this.cachedTokens.length + part.length > this.manifest.context_window) {
        throw new ContextWindowError(
          `The conversation needs ${this.cachedTokens.length + part.length} tokens but the model's context window is ${this.manifest.context_window}. Start a new conversation or shorten it.`,
        );
      }
      tvm.beginScope();
      try {
        const input = tvm.empty([part.length], "int32", device).copyFrom(Int32Array.from(part));
        const embed = (this.fEmbed(input, this.params) as tvmjs.Tensor).view([1, part.length, hidden]);
        this.fBegin(this.kv, tvm.makeShapeTuple([0]), tvm.makeShapeTuple([part.length]));
        // One new token after a cached prefix: the decode kernels (GEMV) are the fast path.
        const fn = part.length === 1 && this.cachedTokens.length > 0 ? this.fDecode : this.fPrefill;
        const out = fn(embed, this.kv, this.params) as tvmjs.TVMArray;
        this.fEnd(this.kv);
        const onDevice = out.get(0) as tvmjs.Tensor;
        const host = tvm.empty(onDevice.shape, "float32", tvm.cpu());
        host.copyFrom(onDevice);
        await device.sync();
        logits = Float32Array.from(host.toArray() as Float32Array);
        this.cachedTokens.push(...part);
      } finally {
        tvm.endScope();
      }
    }
    if (!logits) throw new RangeError("forward() needs at least one token");
    return logits;
  }

  /** Drops cached tokens after the first `keep`. */
  private truncateCache(keep: number): void {
    const drop = this.cachedTokens.length - keep;
    if (drop > 0) {
      this.fPopN(this.kv, this.mod.tvm.scalar(0, "int64"), this.mod.tvm.scalar(drop, "int32"));
      this.cachedTokens.length = keep;
    }
  }

  /** Forgets the conversation held in the KV cache. */
  reset(): void {
    this.truncateCache(0);
  }

  /**
   * Generates after `promptIds`. The longest prefix of the prompt already in the KV
   * cache (e.g. the previous turns of a conversation) is not computed again.
   */
  async generate(promptIds: number[], options: GenerateOptions = {}): Promise<Generation> {
    if (promptIds.length === 0) throw new RangeError("the prompt has no tokens");
    const gen = this.manifest.generation;
    const maxTokens = options.maxTokens ?? gen.max_tokens;
    const temperature = options.temperature ?? gen.temperature;
    const topP = options.topP ?? gen.top_p;
    const stop = new Set(options.stopTokenIds ?? this.manifest.stop_token_ids);
    const rng = new Pcg32(options.seed ?? Math.floor(Math.random() * 2 ** 32));

    let common = 0;
    while (common < this.cachedTokens.length && common < promptIds.length - 1 && this.cachedTokens[common] === promptIds[common]) {
      common++;
    }
    this.truncateCache(common);
    const t0 = performance.now();
    // Only the tokens after the cached prefix are computed (prefill on top of the cached pages).
    let logits = await this.forward(promptIds.slice(common));
    const t1 = performance.now();

    const detok = this.tokenizer.detokenizer();
    const tokens: number[] = [];
    let text = "";
    let finishReason: Generation["finishReason"] = "length";
    const margins: number[] | undefined = options.recordMargins ? [] : undefined;
    // A CPU library computes inside each call: let the Worker's queued messages (an abort) in.
    const onCpu = this.mod.backend === "wasm-cpu";
    while (tokens.length < maxTokens) {
      if (onCpu) await nextTask();
      if (options.signal?.aborted) {
        finishReason = "abort";
        break;
      }
      const token = temperature <= 0 ? argmax(logits) : sample(logits, { temperature, top_p: topP }, rng);
      margins?.push(topTwoGap(logits));
      tokens.push(token);
      if (stop.has(token)) {
        finishReason = "stop";
        break;
      }
      const delta = detok.push(token);
      text += delta;
      options.onToken?.(token, delta);
      if (tokens.length >= maxTokens) break;
      logits = await this.forward([token]);
    }
    const tail = detok.flush();
    if (tail) {
      text += tail;
      options.onToken?.(-1, tail);
    }
    return {
      tokens,
      text,
      finishReason,
      promptTokens: promptIds.length,
      prefilledTokens: promptIds.length - common,
      prefillMillis: t1 - t0,
      decodeMillis: performance.now() - t1,
      margins,
    };
  }

  dispose(): void {
    for (const f of [this.fEmbed, this.fPrefill, this.fDecode, this.fBegin, this.fEnd, this.fAdd, this.fPopN]) {
      f.dispose();
    }
    this.kv.dispose();
    this.params.dispose();
    this.tokenizer.dispose();
    this.mod.dispose();
  }
}

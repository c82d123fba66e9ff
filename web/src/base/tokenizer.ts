// Text <-> token ids with a model's tokenizer.json (Hugging Face format), through
// @mlc-ai/web-tokenizers (the Rust `tokenizers` crate compiled to WebAssembly; its
// .wasm is inlined in the package as base64, so the bundle needs no extra file).

import type { Tokenizer as WasmTokenizer } from "@mlc-ai/web-tokenizers";
// The package is a UMD script inside a "type": "module" package, so esbuild sees an
// ES module without exports; run as one, it sets `globalThis.tokenizers` instead.
import "@mlc-ai/web-tokenizers";

function wasmTokenizerClass(): typeof WasmTokenizer {
  const cls = (globalThis as { tokenizers?: { Tokenizer?: typeof WasmTokenizer } }).tokenizers?.Tokenizer;
  if (!cls) {
    throw new Error("@mlc-ai/web-tokenizers did not load (globalThis.tokenizers.Tokenizer is missing)");
  }
  return cls;
}

export class Tokenizer {
  private constructor(private readonly inner: WasmTokenizer) {}

  /** Parses the bytes of a tokenizer.json. The first call also starts the WebAssembly module. */
  static async fromJSON(json: ArrayBuffer): Promise<Tokenizer> {
    return new Tokenizer(await wasmTokenizerClass().fromJSON(json));
  }

  /**
   * Token ids of `text`. Adds no special tokens (BOS, [CLS]...): the chat template
   * puts those in the prompt. Padding/truncation set in tokenizer.json do apply.
   */
  encode(text: string): Int32Array {
    return this.inner.encode(text);
  }

  /**
   * The text of `ids`, special tokens included (the engine stops at EOS before it is
   * decoded). Bytes that do not form whole UTF-8 characters come out as U+FFFD.
   */
  decode(ids: ArrayLike<number>): string {
    return this.inner.decode(ids instanceof Int32Array ? ids : Int32Array.from(ids));
  }

  get vocabSize(): number {
    return this.inner.getVocabSize();
  }

  /** The token's string in the vocabulary ("" if there is none). */
  idToToken(id: number): string {
    return this.inner.idToToken(id);
  }

  /** A detokenizer for streaming this tokenizer's output one id at a time. */
  detokenizer(): IncrementalDetokenizer {
    return new IncrementalDetokenizer((ids) => this.decode(ids));
  }

  /** Frees the WebAssembly-side tokenizer; the object is unusable afterwards. */
  dispose(): void {
    this.inner.dispose();
  }
}

const REPLACEMENT = "\uFFFD";

/**
 * Turns a stream of token ids into text deltas.
 *
 * Decoding each id alone is wrong: byte-level tokens can hold part of a UTF-8
 * character, and decoders change a token's text depending on its neighbour (leading
 * spaces, "##" word pieces). So it decodes a short window — the ids from the last
 * emitted token on — and emits what that window adds beyond the already-emitted
 * part. While the window's text ends in U+FFFD (an incomplete character) nothing is
 * emitted; the bytes are held until the character is whole. flush() emits whatever
 * is held at the end, so the concatenation of all deltas equals decode(all ids).
 */
export class IncrementalDetokenizer {
  private ids: number[] = [];
  private prefixStart = 0; // window start: the first of the ids emitted last time
  private emittedEnd = 0; // ids before this index have been emitted
  private prefixText = ""; // decode(ids[prefixStart, emittedEnd))

  constructor(private readonly decode: (ids: Int32Array) => string) {}

  /** Adds one id; returns the text it completes ("" while a character is incomplete). */
  push(id: number): string {
    this.ids.push(id);
    const text = this.decodeWindow(this.ids.length);
    if (text.length <= this.prefixText.length || text.endsWith(REPLACEMENT)) {
      return "";
    }
    return this.advance(text);
  }

  /** Returns everything still held back (e.g. an incomplete character at the end). */
  flush(): string {
    if (this.emittedEnd === this.ids.length) {
      return "";
    }
    return this.advance(this.decodeWindow(this.ids.length));
  }

  /** Forgets all ids, for a new stream. */
  reset(): void {
    this.ids = [];
    this.prefixStart = this.emittedEnd = 0;
    this.prefixText = "";
  }

  private decodeWindow(end: number): string {
    return this.decode(Int32Array.from(this.ids.slice(this.prefixStart, end)));
  }

  // Emits the part of `text` (the window decoded up to the last id) that is new,
  // and moves the window to start at the tokens emitted now: they decode to whole
  // characters, and they are the context the next token's text may depend on.
  private advance(text: string): string {
    const delta = text.slice(this.prefixText.length);
    this.prefixStart = this.emittedEnd;
    this.emittedEnd = this.ids.length;
    this.prefixText = this.decodeWindow(this.emittedEnd);
    return delta;
  }
}

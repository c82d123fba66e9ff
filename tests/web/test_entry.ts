// Test-only bundle (tests/site/test.html): exposes the storage, tokenizer and sampling
// modules on `window.webkilnTest`, plus helpers that turn their results into
// JSON-friendly values for Playwright's page.evaluate.

import * as errors from "../../web/src/base/errors";
import type { ManifestFile } from "../../web/src/base/manifest_types";
import * as storage from "../../web/src/storage/index";
import { IncrementalDetokenizer, Tokenizer } from "../../web/src/base/tokenizer";
import { Pcg32 } from "../../web/src/base/prng";
import { argmax, sample, type SamplingParams } from "../../web/src/llm/sampling";
import { describeError } from "./error_info";

function toBase64(buffer: ArrayBuffer): string {
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** loadFiles, with its outcome, events and progress updates as plain data. */
async function load(baseUrl: string, files: ManifestFile[], options: storage.LoadOptions = {}) {
  const progress: storage.LoadProgress[] = [];
  const corrupt: storage.CorruptCacheEntry[] = [];
  const cacheWriteErrors: string[] = [];
  try {
    const result = await storage.loadFiles(baseUrl, files, {
      ...options,
      onProgress: (p) => progress.push(p),
      onCorruptCacheEntry: (c) => corrupt.push(c),
      onCacheWriteError: (path, e) => cacheWriteErrors.push(`${path}: ${String(e)}`),
    });
    const bytes: Record<string, string> = {};
    for (const [path, buffer] of result) {
      bytes[path] = toBase64(buffer);
    }
    return { ok: true as const, files: bytes, progress, corrupt, cacheWriteErrors };
  } catch (error) {
    return { ok: false as const, error: describeError(error), progress, corrupt, cacheWriteErrors };
  }
}

let tokenizer: Tokenizer | undefined;

const tokenizerHelpers = {
  /** Fetches and parses a tokenizer.json; later calls use it. */
  async load(url: string): Promise<number> {
    const response = await fetch(url);
    tokenizer?.dispose();
    tokenizer = await Tokenizer.fromJSON(await response.arrayBuffer());
    return tokenizer.vocabSize;
  },
  encode: (text: string) => Array.from(current().encode(text)),
  decode: (ids: number[]) => current().decode(ids),
  /** Pushes ids one at a time; returns every delta, then the flush as the last element. */
  stream(ids: number[]): string[] {
    const detok = current().detokenizer();
    const deltas = ids.map((id) => detok.push(id));
    deltas.push(detok.flush());
    return deltas;
  },
};

function current(): Tokenizer {
  if (!tokenizer) {
    throw new Error("call webkilnTest.tokenizer.load(url) first");
  }
  return tokenizer;
}

const samplingHelpers = {
  argmax: (logits: number[]) => argmax(Float32Array.from(logits)),
  /** `count` draws from one generator seeded with `seed`. */
  sampleMany(logits: number[], params: SamplingParams, seed: number, count: number): number[] {
    const rng = new Pcg32(seed);
    const values = Float32Array.from(logits);
    return Array.from({ length: count }, () => sample(values, params, rng));
  },
  randomFloats(seed: number, count: number): number[] {
    const rng = new Pcg32(seed);
    return Array.from({ length: count }, () => rng.nextFloat());
  },
  randomU32(seed: number, count: number): number[] {
    const rng = new Pcg32(seed);
    return Array.from({ length: count }, () => rng.nextU32());
  },
};

const api = {
  errors,
  storage,
  load,
  describeError,
  toBase64,
  Tokenizer,
  IncrementalDetokenizer,
  tokenizer: tokenizerHelpers,
  argmax,
  sample,
  Pcg32,
  sampling: samplingHelpers,
};

declare global {
  interface Window {
    webkilnTest: typeof api;
  }
}

window.webkilnTest = api;

// Choosing the next token from logits: greedy argmax, or seeded temperature / top-k /
// top-p sampling that Python can reproduce id for id (tests/test_web_sampling.py).
//
// The sampler, exactly (all arithmetic in IEEE float64; logits are float32, so
// converting them is exact; a NaN logit counts as -Infinity):
//   1. temperature <= 0, or top_k == 1, or the largest logit is not finite:
//      return argmax(logits).
//   2. Rank ids by logit, highest first, ties by lower id: s_0, s_1, ...
//   3. Weight w(i) = exp((logit[i] - logit[s_0]) / temperature).
//   4. Kept ids: the first top_k ranks if 0 < top_k < vocab size, else all ids.
//   5. total = sum of w over the kept ids, added in ascending id order.
//   6. c_m = w(s_0) + ... + w(s_{m-1}), added in rank order. If top_p < 1, the
//      nucleus is the first n kept ranks, n the smallest with c_n >= top_p * total
//      (all kept ranks if rounding leaves none), and mass = c_n. Otherwise the
//      nucleus is every kept rank and mass = total.
//   7. u = rng.nextFloat(); r = u * mass; return s_j for the smallest j in the
//      nucleus with r < c_{j+1}, or the nucleus's last id if there is none.
// Python's math.exp and V8's Math.exp may differ in the last bit; a draw can only
// come out differently if r lands within ~1e-16 (relative) of a boundary.

import type { Rng } from "../base/prng";

export interface SamplingParams {
  /** 0 means greedy (argmax). */
  temperature: number;
  /** Nucleus sampling: keep the smallest set of top tokens holding this share of the probability. Default 1 (off). */
  top_p?: number;
  /** Keep only the k most likely tokens. 0 or absent: off. */
  top_k?: number;
}

/** Index of the largest logit; ties go to the lowest index, NaN never wins. */
export function argmax(logits: ArrayLike<number>): number {
  if (logits.length === 0) {
    throw new RangeError("argmax of empty logits");
  }
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const value = logits[i] as number;
    if (value > bestValue) {
      best = i;
      bestValue = value;
    }
  }
  return best;
}

/** Samples one token id from `logits` as described at the top of this file. */
export function sample(logits: ArrayLike<number>, params: SamplingParams, rng: Rng): number {
  const { temperature } = params;
  const topP = params.top_p ?? 1;
  const topK = params.top_k ?? 0;
  if (!(temperature >= 0) || !Number.isFinite(temperature)) {
    throw new RangeError(`temperature must be a finite number >= 0, got ${temperature}`);
  }
  if (!(topP > 0 && topP <= 1)) {
    throw new RangeError(`top_p must be in (0, 1], got ${topP}`);
  }
  if (!Number.isInteger(topK) || topK < 0) {
    throw new RangeError(`top_k must be a whole number >= 0, got ${topK}`);
  }
  const best = argmax(logits);
  if (temperature === 0 || topK === 1 || !Number.isFinite(logits[best] as number)) {
    return best;
  }
  const ranking = new Ranking(logits, temperature, logits[best] as number);

  let nucleus: Prefix | null = null; // null: every id (not materialised unless needed)
  let total: number;
  if (topK > 0 && topK < logits.length) {
    nucleus = ranking.topK(topK);
    total = ranking.sumInIdOrder(nucleus.ids);
  } else {
    total = ranking.sumAll();
  }

  let mass = total;
  if (topP < 1) {
    const target = topP * total;
    const ranked = nucleus ?? ranking.prefix((p) => p.last() >= target);
    const n = ranked.firstReaching(target);
    nucleus = ranked.take(n);
    mass = nucleus.last();
  }

  const r = rng.nextFloat() * mass;
  const ranked = nucleus ?? ranking.prefix((p) => p.last() > r);
  return ranked.draw(r);
}

// The ids of the highest ranks, with running sums of their weights (c_1, c_2, ...).
class Prefix {
  constructor(
    readonly ids: Uint32Array,
    readonly cums: Float64Array,
  ) {}

  last(): number {
    return this.cums.length ? (this.cums[this.cums.length - 1] as number) : 0;
  }

  /** This prefix followed by `ids` (all ranked below it). */
  append(ids: Uint32Array, weight: (id: number) => number): Prefix {
    if (ids.length === 0) {
      return this;
    }
    const all = new Uint32Array(this.ids.length + ids.length);
    all.set(this.ids);
    all.set(ids, this.ids.length);
    const cums = new Float64Array(all.length);
    cums.set(this.cums);
    let sum = this.last();
    for (let j = this.ids.length; j < all.length; j++) {
      sum += weight(all[j] as number);
      cums[j] = sum;
    }
    return new Prefix(all, cums);
  }

  take(n: number): Prefix {
    return new Prefix(this.ids.subarray(0, n), this.cums.subarray(0, n));
  }

  /** Smallest count n with c_n >= target, or all of them. */
  firstReaching(target: number): number {
    for (let j = 0; j < this.cums.length; j++) {
      if ((this.cums[j] as number) >= target) {
        return j + 1;
      }
    }
    return this.cums.length;
  }

  draw(r: number): number {
    for (let j = 0; j < this.cums.length; j++) {
      if (r < (this.cums[j] as number)) {
        return this.ids[j] as number;
      }
    }
    return this.ids[this.ids.length - 1] as number;
  }
}

// Ranks lazily: ranking a 150k vocabulary for every token is wasteful when the few
// highest logits hold nearly all the probability. Ids with logit >= cutoff are
// exactly the first ranks, so sums over them equal sums over the full ranking. The
// cutoff is lowered band by band (each band sorted once and appended) until the
// caller's condition holds or every id is in.
class Ranking {
  // The logits as ranking keys: NaN -> -Infinity, -0 -> +0 (equal logits must tie).
  private readonly keys: Float32Array<ArrayBuffer>;
  private readonly minFinite: number;
  private weights: Float64Array | null = null; // every weight, once sumAll() has run

  constructor(
    logits: ArrayLike<number>,
    private readonly temperature: number,
    private readonly maxLogit: number,
  ) {
    const keys = new Float32Array(logits.length);
    let min = maxLogit;
    for (let i = 0; i < keys.length; i++) {
      const value = logits[i] as number;
      keys[i] = Number.isNaN(value) ? -Infinity : value + 0;
      if (value < min && value > -Infinity) {
        min = value;
      }
    }
    this.keys = keys;
    this.minFinite = min;
  }

  private weight(id: number): number {
    return this.weights
      ? (this.weights[id] as number)
      : Math.exp(((this.keys[id] as number) - this.maxLogit) / this.temperature);
  }

  sumAll(): number {
    const { keys, maxLogit, temperature } = this;
    const weights = new Float64Array(keys.length);
    let sum = 0;
    for (let i = 0; i < weights.length; i++) {
      const w = Math.exp(((keys[i] as number) - maxLogit) / temperature);
      weights[i] = w;
      sum += w;
    }
    this.weights = weights;
    return sum;
  }

  sumInIdOrder(ids: Uint32Array): number {
    let sum = 0;
    for (const id of Uint32Array.from(ids).sort()) {
      sum += this.weight(id);
    }
    return sum;
  }

  /** The first k ranks. */
  topK(k: number): Prefix {
    if (k > 1024) {
      return this.prefix((p) => p.ids.length >= k).take(k);
    }
    // One pass keeping the best k so far in rank order: most ids lose to the k-th
    // best with one comparison, so this stays O(vocabulary) for the usual small k.
    const keys = this.keys;
    const ids = new Uint32Array(k);
    const values = new Float64Array(k);
    let n = 0;
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i] as number;
      // Scanning ids upwards, an equal key never outranks one already kept.
      if (n === k && !(key > (values[k - 1] as number))) {
        continue;
      }
      let at = n < k ? n : k - 1; // where it goes: after every kept key >= it
      while (at > 0 && key > (values[at - 1] as number)) {
        at--;
      }
      const end = Math.min(n, k - 1);
      ids.copyWithin(at + 1, at, end);
      values.copyWithin(at + 1, at, end);
      ids[at] = i;
      values[at] = key;
      n = Math.min(n + 1, k);
    }
    return new Prefix(new Uint32Array(0), new Float64Array(0)).append(ids.subarray(0, n), (id) => this.weight(id));
  }

  /** The shortest run of first ranks (from a falling cutoff) for which `enough` holds, or all ids. */
  prefix(enough: (p: Prefix) => boolean): Prefix {
    const keys = this.keys;
    const scratch = new Uint32Array(keys.length);
    let p = new Prefix(new Uint32Array(0), new Float64Array(0));
    let upper = Infinity; // the previous cutoff: keys at or above it are ranked already
    // Starts with the ids within a factor e of the top one; real logits need few rounds.
    for (let gap = this.temperature; ; gap *= 2) {
      const everything = this.maxLogit - gap < this.minFinite;
      const cutoff = everything ? -Infinity : this.maxLogit - gap;
      let n = 0;
      for (let i = 0; i < keys.length; i++) {
        const key = keys[i] as number;
        if (key >= cutoff && key < upper) {
          scratch[n++] = i; // ascending id order, which the stable sort keeps for ties
        }
      }
      const band = scratch.slice(0, n);
      sortDescending(band, new Uint32Array(keys.buffer));
      p = p.append(band, (id) => this.weight(id));
      upper = cutoff;
      if (everything || enough(p)) {
        return p;
      }
    }
  }
}

/**
 * Sorts `ids` by the float32 values whose bit patterns are `bits[id]`, highest first,
 * keeping the given order among equal values. A stable LSD radix sort (3 passes of
 * 11 bits): O(n), where a comparison sort of a 150k vocabulary takes tens of
 * milliseconds per token. The values must not be NaN.
 */
function sortDescending(ids: Uint32Array, bits: Uint32Array): void {
  const n = ids.length;
  // Keys whose ascending order is the floats' descending order: negative floats keep
  // their bits (more negative = larger); positive ones flip all bits but the sign.
  let keys: Uint32Array = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const b = bits[ids[i] as number] as number;
    keys[i] = b & 0x80000000 ? b : ~b & 0x7fffffff;
  }
  let order: Uint32Array = ids;
  let keysOut: Uint32Array = new Uint32Array(n);
  let orderOut: Uint32Array = new Uint32Array(n);
  const counts = new Uint32Array(2048);
  for (let shift = 0; shift < 32; shift += 11) {
    counts.fill(0);
    for (let i = 0; i < n; i++) {
      (counts[((keys[i] as number) >>> shift) & 2047] as number)++;
    }
    let start = 0;
    for (let d = 0; d < 2048; d++) {
      const c = counts[d] as number;
      counts[d] = start;
      start += c;
    }
    for (let i = 0; i < n; i++) {
      const key = keys[i] as number;
      const at = (counts[(key >>> shift) & 2047] as number)++;
      keysOut[at] = key;
      orderOut[at] = order[i] as number;
    }
    [keys, keysOut] = [keysOut, keys];
    [order, orderOut] = [orderOut, order];
  }
  if (order !== ids) {
    ids.set(order);
  }
}

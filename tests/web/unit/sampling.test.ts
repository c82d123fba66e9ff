// The seeded PRNG (base/prng.ts) and the sampler (llm/sampling.ts). The PCG32 values are the
// published output of the PCG reference implementation's demo (pcg32_srandom_r(42, 54)),
// not values this code produced.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { Pcg32, type Rng } from "../../../web/src/base/prng";
import { argmax, sample } from "../../../web/src/llm/sampling";

describe("Pcg32", () => {
  test("matches the PCG reference demo for seed 42, stream 54", () => {
    const rng = new Pcg32(42, 54);
    const got = Array.from({ length: 6 }, () => rng.nextU32());
    assert.deepEqual(got, [0xa15c02b7, 0x7b47f409, 0xba1d3330, 0x83d2f293, 0xbfa4784b, 0xcbed606e]);
  });

  test("stream 54 is the default; other seeds and streams give other sequences", () => {
    const first = (rng: Pcg32) => [rng.nextU32(), rng.nextU32(), rng.nextU32()];
    assert.deepEqual(first(new Pcg32(42)), first(new Pcg32(42n, 54n)));
    assert.deepEqual(first(new Pcg32(0)), [0x47c28b93, 0xb98f6a27, 0x7d3dcb1e]); // the Python reference's
    assert.notDeepEqual(first(new Pcg32(42, 55)), first(new Pcg32(42)));
  });

  test("nextFloat takes 53 bits from two outputs, in [0, 1)", () => {
    const words = new Pcg32(42);
    const high = words.nextU32() >>> 5;
    const low = words.nextU32() >>> 6;
    const floats = new Pcg32(42);
    assert.equal(floats.nextFloat(), (high * 2 ** 26 + low) / 2 ** 53);
    assert.equal(new Pcg32(42).nextFloat(), 0.6303102186438938);
    for (let i = 0; i < 1000; i++) {
      const u = floats.nextFloat();
      assert.ok(u >= 0 && u < 1);
    }
  });
});

/** An Rng that returns the given uniforms in turn and counts the draws. */
class FixedRng implements Rng {
  draws = 0;
  constructor(private readonly values: number[]) {}
  nextFloat(): number {
    const value = this.values[this.draws++ % this.values.length];
    assert.ok(value !== undefined);
    return value;
  }
}

describe("argmax", () => {
  test("ties go to the lowest index and NaN never wins", () => {
    assert.equal(argmax([1, 3, 3, 2]), 1);
    assert.equal(argmax([NaN, -1, NaN]), 1);
    assert.equal(argmax(new Float32Array([-Infinity, -Infinity])), 0);
    assert.throws(() => argmax([]), RangeError);
  });
});

describe("sample", () => {
  // Two tokens: id 1 has weight 1, id 0 weight exp(-ln 3 / T) (1/3 at T = 1). Id 1 is drawn
  // while u * total < 1, i.e. u < 1 / total: 0.75 at T = 1, 1 / (1 + 3^-0.5) = 0.634 at T = 2.
  const logits = [0, Math.log(3)];

  test("temperature 0 and top_k 1 are greedy and draw nothing", () => {
    for (const params of [{ temperature: 0 }, { temperature: 1, top_k: 1 }]) {
      const rng = new FixedRng([0.99]);
      assert.equal(sample(logits, params, rng), 1);
      assert.equal(rng.draws, 0);
    }
  });

  test("draws by the cumulative weights, in rank order", () => {
    assert.equal(sample(logits, { temperature: 1 }, new FixedRng([0.74])), 1);
    assert.equal(sample(logits, { temperature: 1 }, new FixedRng([0.76])), 0);
    assert.equal(sample(logits, { temperature: 1 }, new FixedRng([0])), 1);
  });

  test("a higher temperature flattens the distribution", () => {
    assert.equal(sample(logits, { temperature: 1 }, new FixedRng([0.7])), 1);
    assert.equal(sample(logits, { temperature: 2 }, new FixedRng([0.7])), 0);
    assert.equal(sample(logits, { temperature: 2 }, new FixedRng([0.6])), 1);
  });

  test("top_p keeps the smallest set of top tokens reaching that share", () => {
    // Weights 1, 1/3: id 1 alone holds 75%, so top_p 0.7 keeps only it and 0.8 both.
    assert.equal(sample(logits, { temperature: 1, top_p: 0.7 }, new FixedRng([0.99])), 1);
    assert.equal(sample(logits, { temperature: 1, top_p: 0.8 }, new FixedRng([0.99])), 0);
    // Three tokens of weights 1, 1/2, 1/4 (ids 2, 0, 1): top_p 0.8 keeps ids 2 and 0 (6/7 > 0.8),
    // and a draw near 1 lands on the last kept one, never on id 1.
    const three = [Math.log(2), 0, Math.log(4)];
    assert.equal(sample(three, { temperature: 1, top_p: 0.8 }, new FixedRng([0.999])), 0);
    assert.equal(sample(three, { temperature: 1 }, new FixedRng([0.999])), 1);
  });

  test("top_k keeps the k highest logits", () => {
    const three = [Math.log(2), 0, Math.log(4)];
    assert.equal(sample(three, { temperature: 1, top_k: 2 }, new FixedRng([0.999])), 0);
  });

  test("a seeded sampler repeats itself and follows the weights", () => {
    const draws = (seed: number) => {
      const rng = new Pcg32(seed);
      return Array.from({ length: 4000 }, () => sample(logits, { temperature: 1 }, rng));
    };
    const first = draws(7);
    assert.deepEqual(draws(7), first);
    assert.notDeepEqual(draws(8), first);
    const share = first.filter((id) => id === 1).length / first.length;
    assert.ok(Math.abs(share - 0.75) < 0.03, `id 1 drawn ${share} of the time, expected 0.75`);
  });

  test("refuses bad parameters", () => {
    const rng = new FixedRng([0.5]);
    for (const params of [{ temperature: -1 }, { temperature: NaN }, { temperature: 1, top_p: 0 },
      { temperature: 1, top_p: 1.5 }, { temperature: 1, top_k: 1.5 }, { temperature: 1, top_k: -1 }]) {
      assert.throws(() => sample(logits, params, rng), RangeError, JSON.stringify(params));
    }
  });
});

// The seeded PRNG of sampling and of the image latents: one generator, so a seed means
// the same draws in chat sampling, latent noise and Python's reproductions of both.

/** A source of uniform random numbers in [0, 1). */
export interface Rng {
  nextFloat(): number;
}

const MASK64 = (1n << 64n) - 1n;
const PCG_MULTIPLIER = 6364136223846793005n;

/**
 * PCG32 (PCG-XSH-RR, 64-bit state, 32-bit output; O'Neill 2014), seeded like the
 * reference pcg32_srandom_r(seed, stream):
 *   inc = (stream << 1) | 1; state = 0; step(); state += seed; step()
 *   step(): state = state * 6364136223846793005 + inc   (mod 2^64)
 *   nextU32(): old = state; step();
 *              rotr32(uint32(((old >> 18) ^ old) >> 27), old >> 59)
 * nextFloat() = ((nextU32() >>> 5) * 2^26 + (nextU32() >>> 6)) / 2^53:
 * 53 random bits, uniform in [0, 1). BigInt is slow, but it runs once per token.
 */
export class Pcg32 implements Rng {
  private state = 0n;
  private readonly inc: bigint;

  constructor(seed: number | bigint, stream: number | bigint = 54n) {
    this.inc = ((BigInt(stream) << 1n) | 1n) & MASK64;
    this.step();
    this.state = (this.state + (BigInt(seed) & MASK64)) & MASK64;
    this.step();
  }

  private step(): void {
    this.state = (this.state * PCG_MULTIPLIER + this.inc) & MASK64;
  }

  nextU32(): number {
    const old = this.state;
    this.step();
    const xorshifted = Number((((old >> 18n) ^ old) >> 27n) & 0xffffffffn);
    const rot = Number(old >> 59n);
    return ((xorshifted >>> rot) | (xorshifted << (-rot & 31))) >>> 0;
  }

  nextFloat(): number {
    const high = this.nextU32() >>> 5;
    const low = this.nextU32() >>> 6;
    return (high * 67108864 + low) / 9007199254740992;
  }
}

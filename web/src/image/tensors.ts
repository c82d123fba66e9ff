// Moving float tensors between JavaScript and a tvmjs device for the image pipeline:
// float32 or float16 storage (f16 builds), with Float32Array on the JavaScript side.
// (Weights go up through compiled/weights.ts.)

import type * as tvmjs from "@mlc-ai/web-runtime";
import type { FloatDType } from "../base/manifest_types";
import type { LoadedModule } from "../base/tvm";

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** IEEE half bits of a float32 value, rounded to nearest even (as torch's .half()). */
export function float32ToFloat16Bits(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0] as number;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0); // inf / nan
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow
  if (e <= 0) {
    if (e < -10) return sign; // underflows to zero
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rest > mid || (rest === mid && (half & 1) !== 0)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (half & 1) !== 0)) half++; // may carry into the exponent: correct
  return sign | half;
}

/** float32 value of IEEE half bits. */
export function float16BitsToFloat32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** A new tensor on the module's device holding `values` (converted to `dtype`). Scoped like tvm.empty. */
export function upload(mod: LoadedModule, values: Float32Array, shape: number[], dtype: FloatDType): tvmjs.Tensor {
  const tensor = mod.tvm.empty(shape, dtype, mod.device);
  if (dtype === "float32") {
    tensor.copyFrom(values);
  } else {
    const half = new Uint16Array(values.length);
    for (let i = 0; i < values.length; i++) half[i] = float32ToFloat16Bits(values[i] as number);
    tensor.copyFromRawBytes(new Uint8Array(half.buffer));
  }
  return tensor;
}

/** A device tensor's values as a new Float32Array (waits for the device). */
export async function download(mod: LoadedModule, tensor: tvmjs.Tensor): Promise<Float32Array> {
  const { tvm, device } = mod;
  const dtype = tensor.dtype;
  const host = tvm.empty(tensor.shape, dtype, tvm.cpu());
  host.copyFrom(tensor);
  await device.sync();
  if (dtype === "float32") return Float32Array.from(host.toArray() as Float32Array);
  if (dtype === "float16") {
    const raw = host.toRawBytes();
    const half = new Uint16Array(raw.buffer, raw.byteOffset, raw.byteLength / 2);
    const out = new Float32Array(half.length);
    for (let i = 0; i < half.length; i++) out[i] = float16BitsToFloat32(half[i] as number);
    return out;
  }
  throw new RangeError(`cannot read a ${dtype} tensor as floats`);
}

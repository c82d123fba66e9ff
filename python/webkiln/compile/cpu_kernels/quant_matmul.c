// Quantized matmuls of the wasm-cpu backend: y[t, j] = sum_k x[t, k] * W[j, k] with W stored
// as webkiln's weight formats (quant/formats.py), dequantized in 128-bit SIMD registers.
// Compiled by emscripten with -msimd128 and linked into the model's .wasm (toolchain/link.py);
// the Relax graph calls them through TIR PrimFuncs whose body is a call_extern
// (compile/cpu_matmul.py). Activations and accumulation are f32.
//
// Storage (per row j, groups of 32 elements along k, one f32 scale per group, plus an f32
// minimum for q4_affine):
//   q4 (q4_affine = GGUF Q4_1, q4_sym = Q4_0): element k in uint32 word k/8, bits 4*(k%8). The
//     16 bytes of a group hold element 2i in the low nibble of byte i, 2i+1 in its high nibble.
//   q8 (q8_sym = GGUF Q8_0): element k is the signed byte k of the row (little endian words).
//   q5 (q5_sym = Q5_0: (q - 16) * d; q5_affine = Q5_1: q * d + m): the low four bits as q4, the
//     fifth in `qhigh`, element k at bit k % 32 of word k / 32.
//   k-quants (quant/kquant_formats.py), 256-element super-blocks with an f32 `scale` d (and
//     `minimum` dmin), per-group integer scales in `subscale` bytes: q4_k/q5_k (32-element groups
//     g: byte 2g is sc, 2g + 1 is m; value (d * sc) * q - dmin * m, q5_k's fifth bit as q5) and
//     q6_k (16-element groups: signed byte g is sc; q's bits 4-5 at bits 2 * (k % 16) of qhigh
//     word k / 16; value (d * sc) * (q - 32)).
//
// Two paths, chosen by the number of tokens:
//   one token (decode): a GEMV that never materialises a weight. Per group it dots the raw
//     nibbles with x (x reordered once per call into the nibble order: the 16 even elements
//     then the 16 odd ones, so one AND and one shift give 16 lanes each; wasm SIMD has no
//     per-lane shifts), scales the group's partial sum by d once, and adds the affine part
//     as min * sum(x over the group) (q4_sym: -8 * d * sum), with the group sums of x
//     precomputed once per call.
//   several tokens (prefill): each pair of rows is dequantized once into f32 (the same
//     arithmetic as WeightFormat.dequantize, so the weights equal NumPy's bit for bit), then
//     dotted with the tokens four at a time (2 rows x 4 tokens = 8 accumulators in
//     registers: each weight load serves 4 tokens and each x load 2 rows).
// Only the summation order differs from a plain f32 dot product. q5 decodes like q4 (its fifth
// bits spread over the lanes); the k-quants take the prefill path's dequantization for decode
// too: each row dequantized once into the task's workspace slot, then dotted with x.
//
// Threads: both paths split the output rows into MAX_TASKS contiguous ranges, the tasks of one
// TVMBackendParallelLaunch. TVM's single-threaded wasm runtime runs one task with every row; a
// threaded library (python/webkiln/toolchain/threads.py) hands the tasks to its threads. Each
// output is computed the same way whichever task computes it, so every thread count gives the
// same bits. Decode reorders x once, before the launch, for all tasks; prefill gives each task
// its own two rows of the workspace.
#include <stdint.h>
#include <wasm_simd128.h>

#define GROUP 32
// Tasks per launch, and the prefill workspace's slots (cpu_matmul.workspace_floats): as many as
// the most threads a page starts (web/src/compiled/threads.ts MAX_THREADS). Were a runtime to
// run more tasks, the rows would still be split over the first MAX_TASKS only.
#define MAX_TASKS 8

// TVM's C backend API (tvm/runtime/c_backend_api.h), declared here to keep the kernels free of
// TVM's headers.
typedef struct {
  void* sync_handle;
  int32_t num_task;
} TVMParallelGroupEnv;
typedef int (*FTVMParallelLambda)(int task_id, TVMParallelGroupEnv* penv, void* cdata);
int TVMBackendParallelLaunch(FTVMParallelLambda flambda, void* cdata, int num_task);

static inline float hsum(v128_t v) {
  v128_t s = wasm_f32x4_add(v, wasm_i32x4_shuffle(v, v, 2, 3, 0, 1));
  s = wasm_f32x4_add(s, wasm_i32x4_shuffle(s, s, 1, 0, 3, 2));
  return wasm_f32x4_extract_lane(s, 0);
}

// The 16 unsigned bytes of `b` as four f32x4, lanes in byte order.
static inline void u8_to_f32(v128_t b, v128_t out[4]) {
  v128_t lo = wasm_u16x8_extend_low_u8x16(b), hi = wasm_u16x8_extend_high_u8x16(b);
  out[0] = wasm_f32x4_convert_i32x4(wasm_u32x4_extend_low_u16x8(lo));
  out[1] = wasm_f32x4_convert_i32x4(wasm_u32x4_extend_high_u16x8(lo));
  out[2] = wasm_f32x4_convert_i32x4(wasm_u32x4_extend_low_u16x8(hi));
  out[3] = wasm_f32x4_convert_i32x4(wasm_u32x4_extend_high_u16x8(hi));
}

// The 16 signed bytes of `b` as four f32x4, lanes in byte order.
static inline void i8_to_f32(v128_t b, v128_t out[4]) {
  v128_t lo = wasm_i16x8_extend_low_i8x16(b), hi = wasm_i16x8_extend_high_i8x16(b);
  out[0] = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_low_i16x8(lo));
  out[1] = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_high_i16x8(lo));
  out[2] = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_low_i16x8(hi));
  out[3] = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_high_i16x8(hi));
}

// sum_i a[i] * x[i] over 16 lanes (x: 16 consecutive floats), two chains for latency.
static inline v128_t dot16(const v128_t a[4], const float* x) {
  v128_t p = wasm_f32x4_mul(a[0], wasm_v128_load(x));
  v128_t q = wasm_f32x4_mul(a[1], wasm_v128_load(x + 4));
  p = wasm_f32x4_add(p, wasm_f32x4_mul(a[2], wasm_v128_load(x + 8)));
  q = wasm_f32x4_add(q, wasm_f32x4_mul(a[3], wasm_v128_load(x + 12)));
  return wasm_f32x4_add(p, q);
}

// ---------------------------------------------------------------------------------- decode

// x (in_f floats) -> xr in nibble order per group (16 even elements, then 16 odd ones), and
// sums[g] = the sum of group g of x.
static void reorder_x(const float* x, float* xr, float* sums, int32_t in_f) {
  for (int32_t g = 0; g < in_f / GROUP; g++) {
    const float* xs = x + g * GROUP;
    float* out = xr + g * GROUP;
    v128_t total = wasm_f32x4_splat(0.0f);
    for (int i = 0; i < 4; i++) {
      v128_t a = wasm_v128_load(xs + 8 * i), b = wasm_v128_load(xs + 8 * i + 4);
      wasm_v128_store(out + 4 * i, wasm_i32x4_shuffle(a, b, 0, 2, 4, 6));
      wasm_v128_store(out + 16 + 4 * i, wasm_i32x4_shuffle(a, b, 1, 3, 5, 7));
      total = wasm_f32x4_add(total, wasm_f32x4_add(a, b));
    }
    sums[g] = hsum(total);
  }
}

// One output of a q4 GEMV: row `q` (in_f / 2 bytes), its scales and per-group offsets
// (`minimum` for q4_affine; NULL for q4_sym, whose offset is -8 * scale).
static inline float q4_row(const uint8_t* q, const float* scale, const float* minimum, const float* xr,
                           const float* sums, int32_t groups) {
  const v128_t low4 = wasm_i8x16_splat(0x0F);
  v128_t acc = wasm_f32x4_splat(0.0f);
  float offset = 0.0f;
  for (int32_t g = 0; g < groups; g++) {
    v128_t v = wasm_v128_load(q + 16 * g);
    v128_t even[4], odd[4];
    u8_to_f32(wasm_v128_and(v, low4), even);
    u8_to_f32(wasm_u8x16_shr(v, 4), odd);
    const float* xs = xr + g * GROUP;
    v128_t part = wasm_f32x4_add(dot16(even, xs), dot16(odd, xs + 16));
    acc = wasm_f32x4_add(acc, wasm_f32x4_mul(part, wasm_f32x4_splat(scale[g])));
    offset += (minimum ? minimum[g] : -8.0f * scale[g]) * sums[g];
  }
  return hsum(acc) + offset;
}

// One output of a q5 GEMV: as q4_row, each nibble completed by its fifth bit from the group's
// `qhigh` word (even element 2i at bit 2i, odd 2i + 1 at bit 2i + 1): the word's bytes are spread
// over the lanes (lane i reads byte i / 4), masked per lane and turned into 16 or 0. The offset
// is `minimum` (q5_affine) or -16 * scale (q5_sym).
static inline float q5_row(const uint8_t* q, const uint32_t* high, const float* scale, const float* minimum,
                           const float* xr, const float* sums, int32_t groups) {
  const v128_t low4 = wasm_i8x16_splat(0x0F), sixteen = wasm_i8x16_splat(0x10), zero = wasm_i8x16_splat(0);
  const v128_t even_bit = wasm_i8x16_make(1, 4, 16, 64, 1, 4, 16, 64, 1, 4, 16, 64, 1, 4, 16, 64);
  const v128_t odd_bit = wasm_i8x16_make(2, 8, 32, -128, 2, 8, 32, -128, 2, 8, 32, -128, 2, 8, 32, -128);
  v128_t acc = wasm_f32x4_splat(0.0f);
  float offset = 0.0f;
  for (int32_t g = 0; g < groups; g++) {
    v128_t v = wasm_v128_load(q + 16 * g);
    v128_t h = wasm_i8x16_shuffle(wasm_i32x4_splat((int32_t)high[g]), zero, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    v128_t even_high = wasm_v128_and(wasm_i8x16_ne(wasm_v128_and(h, even_bit), zero), sixteen);
    v128_t odd_high = wasm_v128_and(wasm_i8x16_ne(wasm_v128_and(h, odd_bit), zero), sixteen);
    v128_t even[4], odd[4];
    u8_to_f32(wasm_v128_or(wasm_v128_and(v, low4), even_high), even);
    u8_to_f32(wasm_v128_or(wasm_u8x16_shr(v, 4), odd_high), odd);
    const float* xs = xr + g * GROUP;
    v128_t part = wasm_f32x4_add(dot16(even, xs), dot16(odd, xs + 16));
    acc = wasm_f32x4_add(acc, wasm_f32x4_mul(part, wasm_f32x4_splat(scale[g])));
    offset += (minimum ? minimum[g] : -16.0f * scale[g]) * sums[g];
  }
  return hsum(acc) + offset;
}

static inline float q8_row(const int8_t* q, const float* scale, const float* x, int32_t groups) {
  v128_t acc = wasm_f32x4_splat(0.0f);
  for (int32_t g = 0; g < groups; g++) {
    v128_t a[4], b[4];
    i8_to_f32(wasm_v128_load(q + 32 * g), a);
    i8_to_f32(wasm_v128_load(q + 32 * g + 16), b);
    const float* xs = x + g * GROUP;
    v128_t part = wasm_f32x4_add(dot16(a, xs), dot16(b, xs + 16));
    acc = wasm_f32x4_add(acc, wasm_f32x4_mul(part, wasm_f32x4_splat(scale[g])));
  }
  return hsum(acc);
}

// ---------------------------------------------------------------------------------- prefill

// Row `q` of a q4 matrix -> in_f f32 weights in natural order: q * scale + minimum
// (q4_affine) or (q - 8) * scale (q4_sym), as WeightFormat.dequantize computes them.
static void q4_dequantize_row(const uint8_t* q, const float* scale, const float* minimum, float* w,
                              int32_t groups) {
  const v128_t low4 = wasm_i8x16_splat(0x0F);
  const v128_t eight = wasm_f32x4_splat(8.0f);
  for (int32_t g = 0; g < groups; g++) {
    v128_t v = wasm_v128_load(q + 16 * g);
    v128_t lo = wasm_v128_and(v, low4), hi = wasm_u8x16_shr(v, 4);
    // Byte i holds elements 2i (low) and 2i + 1 (high): interleave back into element order.
    v128_t first = wasm_i8x16_shuffle(lo, hi, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    v128_t second = wasm_i8x16_shuffle(lo, hi, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    v128_t f[8];
    u8_to_f32(first, f);
    u8_to_f32(second, f + 4);
    v128_t d = wasm_f32x4_splat(scale[g]);
    float* out = w + g * GROUP;
    if (minimum) {
      v128_t m = wasm_f32x4_splat(minimum[g]);
      for (int i = 0; i < 8; i++) wasm_v128_store(out + 4 * i, wasm_f32x4_add(wasm_f32x4_mul(f[i], d), m));
    } else {
      for (int i = 0; i < 8; i++) wasm_v128_store(out + 4 * i, wasm_f32x4_mul(wasm_f32x4_sub(f[i], eight), d));
    }
  }
}

static void q8_dequantize_row(const int8_t* q, const float* scale, float* w, int32_t groups) {
  for (int32_t g = 0; g < groups; g++) {
    v128_t f[8];
    i8_to_f32(wasm_v128_load(q + 32 * g), f);
    i8_to_f32(wasm_v128_load(q + 32 * g + 16), f + 4);
    v128_t d = wasm_f32x4_splat(scale[g]);
    float* out = w + g * GROUP;
    for (int i = 0; i < 8; i++) wasm_v128_store(out + 4 * i, wasm_f32x4_mul(f[i], d));
  }
}

// Row of a q5 matrix (q5_sym, or q5_affine with `minimum`) -> in_f f32 weights, as
// WeightFormat.dequantize computes them.
static void q5_dequantize_row(const uint8_t* q, const uint32_t* high, const float* scale, const float* minimum,
                              float* w, int32_t groups) {
  for (int32_t g = 0; g < groups; g++) {
    const uint8_t* b = q + 16 * g;
    const uint32_t h = high[g];
    const float d = scale[g];
    float* out = w + g * GROUP;
    for (int i = 0; i < 16; i++) {
      float lo = (float)((b[i] & 15u) | ((h >> (2 * i)) & 1u) << 4);
      float hi = (float)((b[i] >> 4) | ((h >> (2 * i + 1)) & 1u) << 4);
      if (minimum) {
        out[2 * i] = lo * d + minimum[g];
        out[2 * i + 1] = hi * d + minimum[g];
      } else {
        out[2 * i] = (lo - 16.0f) * d;
        out[2 * i + 1] = (hi - 16.0f) * d;
      }
    }
  }
}

// Row of a q4_k or q5_k matrix (`high` NULL for q4_k) -> in_f f32 weights, in gguf's order:
// (d * sc) * q - (dmin * m).
static void q45_k_dequantize_row(const uint8_t* q, const uint32_t* high, const uint8_t* sub, const float* scale,
                                 const float* minimum, float* w, int32_t in_f) {
  for (int32_t g = 0; g < in_f / 32; g++) {
    const float d = scale[g / 8] * (float)sub[2 * g];
    const float dm = minimum[g / 8] * (float)sub[2 * g + 1];
    const uint8_t* b = q + 16 * g;
    const uint32_t h = high ? high[g] : 0;
    float* out = w + 32 * g;
    for (int i = 0; i < 16; i++) {
      out[2 * i] = d * (float)((b[i] & 15u) | ((h >> (2 * i)) & 1u) << 4) - dm;
      out[2 * i + 1] = d * (float)((b[i] >> 4) | ((h >> (2 * i + 1)) & 1u) << 4) - dm;
    }
  }
}

// Row of a q6_k matrix -> in_f f32 weights: (d * sc) * (q - 32).
static void q6_k_dequantize_row(const uint8_t* q, const uint32_t* high, const int8_t* sub, const float* scale,
                                float* w, int32_t in_f) {
  for (int32_t g = 0; g < in_f / 16; g++) {
    const float d = scale[g / 16] * (float)sub[g];
    const uint8_t* b = q + 8 * g;
    const uint32_t h = high[g];
    float* out = w + 16 * g;
    for (int i = 0; i < 8; i++) {
      out[2 * i] = d * ((float)((b[i] & 15u) | ((h >> (4 * i)) & 3u) << 4) - 32.0f);
      out[2 * i + 1] = d * ((float)((b[i] >> 4) | ((h >> (4 * i + 2)) & 3u) << 4) - 32.0f);
    }
  }
}

// sum_k w[k] * x[k] (in_f a multiple of 32).
static inline float dot_row(const float* w, const float* x, int32_t in_f) {
  v128_t a = wasm_f32x4_splat(0.0f), b = a;
  for (int32_t k = 0; k < in_f; k += 8) {
    a = wasm_f32x4_add(a, wasm_f32x4_mul(wasm_v128_load(w + k), wasm_v128_load(x + k)));
    b = wasm_f32x4_add(b, wasm_f32x4_mul(wasm_v128_load(w + k + 4), wasm_v128_load(x + k + 4)));
  }
  return hsum(wasm_f32x4_add(a, b));
}

// y[t, j0] and y[t, j0 + 1] for tokens t0..t0+3 from the dequantized rows w0, w1.
static inline void dot_2x4(const float* w0, const float* w1, const float* x, float* y, int32_t t0,
                           int32_t j0, int32_t out_f, int32_t in_f, int store_second) {
  const float* x0 = x + (int64_t)t0 * in_f;
  const float* x1 = x0 + in_f;
  const float* x2 = x1 + in_f;
  const float* x3 = x2 + in_f;
  v128_t a00 = wasm_f32x4_splat(0.0f), a01 = a00, a02 = a00, a03 = a00;
  v128_t a10 = a00, a11 = a00, a12 = a00, a13 = a00;
  for (int32_t k = 0; k < in_f; k += 4) {
    v128_t u = wasm_v128_load(w0 + k), v = wasm_v128_load(w1 + k);
    v128_t b = wasm_v128_load(x0 + k);
    a00 = wasm_f32x4_add(a00, wasm_f32x4_mul(u, b));
    a10 = wasm_f32x4_add(a10, wasm_f32x4_mul(v, b));
    b = wasm_v128_load(x1 + k);
    a01 = wasm_f32x4_add(a01, wasm_f32x4_mul(u, b));
    a11 = wasm_f32x4_add(a11, wasm_f32x4_mul(v, b));
    b = wasm_v128_load(x2 + k);
    a02 = wasm_f32x4_add(a02, wasm_f32x4_mul(u, b));
    a12 = wasm_f32x4_add(a12, wasm_f32x4_mul(v, b));
    b = wasm_v128_load(x3 + k);
    a03 = wasm_f32x4_add(a03, wasm_f32x4_mul(u, b));
    a13 = wasm_f32x4_add(a13, wasm_f32x4_mul(v, b));
  }
  float* y0 = y + (int64_t)t0 * out_f + j0;
  y0[0] = hsum(a00);
  y0[out_f] = hsum(a01);
  y0[2 * out_f] = hsum(a02);
  y0[3 * out_f] = hsum(a03);
  if (store_second) {
    y0[1] = hsum(a10);
    y0[out_f + 1] = hsum(a11);
    y0[2 * out_f + 1] = hsum(a12);
    y0[3 * out_f + 1] = hsum(a13);
  }
}

// The same for one token t (the ragged end of the token tiles).
static inline void dot_2x1(const float* w0, const float* w1, const float* x, float* y, int32_t t,
                           int32_t j0, int32_t out_f, int32_t in_f, int store_second) {
  const float* xt = x + (int64_t)t * in_f;
  v128_t a0 = wasm_f32x4_splat(0.0f), a1 = a0, b0 = a0, b1 = a0;
  int32_t k = 0;
  for (; k + 8 <= in_f; k += 8) {
    v128_t p = wasm_v128_load(xt + k), q = wasm_v128_load(xt + k + 4);
    a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(wasm_v128_load(w0 + k), p));
    a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(wasm_v128_load(w0 + k + 4), q));
    b0 = wasm_f32x4_add(b0, wasm_f32x4_mul(wasm_v128_load(w1 + k), p));
    b1 = wasm_f32x4_add(b1, wasm_f32x4_mul(wasm_v128_load(w1 + k + 4), q));
  }
  for (; k < in_f; k += 4) {
    v128_t p = wasm_v128_load(xt + k);
    a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(wasm_v128_load(w0 + k), p));
    b0 = wasm_f32x4_add(b0, wasm_f32x4_mul(wasm_v128_load(w1 + k), p));
  }
  float* yt = y + (int64_t)t * out_f + j0;
  yt[0] = hsum(wasm_f32x4_add(a0, a1));
  if (store_second) yt[1] = hsum(wasm_f32x4_add(b0, b1));
}

// ---------------------------------------------------------------------------------- tasks

enum { Q4 = 0, Q8 = 1, Q5 = 2, Q4K = 3, Q5K = 4, Q6K = 5 };

// One matmul call, shared by its tasks.
typedef struct {
  int32_t kind;
  const float* x;
  const void* qweight;
  const float* scale;
  const float* minimum;  // q4_affine, q5_affine, q4_k, q5_k; else NULL
  float* y;
  float* work;
  int32_t n, out_f, in_f;
  const uint32_t* qhigh;  // q5, q5_k, q6_k
  const void* subscale;   // k-quants
} Job;

// Task `task` of `num_task`'s rows [*begin, *end), in chunks of `align` rows.
static void task_rows(int task, int num_task, int32_t rows, int32_t align, int32_t* begin, int32_t* end) {
  int32_t chunk = (rows + num_task - 1) / num_task;
  chunk = (chunk + align - 1) / align * align;
  int64_t b = (int64_t)task * chunk, e = b + chunk;
  *begin = b < rows ? (int32_t)b : rows;
  *end = e < rows ? (int32_t)e : rows;
}

static void dequantize(const Job* job, int32_t row, float* w) {
  const int32_t in_f = job->in_f, groups = in_f / GROUP;
  const int64_t r = row;
  switch (job->kind) {
    case Q5:
      q5_dequantize_row((const uint8_t*)job->qweight + r * (in_f / 2), job->qhigh + r * groups,
                        job->scale + r * groups, job->minimum ? job->minimum + r * groups : 0, w, groups);
      return;
    case Q4K:
    case Q5K:
      q45_k_dequantize_row((const uint8_t*)job->qweight + r * (in_f / 2),
                           job->kind == Q5K ? job->qhigh + r * (in_f / 32) : 0,
                           (const uint8_t*)job->subscale + r * (in_f / 16), job->scale + r * (in_f / 256),
                           job->minimum + r * (in_f / 256), w, in_f);
      return;
    case Q6K:
      q6_k_dequantize_row((const uint8_t*)job->qweight + r * (in_f / 2), job->qhigh + r * (in_f / 16),
                          (const int8_t*)job->subscale + r * (in_f / 16), job->scale + r * (in_f / 256), w, in_f);
      return;
    default:
      break;
  }
  if (job->kind == Q4) {
    q4_dequantize_row((const uint8_t*)job->qweight + (int64_t)row * (job->in_f / 2), job->scale + (int64_t)row * groups,
                      job->minimum ? job->minimum + (int64_t)row * groups : 0, w, groups);
  } else {
    q8_dequantize_row((const int8_t*)job->qweight + (int64_t)row * job->in_f, job->scale + (int64_t)row * groups, w,
                      groups);
  }
}

// Decode: rows of the GEMV. x was reordered (q4) into work before the launch.
static int gemv_task(int task, TVMParallelGroupEnv* env, void* data) {
  const Job* job = data;
  const int32_t in_f = job->in_f, groups = in_f / GROUP;
  int32_t begin, end;
  if (job->kind == Q5) {
    const float* xr = job->work;
    const float* sums = job->work + in_f;
    task_rows(task, env->num_task, job->out_f, 16, &begin, &end);
    for (int32_t j = begin; j < end; j++) {
      job->y[j] = q5_row((const uint8_t*)job->qweight + (int64_t)j * (in_f / 2), job->qhigh + (int64_t)j * groups,
                         job->scale + (int64_t)j * groups, job->minimum ? job->minimum + (int64_t)j * groups : 0,
                         xr, sums, groups);
    }
    return 0;
  }
  if (job->kind != Q4 && job->kind != Q8) {
    // One row at a time through this task's workspace slot (the slots of gemm_task, so the rows
    // are split over the first MAX_TASKS tasks).
    int num_task = env->num_task < MAX_TASKS ? env->num_task : MAX_TASKS;
    if (task >= num_task) return 0;
    task_rows(task, num_task, job->out_f, 16, &begin, &end);
    float* w = job->work + (int64_t)task * 2 * in_f;
    for (int32_t j = begin; j < end; j++) {
      dequantize(job, j, w);
      job->y[j] = dot_row(w, job->x, in_f);
    }
    return 0;
  }
  task_rows(task, env->num_task, job->out_f, 16, &begin, &end);
  if (job->kind == Q4) {
    const float* xr = job->work;
    const float* sums = job->work + in_f;
    for (int32_t j = begin; j < end; j++) {
      job->y[j] = q4_row((const uint8_t*)job->qweight + (int64_t)j * (in_f / 2), job->scale + (int64_t)j * groups,
                         job->minimum ? job->minimum + (int64_t)j * groups : 0, xr, sums, groups);
    }
  } else {
    for (int32_t j = begin; j < end; j++) {
      job->y[j] = q8_row((const int8_t*)job->qweight + (int64_t)j * in_f, job->scale + (int64_t)j * groups, job->x,
                         groups);
    }
  }
  return 0;
}

// Prefill: pairs of rows dequantized into this task's slot of the workspace (2 * in_f floats),
// each pair dotted with all n tokens.
static int gemm_task(int task, TVMParallelGroupEnv* env, void* data) {
  const Job* job = data;
  const int32_t n = job->n, out_f = job->out_f, in_f = job->in_f;
  int num_task = env->num_task < MAX_TASKS ? env->num_task : MAX_TASKS;
  if (task >= num_task) return 0;
  int32_t begin, end;
  task_rows(task, num_task, out_f, 2, &begin, &end);
  float* w0 = job->work + (int64_t)task * 2 * in_f;
  float* w1 = w0 + in_f;
  for (int32_t j = begin; j < end; j += 2) {
    int second = j + 1 < end;
    dequantize(job, j, w0);
    if (second) dequantize(job, j + 1, w1);
    const float* w1r = second ? w1 : w0;
    int32_t t = 0;
    for (; t + 4 <= n; t += 4) dot_2x4(w0, w1r, job->x, job->y, t, j, out_f, in_f, second);
    for (; t < n; t++) dot_2x1(w0, w1r, job->x, job->y, t, j, out_f, in_f, second);
  }
  return 0;
}

// MAX_TASKS tasks whatever the thread count: threads claim them as they come free, so a thread
// that starts late (its core busy elsewhere) leaves its share to the others instead of being
// waited for. TVM's single-threaded runtime runs one task of all rows.
static int32_t run(Job* job) {
  if (job->n == 1) {
    if (job->kind == Q4 || job->kind == Q5) reorder_x(job->x, job->work, job->work + job->in_f, job->in_f);
    return TVMBackendParallelLaunch(gemv_task, job, MAX_TASKS);
  }
  return TVMBackendParallelLaunch(gemm_task, job, MAX_TASKS);
}

// ---------------------------------------------------------------------------------- entries
// x: [n, in_f] f32; y: [n, out_f] f32; work: at least MAX_TASKS * 2 * in_f floats (which covers
// decode's in_f + in_f / 32). in_f must be a multiple of 32 (the formats' group size).
// Returns 0, or -1 when a task failed.

int32_t webkiln_q4_affine_matmul(const float* x, const uint8_t* qweight, const float* scale, const float* minimum,
                                 float* y, float* work, int32_t n, int32_t out_f, int32_t in_f) {
  Job job = {Q4, x, qweight, scale, minimum, y, work, n, out_f, in_f};
  return run(&job);
}

int32_t webkiln_q4_sym_matmul(const float* x, const uint8_t* qweight, const float* scale, float* y, float* work,
                              int32_t n, int32_t out_f, int32_t in_f) {
  Job job = {Q4, x, qweight, scale, 0, y, work, n, out_f, in_f};
  return run(&job);
}

int32_t webkiln_q8_sym_matmul(const float* x, const int8_t* qweight, const float* scale, float* y, float* work,
                              int32_t n, int32_t out_f, int32_t in_f) {
  Job job = {Q8, x, qweight, scale, 0, y, work, n, out_f, in_f};
  return run(&job);
}

int32_t webkiln_q5_sym_matmul(const float* x, const uint8_t* qweight, const uint32_t* qhigh, const float* scale,
                              float* y, float* work, int32_t n, int32_t out_f, int32_t in_f) {
  Job job = {Q5, x, qweight, scale, 0, y, work, n, out_f, in_f, qhigh, 0};
  return run(&job);
}

int32_t webkiln_q5_affine_matmul(const float* x, const uint8_t* qweight, const uint32_t* qhigh, const float* scale,
                                 const float* minimum, float* y, float* work, int32_t n, int32_t out_f, int32_t in_f) {
  Job job = {Q5, x, qweight, scale, minimum, y, work, n, out_f, in_f, qhigh, 0};
  return run(&job);
}

int32_t webkiln_q4_k_matmul(const float* x, const uint8_t* qweight, const uint8_t* subscale, const float* scale,
                            const float* minimum, float* y, float* work, int32_t n, int32_t out_f, int32_t in_f) {
  Job job = {Q4K, x, qweight, scale, minimum, y, work, n, out_f, in_f, 0, subscale};
  return run(&job);
}

int32_t webkiln_q5_k_matmul(const float* x, const uint8_t* qweight, const uint32_t* qhigh, const uint8_t* subscale,
                            const float* scale, const float* minimum, float* y, float* work, int32_t n,
                            int32_t out_f, int32_t in_f) {
  Job job = {Q5K, x, qweight, scale, minimum, y, work, n, out_f, in_f, qhigh, subscale};
  return run(&job);
}

int32_t webkiln_q6_k_matmul(const float* x, const uint8_t* qweight, const uint32_t* qhigh, const int8_t* subscale,
                            const float* scale, float* y, float* work, int32_t n, int32_t out_f, int32_t in_f) {
  Job job = {Q6K, x, qweight, scale, 0, y, work, n, out_f, in_f, qhigh, subscale};
  return run(&job);
}

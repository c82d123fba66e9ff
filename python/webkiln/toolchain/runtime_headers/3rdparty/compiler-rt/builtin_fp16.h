/*
 * webkiln: IEEE-754 narrowing/widening conversions between binary formats.
 *
 * TVM's runtime sources include "3rdparty/compiler-rt/builtin_fp16.h" and call
 * __truncXfYf2__ / __extendXfYf2__ with the template signature
 *   <SRC_T, SRC_REP_T, SRC_SIG_BITS, DST_T, DST_REP_T, DST_SIG_BITS>
 * but the PyPI wheel does not ship that header, so this is our own
 * implementation of the same contract. Rounding is round-to-nearest-even;
 * overflow gives infinity; NaNs stay NaN (quieted when narrowing).
 * Checked bit-exact against numpy.float16 by tests/test_toolchain.py.
 */
#ifndef WEBKILN_BUILTIN_FP16_H_
#define WEBKILN_BUILTIN_FP16_H_

#include <climits>
#include <cstdint>
#include <cstring>

namespace webkiln_fp {
template <typename T, int SIG_BITS>
struct Format {
  static constexpr int kBits = static_cast<int>(sizeof(T) * CHAR_BIT);
  static constexpr int kExpBits = kBits - SIG_BITS - 1;
  static constexpr int kExpMax = (1 << kExpBits) - 1;
  static constexpr int kBias = (1 << (kExpBits - 1)) - 1;
};
}  // namespace webkiln_fp

/* Widening (e.g. half -> float): exact for every input. */
template <typename SRC_T, typename SRC_REP_T, int SRC_SIG_BITS, typename DST_T, typename DST_REP_T,
          int DST_SIG_BITS>
static inline DST_T __extendXfYf2__(SRC_T a) {
  using S = webkiln_fp::Format<SRC_T, SRC_SIG_BITS>;
  using D = webkiln_fp::Format<DST_T, DST_SIG_BITS>;
  static_assert(DST_SIG_BITS >= SRC_SIG_BITS, "extend must widen the significand");
  constexpr int kSigShift = DST_SIG_BITS - SRC_SIG_BITS;
  constexpr SRC_REP_T kSrcSigMask = (SRC_REP_T(1) << SRC_SIG_BITS) - 1;

  SRC_REP_T rep;
  std::memcpy(&rep, &a, sizeof(rep));
  const DST_REP_T sign = static_cast<DST_REP_T>((rep >> (S::kBits - 1)) & 1) << (D::kBits - 1);
  const int exp = static_cast<int>((rep >> SRC_SIG_BITS) & S::kExpMax);
  SRC_REP_T sig = rep & kSrcSigMask;

  DST_REP_T out;
  if (exp == S::kExpMax) {  // infinity or NaN: keep the payload
    out = (static_cast<DST_REP_T>(D::kExpMax) << DST_SIG_BITS) |
          (static_cast<DST_REP_T>(sig) << kSigShift);
  } else if (exp != 0) {  // normal
    out = (static_cast<DST_REP_T>(exp - S::kBias + D::kBias) << DST_SIG_BITS) |
          (static_cast<DST_REP_T>(sig) << kSigShift);
  } else if (sig == 0) {  // signed zero
    out = 0;
  } else {  // subnormal source: normalise, it is a normal number in the wider format
    int shift = 0;
    while ((sig & (SRC_REP_T(1) << SRC_SIG_BITS)) == 0) {
      sig = static_cast<SRC_REP_T>(sig << 1);
      ++shift;
    }
    sig &= kSrcSigMask;
    out = (static_cast<DST_REP_T>(1 - S::kBias - shift + D::kBias) << DST_SIG_BITS) |
          (static_cast<DST_REP_T>(sig) << kSigShift);
  }
  out |= sign;
  DST_T result;
  std::memcpy(&result, &out, sizeof(result));
  return result;
}

/* Narrowing (e.g. float -> half): round to nearest, ties to even. */
template <typename SRC_T, typename SRC_REP_T, int SRC_SIG_BITS, typename DST_T, typename DST_REP_T,
          int DST_SIG_BITS>
static inline DST_T __truncXfYf2__(SRC_T a) {
  using S = webkiln_fp::Format<SRC_T, SRC_SIG_BITS>;
  using D = webkiln_fp::Format<DST_T, DST_SIG_BITS>;
  static_assert(SRC_SIG_BITS > DST_SIG_BITS && D::kExpBits <= S::kExpBits,
                "trunc must narrow the format");
  constexpr int kSigDiff = SRC_SIG_BITS - DST_SIG_BITS;
  constexpr SRC_REP_T kSrcSigMask = (SRC_REP_T(1) << SRC_SIG_BITS) - 1;
  constexpr DST_REP_T kDstInf = static_cast<DST_REP_T>(D::kExpMax) << DST_SIG_BITS;

  SRC_REP_T rep;
  std::memcpy(&rep, &a, sizeof(rep));
  const DST_REP_T sign = static_cast<DST_REP_T>((rep >> (S::kBits - 1)) & 1) << (D::kBits - 1);
  const int exp = static_cast<int>((rep >> SRC_SIG_BITS) & S::kExpMax);
  const SRC_REP_T sig = rep & kSrcSigMask;

  // Rounds `value >> shift` to nearest even (shift >= 1).
  auto round_shift = [](SRC_REP_T value, int shift) -> SRC_REP_T {
    const SRC_REP_T kept = value >> shift;
    const SRC_REP_T rest = value & ((SRC_REP_T(1) << shift) - 1);
    const SRC_REP_T half = SRC_REP_T(1) << (shift - 1);
    return (rest > half || (rest == half && (kept & 1))) ? kept + 1 : kept;
  };

  DST_REP_T out;
  if (exp == S::kExpMax) {
    out = sig == 0 ? kDstInf
                   : static_cast<DST_REP_T>(kDstInf | (DST_REP_T(1) << (DST_SIG_BITS - 1)) |
                                            static_cast<DST_REP_T>(sig >> kSigDiff));
  } else {
    const int dst_exp = (exp == 0 ? 1 : exp) - S::kBias + D::kBias;
    const SRC_REP_T full = exp == 0 ? sig : (sig | (SRC_REP_T(1) << SRC_SIG_BITS));
    if (dst_exp >= D::kExpMax) {
      out = kDstInf;
    } else if (dst_exp > 0) {
      // A carry out of the significand bumps the exponent, up to infinity: both correct.
      out = static_cast<DST_REP_T>((static_cast<DST_REP_T>(dst_exp - 1) << DST_SIG_BITS) +
                                   static_cast<DST_REP_T>(round_shift(full, kSigDiff)));
    } else {
      const int shift = kSigDiff + 1 - dst_exp;
      // Below half the smallest subnormal: rounds to zero.
      out = shift > SRC_SIG_BITS + 1 ? DST_REP_T(0)
                                     : static_cast<DST_REP_T>(round_shift(full, shift));
    }
  }
  out |= sign;
  DST_T result;
  std::memcpy(&result, &out, sizeof(result));
  return result;
}

#endif  // WEBKILN_BUILTIN_FP16_H_

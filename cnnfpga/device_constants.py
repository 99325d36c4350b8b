"""Constants the device stages compute with, computed on the host: the leaky-ReLU slope and the
LRN factor table of fixed-point stages.  The code generator writes them into the kernels (or passes
them as arguments) and the fixed-point golden model (cnnfpga.fixed_reference) uses the same
definitions, so the two agree by construction; nothing here depends on the golden model.
"""
from __future__ import annotations

import numpy as np

from cnnfpga.errors import PrecisionError
from cnnfpga.precision import Fixed, quantize_accumulator

LEAKY_SLOPE_FRAC = 16             # fractional bits of the leaky-ReLU slope constant
FACTOR_FRAC = 16                  # fractional bits of the LRN factor table entries
# bits of S below its leading one that index the LRN table (7: the bucket error stays under 0.4%);
# the code generator defines FX_LRN_MANTISSA_BITS in the kernels from this
LRN_MANTISSA_BITS = 7
LRN_TABLE_LEN = 64 << LRN_MANTISSA_BITS   # e in 0..63 (S < 2^63), 2^LRN_MANTISSA_BITS buckets each
ALIGNED_BITS = 61                 # a sum's operands aligned to one fraction: the sum of two stays below 2^62


def leaky_slope_constant(negative_slope: float) -> int:
    """The slope as an integer with 16 fractional bits, round half up: floor(slope * 2^16 + 0.5)."""
    slope_q = int(quantize_accumulator(np.float64(negative_slope), LEAKY_SLOPE_FRAC))
    if abs(slope_q) >= 1 << 31:
        raise PrecisionError(f"ReLU negative_slope {negative_slope} is too large for a 32-bit constant")
    return slope_q


def _lrn_constants(spec):
    """(window divisor, k) as Caffe uses them: ACROSS_CHANNELS alpha/n with k; WITHIN_CHANNEL
    alpha/(n*n) with k = 1 (Caffe's within-channel LRN is built from an AVE pool and ignores k)."""
    if spec.region == "WITHIN_CHANNEL":
        return spec.local_size * spec.local_size, 1.0
    return spec.local_size, float(spec.k)


def lrn_table_index(s) -> np.ndarray:
    """Index of the LRN factor table for S >= 0 (int64): (e << M) + m, with M = LRN_MANTISSA_BITS.

    e = bit length of S (0 for S = 0); m = the M bits just below S's leading one, zero-filled when
    S has fewer bits.  In OpenCL C (kernels/common.h, ``clz`` of a long is 64 for 0):
        int e = 64 - (int)clz(S);
        int m = (int)((e > M+1 ? (S >> (e - (M+1))) : (S << ((M+1) - e))) & ((1 << M) - 1));
        int index = (e << M) + m;
    """
    s = np.asarray(s, dtype=np.int64)
    if (s < 0).any():
        raise PrecisionError("LRN sum of squares must be non-negative")
    e = np.zeros(s.shape, dtype=np.int64)
    v = s.copy()
    for k in (32, 16, 8, 4, 2, 1):      # binary search for the leading one
        big = v >= (1 << k)
        e += big * k
        v = np.where(big, v >> k, v)
    e += v > 0
    top = LRN_MANTISSA_BITS + 1
    m = np.where(e > top, s >> np.maximum(e - top, 0), s << np.maximum(top - e, 0)) & ((1 << LRN_MANTISSA_BITS) - 1)
    return e * (1 << LRN_MANTISSA_BITS) + m


def lrn_bucket_middles() -> np.ndarray:
    """float64 S at the middle of each table bucket (index (e << M) + m, M = LRN_MANTISSA_BITS).

    With lead = 2^M + m: e >= M+1: the bucket holds S in [lead << (e-M-1), ((lead+1) << (e-M-1)) - 1];
    its middle is used.  e <= M+1: it holds the single S = lead >> (M+1-e) (for m whose low bits are
    zero; other m are never indexed and get the value of that same S, keeping the table monotonic).
    e = 0: S = 0.
    """
    e = np.arange(LRN_TABLE_LEN) >> LRN_MANTISSA_BITS
    m = np.arange(LRN_TABLE_LEN) & ((1 << LRN_MANTISSA_BITS) - 1)
    top = LRN_MANTISSA_BITS + 1
    lead = (1 << LRN_MANTISSA_BITS) + m
    low = np.where(e >= top, np.ldexp(lead.astype(np.float64), np.maximum(e - top, 0)),
                   (lead >> np.maximum(top - e, 0)).astype(np.float64))
    width = np.ldexp(1.0, np.maximum(e - top, 0))          # integers per bucket
    middle = low + (width - 1) / 2
    return np.where(e == 0, 0.0, middle)


def lrn_factor(s_real, spec) -> np.ndarray:
    """The float64 LRN factor (k + alpha/n * s)^(-beta) for a real sum of squares s (Caffe's formula)."""
    divisor, k = _lrn_constants(spec)
    with np.errstate(divide="ignore"):
        return (k + spec.alpha / divisor * np.asarray(s_real, dtype=np.float64)) ** (-spec.beta)


def lrn_factor_table(spec, in_fmt: Fixed) -> np.ndarray:
    """int32 table[(e << M) + m] = floor(factor(S_mid * 2^(-2 in.f)) * 2^16 + 0.5), S_mid the bucket's
    middle (``lrn_bucket_middles``), clamped to int32.  Computed in float64 on the host; the device
    only looks it up."""
    if not isinstance(in_fmt, Fixed):
        raise PrecisionError(f"the LRN factor table is for a Fixed input format, got {in_fmt}")
    factor = lrn_factor(np.ldexp(lrn_bucket_middles(), -2 * in_fmt.frac_bits), spec)
    scaled = np.floor(np.ldexp(factor, FACTOR_FRAC) + 0.5)
    return np.clip(np.nan_to_num(scaled, posinf=2**31 - 1), 0, 2**31 - 1).astype(np.int32)


def lrn_window(spec) -> int:
    """Values in an LRN window: local_size channels across, local_size^2 pixels within a channel."""
    return spec.local_size * spec.local_size if spec.region == "WITHIN_CHANNEL" else spec.local_size


def lrn_table_length(spec, in_fmt: Fixed) -> int:
    """The entries of the factor table a stage can index: the largest sum of squares of a window of
    ``in_fmt`` values, window * qmin^2, has bit length e_max, so indices stay below (e_max + 1) << M.
    The device keeps only these on chip (16-bit inputs: 34 of the 64 exponents)."""
    largest = lrn_window(spec) * in_fmt.qmin * in_fmt.qmin
    return min(LRN_TABLE_LEN, (largest.bit_length() + 1) << LRN_MANTISSA_BITS)

/* Helpers shared by every stage template (included once at the top of a generated source). */
#ifndef CNNFPGA_COMMON_H
#define CNNFPGA_COMMON_H

/* Caffe's (leaky) ReLU on one value. */
#define RELU_SCALAR(v, slope) ((v) > 0.0f ? (v) : (v) * (slope))

/* ---- fixed point: the arithmetic of cnnfpga/precision.py, bit for bit ----
 * A value q in a format with f fractional bits stands for q * 2^-f.  Results are rounded half up
 * and saturated, never wrapped; every saturated value adds one to the stage's counter. */

/* An accumulator with s more fractional bits than the output format -> the output format. */
long fx_requantize(long acc, int s, long qmin, long qmax, ulong *saturated)
{
    if (s > 0) {
        acc = (acc + (1L << (s - 1))) >> s;     /* >> on a signed long is arithmetic: round half up */
    } else if (s < 0) {                         /* saturate before shifting left: no overflow */
        const int k = -s;
        if (acc > (qmax >> k)) { (*saturated)++; return qmax; }
        if (acc < -((-qmin) >> k)) { (*saturated)++; return qmin; }
        return acc << k;
    }
    if (acc > qmax) { (*saturated)++; return qmax; }
    if (acc < qmin) { (*saturated)++; return qmin; }
    return acc;
}

/* A float -> a fixed format: y = x * 2^frac (exact), q = floor(y) + (y - floor(y) >= 0.5). */
int fx_quantize(float x, int frac, long qmin, long qmax, ulong *saturated)
{
    const float y = ldexp(x, frac);
    const float low = floor(y);
    const float q = low + ((y - low) >= 0.5f ? 1.0f : 0.0f);
    long v;
    if (q >= 9.0e18f)        /* beyond a long: certainly saturated (comparing before converting) */
        v = qmax + 1;
    else if (q <= -9.0e18f)
        v = qmin - 1;
    else
        v = (long)q;
    if (v > qmax) { (*saturated)++; return (int)qmax; }
    if (v < qmin) { (*saturated)++; return (int)qmin; }
    return (int)v;
}

/* A window's mean rounded half up, as cnnfpga.fixed_reference.pool_fixed: floor((2 sum + d) / (2 d));
 * C's / truncates toward zero, so a negative numerator is floored by hand. */
long fx_round_mean(long sum, long d)
{
    const long num = 2 * sum + d, den = 2 * d;
    return num >= 0 ? num / den : -((-num + den - 1) / den);
}

/* An fp16 store's overflow, counted as cnnfpga.precision.store counts it: a finite value with
 * |v| >= 65520 rounds to infinity (65520 lies halfway between the largest half, 65504, and 2^16,
 * and the tie goes to the even neighbour, 2^16).  Returns v, so that a store can wrap it. */
float fx_half_overflow(float v, ulong *saturated)
{
    if (fabs(v) >= 65520.0f && isfinite(v))
        (*saturated)++;
    return v;
}

/* LRN factor table index of a sum of squares S >= 0 (cnnfpga.device_constants.lrn_table_index):
 * e = bit length of S, m = the FX_LRN_MANTISSA_BITS bits below its leading one (the code
 * generator defines FX_LRN_MANTISSA_BITS from the same Python constant). */
int fx_lrn_index(long s)
{
    const int top = FX_LRN_MANTISSA_BITS + 1;
    const int e = 64 - (int)clz(s);
    const int m = (int)((e > top ? (s >> (e - top)) : (s << (top - e))) & ((1 << FX_LRN_MANTISSA_BITS) - 1));
    return (e << FX_LRN_MANTISSA_BITS) + m;
}

#endif

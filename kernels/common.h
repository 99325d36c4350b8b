/* Helpers shared by every stage template (included once at the top of a generated source). */
#ifndef CNNFPGA_COMMON_H
#define CNNFPGA_COMMON_H

/* Horizontal sums of the CI-wide partial products; the code generator picks HSUM<CI>. */
#define HSUM1(v) (v)
#define HSUM2(v) ((v).s0 + (v).s1)
#define HSUM4(v) (HSUM2((v).lo) + HSUM2((v).hi))
#define HSUM8(v) (HSUM4((v).lo) + HSUM4((v).hi))
#define HSUM16(v) (HSUM8((v).lo) + HSUM8((v).hi))

/* A one-wide "vector" load, so that CI = 1 needs no special case in the templates. */
#define VLOAD1(i, p) ((p)[i])

/* Caffe's (leaky) ReLU on one value. */
#define RELU_SCALAR(v, slope) ((v) > 0.0f ? (v) : (v) * (slope))

#endif

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

int8 fx_quantize8(float8 x, int frac, long qmin, long qmax, ulong *saturated)
{
    float values[8];
    int out[8];
    vstore8(x, 0, values);
    for (int i = 0; i < 8; i++)
        out[i] = fx_quantize(values[i], frac, qmin, qmax, saturated);
    return vload8(0, out);
}

/* LRN factor table index of a sum of squares S >= 0 (cnnfpga.fixed_reference.lrn_table_index):
 * e = bit length of S, m = the FX_LRN_MANTISSA_BITS bits below its leading one; the table has
 * 64 << FX_LRN_MANTISSA_BITS entries.  The golden model reads this constant from here. */
#define FX_LRN_MANTISSA_BITS 7
int fx_lrn_index(long s)
{
    const int top = FX_LRN_MANTISSA_BITS + 1;
    const int e = 64 - (int)clz(s);
    const int m = (int)((e > top ? (s >> (e - top)) : (s << (top - e))) & ((1 << FX_LRN_MANTISSA_BITS) - 1));
    return (e << FX_LRN_MANTISSA_BITS) + m;
}

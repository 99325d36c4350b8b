/* The arithmetic of one convolution step, shared by window.cl (weights on chip) and conv_ddr.cl
 * (weights streamed from DDR once per image); the code generator puts it before either template,
 * and STAGE_FN gives each stage's copies their own names.
 *
 * A step multiplies CIF = CI x F input values (CI channels at F kernel positions) into CO output
 * lanes.  Each lane's CIF products are summed by a balanced adder tree written out (log2 depth,
 * nothing carried between iterations).  Across the B steps of a block a fixed-point sum accumulates
 * in a 64-bit integer: integer addition takes one cycle, so aoc can start an iteration every cycle.
 * A float sum goes into a shift register of ACC_DEPTH partial sums instead: a floating-point adder
 * takes several cycles, and a single accumulator would make every iteration wait for the previous
 * one (initiation interval > 1); with the shift register each partial sum is updated only every
 * ACC_DEPTH iterations, and the block's partial sums are added once, at its end.
 * Constants: CO CIF CIF_POW2 B CB F KW ACC_DEPTH ACC_DEPTH_POW2 ACC_TERMS, types COMPUTE_T SUM_T W_ST OUT_T,
 * WEIGHT_VALUE(i) MULTIPLY(w, x), and the output conversion (CONVERT_OUT(a, saturated) or
 * FLOAT_TO_OUT(v, saturated); FUSE_RELU RELU_SLOPE).
 */
#define STAGE_FN_PASTE(kernel, name) kernel##_##name
#define STAGE_FN_NAME(kernel, name) STAGE_FN_PASTE(kernel, name)
#define STAGE_FN(name) STAGE_FN_NAME(STAGE_KERNEL, name)

#undef ACCUMULATORS   /* the stage before may be of the other kind */
#if FIXED_COMPUTE
#define ACCUMULATORS(name) long name[CO]
#else
#define ACCUMULATORS(name) float name[ACC_DEPTH][CO]
#endif

/* The next step of a block: channels fastest, then kernel positions (a kernel row of them when
   F == KW, one at a time when F == 1).  Returns true when the block is complete (all counters back
   at its start). */
bool STAGE_FN(next_step)(int *k, int *cb, int *ky0, int *kx0)
{
    if (++*cb == CB) {
        *cb = 0;
#if F == 1
        if (++*kx0 == KW) { *kx0 = 0; ++*ky0; }
#elif F == KW
        ++*ky0;
#endif
    }
    if (++*k == B) {
        *k = 0; *ky0 = 0; *kx0 = 0;
        return true;
    }
    return false;
}

/* sums[j] = sum over i of w[row][i][j] * x[i]: all CO lanes side by side (lanes fastest in the
   weights too), an adder tree over i */
void STAGE_FN(dot_products)(const COMPUTE_T *x, ONCHIP const W_ST *weight_memory, int row, SUM_T *sums)
{
    SUM_T terms[CIF_POW2][CO];
    UNROLL
    for (int i = 0; i < CIF_POW2; i++) {
        UNROLL
        for (int j = 0; j < CO; j++)
            terms[i][j] = i < CIF ? MULTIPLY(WEIGHT_VALUE((row * CIF + (i < CIF ? i : 0)) * CO + j), x[i < CIF ? i : 0])
                                  : (SUM_T)0;
    }
    UNROLL
    for (int span = CIF_POW2 / 2; span > 0; span /= 2) {
        UNROLL
        for (int i = 0; i < span; i++) {
            UNROLL
            for (int j = 0; j < CO; j++)
                terms[i][j] += terms[i + span][j];
        }
    }
    UNROLL
    for (int j = 0; j < CO; j++)
        sums[j] = terms[0][j];
}

/* step k of a block: add the sums to the block's accumulators (k == 0 starts them afresh) */
void STAGE_FN(accumulate)(ACCUMULATORS(acc), const SUM_T *sums, int k)
{
#if FIXED_COMPUTE
    UNROLL
    for (int j = 0; j < CO; j++)
        acc[j] = (k == 0 ? 0 : acc[j]) + sums[j];
#else
    float sum[CO];
    UNROLL
    for (int j = 0; j < CO; j++)
        sum[j] = (k < ACC_DEPTH ? 0.0f : acc[0][j]) + sums[j];
    UNROLL
    for (int d = 0; d < ACC_DEPTH - 1; d++) {
        UNROLL
        for (int j = 0; j < CO; j++)
            acc[d][j] = acc[d + 1][j];
    }
    UNROLL
    for (int j = 0; j < CO; j++)
        acc[ACC_DEPTH - 1][j] = sum[j];
#endif
}

/* a finished block's lane j: the accumulated sum plus the bias, the fused ReLU, the output format */
OUT_T STAGE_FN(lane_result)(ACCUMULATORS(acc), int j, BIAS_T bias, ulong *saturated)
{
#if FIXED_COMPUTE
    OUT_T v = CONVERT_OUT(acc[j] + bias, saturated);
#if FUSE_RELU
    v = v > (OUT_T)0 ? v : (OUT_T)0;
#endif
    return v;
#else
    /* the newest ACC_TERMS slots hold this block's partial sums (a block may be shorter than the register) */
    float terms[ACC_DEPTH_POW2];
    UNROLL
    for (int d = 0; d < ACC_DEPTH_POW2; d++)
        terms[d] = d < ACC_TERMS ? acc[ACC_DEPTH - 1 - (d < ACC_TERMS ? d : 0)][j] : 0.0f;
    UNROLL
    for (int span = ACC_DEPTH_POW2 / 2; span > 0; span /= 2) {
        UNROLL
        for (int d = 0; d < span; d++)
            terms[d] += terms[d + span];
    }
    float value = terms[0] + bias;
#if FUSE_RELU
#ifdef QMIN
    /* the output is quantised: a value the ReLU zeroes still counts if it would have saturated,
       as it does when the ReLU runs as a stage of its own */
    if (value < 0.0f)
        (void)fx_quantize(value, OUT_FRAC, QMIN, QMAX, saturated);
#endif
    value = RELU_SCALAR(value, RELU_SLOPE);
#endif
    return FLOAT_TO_OUT(value, saturated);
#endif
}

/* Convolution stage whose weights stream from DDR once per image (the seed white paper's way, for
 * layers whose weights do not fit on chip): the input feature map is held on chip instead.
 *
 * Per image, four pipelined loops, each with a compile-time trip count:
 *   1. READ_ITERS = H x W x WPP_IN: the whole input image, one word per iteration, into
 *      feature_map (H x W x CPI values in the input's storage type);
 *   2. for each of the NB blocks of CO output channels: BLOCK_LOAD_ITERS iterations read the
 *      block's B x CO x CIF weights from DDR, LOAD_WIDTH per iteration, into weight_block;
 *   3. then BLOCK_STEPS = OH x OW x B iterations sweep the feature map: each output pixel is the
 *      block's B steps (conv_math.cl), its CO results stored in `results` (OH x OW x CPO values
 *      in RESULT_T: the output's storage type for a fixed-point output, else float);
 *   4. EMIT_ITERS = OH x OW x WPP_OUT: the output image leaves word by word.
 * Cycles per image = READ_ITERS + NB x (BLOCK_LOAD_ITERS + BLOCK_STEPS) + EMIT_ITERS; the biases
 * are loaded once per launch (BIAS_LOAD_ITERS).  Every weight is read from DDR once per image.
 *
 * Constants: as window.cl's convolution (geometry, CI CO F CIF CB KF B NB CG BLOCKS_PER_GROUP) plus
 * READ_ITERS BLOCK_WEIGHTS BLOCK_LOAD_ITERS BLOCK_STEPS EMIT_ITERS BIAS_LOAD_ITERS WPP_OUT.
 */
SINGLE_WORK_ITEM
__kernel void STAGE_KERNEL(STAGE_PARAMS
                           __global const W_ST *restrict weights,
                           __global const BIAS_T *restrict bias,
                           ONCHIP_PARAM(W_ST, weight_memory)
                           ONCHIP_PARAM(BIAS_T, bias_memory)
                           ONCHIP_PARAM(IN_ST, feature_map)
                           ONCHIP_PARAM(RESULT_T, results)
                           __global ulong *restrict stats, const uint n_images)
{
    STAGE_CURSORS
    ONCHIP_ARRAY(W_ST, weight_memory, BLOCK_WEIGHTS)
    ONCHIP_ARRAY(BIAS_T, bias_memory, O)
    ONCHIP_ARRAY(IN_ST, feature_map, H * W * CPI)
    ONCHIP_ARRAY(RESULT_T, results, OH * OW * CPO)
    ulong saturated = 0;
    CYCLE_COUNTER

    PIPELINED
    for (int i = 0; i < BIAS_LOAD_ITERS; i++) {
        COUNT_CYCLE
        UNROLL
        for (int k = 0; k < LOAD_WIDTH; k++)
            if (i * LOAD_WIDTH + k < O)
                bias_memory[i * LOAD_WIDTH + k] = bias[i * LOAD_WIDTH + k];
    }
    PIPELINED
    for (uint n = 0; n < n_images; n++) {
        PIPELINED
        for (int i = 0; i < READ_ITERS; i++) {
            COUNT_CYCLE
            const IN_WORD word = READ_IN();
            UNROLL
            for (int l = 0; l < WIN; l++)
                feature_map[i * WIN + l] = word.value[l];
        }
        int group_block = 0, channel_base = 0;
        PIPELINED
        for (int ob = 0; ob < NB; ob++) {
            PIPELINED
            for (int i = 0; i < BLOCK_LOAD_ITERS; i++) {
                COUNT_CYCLE
                UNROLL
                for (int k = 0; k < LOAD_WIDTH; k++) {
                    const int at = i * LOAD_WIDTH + k;
                    if (at < BLOCK_WEIGHTS)
                        weight_memory[at] = weights[ob * BLOCK_WEIGHTS + at];
                }
            }
            int oy = 0, ox = 0, in_y0 = -PH, in_x0 = -PW;
            int k = 0, cb = 0, ky0 = 0, kx0 = 0;
            ACCUMULATORS(acc);
            PIPELINED
            for (int t = 0; t < BLOCK_STEPS; t++) {
                COUNT_CYCLE
                COMPUTE_T x[CIF];
                UNROLL
                for (int f = 0; f < F; f++) {
                    const int iy = in_y0 + (ky0 + f / KW) * DH, ix = in_x0 + (kx0 + f % KW) * DW;
                    const bool inside = iy >= 0 && iy < H && ix >= 0 && ix < W;
                    const int at = inside ? (iy * W + ix) * CPI + channel_base + cb * CI : 0;
                    UNROLL
                    for (int c = 0; c < CI; c++)
                        x[f * CI + c] = inside ? (COMPUTE_T)IN_VALUE_AT(feature_map, at + c) : (COMPUTE_T)0;
                }
                SUM_T sums[CO];
                STAGE_FN(dot_products)(x, weight_memory, k, sums);
                STAGE_FN(accumulate)(acc, sums, k);
                if (k == B - 1) {
                    UNROLL
                    for (int j = 0; j < CO; j++)
                        results[(oy * OW + ox) * CPO + ob * CO + j] =
                            (RESULT_T)STAGE_FN(lane_result)(acc, j, bias_memory[ob * CO + j], &saturated);
                }
                /* next step; after a pixel's block the next pixel */
                if (STAGE_FN(next_step)(&k, &cb, &ky0, &kx0)) {
                    in_x0 += SW;
                    if (++ox == OW) { ox = 0; in_x0 = -PW; oy++; in_y0 += SH; }
                }
            }
            if (++group_block == BLOCKS_PER_GROUP) { group_block = 0; channel_base += CG; }
        }
        int channel = 0;   /* of the word's first value */
        PIPELINED
        for (int i = 0; i < EMIT_ITERS; i++) {
            COUNT_CYCLE
            OUT_WORD word;
            UNROLL
            for (int l = 0; l < WOUT; l++)
                OUT_SET(word, l, channel + l < O ? (OUT_T)results[i * WOUT + l] : (OUT_T)0);
            WRITE_OUT(word);
            channel = channel + WOUT == CPO ? 0 : channel + WOUT;
        }
    }
    stats[2 * SAT_SLOT] += saturated;
    STORE_CYCLES(stats, SAT_SLOT)
}

/* Sliding-window stage: a convolution with its weights on chip (STAGE_CONV), pooling (STAGE_POOL)
 * or LRN within a channel (STAGE_LRN).  One single work-item kernel, one pipelined loop per image
 * of IMAGE_ITERS iterations (a compile-time constant from cnnfpga.design.window), each iteration
 * doing at most one of each of:
 *   - read one input word into the line buffer (while the current phase still needs rows);
 *   - one compute step of the current output row (a conv block's CI x CO x F multiply-adds, or one
 *     output word of pooling / LRN);
 *   - write one output word.
 * The image is walked in phases: a prologue that reads the rows the first output row needs, then
 * one phase of ROW_ITERS iterations per output row, in which the row is computed while the rows
 * the next output row needs are read.  Reading thus overlaps computing; ROW_ITERS is the larger
 * of the two, so cycles per image = FIRST_ITERS + OH * ROW_ITERS + EMIT_TAIL exactly, and every
 * counter below is a plain increment: no division, no loop nest entered per pixel.
 *
 * The line buffer holds LB_ROWS input rows (the rows a window spans plus those read ahead), each
 * W pixels x CPI channels, in the input's storage type; row r lives in slot r % LB_ROWS, so a row is
 * overwritten only once no window needs it.  Padding is never stored: a window position outside
 * the input reads as 0 (conv, LRN) or is skipped (pooling).
 *
 * Convolution: an output pixel is NB = O / CO blocks of CO output channels; a block is B = CB x KF
 * steps, each multiplying CI input channels at F kernel positions (F = 1, KW or KH x KW) into all CO
 * outputs (conv_math.cl: adder trees, and accumulators that let aoc start an iteration every
 * cycle).  Weights (NB x B rows of CO x CI x F values) and biases are loaded from DDR into on-chip
 * arrays once per launch, LOAD_WIDTH values per iteration; a launch covers the whole batch.
 * Outputs leave as words of WOUT values: WOUT a multiple of CO (a word gathers WOUT / CO blocks)
 * or a divisor of CO (a block's CO values leave as CO / WOUT words over the next iterations; the
 * design guarantees CO / WOUT <= B, so a block's words are out before the next block ends).
 *
 * Pooling and LRN: a step is one window column (KH rows, a bank each, so the line buffer needs no
 * copies) of one input word (WIN channels) of the current output pixel; after KW steps the word's
 * result leaves (WOUT = WIN).  Pooling is mostly limited by reading (a stride of 2 reads four
 * inputs per output), so the extra steps cost little time and save the RAM a copy per column takes.
 *
 * Constants from the code generator (cnnfpga.codegen from cnnfpga.design): geometry H W CPI WIN
 * WPP_IN OH OW CPO WOUT KH KW SH SW PH PW DH DW; schedule LB_ROWS FIRST_ROWS FIRST_ITERS ROW_ITERS
 * IMAGE_ITERS SLOT_INIT SLOT_STEP NEXT_NEED ROW_STEPS; value access IN_ST IN_VALUE_AT(line, i) OUT_SET(w, l, v)
 * OUT_T; per kind (see each section); the ports READ_IN() WRITE_OUT(w) IN_WORD OUT_WORD.
 */
SINGLE_WORK_ITEM
__kernel void STAGE_KERNEL(STAGE_PARAMS
#if STAGE_CONV
                           __global const W_ST *restrict weights,
                           __global const BIAS_T *restrict bias,
                           ONCHIP_PARAM(W_ST, weight_memory)
                           ONCHIP_PARAM(BIAS_T, bias_memory)
#endif
#if STAGE_LRN && FIXED_COMPUTE
                           __global const int *restrict table,
                           ONCHIP_PARAM(int, table_memory)
#endif
                           ONCHIP_PARAM(IN_ST, line)
                           __global ulong *restrict stats, const uint n_images)
{
    STAGE_CURSORS
    ONCHIP_ARRAY(IN_ST, line, LB_ROWS * W * CPI)
    ulong saturated = 0;   /* values a fixed-point output saturated, fp16 stores that overflowed */
    CYCLE_COUNTER

#if STAGE_CONV
    ONCHIP_ARRAY(W_ST, weight_memory, N_WEIGHTS)
    ONCHIP_ARRAY(BIAS_T, bias_memory, O)
    PIPELINED
    for (int i = 0; i < LOAD_ITERS; i++) {
        COUNT_CYCLE
        UNROLL
        for (int k = 0; k < LOAD_WIDTH; k++) {
            const int at = i * LOAD_WIDTH + k;
            if (at < N_WEIGHTS)
                weight_memory[at] = weights[at];
            if (at < O)
                bias_memory[at] = bias[at];
        }
    }
#endif
#if STAGE_LRN && FIXED_COMPUTE
    ONCHIP_ARRAY(int, table_memory, TABLE_LEN)
    PIPELINED
    for (int i = 0; i < LOAD_ITERS; i++) {
        COUNT_CYCLE
        UNROLL
        for (int k = 0; k < LOAD_WIDTH; k++) {
            const int at = i * LOAD_WIDTH + k;
            if (at < TABLE_LEN)
                table_memory[at] = table[at];
        }
    }
#endif

    PIPELINED
    for (uint n = 0; n < n_images; n++) {
        /* reading: the next input word goes to row rows_read, pixel read_x, word read_word */
        int rows_read = 0, read_x = 0, read_word = 0, read_slot = 0;
        int read_target = FIRST_ROWS;        /* rows the current phase must have read by its end */
        int next_need = NEXT_NEED;           /* rows the output row after the current one needs */
        /* phases: oy = -1 is the prologue */
        int oy = -1, phase_left = FIRST_ITERS;
        int in_y0 = -PH, base_slot = SLOT_INIT;   /* the window's top row and its slot */
        /* compute: output pixel ox of row oy */
        int ox = 0, in_x0 = -PW;
#if STAGE_CONV
        int ob = 0, k = 0, cb = 0, ky0 = 0, kx0 = 0, weight_row = 0;
        int group_block = 0, channel_base = 0;   /* block within its group; the group's first input channel */
        ACCUMULATORS(acc);
        OUT_T pending[PENDING];              /* finished outputs waiting to leave */
        int emit_left = 0, emit_at = 0, emit_channel = 0, gather_at = 0;
#else
        int word_at = 0, column = 0;         /* pooling / LRN: the word and window column being computed */
        WINDOW_T window[WIN];                /* its partial results over the columns so far */
#if STAGE_LRN
        WINDOW_T centre[WIN];                /* the values being normalised */
#endif
#endif

        PIPELINED
        for (int t = 0; t < IMAGE_ITERS; t++) {
            COUNT_CYCLE
#if STAGE_CONV
            /* ---- write: one word of finished outputs ---- */
            if (emit_left > 0) {
                OUT_WORD word;
                UNROLL
                for (int l = 0; l < WOUT; l++) {
                    const OUT_T v = pending[emit_at * WOUT + l];
                    OUT_SET(word, l, emit_channel + l < O ? v : (OUT_T)0);
                }
                WRITE_OUT(word);
                emit_at++;
                emit_channel += WOUT;
                emit_left--;
            }
#endif
            /* ---- read: one input word into the line buffer ---- */
            if (rows_read < read_target) {
                const IN_WORD word = READ_IN();
                UNROLL
                for (int l = 0; l < WIN; l++)
                    line[(read_slot * W + read_x) * CPI + read_word * WIN + l] = word.value[l];
                if (++read_word == WPP_IN) {
                    read_word = 0;
                    if (++read_x == W) {
                        read_x = 0;
                        rows_read++;
                        read_slot = read_slot + 1 == LB_ROWS ? 0 : read_slot + 1;
                    }
                }
            }

            /* ---- compute: one step of output row oy ---- */
            if (oy >= 0 && oy < OH && ox < OW) {
#if STAGE_CONV
                /* CI channels at F kernel positions */
                COMPUTE_T x[CIF];
                UNROLL
                for (int f = 0; f < F; f++) {
                    const int ky = ky0 + f / KW, kx = kx0 + f % KW;
                    const int iy = in_y0 + ky * DH, ix = in_x0 + kx * DW;
                    const bool inside = iy >= 0 && iy < H && ix >= 0 && ix < W;
                    const int slot = base_slot + ky * DH >= LB_ROWS ? base_slot + ky * DH - LB_ROWS : base_slot + ky * DH;
                    const int at = inside ? (slot * W + ix) * CPI + channel_base + cb * CI : 0;
                    UNROLL
                    for (int c = 0; c < CI; c++)
                        x[f * CI + c] = inside ? (COMPUTE_T)IN_VALUE_AT(line, at + c) : (COMPUTE_T)0;
                }
                SUM_T sums[CO];
                STAGE_FN(dot_products)(x, weight_memory, weight_row, sums);
                STAGE_FN(accumulate)(acc, sums, k);
                if (k == B - 1) {   /* the block is complete */
                    UNROLL
                    for (int j = 0; j < CO; j++) {
                        const OUT_T v = STAGE_FN(lane_result)(acc, j, bias_memory[ob * CO + j], &saturated);
#if EMIT_SPLIT
                        pending[j] = v;
#else
                        pending[gather_at + j] = v;
#endif
                    }
#if EMIT_SPLIT
                    emit_left = CO / WOUT;
                    emit_at = 0;
                    emit_channel = ob * CO;
#else
                    if (gather_at + CO == WOUT || ob == NB - 1) {
                        emit_left = 1;
                        emit_at = 0;
                        emit_channel = ob * CO - gather_at;
                        gather_at = 0;
                    } else {
                        gather_at += CO;
                    }
#endif
                }
                /* next step; after a block the next block, after a pixel's blocks the next pixel */
                weight_row++;
                if (STAGE_FN(next_step)(&k, &cb, &ky0, &kx0)) {
                    if (++group_block == BLOCKS_PER_GROUP) { group_block = 0; channel_base += CG; }
                    if (++ob == NB) {
                        ob = 0; weight_row = 0; group_block = 0; channel_base = 0;
                        ox++;
                        in_x0 += SW;
                    }
                }
#else
                /* one column of the window (KH rows, one bank each) for WIN channels; the word
                   leaves with the last column */
                const int ix = in_x0 + column;
                const bool column_inside = ix >= 0 && ix < W;
#if STAGE_POOL && !POOL_MAX
                const int divisor = (min(in_y0 + KH, H + PH) - in_y0) * (min(in_x0 + KW, W + PW) - in_x0);
#endif
                OUT_WORD word;
                UNROLL
                for (int l = 0; l < WIN; l++) {
                    WINDOW_T result = column == 0 ? (WINDOW_T)WINDOW_INIT : window[l];
                    UNROLL
                    for (int ky = 0; ky < KH; ky++) {
                        const int iy = in_y0 + ky;
                        const bool inside = column_inside && iy >= 0 && iy < H;
                        const int slot = base_slot + ky >= LB_ROWS ? base_slot + ky - LB_ROWS : base_slot + ky;
                        const WINDOW_T v = inside ? (WINDOW_T)IN_VALUE_AT(line, (slot * W + (inside ? ix : 0)) * CPI +
                                                                                 word_at * WIN + l)
                                                  : (WINDOW_T)0;
#if STAGE_POOL && POOL_MAX
                        if (inside)
                            result = WINDOW_MAX(result, v);
#else
                        result += WINDOW_TERM(v);
#endif
#if STAGE_LRN
                        if (ky == KH / 2 && column == KW / 2)
                            centre[l] = v;
#endif
                    }
                    window[l] = result;
                    if (column == KW - 1)
                        OUT_SET(word, l, WINDOW_RESULT(result));
                }
                if (column == KW - 1)
                    WRITE_OUT(word);
                if (++column == KW) {
                    column = 0;
                    if (++word_at == WPP_IN) {
                        word_at = 0;
                        ox++;
                        in_x0 += SW;
                    }
                }
#endif
            }

            /* ---- phase end: the next output row ---- */
            if (--phase_left == 0) {
                phase_left = ROW_ITERS;
                if (oy >= 0) {
                    in_y0 += SH;
                    base_slot = base_slot + SLOT_STEP >= LB_ROWS ? base_slot + SLOT_STEP - LB_ROWS : base_slot + SLOT_STEP;
                }
                oy++;
                ox = 0;
                in_x0 = -PW;
                read_target = oy < OH - 1 ? min(max(next_need, rows_read), H) : H;
                next_need += SH;
            }
        }
    }
    stats[2 * SAT_SLOT] += saturated;
    STORE_CYCLES(stats, SAT_SLOT)
}

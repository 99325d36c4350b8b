/* Local response normalisation across channels: one pixel's channels are needed at once, so the
 * stage holds two pixels -- the one being read and the one being written -- and overlaps them:
 * iteration i reads word i of the image and writes word i - WPP, so cycles per image are
 * IMAGE_ITERS = (H x W + 1) x WPP.  At read time each value's square goes into `squares`, which
 * has LRN_HALF zeros at each end, so that the window sum of a lane is LRN_N consecutive entries
 * (channels beyond the blob are zero in the stream, and so is their output).
 * Float input: x * (LRN_K + LRN_ALPHA / LRN_N * sum)^-LRN_BETA (Caffe's formula; LRN_INV_POW(b) = b^-BETA,
 * with square roots for the usual betas: cnnfpga.csource.inverse_power), then the output format.  Fixed-point input, bit-exact with cnnfpga.fixed_reference.lrn_fixed: the exact 64-bit sum
 * of squares S, t = table[fx_lrn_index(S)] (the factor with 16 fractional bits, computed on the
 * host and loaded on chip once per launch), CONVERT_OUT(x * t) with ACC_FRAC = input fraction + 16.
 * Per launch, SETUP_ITERS iterations load the table (LOAD_WIDTH entries each) and clear the ends.
 * (LRN within a channel is a sliding window: window.cl.)
 * Constants: H W CPI WIDTH WPP IMAGE_ITERS SETUP_ITERS LOAD_WIDTH, LRN_N LRN_HALF LRN_ALPHA LRN_BETA
 * LRN_K LRN_INV_POW(b) or TABLE_LEN, FIXED_COMPUTE, SQUARE_T, the value macros.
 */
SINGLE_WORK_ITEM
__kernel void STAGE_KERNEL(STAGE_PARAMS
#if FIXED_COMPUTE
                           __global const int *restrict table,
                           ONCHIP_PARAM(int, table_memory)
#endif
                           ONCHIP_PARAM(IN_ST, pixels)
                           ONCHIP_PARAM(SQUARE_T, squares)
                           __global ulong *restrict stats, const uint n_images)
{
    STAGE_CURSORS
    ONCHIP_ARRAY(IN_ST, pixels, 2 * CPI)
    ONCHIP_ARRAY(SQUARE_T, squares, 2 * (CPI + 2 * LRN_HALF))
    ulong saturated = 0;
    CYCLE_COUNTER
#if FIXED_COMPUTE
    ONCHIP_ARRAY(int, table_memory, TABLE_LEN)
#endif
    PIPELINED
    for (int i = 0; i < SETUP_ITERS; i++) {
        COUNT_CYCLE
#if FIXED_COMPUTE
        UNROLL
        for (int k = 0; k < LOAD_WIDTH; k++)
            if (i * LOAD_WIDTH + k < TABLE_LEN)
                table_memory[i * LOAD_WIDTH + k] = table[i * LOAD_WIDTH + k];
#endif
        if (i == 0) {
            UNROLL
            for (int b = 0; b < 2; b++) {
                UNROLL
                for (int e = 0; e < LRN_HALF; e++) {
                    squares[b * (CPI + 2 * LRN_HALF) + e] = 0;
                    squares[b * (CPI + 2 * LRN_HALF) + LRN_HALF + CPI + e] = 0;
                }
            }
        }
    }
    PIPELINED
    for (uint n = 0; n < n_images; n++) {
        int read_word = 0, read_buffer = 0, write_word = 0, write_buffer = 0;
        PIPELINED
        for (int i = 0; i < IMAGE_ITERS; i++) {
            COUNT_CYCLE
            if (i >= WPP) {   /* write: word write_word of the previous pixel */
                OUT_WORD out;
                UNROLL
                for (int l = 0; l < WIDTH; l++) {
                    const int c = write_word * WIDTH + l;
                    SQUARE_T sum = 0;
                    UNROLL
                    for (int e = 0; e < LRN_N; e++)
                        sum += squares[write_buffer * (CPI + 2 * LRN_HALF) + c + e];
#if FIXED_COMPUTE
                    const long x = IN_VALUE_AT(pixels, write_buffer * CPI + c);
                    OUT_SET(out, l, CONVERT_OUT(x * table_memory[fx_lrn_index(sum)], &saturated));
#else
                    const float x = IN_VALUE_AT(pixels, write_buffer * CPI + c);
                    OUT_SET(out, l, FLOAT_TO_OUT(x * LRN_INV_POW(LRN_K + (LRN_ALPHA / LRN_N) * sum), &saturated));
#endif
                }
                WRITE_OUT(out);
                if (++write_word == WPP) { write_word = 0; write_buffer ^= 1; }
            }
            if (i < IMAGE_ITERS - WPP) {   /* read: word read_word of the next pixel */
                const IN_WORD in = READ_IN();
                UNROLL
                for (int l = 0; l < WIDTH; l++) {
                    const int c = read_word * WIDTH + l;
                    pixels[read_buffer * CPI + c] = in.value[l];
                    const SQUARE_T x = IN_VALUE(in, l);
                    squares[read_buffer * (CPI + 2 * LRN_HALF) + LRN_HALF + c] = x * x;
                }
                if (++read_word == WPP) { read_word = 0; read_buffer ^= 1; }
            }
        }
    }
    stats[2 * SAT_SLOT] += saturated;
    STORE_CYCLES(stats, SAT_SLOT)
}

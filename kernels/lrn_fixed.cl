/* LRN stage in fixed point (I32 input stream), bit-exact with cnnfpga.fixed_reference.lrn_fixed.
 * S = the exact sum of squares over the window (ACROSS: LRN_N channels; WITHIN: LRN_N x LRN_N
 * pixels; zero padded), t = table[fx_lrn_index(S)] (the factor with 16 fractional bits, computed on
 * the host), out = CONVERT_OUT(x * t) with ACC_FRAC = input fractional bits + 16.
 * Constants: as lrn.cl, plus ACC_FRAC, OUT_T, CONVERT_OUT, SAT_SLOT.
 */
SINGLE_WORK_ITEM
__kernel void STAGE_KERNEL(STAGE_PARAMS __global const int *restrict table,
                           __global ulong *restrict saturation, const uint n_images)
{
    STAGE_CURSORS
    ulong saturated = 0;
#if LRN_ACROSS
    __local long squares[CP + 2 * LRN_HALF];
    __local int pixel[CP];
    for (int i = 0; i < LRN_HALF; i++)
        squares[i] = squares[CP + LRN_HALF + i] = 0;
    for (uint p = 0; p < n_images * (uint)(H * W); p++) {
        for (int cv = 0; cv < CV; cv++) {
            const int8 v = READ_IN();
            vstore8(v, cv, pixel);
            const long8 wide = convert_long8(v);
            vstore8(wide * wide, 0, squares + LRN_HALF + cv * 8);
        }
        for (int cv = 0; cv < CV; cv++) {
            OUT_T out[8];
            for (int j = 0; j < 8; j++) {
                const int c = cv * 8 + j;
                long sum = 0;
                for (int i = 0; i < LRN_N; i++)
                    sum += squares[c + i];
                out[j] = CONVERT_OUT((long)pixel[c] * table[fx_lrn_index(sum)]);
            }
            WRITE_OUT(vload8(0, out));
        }
    }
#else
    __local int line[LRN_N * W * CP];
    for (uint n = 0; n < n_images; n++) {
        int next_row = 0;
        for (int y = 0; y < H; y++) {
            for (; next_row <= min(y + LRN_HALF, H - 1); next_row++)
                for (int i = 0; i < W * CV; i++)
                    vstore8(READ_IN(), (next_row % LRN_N) * (W * CV) + i, line);
            for (int x = 0; x < W; x++)
                for (int cv = 0; cv < CV; cv++) {
                    OUT_T out[8];
                    for (int j = 0; j < 8; j++) {
                        const int c = cv * 8 + j;
                        long sum = 0;
                        for (int yy = max(y - LRN_HALF, 0); yy <= min(y + LRN_HALF, H - 1); yy++)
                            for (int xx = max(x - LRN_HALF, 0); xx <= min(x + LRN_HALF, W - 1); xx++) {
                                const long v = line[((yy % LRN_N) * W + xx) * CP + c];
                                sum += v * v;
                            }
                        const long centre = line[((y % LRN_N) * W + x) * CP + c];
                        out[j] = CONVERT_OUT(centre * table[fx_lrn_index(sum)]);
                    }
                    WRITE_OUT(vload8(0, out));
                }
        }
    }
#endif
    saturation[SAT_SLOT] += saturated;
}

/* Pooling stage in fixed point (I32 input stream), bit-exact with cnnfpga.fixed_reference.pool_fixed.
 * Geometry and line buffer as pool.cl.  MAX: the largest real input of the window (padding never
 * wins).  AVE: the integer window sum, then floor((2*sum + d) / (2*d)) with d Caffe's divisor (the
 * mean rounded half up; C's / truncates, so negative numerators are floored by hand).  The result
 * is in the input format (ACC_FRAC = input fractional bits) and CONVERT_OUT writes the output format.
 * Constants: as pool.cl, plus ACC_FRAC, OUT_T, CONVERT_OUT, SAT_SLOT.
 */
SINGLE_WORK_ITEM
__kernel void STAGE_KERNEL(STAGE_PARAMS __global ulong *restrict saturation, const uint n_images)
{
    STAGE_CURSORS
    ulong saturated = 0;
    __local int8 line[KH * W * CV];
    for (uint n = 0; n < n_images; n++) {
        int next_row = 0;
        for (int oy = 0; oy < OH; oy++) {
            const int y_start = oy * SH - PH;
            const int y_end_padded = min(y_start + KH, H + PH);
            const int y0 = max(y_start, 0), y1 = min(y_end_padded, H);
            for (; next_row < y1; next_row++)
                for (int i = 0; i < W * CV; i++)
                    line[(next_row % KH) * (W * CV) + i] = READ_IN();
            for (int ox = 0; ox < OW; ox++) {
                const int x_start = ox * SW - PW;
                const int x_end_padded = min(x_start + KW, W + PW);
                const int x0 = max(x_start, 0), x1 = min(x_end_padded, W);
                const long divisor = (long)((y_end_padded - y_start) * (x_end_padded - x_start));
                for (int cv = 0; cv < CV; cv++) {
#if POOL_MAX
                    int8 acc = (int8)(INT_MIN);
#else
                    long8 acc = (long8)(0);
#endif
                    for (int y = y0; y < y1; y++)
                        for (int x = x0; x < x1; x++) {
                            const int8 v = line[((y % KH) * W + x) * CV + cv];
#if POOL_MAX
                            acc = max(acc, v);
#else
                            acc += convert_long8(v);
#endif
                        }
                    long values[8];
#if POOL_MAX
                    vstore8(convert_long8(acc), 0, values);
#else
                    vstore8(acc, 0, values);
                    for (int j = 0; j < 8; j++) {
                        const long num = 2 * values[j] + divisor, den = 2 * divisor;
                        values[j] = num >= 0 ? num / den : -((-num + den - 1) / den);
                    }
#endif
                    OUT_T out[8];
                    for (int j = 0; j < 8; j++)
                        out[j] = CONVERT_OUT(values[j]);
                    WRITE_OUT(vload8(0, out));
                }
            }
        }
        for (; next_row < H; next_row++)
            for (int i = 0; i < W * CV; i++)
                (void)READ_IN();
    }
    saturation[SAT_SLOT] += saturated;
}

/* Pooling stage, MAX or AVE, with Caffe's border rules (F32 or F16 streams, float compute).
 *
 * It consumes the previous stage's stream directly: rows go into a line buffer of KH rows x W
 * pixels x CV words, and every output window is read from there.  The output size (CEIL rounding,
 * a last window starting inside the padding dropped) comes from the graph as OH x OW.  Windows are
 * clipped to the real input; AVE divides by the window clipped to the padded input (padding
 * counts, what lies beyond it does not), as Caffe does.
 *
 * Constants: H W CV (input words per pixel = CP/8), OH OW, KH KW SH SW PH PW, POOL_MAX (1 = MAX, 0 = AVE).
 */
SINGLE_WORK_ITEM
__kernel void STAGE_KERNEL(STAGE_PARAMS __global ulong *restrict saturation, const uint n_images)
{
    STAGE_CURSORS
    ulong saturated = 0;   /* values a fixed-point output saturated (mixed precision) */
    __local float8 line[KH * W * CV];
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
                const float divisor = (float)((y_end_padded - y_start) * (x_end_padded - x_start));
                for (int cv = 0; cv < CV; cv++) {
#if POOL_MAX
                    float8 acc = (float8)(-FLT_MAX);
#else
                    float8 acc = (float8)(0.0f);
#endif
                    for (int y = y0; y < y1; y++)
                        for (int x = x0; x < x1; x++) {
                            const float8 v = line[((y % KH) * W + x) * CV + cv];
#if POOL_MAX
                            acc = fmax(acc, v);
#else
                            acc += v;
#endif
                        }
#if POOL_MAX
                    WRITE_OUT(acc);
#else
                    WRITE_OUT(acc / divisor);
#endif
                }
            }
        }
        for (; next_row < H; next_row++)
            for (int i = 0; i < W * CV; i++)
                (void)READ_IN();
    }
    saturation[SAT_SLOT] += saturated;
}

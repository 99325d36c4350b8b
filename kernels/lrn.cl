/* Local response normalisation stage (float compute; F32 or F16 streams).
 *
 * ACROSS_CHANNELS (LRN_ACROSS 1): one pixel's CP channels are held on chip and each channel is
 *   divided by (K + ALPHA/N * sum of squares over the N channels centred on it)^BETA; channels
 *   beyond the blob count as zero (padded channels are zero in the stream, and so is their output).
 * WITHIN_CHANNEL (LRN_ACROSS 0): a line buffer of N rows; the window is N x N around the pixel,
 *   zero padded, and the divisor base is 1 + ALPHA/(N*N) * sum of squares (Caffe's construction).
 *
 * Constants: H W C CP CV, LRN_N, LRN_HALF = (N-1)/2, LRN_ALPHA, LRN_BETA, LRN_K, LRN_ACROSS.
 */
SINGLE_WORK_ITEM
__kernel void STAGE_KERNEL(STAGE_PARAMS __global ulong *restrict saturation, const uint n_images)
{
    STAGE_CURSORS
    ulong saturated = 0;   /* values a fixed-point output saturated (mixed precision) */
#if LRN_ACROSS
    /* squares of one pixel's channels with LRN_HALF zeros on each side, so that the window sum of
       a whole stream word is LRN_N shifted vector loads */
    __local float squares[CP + 2 * LRN_HALF];
    __local float8 pixel[CV];
    for (int i = 0; i < LRN_HALF; i++)
        squares[i] = squares[CP + LRN_HALF + i] = 0.0f;
    for (uint p = 0; p < n_images * (uint)(H * W); p++) {
        for (int cv = 0; cv < CV; cv++) {
            const float8 v = READ_IN();
            pixel[cv] = v;
            vstore8(v * v, 0, squares + LRN_HALF + cv * 8);
        }
        for (int cv = 0; cv < CV; cv++) {
            float8 sum = (float8)(0.0f);
            for (int i = 0; i < LRN_N; i++)
                sum += vload8(0, squares + cv * 8 + i);
            WRITE_OUT(pixel[cv] * pow(LRN_K + (LRN_ALPHA / LRN_N) * sum, (float8)(-LRN_BETA)));
        }
    }
#else
    __local float8 line[LRN_N * W * CV];
    for (uint n = 0; n < n_images; n++) {
        int next_row = 0;
        for (int y = 0; y < H; y++) {
            for (; next_row <= min(y + LRN_HALF, H - 1); next_row++)
                for (int i = 0; i < W * CV; i++)
                    line[(next_row % LRN_N) * (W * CV) + i] = READ_IN();
            for (int x = 0; x < W; x++)
                for (int cv = 0; cv < CV; cv++) {
                    float8 sum = (float8)(0.0f);
                    for (int yy = max(y - LRN_HALF, 0); yy <= min(y + LRN_HALF, H - 1); yy++)
                        for (int xx = max(x - LRN_HALF, 0); xx <= min(x + LRN_HALF, W - 1); xx++) {
                            const float8 v = line[((yy % LRN_N) * W + xx) * CV + cv];
                            sum = mad(v, v, sum);
                        }
                    const float8 centre = line[((y % LRN_N) * W + x) * CV + cv];
                    WRITE_OUT(centre * pow(1.0f + (LRN_ALPHA / (LRN_N * LRN_N)) * sum, (float8)(-LRN_BETA)));
                }
        }
    }
#endif
    saturation[SAT_SLOT] += saturated;
}

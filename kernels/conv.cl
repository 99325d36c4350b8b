/* Convolution stage (float compute; F32 or F16 streams).
 *
 * One work-item walks the output in raster order.  Input rows arrive through READ_IN() and go into
 * a line buffer of LB_ROWS = (KH-1)*DH+1 rows of the input width x CP channels, so every input
 * pixel is read from the stream (and DDR) exactly once; a row is overwritten only after the last
 * output row that needs it.  Each step multiplies CI input channels into CO output channels
 * (CI_FLOAT accumulators, one per output lane), and the inner loop over the lanes is unrolled so
 * that aoc builds CI x CO multipliers.  Weights are laid out [OP][KH][KW][CGP], zero padded, so
 * padded channels and padded lanes contribute exactly zero.  A ReLU that follows the conv in the
 * net is applied before the write (FUSE_RELU; with a fixed-point output only a plain ReLU, see
 * cnnfpga.partition.can_fuse_relu).
 *
 * Constants from the code generator: H W C CP (input), OH OW O OP (output), KH KW SH SW PH PW DH DW,
 * G CG OG CGP, CI CO CI_FLOAT CI_LOAD CI_SUM, LB_ROWS, FUSE_RELU RELU_SLOPE, and the stream macros.
 */
SINGLE_WORK_ITEM
__kernel void STAGE_KERNEL(STAGE_PARAMS
                           __global const float *restrict weights,
                           __global const float *restrict bias,
                           __global ulong *restrict saturation, const uint n_images)
{
    STAGE_CURSORS
    ulong saturated = 0;   /* values a fixed-point output saturated (mixed precision) */
    __local float line[LB_ROWS * W * CP];
    for (uint n = 0; n < n_images; n++) {
        int next_row = 0;
        for (int oy = 0; oy < OH; oy++) {
            const int last_row = min(oy * SH - PH + (KH - 1) * DH, H - 1);
            for (; next_row <= last_row; next_row++) {
                __local float *dst = line + (next_row % LB_ROWS) * (W * CP);
                for (int i = 0; i < W * CP / 8; i++)
                    vstore8(READ_IN(), i, dst);
            }
            for (int ox = 0; ox < OW; ox++) {
                float pending[8];  /* one stream word of output channels being assembled */
                for (int o0 = 0; o0 < OP; o0 += CO) {
                    CI_FLOAT acc[CO];
                    #pragma unroll
                    for (int j = 0; j < CO; j++)
                        acc[j] = 0.0f;
                    if (o0 < O) {
                        const int first_channel = (o0 / OG) * CG;
                        for (int ky = 0; ky < KH; ky++) {
                            const int iy = oy * SH - PH + ky * DH;
                            if (iy < 0 || iy >= H)
                                continue;
                            for (int kx = 0; kx < KW; kx++) {
                                const int ix = ox * SW - PW + kx * DW;
                                if (ix < 0 || ix >= W)
                                    continue;
                                __local const float *x = line + ((iy % LB_ROWS) * W + ix) * CP + first_channel;
                                __global const float *w = weights + ((o0 * KH + ky) * KW + kx) * CGP;
                                for (int c = 0; c < CGP; c += CI) {
                                    const CI_FLOAT xv = CI_LOAD(0, x + c);
                                    #pragma unroll
                                    for (int j = 0; j < CO; j++)
                                        acc[j] = mad(xv, CI_LOAD(0, w + j * (KH * KW * CGP) + c), acc[j]);
                                }
                            }
                        }
                    }
                    #pragma unroll
                    for (int j = 0; j < CO; j++) {
                        float v = CI_SUM(acc[j]) + bias[o0 + j];
#if FUSE_RELU
#ifdef QMIN
                        /* the store quantises (a fixed-point reader): a value the ReLU zeroes counts
                           if it would have saturated there, as it does without the fusion */
                        if (v < 0.0f)
                            (void)fx_quantize(v, OUT_FRAC, QMIN, QMAX, &saturated);
#endif
                        v = RELU_SCALAR(v, RELU_SLOPE);
#endif
                        pending[(o0 + j) % 8] = v;
                    }
                    if ((o0 + CO) % 8 == 0)
                        WRITE_OUT(vload8(0, pending));
                }
            }
        }
        for (; next_row < H; next_row++)  /* rows no output needs still leave the stream */
            for (int i = 0; i < W * CP / 8; i++)
                (void)READ_IN();
    }
    saturation[SAT_SLOT] += saturated;
}

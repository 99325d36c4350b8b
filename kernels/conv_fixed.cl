/* Convolution stage in fixed point (I32 input stream), bit-exact with
 * cnnfpga.fixed_reference.conv_fixed.  Same structure as conv.cl: a line buffer of LB_ROWS input
 * rows, CI input channels x CO output lanes per step.  Products of the integer weights and inputs
 * are summed exactly in 64-bit accumulators (ACC_FRAC = weight + input fractional bits), the bias
 * arrives already at ACC_FRAC, and CONVERT_OUT turns the sum into the output format (round half
 * up and saturate for a fixed output, counted in `saturated`; a float for a float/half output).
 * A fused ReLU (FUSE_RELU) is max(., 0) on the converted value, as relu_fixed computes it.
 *
 * Constants: as conv.cl, plus CI_INT CI_LONG CI_CONVERT_LONG, ACC_FRAC, OUT_T, CONVERT_OUT, SAT_SLOT.
 */
SINGLE_WORK_ITEM
__kernel void STAGE_KERNEL(STAGE_PARAMS
                           __global const int *restrict weights,
                           __global const long *restrict bias,
                           __global ulong *restrict saturation,
                           const uint n_images)
{
    STAGE_CURSORS
    ulong saturated = 0;
    __local int line[LB_ROWS * W * CP];
    for (uint n = 0; n < n_images; n++) {
        int next_row = 0;
        for (int oy = 0; oy < OH; oy++) {
            const int last_row = min(oy * SH - PH + (KH - 1) * DH, H - 1);
            for (; next_row <= last_row; next_row++) {
                __local int *dst = line + (next_row % LB_ROWS) * (W * CP);
                for (int i = 0; i < W * CP / 8; i++)
                    vstore8(READ_IN(), i, dst);
            }
            for (int ox = 0; ox < OW; ox++) {
                OUT_T pending[8];
                for (int o0 = 0; o0 < OP; o0 += CO) {
                    CI_LONG acc[CO];
                    #pragma unroll
                    for (int j = 0; j < CO; j++)
                        acc[j] = 0;
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
                                __local const int *x = line + ((iy % LB_ROWS) * W + ix) * CP + first_channel;
                                __global const int *w = weights + ((o0 * KH + ky) * KW + kx) * CGP;
                                for (int c = 0; c < CGP; c += CI) {
                                    const CI_LONG xv = CI_CONVERT_LONG(CI_LOAD(0, x + c));
                                    #pragma unroll
                                    for (int j = 0; j < CO; j++)
                                        acc[j] += xv * CI_CONVERT_LONG(CI_LOAD(0, w + j * (KH * KW * CGP) + c));
                                }
                            }
                        }
                    }
                    #pragma unroll
                    for (int j = 0; j < CO; j++) {
                        OUT_T v = CONVERT_OUT(CI_SUM(acc[j]) + bias[o0 + j]);
#if FUSE_RELU
                        v = v > (OUT_T)0 ? v : (OUT_T)0;
#endif
                        pending[(o0 + j) % 8] = v;
                    }
                    if ((o0 + CO) % 8 == 0)
                        WRITE_OUT(vload8(0, pending));
                }
            }
        }
        for (; next_row < H; next_row++)
            for (int i = 0; i < W * CP / 8; i++)
                (void)READ_IN();
    }
    saturation[SAT_SLOT] += saturated;
}

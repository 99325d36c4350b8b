/* Pooling for CPUs and GPUs (the "fast" variant, not an FPGA design): an NDRange kernel, one
 * work-item per output pixel, on the same stream layout (N, H, W, CP) in global memory.  Same
 * arithmetic and border rules as the FPGA pooling stage in window.cl (so the same results, bit for
 * bit): windows clipped to the real input, summed column by column (the order window.cl adds in),
 * AVE divided by the window clipped to the padded input.  window.cl is one work-item for the whole
 * blob, which leaves every core but one idle.
 * Constants: H W CP CV, OH OW, KH KW SH SW PH PW, POOL_MAX (1 = MAX, 0 = AVE).
 */
__kernel void STAGE_KERNEL(__global const float *restrict src, __global float *restrict dst, const uint n_images)
{
    const int pixel = get_global_id(0);
    const int q = pixel % (OH * OW);
    const int y_start = (q / OW) * SH - PH, x_start = (q % OW) * SW - PW;
    const int y_end_padded = min(y_start + KH, H + PH), x_end_padded = min(x_start + KW, W + PW);
    const int y0 = max(y_start, 0), y1 = min(y_end_padded, H);
    const int x0 = max(x_start, 0), x1 = min(x_end_padded, W);
    const float divisor = (float)((y_end_padded - y_start) * (x_end_padded - x_start));
    __global const float *image = src + (pixel / (OH * OW)) * (H * W * CP);
    for (int cv = 0; cv < CV; cv++) {
#if POOL_MAX
        float8 acc = (float8)(-FLT_MAX);
#else
        float8 acc = (float8)(0.0f);
#endif
        for (int x = x0; x < x1; x++)
            for (int y = y0; y < y1; y++) {
                const float8 v = vload8(cv, image + (y * W + x) * CP);
#if POOL_MAX
                acc = fmax(acc, v);
#else
                acc += v;
#endif
            }
#if POOL_MAX
        vstore8(acc, cv, dst + pixel * CP);
#else
        vstore8(acc / divisor, cv, dst + pixel * CP);
#endif
    }
}

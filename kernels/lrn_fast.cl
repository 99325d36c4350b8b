/* LRN across channels for CPUs and GPUs (the "fast" variant, not an FPGA design): an NDRange
 * kernel, one work-item per pixel, on the same stream layout (N, H, W, CP) in global memory.
 * Same arithmetic as lrn.cl: window sums of LRN_N shifted vector loads over zero-padded squares.
 * Constants: CP CV, LRN_N, LRN_HALF, LRN_ALPHA, LRN_BETA, LRN_K, LRN_INV_POW(b) = b^-BETA (codegen.inverse_power).
 */
__kernel void STAGE_KERNEL(__global const float *restrict src, __global float *restrict dst, const uint n_images)
{
    const size_t pixel = get_global_id(0);
    float squares[CP + 2 * LRN_HALF];
    for (int i = 0; i < LRN_HALF; i++)
        squares[i] = squares[CP + LRN_HALF + i] = 0.0f;
    __global const float *x = src + pixel * CP;
    for (int cv = 0; cv < CV; cv++) {
        const float8 v = vload8(cv, x);
        vstore8(v * v, 0, squares + LRN_HALF + cv * 8);
    }
    for (int cv = 0; cv < CV; cv++) {
        float8 sum = (float8)(0.0f);
        for (int i = 0; i < LRN_N; i++)
            sum += vload8(0, squares + cv * 8 + i);
        const float8 factor = LRN_INV_POW(LRN_K + (LRN_ALPHA / LRN_N) * sum);
        vstore8(vload8(cv, x) * factor, cv, dst + pixel * CP);
    }
}

/* ReLU stage in fixed point (I32 input stream), bit-exact with cnnfpga.fixed_reference.relu_fixed.
 * RELU_PASS (slope 0, output format = input format): max(x, 0).  Otherwise
 * acc = x < 0 ? x * SLOPE_Q : x << 16 (ACC_FRAC = input fractional bits + 16), then CONVERT_OUT.
 * Constants: WORDS, RELU_PASS, SLOPE_Q, ACC_FRAC, OUT_T, CONVERT_OUT, SAT_SLOT.
 */
SINGLE_WORK_ITEM
__kernel void STAGE_KERNEL(STAGE_PARAMS __global ulong *restrict saturation, const uint n_images)
{
    STAGE_CURSORS
    ulong saturated = 0;
    for (uint i = 0; i < n_images * (uint)WORDS; i++) {
        const int8 v = READ_IN();
#if RELU_PASS
        WRITE_OUT(max(v, (int8)(0)));
#else
        int x[8];
        OUT_T out[8];
        vstore8(v, 0, x);
        for (int j = 0; j < 8; j++)
            out[j] = CONVERT_OUT(x[j] < 0 ? (long)x[j] * SLOPE_Q : (long)x[j] << 16);
        WRITE_OUT(vload8(0, out));
#endif
    }
    saturation[SAT_SLOT] += saturated;
}

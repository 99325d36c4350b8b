/* A ReLU stage of its own (a ReLU that does not follow a convolution, or that could not be fused
 * into it): one pipelined loop of IMAGE_ITERS = H x W x WPP iterations per image, a word in and a
 * word out each, all WIDTH lanes at once.
 * Float input: Caffe's (leaky) ReLU, then the output format (FLOAT_TO_OUT).  Fixed-point input,
 * bit-exact with cnnfpga.fixed_reference.relu_fixed: RELU_PASS (slope 0, same format out):
 * max(x, 0); otherwise acc = x < 0 ? x * SLOPE_Q : x << 16 (ACC_FRAC = input fraction + 16), then
 * CONVERT_OUT.
 * Constants: IMAGE_ITERS, WIDTH, FIXED_COMPUTE, RELU_SLOPE or RELU_PASS SLOPE_Q, the value macros.
 */
SINGLE_WORK_ITEM
__kernel void STAGE_KERNEL(STAGE_PARAMS __global ulong *restrict stats, const uint n_images)
{
    STAGE_CURSORS
    ulong saturated = 0;
    CYCLE_COUNTER
    PIPELINED
    for (uint n = 0; n < n_images; n++) {
        PIPELINED
        for (int i = 0; i < IMAGE_ITERS; i++) {
            COUNT_CYCLE
            const IN_WORD in = READ_IN();
            OUT_WORD out;
            UNROLL
            for (int l = 0; l < WIDTH; l++) {
#if FIXED_COMPUTE
                const long x = IN_VALUE(in, l);
#if RELU_PASS
                OUT_SET(out, l, (OUT_T)(x > 0 ? x : 0));
#else
                OUT_SET(out, l, CONVERT_OUT(x < 0 ? x * SLOPE_Q : x << 16, &saturated));
#endif
#else
                const float x = IN_VALUE(in, l);
                OUT_SET(out, l, FLOAT_TO_OUT(RELU_SCALAR(x, RELU_SLOPE), &saturated));
#endif
            }
            WRITE_OUT(out);
        }
    }
    stats[2 * SAT_SLOT] += saturated;
    STORE_CYCLES(stats, SAT_SLOT)
}

/* A sum stage (an Eltwise SUM of two blobs): one pipelined loop of IMAGE_ITERS = H x W x WPP
 * iterations per image; each reads a word of the streamed operand (READ_IN) and a word of the
 * other one from DDR (READ_SIDE), and writes a word of their sums, all WIDTH lanes at once.
 * Fixed point, bit-exact with cnnfpga.fixed_reference.eltwise_sum: both operands aligned to ACC_FRAC
 * fractional bits (shifted left by IN_SHIFT and SIDE_SHIFT), added exactly, then CONVERT_OUT.
 * Float (or half) operands: x + y in float32, then the output format (FLOAT_TO_OUT).  FUSE_RELU:
 * the ReLU after it, fused as into a convolution (cnnfpga.placement.can_fuse_relu).
 * Constants: IMAGE_ITERS, WIDTH, FUSE_RELU, RELU_SLOPE, FIXED_COMPUTE, IN_SHIFT SIDE_SHIFT (fixed),
 * the value macros of both inputs (IN_VALUE, SIDE_VALUE) and of the output.
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
            const SIDE_WORD side = READ_SIDE();
            OUT_WORD out;
            UNROLL
            for (int l = 0; l < WIDTH; l++) {
#if FIXED_COMPUTE
                const long sum = ((long)IN_VALUE(in, l) << IN_SHIFT) + ((long)SIDE_VALUE(side, l) << SIDE_SHIFT);
                OUT_T v = CONVERT_OUT(sum, &saturated);
#if FUSE_RELU
                v = v > (OUT_T)0 ? v : (OUT_T)0;
#endif
                OUT_SET(out, l, v);
#else
                float v = IN_VALUE(in, l) + SIDE_VALUE(side, l);
#if FUSE_RELU
#ifdef QMIN
                /* a value the ReLU zeroes still counts if it would have saturated, as in a conv stage */
                if (v < 0.0f)
                    (void)fx_quantize(v, OUT_FRAC, QMIN, QMAX, &saturated);
#endif
                v = RELU_SCALAR(v, RELU_SLOPE);
#endif
                OUT_SET(out, l, FLOAT_TO_OUT(v, &saturated));
#endif
            }
            WRITE_OUT(out);
        }
    }
    stats[2 * SAT_SLOT] += saturated;
    STORE_CYCLES(stats, SAT_SLOT)
}

/* A ReLU stage of its own (for a ReLU that does not follow a convolution): streams word by word.
 * Constants: WORDS (stream words per image), RELU_SLOPE. */
SINGLE_WORK_ITEM
__kernel void STAGE_KERNEL(STAGE_PARAMS __global ulong *restrict saturation, const uint n_images)
{
    STAGE_CURSORS
    ulong saturated = 0;   /* values a fixed-point output saturated (mixed precision) */
    for (uint i = 0; i < n_images * (uint)WORDS; i++) {
        const float8 v = READ_IN();
        WRITE_OUT(select(v * RELU_SLOPE, v, isgreater(v, (float8)(0.0f))));
    }
    saturation[SAT_SLOT] += saturated;
}

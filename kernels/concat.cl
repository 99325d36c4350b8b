/* A concat stage (a Concat along the channels): one pipelined loop of IMAGE_ITERS = H x W x
 * PIXEL_ITERS iterations per image; iteration j of a pixel reads the next word of the input that
 * word j of the output falls in -- the streamed one (READ_IN) or one read from DDR -- and writes it,
 * every value converted to the output format where that input's format differs (COPY_WORD, written
 * by the code generator: cnnfpga.codegen.concat_copy, bit-exact with
 * cnnfpga.fixed_reference.concat_channels).  A word holds one input's channels only (the width
 * divides every input's channels but the last's), so no word is split.
 * Constants: IMAGE_ITERS, PIXEL_ITERS, WIDTH, COPY_WORD, the output's value macros.
 */
SINGLE_WORK_ITEM
__kernel void STAGE_KERNEL(STAGE_PARAMS __global ulong *restrict stats, const uint n_images)
{
    STAGE_CURSORS
    ulong saturated = 0;
    CYCLE_COUNTER
    PIPELINED
    for (uint n = 0; n < n_images; n++) {
        int word = 0;   /* which of a pixel's PIXEL_ITERS words this iteration writes */
        PIPELINED
        for (int i = 0; i < IMAGE_ITERS; i++) {
            COUNT_CYCLE
            OUT_WORD out;
            COPY_WORD(word, out);
            WRITE_OUT(out);
            word = word == PIXEL_ITERS - 1 ? 0 : word + 1;
        }
    }
    stats[2 * SAT_SLOT] += saturated;
    STORE_CYCLES(stats, SAT_SLOT)
}

/* (N, C, H, W) float32 as the host holds a blob -> the stream layout (N, H, W, CP), channels padded
 * with zeros to whole 8-channel words (the "fast" variant, not an FPGA design: there the host writes
 * the stream layout into DDR).  The host copies the blob as it is instead of transposing it first.
 * One work-item per 8-channel word and input row (a row of `width` pixels).
 */
__kernel void cnnfpga_nchw_to_stream(__global const float *restrict src, __global float *restrict dst,
                                     const int channels, const int height, const int width, const int words)
{
    const int word = get_global_id(0);
    const int row = get_global_id(1);               /* over all images */
    const int image = row / height, y = row % height;
    __global const float *from = src + ((size_t)image * channels * height + y) * width;
    __global float *to = dst + ((size_t)row * width * words + word) * 8;
    for (int x = 0; x < width; x++) {
        float values[8];
        #pragma unroll
        for (int i = 0; i < 8; i++) {
            const int c = word * 8 + i;
            values[i] = c < channels ? from[(size_t)c * height * width + x] : 0.0f;
        }
        vstore8(vload8(0, values), 0, to + (size_t)x * words * 8);
    }
}

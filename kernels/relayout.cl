/* A blob handed from one segment to the next on the device (cnnfpga.runtime, not an FPGA design):
 * written in words of one width, read in words of another.  The stream layout is (N, H, W, CP), CP the
 * channels padded with zeros to whole words, so only the padding differs: each pixel's `channels`
 * values are copied, the rest of its `to_channels` set to zero.  Values are moved as `value_bytes`
 * bytes each, whatever their format.  One work-item per pixel and channel of the output.
 */
__kernel void cnnfpga_relayout(__global const uchar *restrict from, __global uchar *restrict to, const int channels,
                               const int from_channels, const int to_channels, const int value_bytes)
{
    const size_t pixel = get_global_id(0);
    const int c = get_global_id(1);
    __global uchar *value = to + (pixel * to_channels + c) * value_bytes;
    __global const uchar *source = from + (pixel * from_channels + c) * value_bytes;
    for (int b = 0; b < value_bytes; b++)
        value[b] = c < channels ? source[b] : 0;
}

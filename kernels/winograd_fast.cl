/* 3x3 stride-1 convolution as Winograd F(2x2, 3x3), for CPUs and GPUs (the "fast" variant, not an
 * FPGA design).  Output tiles of 2x2 pixels need 16 multiplications per input/output channel pair
 * instead of 36, so the multiply-adds drop 2.25x (less the tiles' overhang at odd sizes).
 *
 * Three kernels on the stream layout (N, H, W, CP) in global memory:
 *   STAGE_KERNEL_input:  V[xi][t][c] = (B^T d B)[xi] for each 4x4 input patch d of tile t (zero padded)
 *   STAGE_KERNEL_gemm:   M[xi][t][o] = sum over the group's channels c of V[xi][t][c] U[xi][c][o]:
 *                        16 independent GEMMs, register tiled as in conv_fast.cl (R tiles x VO channels)
 *   STAGE_KERNEL:        Y = A^T M A for each tile, + bias, (leaky) ReLU, written as the stage output
 * U = G g G^T are the weights transformed on the host, laid out [16][OPW/VO][CG][VO].  B, G and A
 * hold only 0, +-1 and +-1/2, so the transforms round little: results stay within a few float ulps
 * of the direct sum's relative size.
 *
 * Constants: H W CP OH OW OP PH PW CG OG OPW VO VFLOAT VLOADO R TH TW (tiles per column / row),
 * FUSE_RELU RELU_SLOPE.
 */
#ifndef CONCAT
#define CONCAT_(a, b) a##b
#define CONCAT(a, b) CONCAT_(a, b)   /* expands STAGE_KERNEL before pasting */
#endif
#define TILES_PER_IMAGE (TH * TW)

__kernel void CONCAT(STAGE_KERNEL, _input)(__global const float *restrict src, __global float *restrict v,
                                           const uint n_images)
{
    const int t = get_global_id(0);           /* tile over all images */
    const int cv = get_global_id(1);          /* 8-channel word */
    const int tiles = (int)n_images * TILES_PER_IMAGE;
    const int q = t % TILES_PER_IMAGE;
    const int y0 = (q / TW) * 2 - PH, x0 = (q % TW) * 2 - PW;
    __global const float *image = src + (t / TILES_PER_IMAGE) * (H * W * CP) + cv * 8;
    float8 d[4][4];
    #pragma unroll
    for (int i = 0; i < 4; i++)
        #pragma unroll
        for (int j = 0; j < 4; j++) {
            const int y = y0 + i, x = x0 + j;
            d[i][j] = (y >= 0 && y < H && x >= 0 && x < W) ? vload8(0, image + (y * W + x) * CP) : (float8)(0.0f);
        }
    float8 b[4][4];   /* B^T d */
    #pragma unroll
    for (int j = 0; j < 4; j++) {
        b[0][j] = d[0][j] - d[2][j];
        b[1][j] = d[1][j] + d[2][j];
        b[2][j] = d[2][j] - d[1][j];
        b[3][j] = d[1][j] - d[3][j];
    }
    #pragma unroll
    for (int i = 0; i < 4; i++) {   /* (B^T d) B, row i: positions xi = 4i .. 4i+3 */
        const float8 e[4] = {b[i][0] - b[i][2], b[i][1] + b[i][2], b[i][2] - b[i][1], b[i][1] - b[i][3]};
        #pragma unroll
        for (int j = 0; j < 4; j++)
            vstore8(e[j], 0, v + ((size_t)((i * 4 + j) * tiles + t)) * CP + cv * 8);
    }
}

__kernel void CONCAT(STAGE_KERNEL, _gemm)(__global const float *restrict v, __global float *restrict m,
                                          __global const float *restrict u, const uint n_images)
{
    const int tiles = (int)n_images * TILES_PER_IMAGE;
    const int t0 = get_global_id(0) * R;
    const int o0 = get_global_id(1) * VO;
    const int xi = get_global_id(2);
    const int c0 = (o0 / OG) * CG;
    __global const float *x[R];
    VFLOAT acc[R];
    #pragma unroll
    for (int r = 0; r < R; r++) {
        x[r] = v + ((size_t)(xi * tiles + min(t0 + r, tiles - 1))) * CP + c0;
        acc[r] = (VFLOAT)(0.0f);
    }
    __global const float *w = u + ((size_t)(xi * (OPW / VO) + o0 / VO)) * (CG * VO);
    for (int c = 0; c < CG; c++) {
        const VFLOAT wv = VLOADO(c, w);
        #pragma unroll
        for (int r = 0; r < R; r++)
            acc[r] = fma((VFLOAT)(x[r][c]), wv, acc[r]);
    }
    #pragma unroll
    for (int r = 0; r < R; r++)
        if (t0 + r < tiles)
            VSTOREO(acc[r], 0, m + ((size_t)(xi * tiles + t0 + r)) * OPW + o0);
}

__kernel void STAGE_KERNEL(__global const float *restrict m, __global float *restrict dst,
                           __global const float *restrict bias, const uint n_images)
{
    const int t = get_global_id(0);
    const int ov = get_global_id(1);          /* 8-channel word of the output */
    const int tiles = (int)n_images * TILES_PER_IMAGE;
    const int q = t % TILES_PER_IMAGE;
    const int oy = (q / TW) * 2, ox = (q % TW) * 2;
    float8 e[16];
    #pragma unroll
    for (int xi = 0; xi < 16; xi++)
        e[xi] = vload8(0, m + ((size_t)(xi * tiles + t)) * OPW + ov * 8);
    float8 a[2][4];   /* A^T M */
    #pragma unroll
    for (int j = 0; j < 4; j++) {
        a[0][j] = e[j] + e[4 + j] + e[8 + j];
        a[1][j] = e[4 + j] - e[8 + j] - e[12 + j];
    }
    const float8 b = vload8(ov, bias);
    __global float *image = dst + (t / TILES_PER_IMAGE) * (OH * OW * OP) + ov * 8;
    #pragma unroll
    for (int i = 0; i < 2; i++) {
        const float8 y[2] = {a[i][0] + a[i][1] + a[i][2] + b, a[i][1] - a[i][2] - a[i][3] + b};
        #pragma unroll
        for (int j = 0; j < 2; j++) {
            if (oy + i < OH && ox + j < OW) {
                float8 out = y[j];
#if FUSE_RELU
                out = select(out * RELU_SLOPE, out, isgreater(out, (float8)(0.0f)));
#endif
                vstore8(out, 0, image + ((oy + i) * OW + ox + j) * OP);
            }
        }
    }
}

#undef TILES_PER_IMAGE

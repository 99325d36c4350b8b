/* Square r x r stride-1 convolution as Winograd F(2x2, r x r), for CPUs and GPUs (the "fast" variant,
 * not an FPGA design).  An output tile of 2x2 pixels needs WA*WA = (r+1)^2 multiplications per input
 * and output channel pair instead of 4 r^2: 16 instead of 36 for r = 3, 36 instead of 100 for r = 5.
 *
 * Three kernels on the stream layout (N, H, W, CP) in global memory:
 *   STAGE_KERNEL_input:  V[xi][t][c] = (B^T d B)[xi] for the WA x WA input patch d of tile t (zero padded)
 *   STAGE_KERNEL_gemm:   M[xi][t][o] = sum over the group's channels c of V[xi][t][c] U[xi][c][o]:
 *                        WA*WA independent GEMMs, register tiled as in conv_fast.cl (R tiles x VO channels)
 *   STAGE_KERNEL:        Y = A^T M A for each tile, + bias, (leaky) ReLU, written as the stage output
 * U = G g G^T are the weights transformed on the host (cnnfpga.codegen.WINOGRAD), laid out
 * [WA*WA][OPW/VO][CG][VO].  B_T(o, v) and A_T(o, v) set o = B^T v and o = A^T v (codegen writes
 * them out, zero terms left out).
 *
 * Constants: H W CP OH OW OP PH PW CG OG OPW VO VFLOAT VLOADO VSTOREO R TH TW (tiles per column /
 * row) WA, B_T A_T, FUSE_RELU RELU_SLOPE.
 */
#ifndef CONCAT
#define CONCAT_(a, b) a##b
#define CONCAT(a, b) CONCAT_(a, b)   /* expands STAGE_KERNEL before pasting */
#endif
#define TILES_PER_IMAGE (TH * TW)

__kernel void CONCAT(STAGE_KERNEL, _input)(__global const float *restrict src, __global float *restrict transformed,
                                           const uint n_images)
{
    const int cv = get_global_id(0);          /* 8-channel word: neighbours share cache lines */
    const int t = get_global_id(1);           /* tile over all images */
    const int tiles = (int)n_images * TILES_PER_IMAGE;
    const int q = t % TILES_PER_IMAGE;
    const int y0 = (q / TW) * 2 - PH, x0 = (q % TW) * 2 - PW;
    __global const float *image = src + (t / TILES_PER_IMAGE) * (H * W * CP) + cv * 8;
    float8 d[WA][WA], column[WA], out[WA], rows[WA][WA];
    #pragma unroll
    for (int i = 0; i < WA; i++)
        #pragma unroll
        for (int j = 0; j < WA; j++) {
            const int y = y0 + i, x = x0 + j;
            d[i][j] = (y >= 0 && y < H && x >= 0 && x < W) ? vload8(0, image + (y * W + x) * CP) : (float8)(0.0f);
        }
    #pragma unroll
    for (int j = 0; j < WA; j++) {   /* B^T d, a column at a time */
        #pragma unroll
        for (int i = 0; i < WA; i++)
            column[i] = d[i][j];
        B_T(out, column);
        #pragma unroll
        for (int i = 0; i < WA; i++)
            rows[i][j] = out[i];
    }
    #pragma unroll
    for (int i = 0; i < WA; i++) {   /* (B^T d) B, a row at a time: positions xi = WA i + j */
        B_T(out, rows[i]);
        #pragma unroll
        for (int j = 0; j < WA; j++)
            vstore8(out[j], 0, transformed + ((size_t)((i * WA + j) * tiles + t)) * CP + cv * 8);
    }
}

__kernel void CONCAT(STAGE_KERNEL, _gemm)(__global const float *restrict transformed,
                                          __global float *restrict products,
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
        x[r] = transformed + ((size_t)(xi * tiles + min(t0 + r, tiles - 1))) * CP + c0;
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
            VSTOREO(acc[r], 0, products + ((size_t)(xi * tiles + t0 + r)) * OPW + o0);
}

__kernel void STAGE_KERNEL(__global const float *restrict products, __global float *restrict dst,
                           __global const float *restrict bias, const uint n_images)
{
    const int ov = get_global_id(0);          /* 8-channel word of the output */
    const int t = get_global_id(1);
    const int tiles = (int)n_images * TILES_PER_IMAGE;
    const int q = t % TILES_PER_IMAGE;
    const int oy = (q / TW) * 2, ox = (q % TW) * 2;
    float8 e[WA][WA], column[WA], pair[2], halves[2][WA];
    #pragma unroll
    for (int i = 0; i < WA; i++)
        #pragma unroll
        for (int j = 0; j < WA; j++)
            e[i][j] = vload8(0, products + ((size_t)((i * WA + j) * tiles + t)) * OPW + ov * 8);
    #pragma unroll
    for (int j = 0; j < WA; j++) {   /* A^T M, a column at a time */
        #pragma unroll
        for (int i = 0; i < WA; i++)
            column[i] = e[i][j];
        A_T(pair, column);
        halves[0][j] = pair[0];
        halves[1][j] = pair[1];
    }
    const float8 b = vload8(ov, bias);
    __global float *image = dst + (t / TILES_PER_IMAGE) * (OH * OW * OP) + ov * 8;
    #pragma unroll
    for (int i = 0; i < 2; i++) {    /* (A^T M) A, a row at a time */
        A_T(pair, halves[i]);
        #pragma unroll
        for (int j = 0; j < 2; j++) {
            if (oy + i < OH && ox + j < OW) {
                float8 out = pair[j] + b;
#if FUSE_RELU
                out = select(out * RELU_SLOPE, out, isgreater(out, (float8)(0.0f)));
#endif
                vstore8(out, 0, image + ((oy + i) * OW + ox + j) * OP);
            }
        }
    }
}

#undef TILES_PER_IMAGE

/* Convolution for CPUs and GPUs (not an FPGA design): an NDRange implicit GEMM, register tiled.
 *
 * Used by the "fast" variant in place of conv.cl; it reads and writes the same stream layout
 * (N, H, W, CP) in global memory that the emulated channels hold, so it slots between FPGA-style
 * stages.  Work-item (t, b) computes R consecutive output pixels x VO output channels (a float16 or
 * float8 accumulator per pixel, fused multiply-adds: PoCL splits mad() into a multiply and an add):
 * each weight vector is loaded once for R pixels, each input value once for VO channels.  Pixel
 * tiles vary fastest, so neighbouring work-groups share a block's weights.  Weights are laid out
 * [OPW/VO][KH][KW][CG][VO] (OPW = output channels rounded up to whole VO blocks, zero padded): a
 * work-item streams its block's weights in order; a block never straddles two groups.  `zeros`
 * (codegen.fast_zeros_length) is read instead of the input where a window covers the padding.
 * Without horizontal padding a window row is wholly inside or outside the input, so the kx and
 * channel loops run without checks (and, for a first layer's few channels, fully unrolled).
 *
 * Constants: H W C CP OH OW O OP KH KW SH SW PH PW DH DW G CG OG OPW R VO VFLOAT VLOADO,
 * FUSE_RELU RELU_SLOPE.
 */
__kernel void STAGE_KERNEL(__global const float *restrict src, __global float *restrict dst,
                           __global const float *restrict weights,
                           __global const float *restrict bias,
                           __global const float *restrict zeros,
                           const uint n_images)
{
    const int o0 = get_global_id(1) * VO;
    const int p0 = get_global_id(0) * R;
    const int total = (int)n_images * (OH * OW);
    const int c0 = (o0 / OG) * CG;
    int base[R], iy0[R], ix0[R];
    VFLOAT acc[R];
    #pragma unroll
    for (int r = 0; r < R; r++) {
        const int p = min(p0 + r, total - 1);
        const int q = p % (OH * OW);
        iy0[r] = (q / OW) * SH - PH;
        ix0[r] = (q % OW) * SW - PW;
        base[r] = (p / (OH * OW)) * (H * W * CP) + c0;
        acc[r] = (VFLOAT)(0.0f);
    }
    for (int ky = 0; ky < KH; ky++) {
        __global const float *w = weights + (o0 / VO * KH + ky) * (KW * CG * VO);
#if PW == 0
        /* no horizontal padding: a window row lies wholly inside the input, or (vertical padding)
           wholly outside it, where it reads a row of zeros; the kx and c loops need no checks */
        __global const float *x[R];
        #pragma unroll
        for (int r = 0; r < R; r++) {
            const int iy = iy0[r] + ky * DH;
            x[r] = (PH == 0 || (iy >= 0 && iy < H)) ? src + base[r] + (iy * W + ix0[r]) * CP : zeros;
        }
#if CG < 8
        #pragma unroll   /* few channels (a first layer): one straight run of KW * CG steps */
#endif
        for (int kx = 0; kx < KW; kx++) {
            for (int c = 0; c < CG; c++) {
                const VFLOAT wv = VLOADO(kx * CG + c, w);
                #pragma unroll
                for (int r = 0; r < R; r++)
                    acc[r] = fma((VFLOAT)(x[r][kx * DW * CP + c]), wv, acc[r]);
            }
        }
#else
        for (int kx = 0; kx < KW; kx++) {
            __global const float *x[R];   /* where the window hangs over the padding: a row of zeros */
            #pragma unroll
            for (int r = 0; r < R; r++) {
                const int iy = iy0[r] + ky * DH, ix = ix0[r] + kx * DW;
                const bool inside = iy >= 0 && iy < H && ix >= 0 && ix < W;
                x[r] = inside ? src + base[r] + (iy * W + ix) * CP : zeros;
            }
            for (int c = 0; c < CG; c++) {
                const VFLOAT wv = VLOADO(kx * CG + c, w);
                #pragma unroll
                for (int r = 0; r < R; r++)
                    acc[r] = fma((VFLOAT)(x[r][c]), wv, acc[r]);
            }
        }
#endif
    }
    const VFLOAT b = VLOADO(0, bias + o0);
    #pragma unroll
    for (int r = 0; r < R; r++) {
        if (p0 + r >= total)
            break;
        VFLOAT v = acc[r] + b;
#if FUSE_RELU
        v = select(v * RELU_SLOPE, v, isgreater(v, (VFLOAT)(0.0f)));
#endif
        __global float *out = dst + (p0 + r) * OP + o0;
#if VO == 16
        if (o0 + 16 <= OP)
            vstore16(v, 0, out);
        else
            vstore8(v.lo, 0, out);   /* OP is a multiple of 8: the last block may be half used */
#else
        vstore8(v, 0, out);
#endif
    }
}

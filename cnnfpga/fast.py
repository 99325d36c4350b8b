"""The "fast" variant's kernels (not an FPGA design): NDRange kernels for CPUs and GPUs that replace
float stages -- register-tiled GEMM and Winograd convolutions, LRN across channels and pooling one
work-item per pixel -- on the same stream layout (N, H, W, CP), CP the channels in whole 8-value
words, in global memory.  Here: which stages they replace, their constants, their weight layouts.
The code generator (cnnfpga.codegen) calls this for the fast variant only.
"""
from __future__ import annotations

import numpy as np

from .csource import Function, c_float
from .placement import Stage
from .precision import Float

WORD = 8                 # values per stream word of the fast kernels (float8)
FAST_ROWS = 6            # output pixels per work-item in conv_fast.cl


def padded(channels: int) -> int:
    return -(-channels // WORD) * WORD


def stage_constants(stage: Stage) -> dict:
    """The geometry constants every fast kernel reads (channels in whole 8-value words)."""
    n, c, h, w = stage.in_shape
    _, o, oh, ow = stage.out_shape
    spec = stage.spec
    d = {"H": h, "W": w, "C": c, "CP": padded(c), "CV": padded(c) // WORD, "OH": oh, "OW": ow}
    if stage.kind == "conv":
        g = spec.group
        d.update(O=o, OP=padded(o), KH=spec.kernel_h, KW=spec.kernel_w, SH=spec.stride_h, SW=spec.stride_w,
                 PH=spec.pad_h, PW=spec.pad_w, DH=spec.dilation_h, DW=spec.dilation_w, G=g, CG=c // g, OG=o // g,
                 FUSE_RELU=int(stage.relu_slope is not None), RELU_SLOPE=c_float(stage.relu_slope or 0.0))
    elif stage.kind == "pool":
        d.update(KH=spec.kernel_h, KW=spec.kernel_w, SH=spec.stride_h, SW=spec.stride_w, PH=spec.pad_h,
                 PW=spec.pad_w, POOL_MAX=int(spec.method == "MAX"))
    elif stage.kind == "lrn":
        d.update(LRN_N=spec.local_size, LRN_HALF=(spec.local_size - 1) // 2, LRN_ALPHA=c_float(spec.alpha),
                 LRN_BETA=c_float(spec.beta), LRN_K=c_float(spec.k))
    return d


def narrow_concats(plan) -> dict:
    """{name: why} of the concat stages whose words could not be WORD values (an input but the last
    of channels not in whole words): the fast variant leaves those to the host."""
    return {stage.name: f"an input's channels not in whole {WORD}-value words" for stage in plan.stages
            if stage.kind == "concat" and any(shape[1] % WORD for shape in stage.layer.in_shapes[:-1])}


def uses_fast_conv(stage: Stage) -> bool:
    """The fast variant replaces float convolutions whose groups split into whole 8-channel blocks."""
    p = stage.precision
    return (stage.kind == "conv" and p.weights == p.inputs == p.outputs == Float()
            and (stage.spec.group == 1 or (stage.spec.num_output // stage.spec.group) % 8 == 0))


def uses_fast_lrn(stage: Stage) -> bool:
    p = stage.precision
    return (stage.kind == "lrn" and stage.spec.region == "ACROSS_CHANNELS"
            and p.weights == p.inputs == p.outputs == Float())


def uses_fast_pool(stage: Stage) -> bool:
    p = stage.precision
    return stage.kind == "pool" and p.weights == p.inputs == p.outputs == Float()


def fast_block(stage: Stage) -> int:
    og = stage.spec.num_output // stage.spec.group
    return 16 if stage.spec.group == 1 or og % 16 == 0 else 8


def fast_constants(stage: Stage) -> dict:
    d = stage_constants(stage)
    vo = fast_block(stage)
    opw = -(-d["O"] // vo) * vo if d["G"] == 1 else d["O"]
    d.update(OPW=opw, R=FAST_ROWS, VO=vo, VFLOAT=f"float{vo}", VLOADO=f"vload{vo}")
    return d


# Winograd F(2, r): y = A^T [(G g) * (B^T d)] for r taps g and r + 1 inputs d, two outputs, from
# Toom-Cook at the points 0, +-1 (, +-2) and infinity; worked out in exact fractions, with the
# fractions put into G (applied to the weights once, in float64) and B^T kept integral.
WINOGRAD = {  # r: (A^T, G, B^T)
    3: ([[1, 1, 1, 0], [0, 1, -1, 1]],
        [[-1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
        [[-1, 0, 1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, -1, 0, 1]]),
    5: ([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 1]],
        [[1 / 4, 0, 0, 0, 0], [-1 / 6] * 5, [-1 / 6, 1 / 6, -1 / 6, 1 / 6, -1 / 6],
         [1 / 24, 1 / 12, 1 / 6, 1 / 3, 2 / 3], [1 / 24, -1 / 12, 1 / 6, -1 / 3, 2 / 3], [0, 0, 0, 0, 1]],
        [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
         [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]),
}


def uses_winograd(stage: Stage) -> bool:
    """Fast square 3x3 and 5x5 stride-1 convolutions run as Winograd F(2x2, r x r)
    (kernels/winograd_fast.cl): 16 multiplications per 2x2 outputs instead of 36, or 36 instead of 100."""
    spec = stage.spec
    return (uses_fast_conv(stage) and spec.kernel_h == spec.kernel_w and spec.kernel_h in WINOGRAD
            and spec.stride_h == spec.stride_w == 1 and spec.dilation_h == spec.dilation_w == 1)


def winograd_tiles(stage: Stage) -> tuple:
    """(tile rows, tile columns) of 2x2 output pixels covering one image's output."""
    _, _, oh, ow = stage.out_shape
    return -(-oh // 2), -(-ow // 2)


def tiles_per_item(tiles: int) -> int:
    """Register tile height for a GEMM over `tiles` rows: the fewest rows left over, then the tallest
    (6 to 8 accumulators keep PoCL's AVX-512 code free of spills)."""
    return min(range(6, 9), key=lambda r: (-(-tiles // r) * r - tiles, -r))


def combination_macro(matrix) -> str:
    """Macro text '(o, v) o[0] = ...; ...' setting o = matrix v for a constant matrix (zero terms
    left out, +-1 as additions), so that the kernels' transforms cost only what the matrix needs."""
    rows = []
    for i, row in enumerate(matrix):
        terms = [("-" if c < 0 else "+") + (f"v[{j}]" if abs(c) == 1 else f"{c_float(abs(c))} * v[{j}]")
                 for j, c in enumerate(row) if c != 0]
        text = " ".join(terms)
        rows.append(f"o[{i}] = {text[1:] if text.startswith('+') else text};")
    return Function("o, v", " ".join(rows))


def winograd_constants(stage: Stage) -> dict:
    d = fast_constants(stage)
    th, tw = winograd_tiles(stage)
    a_t, _, b_t = WINOGRAD[d["KH"]]
    d.update(TH=th, TW=tw, WA=len(b_t), R=tiles_per_item(th * tw), VSTOREO=f"vstore{d['VO']}",
             B_T=combination_macro(b_t), A_T=combination_macro(a_t))
    return d


def winograd_weight_layout(stage: Stage) -> tuple:
    """(U [WA*WA][OPW/VO][CG][VO], bias [OPW]) as winograd_fast.cl reads them, zero padded."""
    d = winograd_constants(stage)
    o, vo, positions = stage.weights.shape[0], d["VO"], d["WA"] ** 2
    g = np.array(WINOGRAD[d["KH"]][1], np.float64)
    u = np.einsum("ik,ockl,jl->ijoc", g, stage.weights.astype(np.float64), g)
    padded_u = np.zeros((positions, d["OPW"], d["CG"]), np.float64)
    padded_u[:, :o] = u.reshape(positions, o, d["CG"])
    padded_u = padded_u.reshape(positions, d["OPW"] // vo, vo, d["CG"]).transpose(0, 1, 3, 2)
    b = np.zeros(d["OPW"], np.float32)
    b[:o] = stage.bias
    return np.ascontiguousarray(padded_u, dtype=np.float32), b


def fast_conv_weight_layout(stage: Stage) -> tuple:
    """(weights [OPW/VO][KH][KW][CG][VO], bias [OPW]) as conv_fast.cl reads them, zero padded: the
    weights of one block of VO output channels are contiguous, so a work-item streams them in order."""
    d = fast_constants(stage)
    o, vo = stage.weights.shape[0], d["VO"]
    w = np.zeros((d["OPW"], d["CG"], d["KH"], d["KW"]), np.float32)
    w[:o] = stage.weights
    w = w.reshape(d["OPW"] // vo, vo, d["CG"], d["KH"], d["KW"]).transpose(0, 3, 4, 2, 1)
    b = np.zeros(d["OPW"], np.float32)
    b[:o] = stage.bias
    return np.ascontiguousarray(w), b


def fast_zeros_length(stage: Stage) -> int:
    """Zeros conv_fast.cl reads where a window covers padding: one pixel's channels of a group, or
    (no horizontal padding) a whole window row of them."""
    d = fast_constants(stage)
    if d["PW"] == 0:
        return (d["KW"] - 1) * d["DW"] * d["CP"] + d["CG"]
    return d["CG"]

"""Plan -> one OpenCL source: the stage templates of kernels/ instantiated with per-stage constants.

Each stage's template is wrapped in #define / #undef of its constants (geometry, parallelism,
stream macros), so any number of conv stages coexist in one source under their own kernel names.
The channels between the stages of a segment are declared at the top (Intel FPGA channels; with
-D CNNFPGA_EMULATE_CHANNELS they turn into __global buffer arguments, see kernels/channels.h).

Kernel arguments, in order: the input port, the output port (channel or DDR buffer; channels
vanish on the FPGA), then the stage's own arguments (weights, bias, ...), then n_images.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
import re

import numpy as np

from .errors import PrecisionError
from .fixed_reference import FACTOR_FRAC, LEAKY_SLOPE_FRAC, leaky_slope_constant
from .partition import WORD, Plan, Segment, Stage, padded
from .precision import MAX_SHIFT, Fixed, Float, Half

TEMPLATES = {"conv": "conv.cl", "pool": "pool.cl", "relu": "relu.cl", "lrn": "lrn.cl"}
FIXED_TEMPLATES = {"conv": "conv_fixed.cl", "pool": "pool_fixed.cl", "relu": "relu_fixed.cl", "lrn": "lrn_fixed.cl"}
VARIANTS = ("fpga", "fast")
FAST_ROWS = 6            # output pixels per work-item in conv_fast.cl
HEADERS = ("channels.h", "common.h")
MACRO_PARAMETERS = ("(a)", "(b)", "(o, v)")   # constants starting so are function-like macros
CHANNEL_DEPTH = 64


def kernel_text(name: str) -> str:
    return resources.files("cnnfpga.kernels").joinpath(name).read_text()


def stream_tag(fmt) -> str:
    """The element format of a stream carrying values in `fmt` (see kernels/channels.h)."""
    if isinstance(fmt, Fixed):
        return "I32"
    return "F16" if isinstance(fmt, Half) else "F32"


def c_float(value: float) -> str:
    """A float32 constant as an OpenCL C literal that reads back to the same float32."""
    text = repr(float(np.float32(value)))
    if "e" not in text and "." not in text:
        text += ".0"
    return f"({text}f)"


def identifier(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


@dataclass
class Port:
    name: str            # kernel argument name
    tag: str             # F32 | F16 | I32
    channel: bool        # True: a channel between two stages; False: a DDR buffer

    def param(self) -> str:
        return f"{'CHANNEL' if self.channel else 'MEMORY'}_PARAM_{self.tag}({self.name})"

    def cursor(self) -> str:
        return f"{'CHANNEL' if self.channel else 'MEMORY'}_CURSOR({self.name})"

    def read(self) -> str:
        return f"READ_{'CHANNEL' if self.channel else 'MEMORY'}_{self.tag}({self.name})"

    def write(self, value: str = "v") -> str:
        return f"WRITE_{'CHANNEL' if self.channel else 'MEMORY'}_{self.tag}({self.name}, {value})"


@dataclass
class StageCode:
    stage: Stage
    kernel: str          # kernel function name
    source_in: Port
    source_out: Port
    first_line: int      # 1-based lines of this stage's part of the source
    last_line: int
    ndrange: tuple = None    # fast conv: (channels per block, blocks, pixels per work-item); None: a task
    winograd: tuple = None   # a fast conv as Winograd F(2x2, r x r): (tiles per image, tiles per work-item,
                             # transform positions WA*WA); ndrange's pixels per work-item are then tiles
    per_pixel: bool = False  # fast LRN: one work-item per output pixel
    fast_pool: bool = False  # fast pooling: one work-item per output pixel as well

    @property
    def pixel_kernel(self) -> bool:
        """An NDRange of one work-item per output pixel, with no saturation counter argument."""
        return self.per_pixel or self.fast_pool


@dataclass
class Program:
    source: str
    stages: list         # StageCode, in plan order

    def stage_at_line(self, line: int):
        for code in self.stages:
            if code.first_line <= line <= code.last_line:
                return code
        return None


def stage_constants(stage: Stage) -> dict:
    """The #defines a stage's template needs."""
    n, c, h, w = stage.in_shape
    _, o, oh, ow = stage.out_shape
    spec = stage.spec
    d = {"H": h, "W": w, "C": c, "CP": padded(c), "CV": padded(c) // WORD, "OH": oh, "OW": ow}
    if stage.kind == "conv":
        g = spec.group
        cg, og = c // g, o // g
        ci = stage.ci
        cgp = -(-c // ci) * ci if g == 1 else cg
        d.update(O=o, OP=padded(o), KH=spec.kernel_h, KW=spec.kernel_w, SH=spec.stride_h, SW=spec.stride_w,
                 PH=spec.pad_h, PW=spec.pad_w, DH=spec.dilation_h, DW=spec.dilation_w, G=g, CG=cg, OG=og,
                 CGP=cgp, CI=ci, CO=stage.co, LB_ROWS=(spec.kernel_h - 1) * spec.dilation_h + 1,
                 CI_FLOAT="float" if ci == 1 else f"float{ci}",
                 CI_LOAD="VLOAD1" if ci == 1 else f"vload{ci}", CI_SUM=f"HSUM{ci}",
                 FUSE_RELU=int(stage.relu_slope is not None), RELU_SLOPE=c_float(stage.relu_slope or 0.0))
    elif stage.kind == "pool":
        d.update(KH=spec.kernel_h, KW=spec.kernel_w, SH=spec.stride_h, SW=spec.stride_w, PH=spec.pad_h,
                 PW=spec.pad_w, POOL_MAX=int(spec.method == "MAX"))
    elif stage.kind == "relu":
        d.update(WORDS=h * w * padded(c) // WORD, RELU_SLOPE=c_float(spec.negative_slope))
    elif stage.kind == "lrn":
        d.update(LRN_N=spec.local_size, LRN_HALF=(spec.local_size - 1) // 2, LRN_ALPHA=c_float(spec.alpha),
                 LRN_BETA=c_float(spec.beta), LRN_K=c_float(spec.k),
                 LRN_ACROSS=int(spec.region == "ACROSS_CHANNELS"))
    return d


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


def inverse_power(beta: float) -> str:
    """OpenCL C for b^-beta (b >= 1 in LRN), as a macro body of (b).  Square roots and a division are
    correctly rounded on CPUs and several times faster on PoCL than pow or exp2(log2(.)), so the
    common betas get them; others take exp2(-beta * log2(b)), which keeps a few-ulp accuracy
    because |beta * log2(b)| stays small."""
    forms = {0.75: "(1.0f / (sqrt(b) * sqrt(sqrt(b))))", 0.5: "(1.0f / sqrt(b))", 1.0: "(1.0f / (b))"}
    return "(b) " + forms.get(float(np.float32(beta)), "exp2(log2(b) * -LRN_BETA)")


def fast_block(stage: Stage) -> int:
    og = stage.spec.num_output // stage.spec.group
    return 16 if stage.spec.group == 1 or og % 16 == 0 else 8


def fast_constants(stage: Stage) -> dict:
    d = stage_constants(stage)
    vo = fast_block(stage)
    opw = -(-d["O"] // vo) * vo if d["G"] == 1 else d["O"]
    d.update(OPW=opw, R=FAST_ROWS, VO=vo, VFLOAT=f"float{vo}", VLOADO=f"vload{vo}")
    for name in ("CGP", "CI", "CO", "CI_FLOAT", "CI_LOAD", "CI_SUM", "LB_ROWS"):
        del d[name]
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
    return "(o, v) " + " ".join(rows)


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


def is_fixed(stage: Stage) -> bool:
    """Stages whose input is fixed point run the integer templates (kernels/*_fixed.cl)."""
    return isinstance(stage.precision.inputs, Fixed)


def accumulator_frac(stage: Stage) -> int:
    """Fractional bits of a fixed stage's wide result before CONVERT_OUT."""
    p = stage.precision
    if stage.kind == "conv":
        if not isinstance(p.weights, Fixed):
            raise PrecisionError(f"{stage.layer.where}: a fixed-point convolution needs fixed-point weights, "
                                 f"got {p.weights}")
        return p.weights.frac_bits + p.inputs.frac_bits
    if stage.kind == "lrn":
        return p.inputs.frac_bits + FACTOR_FRAC
    if stage.kind == "relu" and not relu_passes(stage):
        return p.inputs.frac_bits + LEAKY_SLOPE_FRAC
    return p.inputs.frac_bits


def relu_passes(stage: Stage) -> bool:
    return stage.spec.negative_slope == 0 and stage.precision.outputs == stage.precision.inputs


def long_literal(value: int) -> str:
    # -2^63 has no literal of its own in C; the formats here stay within 32 bits
    return f"({value}L)"


def output_constants(stage: Stage, fixed: bool) -> dict:
    """How a stage turns its results into its output format (kernels/common.h has the helpers)."""
    out = stage.precision.outputs
    d = {}
    if isinstance(out, Fixed):
        d.update(OUT_FRAC=out.frac_bits, QMIN=long_literal(out.qmin), QMAX=long_literal(out.qmax))
    if not fixed:
        return d
    acc_frac = accumulator_frac(stage)
    d["ACC_FRAC"] = acc_frac
    if isinstance(out, Fixed):
        shift = acc_frac - out.frac_bits
        if abs(shift) > MAX_SHIFT:
            raise PrecisionError(f"{stage.layer.where}: rescaling from {acc_frac} to {out.frac_bits} fractional "
                                 f"bits needs a {abs(shift)}-bit shift (at most {MAX_SHIFT}); choose closer formats")
        d.update(OUT_T="int", CONVERT_OUT="(a) ((int)fx_requantize((a), ACC_FRAC - OUT_FRAC, QMIN, QMAX, &saturated))")
    else:
        d.update(OUT_T="float", CONVERT_OUT="(a) ldexp(convert_float(a), -(ACC_FRAC))")
    return d


def fixed_constants(stage: Stage) -> dict:
    d = stage_constants(stage)
    if stage.kind == "conv":
        ci = d["CI"]
        d.update(CI_LONG="long" if ci == 1 else f"long{ci}",
                 CI_CONVERT_LONG="(long)" if ci == 1 else f"convert_long{ci}")
        del d["CI_FLOAT"], d["RELU_SLOPE"]
    if stage.kind == "relu":
        d.update(RELU_PASS=int(relu_passes(stage)), SLOPE_Q=long_literal(leaky_slope_constant(stage.spec.negative_slope)))
        del d["RELU_SLOPE"]
    return d


def conv_weight_layout(stage: Stage) -> tuple:
    """(weights [OP][KH][KW][CGP], bias [OP]) as the conv template reads them, zero padded."""
    consts = stage_constants(stage)
    o, cg = stage.weights.shape[:2]
    w = np.zeros((consts["OP"], consts["KH"], consts["KW"], consts["CGP"]), np.float32)
    w[:o, :, :, :cg] = stage.weights.transpose(0, 2, 3, 1)
    b = np.zeros(consts["OP"], np.float32)
    b[:o] = stage.bias
    return w, b


def ports(segment: Segment, k: int) -> tuple:
    stages = segment.stages
    stage = stages[k]
    if k == 0:
        source_in = Port(f"mem_in_{stage.index}", stream_tag(stage.precision.inputs), False)
    else:
        source_in = Port(f"ch_{stages[k - 1].index}_{stage.index}", stream_tag(stages[k - 1].precision.outputs), True)
    if k == len(stages) - 1:
        source_out = Port(f"mem_out_{stage.index}", stream_tag(stage.precision.outputs), False)
    else:
        source_out = Port(f"ch_{stage.index}_{stages[k + 1].index}", stream_tag(stage.precision.outputs), True)
    return source_in, source_out


def generate(plan: Plan, inject: dict = None, variant: str = "fpga") -> Program:
    """One OpenCL source for every device stage of `plan`.

    variant "fpga": every stage is a single work-item kernel streaming through channels (what aoc
    gets, and what PoCL runs with the channels emulated).  "fast", for CPUs and GPUs, only with
    emulated channels: float convolutions become register-tiled NDRange kernels (conv_fast.cl),
    3x3 and 5x5 stride-1 ones Winograd F(2x2, r x r) (winograd_fast.cl), LRN across channels and
    float pooling NDRange kernels of one work-item per pixel (lrn_fast.cl, pool_fast.cl), and a
    kernel lays a segment's float input out as a stream (layout_fast.cl).

    inject: {stage index: text} puts extra text into that stage's part of the source (tests use it
    to check that a build error is traced back to its stage).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    lines = ["/* Generated by cnnfpga.codegen from the net '%s'. */" % plan.graph.name]
    for header in HEADERS:
        lines += kernel_text(header).splitlines()
    if variant == "fast":   # the device turns a segment's float input into the stream layout
        lines += kernel_text("layout_fast.cl").splitlines()
    codes = []
    for segment in plan.segments:
        for k, stage in enumerate(segment.stages):
            source_in, source_out = ports(segment, k)
            codes.append(StageCode(stage, f"stage{stage.index}_{identifier(stage.name)}", source_in, source_out, 0, 0))
    channels = [code.source_out for code in codes if code.source_out.channel]
    lines += [f"CHANNEL_{port.tag}({port.name}, {CHANNEL_DEPTH})" for port in channels]
    for code in codes:
        stage = code.stage
        code.first_line = len(lines) + 1
        fused = f" + {', '.join(stage.fused)}" if stage.fused else ""
        lines.append(f"/* ---- stage {stage.index}: {stage.name} ({stage.layer.type}{fused}) ---- */")
        fast = variant == "fast" and uses_fast_conv(stage)
        code.per_pixel = variant == "fast" and uses_fast_lrn(stage)
        code.fast_pool = variant == "fast" and uses_fast_pool(stage)
        fixed = is_fixed(stage)
        if fast and uses_winograd(stage):
            constants = winograd_constants(stage)
            code.ndrange = (constants["VO"], constants["OPW"] // constants["VO"], constants["R"])
            code.winograd = (constants["TH"] * constants["TW"], constants["R"], constants["WA"] ** 2)
            template = "winograd_fast.cl"
        elif fast:
            constants = fast_constants(stage)
            code.ndrange = (constants["VO"], constants["OPW"] // constants["VO"], FAST_ROWS)
            template = "conv_fast.cl"
        elif fixed:
            constants = fixed_constants(stage)
            template = FIXED_TEMPLATES[stage.kind]
        else:
            constants = stage_constants(stage)
            template = ("lrn_fast.cl" if code.per_pixel else "pool_fast.cl" if code.fast_pool
                        else TEMPLATES[stage.kind])
            if code.per_pixel:
                constants["LRN_INV_POW"] = inverse_power(stage.spec.beta)
        constants.update(output_constants(stage, fixed), SAT_SLOT=stage.index)
        if not fixed and code.source_out.tag == "I32":   # a float stage feeding a fixed one quantises
            write = code.source_out.write("fx_quantize8((v), OUT_FRAC, QMIN, QMAX, &saturated)")
        else:
            write = code.source_out.write()
        constants.update(
            STAGE_KERNEL=code.kernel,
            STAGE_PARAMS=f"{code.source_in.param()} {code.source_out.param()}",
            STAGE_CURSORS=f"{code.source_in.cursor()} {code.source_out.cursor()}")
        lines += [f"#define {name}{value}" if str(value).startswith(MACRO_PARAMETERS) else f"#define {name} {value}"
                  for name, value in constants.items()]
        lines.append(f"#define READ_IN() {code.source_in.read()}")
        lines.append(f"#define WRITE_OUT(v) {write}")
        if inject and stage.index in inject:
            lines.append(inject[stage.index])
        lines += kernel_text(template).splitlines()
        lines += [f"#undef {name}" for name in list(constants) + ["READ_IN", "WRITE_OUT"]]
        code.last_line = len(lines)
    return Program("\n".join(lines) + "\n", codes)

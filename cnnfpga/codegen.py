"""Plan + Design -> one OpenCL source: the stage templates of kernels/ instantiated with the numbers
the design computed.

Each stage's template is wrapped in #define / #undef of its constants (the kind module's numbers,
the C types and value macros of its formats, its ports), so any number of stages coexist in one
source under their own kernel names.  At the top: one word type per stream (a struct of the edge's
width in its storage type) and the channels between the stages of a segment with the depths the
design chose (Intel FPGA channels; with -D CNNFPGA_EMULATE_CHANNELS global buffers, see
kernels/channels.h).  Nothing here computes a schedule or a size: it renders the design.

Kernel arguments, in order: the input port, the output port (channel or DDR buffer; channels
vanish on the FPGA), the other inputs of a sum or a concat (DDR buffers), the kind's host arrays (weights and
biases, or a table), its on-chip arrays (emulation only: global scratch buffers), the statistics
buffer, n_images.  The fast variant's NDRange kernels (cnnfpga.fast) take their own arguments.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
import re

from . import fast
from .design import kind
from .device_constants import ALIGNED_BITS, FACTOR_FRAC, LEAKY_SLOPE_FRAC, LRN_MANTISSA_BITS, leaky_slope_constant
from .errors import PrecisionError
from .csource import Function, c_float, define, inverse_power
from .placement import Plan, Stage
from .design.streams import channels
from .precision import MAX_SHIFT, Fixed, Half, storage_bits

VARIANTS = ("fpga", "fast")
HEADERS = ("channels.h", "common.h")
C_TYPES = {"float32": "float", "uint16": "ushort", "int8": "char", "int16": "short", "int32": "int"}


def kernel_text(name: str) -> str:
    return resources.files("cnnfpga.kernels").joinpath(name).read_text()


def identifier(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def storage_type(fmt) -> str:
    """The C type a value of `fmt` is stored in: float, ushort (fp16 bits), char, short or int."""
    if isinstance(fmt, Fixed):
        return {8: "char", 16: "short", 32: "int"}[storage_bits(fmt)]
    return "ushort" if isinstance(fmt, Half) else "float"


def tag(fmt) -> str:
    return "FIXED" if isinstance(fmt, Fixed) else "F16" if isinstance(fmt, Half) else "F32"


@dataclass
class Port:
    name: str            # kernel argument / channel name
    fmt: object          # the format of the values it carries
    width: int           # values per word
    channel: bool        # True: a channel between two stages; False: a DDR buffer
    # the C type of a word: every port carrying one stage's output shares the stage's, so that the word
    # it makes is written to all of them; a DDR input has one of its own
    stream: str = None

    @property
    def word(self) -> str:
        return f"word_{self.stream or self.name}"

    def typedef(self) -> str:
        return f"typedef struct {{ {storage_type(self.fmt)} value[{self.width}]; }} {self.word};"

    def param(self, direction: str) -> str:
        if self.channel:
            return f"CHANNEL_PARAM({self.word}, {self.name})"
        return f"MEMORY_{direction}_PARAM({self.word}, {self.name})"

    def cursor(self) -> str:
        return f"{'CHANNEL' if self.channel else 'MEMORY'}_CURSOR({self.name})"

    def read(self) -> str:
        return f"READ_{'CHANNEL' if self.channel else 'MEMORY'}({self.name})"

    def write(self) -> str:
        return f"WRITE_{'CHANNEL' if self.channel else 'MEMORY'}({self.name}, w)"


@dataclass
class StageCode:
    stage: Stage
    kernel: str          # kernel function name
    source_in: Port
    outs: list           # where it writes each word: a channel per reader in its segment, DDR for a sink
    first_line: int      # 1-based lines of this stage's part of the source
    last_line: int
    sides: list = ()     # the other inputs of a sum or a concat (Stage.sides' order): channels or DDR
    ndrange: tuple = None    # fast conv: (channels per block, blocks, pixels per work-item); None: a task
    winograd: tuple = None   # a fast conv as Winograd F(2x2, r x r): (tiles per image, tiles per work-item,
                             # transform positions WA*WA); ndrange's pixels per work-item are then tiles
    per_pixel: bool = False  # fast LRN: one work-item per output pixel
    fast_pool: bool = False  # fast pooling: one work-item per output pixel as well

    @property
    def ports(self) -> list:
        """Every port, in the kernel's argument order: the streamed input, the outputs, the other inputs."""
        return [self.source_in, *self.outs, *self.sides]

    @property
    def sink(self):
        """The DDR output port (None: the stage writes channels only)."""
        return next((port for port in self.outs if not port.channel), None)

    @property
    def pixel_kernel(self) -> bool:
        """An NDRange of one work-item per output pixel, with no statistics argument."""
        return self.per_pixel or self.fast_pool

    @property
    def fast(self) -> bool:
        return bool(self.ndrange or self.pixel_kernel)


@dataclass
class Program:
    source: str
    stages: list         # StageCode, in plan order

    def stage_at_line(self, line: int):
        for code in self.stages:
            if code.first_line <= line <= code.last_line:
                return code
        return None


# -------------------------------------------------------------------------------- value formats

READERS = {"F32": ("((w).value[l])", "((a)[i])"),   # (a word's value l, an on-chip array's value i) by format
           "F16": ("vload_half((l), (const half *)(w).value)", "vload_half((i), (ONCHIP const half *)(a))"),
           "FIXED": ("((int)(w).value[l])", "((int)(a)[i])")}


def value_macros(stage: Stage, port_in: Port, port_out: Port) -> dict:
    """How a stage reads its input values and writes its output values, by their formats."""
    fin, fout = port_in.fmt, port_out.fmt
    read = READERS[tag(fin)]
    write = {"F32": "((w).value[l] = (v))",
             "F16": "vstore_half_rte(fx_half_overflow((v), &saturated), (l), (half *)(w).value)",
             "FIXED": f"((w).value[l] = ({storage_type(fout)})(v))"}[tag(fout)]
    d = {"IN_ST": storage_type(fin), "IN_WORD": port_in.word, "OUT_WORD": port_out.word,
         "IN_VALUE": Function("w, l", read[0]), "IN_VALUE_AT": Function("a, i", read[1]), "OUT_SET": Function("w, l, v", write),
         "OUT_T": "int" if isinstance(fout, Fixed) else "float", "FIXED_COMPUTE": int(isinstance(fin, Fixed))}
    if isinstance(fout, Fixed):
        d.update(OUT_FRAC=fout.frac_bits, QMIN=f"({fout.qmin}L)", QMAX=f"({fout.qmax}L)",
                 FLOAT_TO_OUT=Function("v, saturated", "fx_quantize((v), OUT_FRAC, QMIN, QMAX, (saturated))"))
    else:
        d["FLOAT_TO_OUT"] = Function("v, saturated", "(v)")
    if isinstance(fin, Fixed):
        acc_frac = accumulator_frac(stage)
        d["ACC_FRAC"] = acc_frac
        if isinstance(fout, Fixed):
            rescaling_shift(stage, acc_frac, fout)
            d["CONVERT_OUT"] = Function("a, saturated", "((int)fx_requantize((a), ACC_FRAC - OUT_FRAC, QMIN, QMAX, (saturated)))")
        else:
            d["CONVERT_OUT"] = Function("a, saturated", "ldexp(convert_float(a), -(ACC_FRAC))")
    return d


def rescaling_shift(stage: Stage, from_frac: int, fout: Fixed) -> int:
    """The right shift (negative: left) from `from_frac` fractional bits to `fout`'s, refused past
    MAX_SHIFT as precision.requantize refuses it."""
    shift = from_frac - fout.frac_bits
    if abs(shift) > MAX_SHIFT:
        raise PrecisionError(f"{stage.layer.where}: rescaling from {from_frac} to {fout.frac_bits} fractional bits "
                             f"needs a {abs(shift)}-bit shift (at most {MAX_SHIFT}); choose closer formats")
    return shift


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
    if stage.kind == "eltwise":
        return kind(stage).shifts(stage)[0]
    if stage.kind == "relu" and not relu_passes(stage):
        return p.inputs.frac_bits + LEAKY_SLOPE_FRAC
    return p.inputs.frac_bits


def relu_passes(stage: Stage) -> bool:
    return stage.spec.negative_slope == 0 and stage.precision.outputs == stage.precision.inputs


def kind_macros(stage: Stage) -> dict:
    """The C types and arithmetic of each kind, by its formats."""
    p, fixed = stage.precision, isinstance(stage.precision.inputs, Fixed)
    if stage.kind == "conv":
        d = {"W_ST": storage_type(p.weights), "RELU_SLOPE": c_float(stage.relu_slope or 0.0),
             "RESULT_T": storage_type(p.outputs) if isinstance(p.outputs, Fixed) else "float"}
        if fixed:
            wide = max(p.weights.total_bits, p.inputs.total_bits) > 16
            d.update(COMPUTE_T="int", SUM_T="long", BIAS_T="long", WEIGHT_VALUE=Function("i", "weight_memory[i]"),
                     MULTIPLY=Function("w, x", f"((long)(({'long' if wide else 'int'})(w) * (x)))"))
        else:
            half = isinstance(p.weights, Half)
            d.update(COMPUTE_T="float", SUM_T="float", BIAS_T="float", MULTIPLY=Function("w, x", "((w) * (x))"),
                     WEIGHT_VALUE=Function("i", "vload_half((i), (ONCHIP const half *)weight_memory)") if half
                     else Function("i", "weight_memory[i]"))
        return d
    if stage.kind == "eltwise":
        if fixed != isinstance(p.sides[0], Fixed):
            raise PrecisionError(f"{stage.layer.where}: a sum adds two fixed-point operands or two float ones, "
                                 f"not {p.inputs} and {p.sides[0]}")
        if fixed:
            _, in_shift, side_shift = kind(stage).shifts(stage)
            widest = max(p.inputs.total_bits + in_shift, p.sides[0].total_bits + side_shift)
            if widest > ALIGNED_BITS:     # as fixed_reference.eltwise_sum refuses
                raise PrecisionError(f"{stage.layer.where}: adding {p.inputs} to {p.sides[0]} aligns an operand to "
                                     f"{widest} bits, past 64-bit arithmetic; choose closer formats")
        return {"RELU_SLOPE": c_float(stage.relu_slope or 0.0)}
    if stage.kind == "concat":
        return {}
    if stage.kind == "relu":
        if fixed:
            return {"RELU_PASS": int(relu_passes(stage)), "SLOPE_Q": f"({leaky_slope_constant(stage.spec.negative_slope)}L)"}
        return {"RELU_SLOPE": c_float(stage.spec.negative_slope)}
    if stage.kind == "pool":
        is_max = stage.spec.method == "MAX"
        if fixed:
            result = "CONVERT_OUT((r), &saturated)" if is_max else "CONVERT_OUT(fx_round_mean((r), divisor), &saturated)"
            return {"WINDOW_T": "long", "WINDOW_INIT": "LONG_MIN" if is_max else "0", "WINDOW_MAX": Function("a, b", "max((a), (b))"),
                    "WINDOW_TERM": Function("v", "(v)"), "WINDOW_RESULT": Function("r", result)}
        result = "FLOAT_TO_OUT((r), &saturated)" if is_max else "FLOAT_TO_OUT((r) / (float)divisor, &saturated)"
        return {"WINDOW_T": "float", "WINDOW_INIT": "(-FLT_MAX)" if is_max else "0.0f",
                "WINDOW_MAX": Function("a, b", "fmax((a), (b))"), "WINDOW_TERM": Function("v", "(v)"), "WINDOW_RESULT": Function("r", result)}
    # LRN: Caffe's within-channel LRN divides alpha by n^2 and ignores k
    s = stage.spec
    across = s.region == "ACROSS_CHANNELS"
    d = {"LRN_ALPHA": c_float(s.alpha), "LRN_BETA": c_float(s.beta), "LRN_K": c_float(s.k if across else 1.0),
         "SQUARE_T": "long" if fixed else "float", "WINDOW_T": "long" if fixed else "float", "WINDOW_INIT": "0",
         "WINDOW_TERM": Function("v", "((v) * (v))")}
    if fixed:
        d["WINDOW_RESULT"] = Function("r", "CONVERT_OUT(centre[l] * table_memory[fx_lrn_index(r)], &saturated)")
    else:
        d["WINDOW_RESULT"] = Function("r", "FLOAT_TO_OUT(centre[l] * LRN_INV_POW(LRN_K + (LRN_ALPHA / (LRN_N * LRN_N)) * (r)), "
                                           "&saturated)")
    d["LRN_INV_POW"] = inverse_power(s.beta)
    return d


# ---------------------------------------------------------------------------------------- ports

def input_ports(segment, stage, design) -> list:
    """A stage's inputs in the layer's order: channels from the stages of the segment writing them (named
    as the design names them), DDR buffers for the others; each in its own format, words as wide as
    the stage reads."""
    names = {(consumer.index, position): name for name, _, consumer, position in channels(segment)}
    formats = list(stage.precision.sides)
    formats.insert(stage.streamed, stage.precision.inputs)
    width = design.of(stage).width_in
    ports = []
    for position, (fmt, ddr) in enumerate(zip(formats, stage.from_ddr)):
        if ddr:
            name = f"mem_in_{stage.index}" if position == stage.streamed else f"mem_side_{stage.index}_{position}"
            ports.append(Port(name, fmt, width, False))
        else:
            producer = segment.producer(stage.inputs[position])
            ports.append(Port(names[(stage.index, position)], fmt, width, True, f"stage{producer.index}"))
    return ports


def output_ports(segment, stage, design) -> list:
    """Where a stage writes: a channel to each reader in its segment, and DDR where the segment writes
    its output (a sink)."""
    fmt, width = stage.precision.outputs, design.of(stage).width_out
    stream = f"stage{stage.index}"
    ports = [Port(name, fmt, width, True, stream) for name, producer, _, _ in channels(segment) if producer is stage]
    if stage.output in segment.sinks:
        ports.append(Port(f"mem_out_{stage.index}", fmt, width, False, stream))
    return ports


def concat_copy(code: StageCode) -> Function:
    """COPY_WORD(j, out) of a concat stage: word j of a pixel's words is the next word of the input it
    falls in (the layer's order), each value converted to the output format as
    fixed_reference.concat_channels does -- nothing where the formats agree."""
    stage = code.stage
    ports = list(code.sides)
    ports.insert(stage.streamed, code.source_in)
    out_fmt, branches, end = stage.precision.outputs, [], 0
    for port, words in zip(ports, kind(stage).words_per_pixel(stage, code.source_in.width)):
        end += words
        value = READERS[tag(port.fmt)][0].replace("(w)", "(in)")
        if port.fmt == out_fmt:
            converted = value
        elif isinstance(port.fmt, Fixed) and isinstance(out_fmt, Fixed):
            shift = rescaling_shift(stage, port.fmt.frac_bits, out_fmt)
            converted = f"fx_requantize({value}, {shift}, QMIN, QMAX, &saturated)"
        elif isinstance(port.fmt, Fixed):
            converted = f"ldexp(convert_float({value}), -({port.fmt.frac_bits}))"
        else:
            converted = f"FLOAT_TO_OUT({value}, &saturated)"
        branches.append(f"if ((j) < {end}) {{ const {port.word} in = {port.read()}; "
                        f"UNROLL for (int l = 0; l < WIDTH; l++) OUT_SET((out), l, {converted}); }}")
    return Function("j, out", " else ".join(branches))


def fpga_stage(code: StageCode, design) -> tuple:
    """(constants, template text) of a stage on the FPGA templates."""
    stage = code.stage
    sd = design.of(stage)
    module = kind(stage)
    constants = dict(module.constants(stage, sd, design.schedule(stage)))
    constants.update(value_macros(stage, code.source_in, code.outs[0]))
    constants.update(kind_macros(stage))
    template = kernel_text(module.template(stage, sd))
    if stage.kind == "conv":
        template = kernel_text("conv_math.cl") + "\n" + template
    params = " ".join([code.source_in.param("IN"), *(port.param("OUT") for port in code.outs),
                       *(port.param("IN") for port in code.sides)])
    if stage.kind == "eltwise":
        side = code.sides[0]
        constants.update(SIDE_WORD=side.word, READ_SIDE=Function("", side.read()),
                         SIDE_VALUE=Function("w, l", READERS[tag(side.fmt)][0]))
    if stage.kind == "concat":
        constants["COPY_WORD"] = concat_copy(code)
    # a forked stream: every word written to each reader's channel (and DDR) in the same iteration
    constants.update(STAGE_PARAMS=params, READ_IN=Function("", code.source_in.read()),
                     WRITE_OUT=Function("w", "(" + ", ".join(port.write() for port in code.outs) + ")"))
    return constants, template


def fast_stage(code: StageCode) -> tuple:
    """(constants, template text) of a stage on a fast NDRange kernel."""
    stage = code.stage
    if stage.kind == "conv" and fast.uses_winograd(stage):
        constants = fast.winograd_constants(stage)
        code.ndrange = (constants["VO"], constants["OPW"] // constants["VO"], constants["R"])
        code.winograd = (constants["TH"] * constants["TW"], constants["R"], constants["WA"] ** 2)
        return constants, kernel_text("winograd_fast.cl")
    if stage.kind == "conv":
        constants = fast.fast_constants(stage)
        code.ndrange = (constants["VO"], constants["OPW"] // constants["VO"], fast.FAST_ROWS)
        return constants, kernel_text("conv_fast.cl")
    constants = fast.stage_constants(stage)
    if code.per_pixel:
        constants["LRN_INV_POW"] = inverse_power(stage.spec.beta)
        return constants, kernel_text("lrn_fast.cl")
    return constants, kernel_text("pool_fast.cl")


def generate(plan: Plan, design, inject: dict = None, variant: str = "fpga") -> Program:
    """One OpenCL source for every device stage of `plan`, as `design` sizes them.

    variant "fpga": every stage the single work-item kernel aoc would get.  "fast" (for CPUs and
    GPUs, only with emulated channels): float convolutions, float pooling and LRN across channels
    become the NDRange kernels of cnnfpga.fast, and a kernel lays a segment's float input out as a
    stream (layout_fast.cl); the design's words are then 8 values throughout.

    inject: {stage index: text} puts extra text into that stage's part of the source (tests use it
    to break a stage on purpose).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    lines = [f"/* Generated by cnnfpga.codegen from the net '{plan.graph.name}'. */",
             f"#define FX_LRN_MANTISSA_BITS {LRN_MANTISSA_BITS}"]
    for header in HEADERS:
        lines += kernel_text(header).splitlines()
    if variant == "fast":
        lines += kernel_text("layout_fast.cl").splitlines()
    codes = []
    for segment in plan.segments:
        for stage in segment.stages:
            inputs = input_ports(segment, stage, design)
            code = StageCode(stage, f"stage{stage.index}_{identifier(stage.name)}", inputs[stage.streamed],
                             output_ports(segment, stage, design), 0, 0,
                             inputs[:stage.streamed] + inputs[stage.streamed + 1:])
            if variant == "fast":
                code.per_pixel = fast.uses_fast_lrn(stage)
                code.fast_pool = fast.uses_fast_pool(stage)
                code.ndrange = (0, 0, 0) if fast.uses_fast_conv(stage) else None   # filled in by fast_stage
            codes.append(code)
    ports_seen = {}
    for code in codes:
        for port in code.ports:
            ports_seen.setdefault(port.name, port)
    lines += list(dict.fromkeys(port.typedef() for port in ports_seen.values()))
    lines += [f"CHANNEL({port.word}, {port.name}, {design.channel_depths[port.name]})"
              for port in ports_seen.values() if port.channel]
    for code in codes:
        stage = code.stage
        code.first_line = len(lines) + 1
        fused = f" + {', '.join(stage.fused)}" if stage.fused else ""
        lines.append(f"/* ---- stage {stage.index}: {stage.name} ({stage.layer.type}{fused}), "
                     f"{design.of(stage).describe()} ---- */")
        constants, template = fast_stage(code) if code.fast else fpga_stage(code, design)
        cursors = [port.cursor() for port in code.ports]
        constants.update(STAGE_KERNEL=code.kernel, SAT_SLOT=stage.index, STAGE_CURSORS=" ".join(cursors))
        lines += [define(name, value) for name, value in constants.items()]
        if inject and stage.index in inject:
            lines.append(inject[stage.index])
        lines += template.splitlines()
        lines += [f"#undef {name}" for name in constants]
        code.last_line = len(lines)
    return Program("\n".join(lines) + "\n", codes)


def program_sources(design) -> dict:
    """{file name: aoc source} of every program of `design`: design.cl, or design_p1.cl, design_p2.cl,
    ... for a partitioned design (one bitstream per partition)."""
    plans = design.partition_plans()
    if len(plans) == 1:
        return {"design.cl": generate(design.plan, design).source}
    return {f"design_p{k + 1}.cl": generate(plan, design).source for k, plan in enumerate(plans)}

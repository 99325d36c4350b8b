"""Convolution stages: parallelism, schedule, kernel constants, on-chip arrays, weight layout.

A conv stage computes CI input channels x CO output channels x F kernel positions per cycle
(F = 1, KW or KH x KW), for CI dividing the channels of a group and CO the outputs of a group.
Its weights either live on chip, loaded once per launch (kernels/window.cl, a line buffer of
input rows), or stream from DDR once per image while the whole input feature map is held on chip
(kernels/conv_ddr.cl, the seed white paper's way for layers whose weights do not fit).

Orders, shared by the kernels and the weight layout: an output pixel is NB = O / CO blocks; a block
is B = CB x KF steps, CB = CG / CI channel groups fastest, then KF = KH x KW / F position groups;
weights are stored [NB][KF][CB][F][CI][CO], the CO lanes of a step side by side.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..precision import Fixed, Float, Half, quantize, quantize_accumulator, round_half, storage_bits, storage_dtype
from .cost import (CONVERT_LOGIC, DDR_PORT_LOGIC, REQUANTIZE_LOGIC, STAGE_CONTROL_LOGIC, adder_logic, array_cost,
                   float_adds_cost, multiplier_cost, sum_bits, tree_adders)
from .stage import OnChip, Resources, Schedule, ceil_div, padded, power_of_two_at_least, refuse
from .window import WindowGeometry, window_schedule

ACC_DEPTH = 8   # partial sums of a float accumulation (kernels/conv_math.cl): covers a float adder's latency


@dataclass(frozen=True)
class ConvShape:
    n: int; c: int; h: int; w: int
    o: int; oh: int; ow: int
    kh: int; kw: int; sh: int; sw: int; ph: int; pw: int; dh: int; dw: int
    groups: int

    @property
    def cg(self) -> int:        # input channels of a group
        return self.c // self.groups

    @property
    def og(self) -> int:        # outputs of a group
        return self.o // self.groups

    @property
    def positions(self) -> int:
        return self.kh * self.kw

    @property
    def macs(self) -> int:      # per image
        return self.o * self.oh * self.ow * self.cg * self.positions


def shape(stage) -> ConvShape:
    n, c, h, w = stage.in_shape
    _, o, oh, ow = stage.out_shape
    s = stage.spec
    return ConvShape(n, c, h, w, o, oh, ow, s.kernel_h, s.kernel_w, s.stride_h, s.stride_w, s.pad_h, s.pad_w,
                     s.dilation_h, s.dilation_w, s.group)


def position_choices(cs: ConvShape) -> tuple:
    """F: one kernel position, a kernel row, or the whole kernel per step."""
    return tuple(sorted({1, cs.kw, cs.positions}))


def steps_per_block(cs: ConvShape, design) -> int:
    """B = (CG / CI) x (KH x KW / F)."""
    return (cs.cg // design.ci) * (cs.positions // design.f)


def split_output(design) -> bool:
    """A block's CO outputs leave as several narrower words (WOUT divides CO, WOUT < CO)."""
    return design.co % design.width_out == 0 and design.width_out < design.co


def check(stage, design) -> None:
    cs = shape(stage)
    if not design.ci > 0 or cs.cg % design.ci:
        refuse(stage, f"ci={design.ci} must divide the {cs.cg} input channels of a group")
    if not design.co > 0 or cs.og % design.co:
        refuse(stage, f"co={design.co} must divide the {cs.og} outputs of a group")
    if design.f not in position_choices(cs):
        refuse(stage, f"f={design.f} must be one of {position_choices(cs)} (1, a kernel row, the whole kernel)")
    if design.weights not in ("chip", "ddr"):
        refuse(stage, f"weights must be 'chip' or 'ddr', got {design.weights!r}")
    if design.width_in < 1 or design.width_out < 1 or design.load_width < 1:
        refuse(stage, "stream widths and the load width must be positive")
    if design.weights == "chip" and design.width_out % design.co and not split_output(design):
        refuse(stage, f"the output width {design.width_out} must be a multiple or a divisor of co={design.co}")
    if design.weights == "chip" and split_output(design) and design.co // design.width_out > steps_per_block(cs, design):
        refuse(stage, f"co={design.co} outputs leave as {design.co // design.width_out} words of {design.width_out}, "
                      f"more than the {steps_per_block(cs, design)} steps of a block: widen the output")


def schedule(stage, design) -> Schedule:
    cs = shape(stage)
    blocks = cs.o // design.co
    steps = steps_per_block(cs, design)
    words_in = padded(cs.c, design.width_in) // design.width_in
    words_out = padded(cs.o, design.width_out) // design.width_out
    if design.weights == "ddr":
        read = cs.h * cs.w * words_in
        block_load = ceil_div(steps * design.co * design.ci * design.f, design.load_width)
        block_steps = cs.oh * cs.ow * steps
        emit = cs.oh * cs.ow * words_out
        phases = ((read, read, 0),) + ((block_load + block_steps, 0, 0),) * blocks + ((emit, 0, emit),)
        return Schedule(ceil_div(cs.o, design.load_width), read + blocks * (block_load + block_steps) + emit,
                        phases=phases, passes=stage.passes)
    emit_len = design.co // design.width_out if split_output(design) else 1
    geometry = WindowGeometry(cs.h, cs.w, words_in, cs.oh, cs.ow, (cs.kh - 1) * cs.dh + 1, cs.sh, cs.ph)
    window = window_schedule(geometry, blocks * steps, emit_len)
    row_words = cs.ow * words_out
    phases = ((window.first_iters, window.first_rows * cs.w * words_in, 0),)
    phases += tuple((window.row_iters, rows * cs.w * words_in, row_words) for rows in window.reads)
    if window.emit_tail:
        phases += ((window.emit_tail, 0, 0),)
    return Schedule(ceil_div(cs.o * cs.cg * cs.positions, design.load_width), window.image_iters, window, phases,
                    stage.passes)


def template(stage, design) -> str:
    return "window.cl" if design.weights == "chip" else "conv_ddr.cl"


def constants(stage, design, sched: Schedule) -> dict:
    cs = shape(stage)
    steps = steps_per_block(cs, design)
    cif = design.ci * design.f
    d = dict(H=cs.h, W=cs.w, CPI=padded(cs.c, design.width_in), WIN=design.width_in,
             WPP_IN=padded(cs.c, design.width_in) // design.width_in,
             OH=cs.oh, OW=cs.ow, O=cs.o, CPO=padded(cs.o, design.width_out), WOUT=design.width_out,
             WPP_OUT=padded(cs.o, design.width_out) // design.width_out,
             KH=cs.kh, KW=cs.kw, SH=cs.sh, SW=cs.sw, PH=cs.ph, PW=cs.pw, DH=cs.dh, DW=cs.dw, CG=cs.cg,
             CI=design.ci, CO=design.co, F=design.f, CIF=cif, CIF_POW2=power_of_two_at_least(cif),
             CB=cs.cg // design.ci, B=steps, NB=cs.o // design.co, BLOCKS_PER_GROUP=cs.og // design.co,
             ACC_DEPTH=ACC_DEPTH, ACC_DEPTH_POW2=power_of_two_at_least(ACC_DEPTH), ACC_TERMS=min(steps, ACC_DEPTH),
             LOAD_WIDTH=design.load_width, FUSE_RELU=int(stage.relu_slope is not None), STAGE_CONV=1)
    if design.weights == "ddr":
        d.update(READ_ITERS=cs.h * cs.w * d["WPP_IN"], BLOCK_WEIGHTS=steps * design.co * cif,
                 BLOCK_LOAD_ITERS=ceil_div(steps * design.co * cif, design.load_width),
                 BLOCK_STEPS=cs.oh * cs.ow * steps, EMIT_ITERS=cs.oh * cs.ow * d["WPP_OUT"],
                 BIAS_LOAD_ITERS=sched.launch_iters)
        return d
    w = sched.window
    d.update(LB_ROWS=w.line_rows, FIRST_ROWS=w.first_rows, FIRST_ITERS=w.first_iters, ROW_ITERS=w.row_iters,
             IMAGE_ITERS=w.image_iters, SLOT_INIT=w.slot_init, SLOT_STEP=w.slot_step, NEXT_NEED=w.next_need,
             N_WEIGHTS=cs.o * cs.cg * cs.positions, LOAD_ITERS=sched.launch_iters,
             PENDING=max(design.co, design.width_out), EMIT_SPLIT=int(split_output(design)),
             STAGE_POOL=0, STAGE_LRN=0)
    return d


def fixed_compute(stage) -> bool:
    return isinstance(stage.precision.inputs, Fixed)


def result_bits(stage) -> int:
    """Bits of an output value held on chip before it leaves (DDR mode's results array)."""
    out = stage.precision.outputs
    return storage_bits(out) if isinstance(out, Fixed) else 32


def onchip(stage, design, sched: Schedule) -> list:
    cs = shape(stage)
    p = stage.precision
    in_bits, w_bits = storage_bits(p.inputs), storage_bits(p.weights)
    bias_bits = 64 if fixed_compute(stage) else 32
    cif = design.ci * design.f
    value_width = max(design.ci, design.width_in)
    weights_dtype, bias_dtype = str(storage_dtype(p.weights)), "int64" if fixed_compute(stage) else "float32"
    cpi = padded(cs.c, design.width_in)
    if design.weights == "ddr":
        steps = steps_per_block(cs, design)
        result_dtype = str(storage_dtype(p.outputs)) if isinstance(p.outputs, Fixed) else "float32"
        return [OnChip("weight_memory", w_bits, steps * design.co * cif, weights_dtype, design.co * cif),
                OnChip("bias_memory", bias_bits, cs.o, bias_dtype, design.co),
                OnChip("feature_map", in_bits, cs.h * cs.w * cpi, str(storage_dtype(p.inputs)), value_width,
                       copies=min(design.f, cs.kw), banks=cs.kh if design.f == cs.positions else 1),
                OnChip("results", result_bits(stage), cs.oh * cs.ow * padded(cs.o, design.width_out), result_dtype,
                       max(design.co, design.width_out))]
    # the line buffer: a copy per kernel column read at once, its rows in banks of their own when
    # every kernel row is read at once
    columns = min(design.f, cs.kw)
    rows = sched.window.line_rows if design.f == cs.positions and cs.kh > 1 else 1
    return [OnChip("weight_memory", w_bits, cs.o * cs.cg * cs.positions, weights_dtype, design.co * cif),
            OnChip("bias_memory", bias_bits, cs.o, bias_dtype, design.co),
            OnChip("line", in_bits, sched.window.line_rows * cs.w * cpi, str(storage_dtype(p.inputs)), value_width,
                   copies=columns, banks=rows)]


def weight_layout(stage, design) -> np.ndarray:
    """(O, CG, KH, KW) weights -> [NB][KF][CB][F][CI][CO], flat."""
    cs = shape(stage)
    w = np.asarray(stage.weights).reshape(cs.o, cs.cg, cs.positions)
    w = w.reshape(cs.o // design.co, design.co, cs.cg // design.ci, design.ci,
                  cs.positions // design.f, design.f)
    return np.ascontiguousarray(w.transpose(0, 4, 2, 5, 3, 1)).reshape(-1)


def arrays(stage, design) -> tuple:
    """([weights in their storage format, biases], weights that saturated)."""
    p = stage.precision
    weights = weight_layout(stage, design)
    if fixed_compute(stage):
        q, saturated = quantize(weights, p.weights)
        bias = quantize_accumulator(stage.bias, p.weights.frac_bits + p.inputs.frac_bits)
        return [q.astype(storage_dtype(p.weights)), bias.astype(np.int64)], saturated
    if isinstance(p.weights, Half):   # fp16 weights (their bits), float arithmetic
        return [round_half(weights).astype(np.float16).view(np.uint16),
                round_half(stage.bias).astype(np.float32)], 0
    return [weights.astype(np.float32), np.asarray(stage.bias, np.float32)], 0


def multiplier_bits(stage):
    """Operand bits of the stage's multiplies: the wider of weights and inputs; None for float."""
    p = stage.precision
    return max(p.weights.total_bits, p.inputs.total_bits) if fixed_compute(stage) else None


def resources(stage, design, sched: Schedule, board) -> Resources:
    """Multipliers: CI x CO x F.  DSP blocks by precision (cost.multiplier_cost); a float stage also
    spends hard-float blocks (or soft adders) on its accumulation: per output lane one adder for the
    shift register and ACC_TERMS to add up its partial sums and the bias at a block's end.  Logic:
    the adder trees of a fixed stage (CO x (CIF - 1) adders as wide as the sums), its 64-bit
    accumulators and output rounding, the stage's control and DDR ports.  RAM: the on-chip arrays
    (cost.array_cost).  DDR: every weight once per launch (on chip) or once per image (streamed)."""
    cs = shape(stage)
    p = stage.precision
    cif = design.ci * design.f
    multipliers = design.co * cif
    bits = multiplier_bits(stage)
    dsp, logic = multiplier_cost(board, multipliers, bits, design.logic_multipliers)
    if bits is None:
        add_dsp, add_logic = float_adds_cost(board, design.co * (1 + min(steps_per_block(cs, design), ACC_DEPTH)))
        dsp, logic = dsp + add_dsp, logic + add_logic
    else:
        logic += adder_logic(board, sum_bits(2 * bits, cif), design.co * tree_adders(cif))
        logic += adder_logic(board, 64, design.co)
    out = p.outputs
    lane_logic = REQUANTIZE_LOGIC if isinstance(p.inputs, Fixed) else CONVERT_LOGIC if out != Float() else 0
    logic += design.co * lane_logic + STAGE_CONTROL_LOGIC + 2 * DDR_PORT_LOGIC
    blocks = 0
    detail = {}
    for array in onchip(stage, design, sched):
        array_blocks, array_logic = array_cost(board, array)
        blocks, logic = blocks + array_blocks, logic + array_logic
        detail[array.name] = {"ram_blocks": array_blocks, "logic": array_logic}
    # every pass of a stage reloading its weights loads (or streams) its own share of them
    weight_bytes = stage.passes * cs.o * cs.cg * cs.positions * storage_bits(p.weights) // 8
    bias_bytes = stage.passes * cs.o * (8 if fixed_compute(stage) else 4)
    per_image, per_launch = (weight_bytes, bias_bytes) if design.weights == "ddr" else (0, weight_bytes + bias_bytes)
    return Resources(multipliers, dsp, blocks, logic, per_image, per_launch, detail)

"""Sum stages (kernels/eltwise.cl): an Eltwise SUM of two blobs, one streamed in, the other (the
stage's side blob, ResNet's shortcut) a word at a time alongside it -- from a channel where the
segment writes it (a forked stream), else from DDR."""
from __future__ import annotations

from ..precision import Fixed
from . import relu
from .cost import DDR_PORT_LOGIC, REQUANTIZE_LOGIC, STAGE_CONTROL_LOGIC, adder_logic, float_adds_cost
from .pool import lane_conversion_logic
from .stage import Resources, Schedule, refuse_unless_as_wide, side_bytes, side_ports


def check(stage, design) -> None:
    refuse_unless_as_wide(stage, design, "a sum stage")


def schedule(stage, design) -> Schedule:
    """A word of each operand in and a word out per iteration, as a ReLU stage."""
    return relu.schedule(stage, design)


def template(stage, design) -> str:
    return "eltwise.cl"


def shifts(stage) -> tuple:
    """Fixed point: (fractional bits of the exact sum, left shift of the streamed operand, of the side
    operand) -- both aligned to the finer of their two formats, as fixed_reference.eltwise_sum."""
    p = stage.precision
    frac = max(p.inputs.frac_bits, p.sides[0].frac_bits)
    return frac, frac - p.inputs.frac_bits, frac - p.sides[0].frac_bits


def constants(stage, design, sched: Schedule) -> dict:
    values = dict(IMAGE_ITERS=sched.image_iters, WIDTH=design.width_in, FUSE_RELU=int(stage.relu_slope is not None))
    if isinstance(stage.precision.inputs, Fixed):
        _, values["IN_SHIFT"], values["SIDE_SHIFT"] = shifts(stage)
    return values


def onchip(stage, design, sched: Schedule) -> list:
    return []


def arrays(stage, design) -> tuple:
    return [], 0


def resources(stage, design, sched: Schedule, board) -> Resources:
    """Per lane an adder (fixed point: of the aligned operands; float: an fp32 add) and the output
    conversion (fixed point: rounding and saturating the sum); the side blob's DDR port and traffic
    where it comes from DDR;
    the stage's control."""
    lanes, p = design.width_in, stage.precision
    logic, dsp = STAGE_CONTROL_LOGIC + side_ports(stage) * DDR_PORT_LOGIC, 0
    if isinstance(p.inputs, Fixed):
        _, in_shift, side_shift = shifts(stage)
        bits = max(p.inputs.total_bits + in_shift, p.sides[0].total_bits + side_shift) + 1
        logic += adder_logic(board, bits, lanes) + lanes * REQUANTIZE_LOGIC
    else:
        dsp, add_logic = float_adds_cost(board, lanes)
        logic += add_logic + lanes * lane_conversion_logic(stage)
    return Resources(0, dsp, 0, logic, ddr_bytes_per_image=side_bytes(stage, design))

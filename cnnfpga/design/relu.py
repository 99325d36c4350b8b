"""ReLU stages of their own (kernels/relu.cl): a word in and a word out per iteration."""
from __future__ import annotations

from ..precision import Fixed
from .cost import REQUANTIZE_LOGIC, STAGE_CONTROL_LOGIC, adder_logic, multiplier_cost
from .pool import lane_conversion_logic
from .stage import Resources, Schedule, padded, refuse_unless_as_wide


def check(stage, design) -> None:
    refuse_unless_as_wide(stage, design, "a ReLU stage")


def schedule(stage, design) -> Schedule:
    _, c, h, w = stage.in_shape
    row_words = w * padded(c, design.width_in) // design.width_in
    return Schedule(0, h * row_words, phases=((row_words, row_words, row_words),) * h)


def template(stage, design) -> str:
    return "relu.cl"


def constants(stage, design, sched: Schedule) -> dict:
    return dict(IMAGE_ITERS=sched.image_iters, WIDTH=design.width_in)


def onchip(stage, design, sched: Schedule) -> list:
    return []


def arrays(stage, design) -> tuple:
    return [], 0


def resources(stage, design, sched: Schedule, board) -> Resources:
    """Per lane: a comparison, and for a leaky ReLU a multiply by the slope (a fixed-point one
    followed by rounding); the output conversion; the stage's control."""
    lanes, fmt = design.width_in, stage.precision.inputs
    bits = fmt.total_bits if isinstance(fmt, Fixed) else 32
    logic = STAGE_CONTROL_LOGIC + lanes * (adder_logic(board, bits) + lane_conversion_logic(stage))
    dsp = 0
    if stage.spec.negative_slope != 0:
        dsp, multiply_logic = multiplier_cost(board, lanes, max(bits, 17) if isinstance(fmt, Fixed) else None)
        logic += multiply_logic + (lanes * REQUANTIZE_LOGIC if isinstance(fmt, Fixed) else 0)
    return Resources(lanes if stage.spec.negative_slope != 0 else 0, dsp, 0, logic)

"""Concat stages (kernels/concat.cl): blobs joined along the channels, one streamed in, the others
(the stage's `sides`, an inception or fire module's other branches) through ports of their own:
channels from the stages of the segment writing them, or DDR.

Each pixel's output is the words of every input in the layer's order, so one word never holds
channels of two inputs: the width divides the channels of every input but the last (whose last
word is padded, as any blob's).  An input whose format is not the output's is converted on the way
(fixed point: round and saturate; float or half: the output format's store), as the golden model's
``concat_channels``; where the producers already write the output's format it is a copy.
"""
from __future__ import annotations

from ..precision import Fixed, storage_bits
from .cost import CONVERT_LOGIC, DDR_PORT_LOGIC, REQUANTIZE_LOGIC, STAGE_CONTROL_LOGIC
from .stage import Resources, Schedule, padded, refuse, refuse_unless_as_wide, side_bytes, side_ports

MUX_BITS_PER_LOGIC = 4     # an input bit of a multiplexer per logic unit, about (a 6-input LUT: a 4:1 mux)


def input_channels(stage) -> list:
    """Each input's channel count, in the layer's order."""
    return [shape[1] for shape in stage.layer.in_shapes]


def input_formats(stage) -> list:
    """Each input's format, in the layer's order (precision keeps the streamed one first)."""
    formats = list(stage.precision.sides)
    formats.insert(stage.streamed, stage.precision.inputs)
    return formats


def words_per_pixel(stage, width: int) -> list:
    """Words of each input per pixel, in the layer's order."""
    return [padded(c, width) // width for c in input_channels(stage)]


def check(stage, design) -> None:
    refuse_unless_as_wide(stage, design, "a concat stage")
    uneven = [c for c in input_channels(stage)[:-1] if c % design.width_in]
    if uneven:
        refuse(stage, f"a concat's words hold one input's channels each: the width {design.width_in} must divide "
                      f"the channels of every input but the last ({', '.join(map(str, input_channels(stage)[:-1]))})")


def schedule(stage, design) -> Schedule:
    """A word of one input in and a word out per iteration: every input's words of a pixel in turn."""
    _, _, h, w = stage.out_shape
    row_iters = w * sum(words_per_pixel(stage, design.width_in))
    row_reads = w * words_per_pixel(stage, design.width_in)[stage.streamed]
    return Schedule(0, h * row_iters, phases=((row_iters, row_reads, row_iters),) * h)


def template(stage, design) -> str:
    return "concat.cl"


def constants(stage, design, sched: Schedule) -> dict:
    return dict(IMAGE_ITERS=sched.image_iters, PIXEL_ITERS=sum(words_per_pixel(stage, design.width_in)),
                WIDTH=design.width_in)


def onchip(stage, design, sched: Schedule) -> list:
    return []


def arrays(stage, design) -> tuple:
    return [], 0


def resources(stage, design, sched: Schedule, board) -> Resources:
    """Per lane and per input in another format than the output, its conversion (fixed point: a
    requantiser; float: a quantiser or fp16 rounding); a DDR port per other input read from DDR; the
    multiplexer choosing the input (a logic unit per MUX_BITS_PER_LOGIC bits of the inputs' words);
    the stage's control."""
    lanes, out = design.width_in, stage.precision.outputs
    conversions = sum(REQUANTIZE_LOGIC if isinstance(fmt, Fixed) and isinstance(out, Fixed) else CONVERT_LOGIC
                      for fmt in input_formats(stage) if fmt != out)
    bits = storage_bits(out)
    logic = STAGE_CONTROL_LOGIC + side_ports(stage) * DDR_PORT_LOGIC + lanes * conversions + \
        lanes * bits * len(input_channels(stage)) // MUX_BITS_PER_LOGIC
    return Resources(0, 0, 0, logic, ddr_bytes_per_image=side_bytes(stage, design))

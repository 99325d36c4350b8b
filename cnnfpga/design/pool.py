"""Pooling stages (kernels/window.cl): a line buffer of input rows; a step is one window column (KH
rows) of one input word (its WIDTH channels) of an output pixel, so an output pixel takes KW steps
per input word, and a stage's width is its only parallelism (WOUT = WIN)."""
from __future__ import annotations

from ..precision import Fixed, storage_bits, storage_dtype
from .cost import (CONVERT_LOGIC, FIXED_DIVIDE_LOGIC, FLOAT_DIVIDE_LOGIC, REQUANTIZE_LOGIC, STAGE_CONTROL_LOGIC,
                   adder_logic, array_cost, float_adds_cost, sum_bits, tree_adders)
from .stage import OnChip, Resources, Schedule, padded, refuse_unless_as_wide
from .window import WindowGeometry, window_schedule


def words_per_pixel(stage, design) -> int:
    return padded(stage.in_shape[1], design.width_in) // design.width_in


def check(stage, design) -> None:
    refuse_unless_as_wide(stage, design, "a pooling stage")


def schedule(stage, design) -> Schedule:
    _, c, h, w = stage.in_shape
    _, _, oh, ow = stage.out_shape
    s = stage.spec
    words = words_per_pixel(stage, design)
    window = window_schedule(WindowGeometry(h, w, words, oh, ow, s.kernel_h, s.stride_h, s.pad_h),
                             words * s.kernel_w, 0)
    phases = ((window.first_iters, window.first_rows * w * words, 0),)
    phases += tuple((window.row_iters, rows * w * words, ow * words) for rows in window.reads)
    return Schedule(0, window.image_iters, window, phases)


def template(stage, design) -> str:
    return "window.cl"


def window_constants(stage, design, window) -> dict:
    """The constants of window.cl's pooling and LRN sections (also used by lrn.py)."""
    _, c, h, w = stage.in_shape
    _, _, oh, ow = stage.out_shape
    return dict(H=h, W=w, CPI=padded(c, design.width_in), WIN=design.width_in, WPP_IN=words_per_pixel(stage, design),
                OH=oh, OW=ow, WOUT=design.width_out, LB_ROWS=window.line_rows, FIRST_ROWS=window.first_rows,
                FIRST_ITERS=window.first_iters, ROW_ITERS=window.row_iters, IMAGE_ITERS=window.image_iters,
                SLOT_INIT=window.slot_init, SLOT_STEP=window.slot_step, NEXT_NEED=window.next_need, STAGE_CONV=0)


def constants(stage, design, sched: Schedule) -> dict:
    s = stage.spec
    d = window_constants(stage, design, sched.window)
    d.update(KH=s.kernel_h, KW=s.kernel_w, SH=s.stride_h, SW=s.stride_w, PH=s.pad_h, PW=s.pad_w,
             POOL_MAX=int(s.method == "MAX"), STAGE_POOL=1, STAGE_LRN=0)
    return d


def onchip(stage, design, sched: Schedule) -> list:
    _, c, _, w = stage.in_shape
    fmt = stage.precision.inputs
    return [OnChip("line", storage_bits(fmt), sched.window.line_rows * w * padded(c, design.width_in),
                   str(storage_dtype(fmt)), design.width_in, banks=sched.window.line_rows if stage.spec.kernel_h > 1 else 1)]


def arrays(stage, design) -> tuple:
    return [], 0


def lane_conversion_logic(stage) -> int:
    """Logic to turn one output value into the output format (none when it stays as computed)."""
    p = stage.precision
    if p.outputs == p.inputs:
        return 0
    return REQUANTIZE_LOGIC if isinstance(p.inputs, Fixed) else CONVERT_LOGIC


def resources(stage, design, sched: Schedule, board) -> Resources:
    """No multipliers.  Per lane (WIDTH lanes): KH comparators (MAX) or adders (AVE, plus a divider
    for the mean) over a window column and the running result, the output conversion; the line
    buffer (a bank per row); the stage's control."""
    s = stage.spec
    lanes, window = design.width_in, s.kernel_h + 1
    fmt = stage.precision.inputs
    bits = fmt.total_bits if isinstance(fmt, Fixed) else 32
    dsp, logic = 0, STAGE_CONTROL_LOGIC + lanes * lane_conversion_logic(stage)
    if s.method == "MAX" or isinstance(fmt, Fixed):
        logic += adder_logic(board, sum_bits(bits, window), lanes * tree_adders(window))
    else:
        dsp, add_logic = float_adds_cost(board, lanes * tree_adders(window))
        logic += add_logic
    if s.method != "MAX":
        logic += lanes * (FIXED_DIVIDE_LOGIC if isinstance(fmt, Fixed) else FLOAT_DIVIDE_LOGIC)
    blocks = 0
    for array in onchip(stage, design, sched):
        array_blocks, array_logic = array_cost(board, array)
        blocks, logic = blocks + array_blocks, logic + array_logic
    return Resources(0, dsp, blocks, logic)

"""LRN stages.  Across channels (kernels/lrn.cl): two pixels on chip, one read while the other is
written, so an image takes (H x W + 1) x WPP iterations.  Within a channel (kernels/window.cl): a
sliding window of LOCAL_SIZE x LOCAL_SIZE pixels around each one, a line buffer like pooling's.
Fixed point looks the factor up in a table held on chip (cnnfpga.device_constants), loaded once
per launch; only the entries the input format can reach are kept."""
from __future__ import annotations

from ..device_constants import lrn_factor_table, lrn_table_length
from ..precision import Fixed, storage_bits, storage_dtype
from .cost import (DDR_PORT_LOGIC, FLOAT_DIVIDE_LOGIC, FLOAT_SQRT_LOGIC, REQUANTIZE_LOGIC, STAGE_CONTROL_LOGIC,
                   TABLE_INDEX_LOGIC, adder_logic, array_cost, float_adds_cost, multiplier_cost, sum_bits, tree_adders)
from .pool import lane_conversion_logic, window_constants, words_per_pixel
from .stage import OnChip, Resources, Schedule, ceil_div, padded, refuse, refuse_unless_as_wide
from .window import WindowGeometry, window_schedule


def across(stage) -> bool:
    return stage.spec.region == "ACROSS_CHANNELS"


def table_length(stage) -> int:
    fmt = stage.precision.inputs
    return lrn_table_length(stage.spec, fmt) if isinstance(fmt, Fixed) else 0


def check(stage, design) -> None:
    refuse_unless_as_wide(stage, design, "an LRN stage")
    if design.load_width < 1:
        refuse(stage, f"the load width must be positive, got {design.load_width}")


def schedule(stage, design) -> Schedule:
    _, c, h, w = stage.in_shape
    words = words_per_pixel(stage, design)
    load = ceil_div(table_length(stage), design.load_width)
    if across(stage):
        # a pixel's words are read in one phase and written in the next
        phases = ((words, words, 0),) + ((words, words, words),) * (h * w - 1) + ((words, 0, words),)
        return Schedule(max(1, load), (h * w + 1) * words, phases=phases)
    n = stage.spec.local_size
    window = window_schedule(WindowGeometry(h, w, words, h, w, n, 1, (n - 1) // 2), words * n, 0)
    phases = ((window.first_iters, window.first_rows * w * words, 0),)
    phases += tuple((window.row_iters, rows * w * words, w * words) for rows in window.reads)
    return Schedule(load, window.image_iters, window, phases)


def template(stage, design) -> str:
    return "lrn.cl" if across(stage) else "window.cl"


def constants(stage, design, sched: Schedule) -> dict:
    s = stage.spec
    n = s.local_size
    lrn = dict(LRN_N=n, LRN_HALF=(n - 1) // 2, TABLE_LEN=table_length(stage), LOAD_WIDTH=design.load_width)
    if across(stage):
        _, c, h, w = stage.in_shape
        return dict(lrn, H=h, W=w, CPI=padded(c, design.width_in), WIDTH=design.width_in,
                    WPP=words_per_pixel(stage, design), IMAGE_ITERS=sched.image_iters, SETUP_ITERS=sched.launch_iters)
    d = window_constants(stage, design, sched.window)
    d.update(lrn, KH=n, KW=n, SH=1, SW=1, PH=(n - 1) // 2, PW=(n - 1) // 2, LOAD_ITERS=sched.launch_iters,
             STAGE_POOL=0, STAGE_LRN=1)
    return d


def onchip(stage, design, sched: Schedule) -> list:
    _, c, _, w = stage.in_shape
    fmt = stage.precision.inputs
    bits, dtype = storage_bits(fmt), str(storage_dtype(fmt))
    cpi = padded(c, design.width_in)
    table = [OnChip("table_memory", 32, table_length(stage), "int32", 1, copies=ceil_div(design.width_in, 2))] \
        if isinstance(fmt, Fixed) else []
    if across(stage):
        half = (stage.spec.local_size - 1) // 2
        square_bits = 64 if isinstance(fmt, Fixed) else 32
        return table + [OnChip("pixels", bits, 2 * cpi, dtype, design.width_in),
                        OnChip("squares", square_bits, 2 * (cpi + 2 * half),
                               "int64" if isinstance(fmt, Fixed) else "float32", design.width_in)]
    return table + [OnChip("line", bits, sched.window.line_rows * w * cpi, dtype, design.width_in,
                           banks=sched.window.line_rows)]


def arrays(stage, design) -> tuple:
    fmt = stage.precision.inputs
    if not isinstance(fmt, Fixed):
        return [], 0
    return [lrn_factor_table(stage.spec, fmt)[:table_length(stage)]], 0


def resources(stage, design, sched: Schedule, board) -> Resources:
    """Per lane (WIDTH lanes): the squares (one per value across channels, one per window position
    within a channel), the window sum, and the factor -- a table lookup (index logic, the table on
    chip, a copy per two lanes: a RAM block reads two addresses per cycle) and a multiply in fixed
    point; in float alpha * sum + k, two square roots and a division (b^-0.75) and a multiply."""
    lanes, fmt = design.width_in, stage.precision.inputs
    n = stage.spec.local_size
    window = n if across(stage) else n + 1          # within: a column of n squares and the running sum
    squares = lanes if across(stage) else lanes * n
    logic = STAGE_CONTROL_LOGIC + lanes * lane_conversion_logic(stage)
    if isinstance(fmt, Fixed):
        square_dsp, square_logic = multiplier_cost(board, squares, fmt.total_bits)
        factor_dsp, factor_logic = multiplier_cost(board, lanes, max(fmt.total_bits, 17))
        dsp = square_dsp + factor_dsp
        logic += square_logic + factor_logic + DDR_PORT_LOGIC
        logic += adder_logic(board, sum_bits(2 * fmt.total_bits, window), lanes * tree_adders(window))
        logic += lanes * (TABLE_INDEX_LOGIC + REQUANTIZE_LOGIC)
        multipliers = squares + lanes
    else:
        multipliers = squares + 2 * lanes
        dsp, multiply_logic = multiplier_cost(board, multipliers, None)
        add_dsp, add_logic = float_adds_cost(board, lanes * window)
        dsp += add_dsp
        logic += multiply_logic + add_logic + lanes * (2 * FLOAT_SQRT_LOGIC + FLOAT_DIVIDE_LOGIC)
    blocks = 0
    for array in onchip(stage, design, sched):
        array_blocks, array_logic = array_cost(board, array)
        blocks, logic = blocks + array_blocks, logic + array_logic
    return Resources(multipliers, dsp, blocks, logic, 0, table_length(stage) * 4)

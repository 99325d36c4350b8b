"""What the parts of a device stage cost on a board: plain functions, each testable by hand.

Exact, given the design and the board file: multipliers per cycle, DSP blocks by precision (one
hard-float block per fp32 multiply-add on Arria 10 / Stratix 10, two 16-bit multiplies per block,
...: cnnfpga.design.boards), RAM blocks of every on-chip array and channel FIFO with the board's
block configurations, DDR bytes per image and per launch.

Estimated, with the documented constants below (orders of magnitude; only aoc's report can say):
logic.  Where a memory goes is a rule, also stated here: a memory of at most ram.max_register_bits
is registers; any other takes RAM blocks or, where that is the smaller share of the board, small
memories built in logic (MLABs, LUT RAM; memory_cost).  A memory read at several addresses in one cycle is replicated (`copies`:
one per kernel column) and split into banks (`banks`: one per row) -- aoc's choice, modelled.
"""
from __future__ import annotations

import math

from .boards import dsp_blocks, logic_multiplier_cost, ram_blocks, register_bits, small_memory_logic
from .stage import OnChip, ceil_div

# logic units (ALM on Intel boards, LUT on Xilinx) -- estimates, not measurements
STAGE_CONTROL_LOGIC = 1500   # one stage kernel: loop counters, phase control, its channel interfaces
DDR_PORT_LOGIC = 1000        # one global-memory load or store site (a wide load-store unit)
REQUANTIZE_LOGIC = 80        # round, shift and saturate one fixed-point output value
CONVERT_LOGIC = 150          # a float quantised to fixed point, or rounded to fp16, per value
SOFT_FLOAT_ADD_LOGIC = 400   # an fp32 adder in logic (every fp32 add without hard floating point)
FLOAT_SQRT_LOGIC = 500       # an fp32 square root
FLOAT_DIVIDE_LOGIC = 800     # an fp32 division
FIXED_DIVIDE_LOGIC = 1200    # a 64-bit integer division (a fixed-point average's rounded mean)
TABLE_INDEX_LOGIC = 100      # an LRN table index: a 64-bit leading-zero count and shift


def adder_bits_per_logic(board) -> int:
    """Bits of an adder one logic unit builds: an ALM's two full adders; a LUT's carry chain, one."""
    return 2 if board.logic.unit == "ALM" else 1


def registers_per_logic(board) -> int:
    """Flip-flops per logic unit: four per ALM, two per LUT (a slice: 4 LUTs, 8 flip-flops)."""
    return 4 if board.logic.unit == "ALM" else 2


def adder_logic(board, bits: int, count: int = 1) -> int:
    """`count` integer adders of `bits` bits."""
    return count * ceil_div(bits, adder_bits_per_logic(board))


def memory_cost(board, width_bits: int, depth: int) -> tuple:
    """(RAM blocks, logic units) of one memory of `depth` words of `width_bits` bits: registers if
    tiny; else RAM blocks in the board's best configuration, or small memories in logic (MLABs, LUT
    RAM: stacked ram.small_memory deep) where that takes a smaller share of the board's logic than
    the blocks would of its RAM -- a shallow, wide memory (a highly parallel layer's weights) wastes
    most of every RAM block."""
    if width_bits * depth == 0:
        return 0, 0
    if register_bits(board, width_bits, depth):
        return 0, ceil_div(width_bits * depth, registers_per_logic(board))
    blocks = ram_blocks(board, width_bits, depth)
    small_depth = board.ram.small_memory[0]
    logic = small_memory_logic(board, width_bits, min(depth, small_depth)) * ceil_div(depth, small_depth)
    if logic / board.logic.count < blocks / board.ram.blocks:
        return 0, logic
    return blocks, 0


def array_cost(board, array: OnChip) -> tuple:
    """(RAM blocks, logic units) of an on-chip array: each bank a memory of `width` values per word,
    every bank replicated `copies` times."""
    depth = ceil_div(array.count, array.width * array.banks)
    blocks, logic = memory_cost(board, array.width * array.bits, depth)
    return blocks * array.banks * array.copies, logic * array.banks * array.copies


def multiplier_cost(board, multipliers: int, bits, in_logic: bool = False) -> tuple:
    """(DSP blocks, logic units) of `multipliers` multiplies of `bits`-bit operands (None: fp32
    multiply-adds, with the soft logic a board without hard floating point needs around them).
    in_logic: build narrow ones (<= dsp.logic_multiplier_max_bits) in logic instead."""
    if bits is not None and in_logic:
        per_multiplier = logic_multiplier_cost(board, bits)
        if per_multiplier is not None:
            return 0, multipliers * per_multiplier
    logic = multipliers * board.dsp.float_mac_logic if bits is None else 0
    return dsp_blocks(board, multipliers, bits), logic


def float_adds_cost(board, adds: int) -> tuple:
    """(DSP blocks, logic units) of `adds` fp32 additions: a hard-float block each where there is
    hard floating point (dsp.float_mac_logic == 0), soft adders in logic elsewhere."""
    if board.dsp.float_mac_logic == 0:
        return dsp_blocks(board, adds, None), 0
    return 0, adds * SOFT_FLOAT_ADD_LOGIC


def tree_adders(inputs: int) -> int:
    """Adders of a balanced tree summing `inputs` values."""
    return max(0, inputs - 1)


def sum_bits(value_bits: int, terms: int) -> int:
    """Bits of an exact sum of `terms` values of `value_bits` bits."""
    return value_bits + max(0, math.ceil(math.log2(terms))) if terms > 1 else value_bits

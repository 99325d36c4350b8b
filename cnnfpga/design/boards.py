"""Boards as data, and the resource primitives of the hardware model.

One JSON file per board (``boards/<name>.json``) gives the device's logic, DSP and RAM resources, how a
DSP block and a RAM block can be configured, the clock to assume and the board's external bandwidths;
its "notes" give the source of every figure and state every assumption. ``load_board`` reads a bundled
board by name or a user's file by path and checks every field, so the cost functions below can trust it.

Units: logic in the device's own unit (ALM on Intel, LUT on Xilinx), RAM in blocks of the device's
kind (M20K, M10K, BRAM18), DSP in blocks (a variable-precision block, a DSP48E1 slice).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Union

from cnnfpga.errors import DesignError, refuse_special_file

BOARDS_DIR = Path(__file__).resolve().parent / "boards"


@dataclass(frozen=True)
class Logic:
    unit: str    # "ALM" or "LUT"
    count: int


@dataclass(frozen=True)
class Dsp:
    unit: str
    blocks: int
    fixed: tuple[tuple[int, float], ...]     # (max operand bits, multipliers per block), bits ascending
    float: float                             # fp32 multiplies per block (whole multiply-adds with hard float)
    float_mac_logic: int                     # logic units per fp32 multiply-add without hard float
    logic_multiplier_max_bits: int           # multiplies this narrow may be built in logic instead
    logic_per_multiplier: tuple[tuple[int, int], ...]   # (operand bits, logic units), bits ascending


@dataclass(frozen=True)
class Ram:
    unit: str
    blocks: int
    bits_per_block: int
    configs: tuple[tuple[int, int], ...]     # (width bits, depth words)
    max_register_bits: int                   # memories this small go to registers/MLABs, not RAM blocks
    small_memory: tuple[int, int, int]       # (depth, width bits, logic units): shallow memories in logic (MLAB, LUTRAM)


@dataclass(frozen=True)
class Board:
    name: str
    device: str
    board: str
    logic: Logic
    dsp: Dsp
    ram: Ram
    fmax_mhz: float
    ddr_gbs: float
    link_gbs: float            # 0: no board-to-board link
    link_latency_us: float
    reconfiguration_s: float
    notes: tuple[str, ...]
    path: Path                 # the file it was loaded from


def board_names() -> list[str]:
    """The bundled boards' names (their file names without .json), sorted."""
    return sorted(path.stem for path in BOARDS_DIR.glob("*.json"))


def load_board(name_or_path: Union[str, os.PathLike]) -> Board:
    """A bundled board by name (``"arria10_gx1150"``) or a user's board file by path."""
    text = os.fspath(name_or_path)
    if text in board_names():
        path = BOARDS_DIR / f"{text}.json"
    elif text.endswith(".json") or os.sep in text or "/" in text or Path(text).exists():
        path = Path(text)
    else:
        raise DesignError(f"unknown board {text!r}; bundled boards: {', '.join(board_names())} "
                          f"(or give the path of a board JSON file)")
    refuse_special_file(path, DesignError, "a board JSON file")
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DesignError(f"{path}: no such board file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DesignError(f"{path}: cannot read board file: {error}") from None
    try:
        data = json.loads(source)
    except json.JSONDecodeError as error:
        raise DesignError(f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}") from None
    return _board_from_json(data, path)


def ram_blocks(board: Board, width_bits: int, depth: int) -> int:
    """RAM blocks for a memory of ``depth`` words of ``width_bits`` bits.

    blocks = min over the board's configurations (w, d) of ceil(width_bits / w) * ceil(depth / d);
    0 when width_bits or depth is 0, and 0 when width_bits * depth <= ram.max_register_bits (the memory
    is built in registers/MLABs instead: see ``register_bits``). Each memory gets whole blocks of one
    configuration; packing two memories into one block is not modelled.
    """
    _check_size(width_bits, depth)
    if width_bits * depth == 0 or register_bits(board, width_bits, depth):
        return 0
    return min(math.ceil(width_bits / width) * math.ceil(depth / words) for width, words in board.ram.configs)


def register_bits(board: Board, width_bits: int, depth: int) -> int:
    """Bits of a ``depth`` x ``width_bits`` memory built in registers/logic instead of RAM blocks:
    width_bits * depth when that is at most ram.max_register_bits, else 0."""
    _check_size(width_bits, depth)
    bits = width_bits * depth
    return bits if bits <= board.ram.max_register_bits else 0


def small_memory_logic(board: Board, width_bits: int, depth: int) -> int | None:
    """Logic units for a memory shallow enough to build in logic (MLABs, LUT RAM):
    ceil(width_bits / w) * ceil(depth / d) * logic for the board's small memory of d words x w bits,
    when depth <= d; None for deeper memories (they take RAM blocks)."""
    _check_size(width_bits, depth)
    small_depth, small_width, logic = board.ram.small_memory
    if depth > small_depth:
        return None
    return math.ceil(width_bits / small_width) * logic if width_bits * depth else 0


def multipliers_per_block(board: Board, bits: int | None) -> float:
    """Multipliers one DSP block provides for ``bits``-bit operands; ``bits=None`` means fp32.

    fp32: dsp.float. Fixed point: the first row (max_bits, per_block) of dsp.fixed with bits <= max_bits;
    a multiply wider than the last row is refused.
    """
    if bits is None:
        return board.dsp.float
    _check_bits(bits)
    for max_bits, per_block in board.dsp.fixed:
        if bits <= max_bits:
            return per_block
    raise DesignError(f"{board.name}: no DSP configuration multiplies {bits}-bit operands "
                      f"(the widest is {board.dsp.fixed[-1][0]} bits)")


def dsp_blocks(board: Board, multipliers: int, bits: int | None) -> int:
    """DSP blocks for ``multipliers`` multiplies of ``bits``-bit operands (None: fp32):
    ceil(multipliers / multipliers_per_block(board, bits))."""
    if isinstance(multipliers, bool) or not isinstance(multipliers, int) or multipliers < 0:
        raise DesignError(f"a multiplier count must be a non-negative integer, got {multipliers!r}")
    per_block = multipliers_per_block(board, bits)
    # exact arithmetic on the figure as written: a float quotient a hair above an integer would cost a block
    return math.ceil(Fraction(multipliers) / Fraction(str(per_block)))


def logic_multiplier_cost(board: Board, bits: int) -> int | None:
    """Logic units for one ``bits``-bit multiply built in logic: dsp.logic_per_multiplier at the smallest
    key >= bits; None when bits > dsp.logic_multiplier_max_bits (too wide to build in logic)."""
    _check_bits(bits)
    if bits > board.dsp.logic_multiplier_max_bits:
        return None
    # load_board checked that a key covers logic_multiplier_max_bits
    return next(cost for key, cost in board.dsp.logic_per_multiplier if key >= bits)


def float_mac_logic(board: Board) -> int:
    """Logic units per fp32 multiply-add besides its DSP blocks (0 with hard floating point)."""
    return board.dsp.float_mac_logic


def _check_size(width_bits: int, depth: int) -> None:
    for what, value in (("width", width_bits), ("depth", depth)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DesignError(f"a memory {what} must be a non-negative integer, got {value!r}")


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or bits < 1:
        raise DesignError(f"operand bits must be a positive integer (or None for fp32), got {bits!r}")


_TOP_FIELDS = ("name", "device", "board", "logic", "dsp", "ram", "fmax_mhz", "ddr_gbs", "link_gbs",
               "link_latency_us", "reconfiguration_s")
_LOGIC_FIELDS = ("unit", "count")
_DSP_FIELDS = ("unit", "blocks", "fixed", "float", "float_mac_logic", "logic_multiplier_max_bits",
               "logic_per_multiplier")
_RAM_FIELDS = ("unit", "blocks", "bits_per_block", "configs", "max_register_bits", "small_memory")


def _board_from_json(data, path: Path) -> Board:
    """Checks every field of a parsed board file; each error names the file and the field."""

    def fail(field: str, wanted: str, value) -> None:
        raise DesignError(f"{path}: field '{field}' must be {wanted}, got {json.dumps(value)}")

    def section(value, field: str, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, dict):
            fail(field or "(top level)", "a JSON object", value)
        prefix = f"{field}." if field else ""
        for key in value:
            if key not in keys + optional:
                raise DesignError(f"{path}: unknown field '{prefix}{key}' (expected: {', '.join(keys + optional)})")
        for key in keys:
            if key not in value:
                raise DesignError(f"{path}: missing field '{prefix}{key}'")
        return value

    def text(value, field: str) -> str:
        if not isinstance(value, str) or not value.strip():
            fail(field, "a non-empty string", value)
        return value

    def integer(value, field: str, least: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            fail(field, "a positive integer" if least > 0 else "a non-negative integer", value)
        return value

    def number(value, field: str, positive: bool) -> float:
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or value < 0 or (positive and value == 0)):
            fail(field, "a positive number" if positive else "a non-negative number", value)
        return float(value)

    def pair(value, field: str, wanted: str) -> list:
        if not isinstance(value, list) or len(value) != 2:
            fail(field, wanted, value)
        return value

    top = section(data, "", _TOP_FIELDS, optional=("notes",))
    logic = section(top["logic"], "logic", _LOGIC_FIELDS)
    dsp = section(top["dsp"], "dsp", _DSP_FIELDS)
    ram = section(top["ram"], "ram", _RAM_FIELDS)

    if not isinstance(dsp["fixed"], list) or not dsp["fixed"]:
        fail("dsp.fixed", "a non-empty list of [max bits, multipliers per block]", dsp["fixed"])
    fixed = []
    for i, row in enumerate(dsp["fixed"]):
        max_bits, per_block = pair(row, f"dsp.fixed[{i}]", "[max bits, multipliers per block]")
        fixed.append((integer(max_bits, f"dsp.fixed[{i}][0]", 1), number(per_block, f"dsp.fixed[{i}][1]", True)))
        if i and fixed[i][0] <= fixed[i - 1][0]:
            fail("dsp.fixed", "in ascending order of max bits", dsp["fixed"])

    max_logic_bits = integer(dsp["logic_multiplier_max_bits"], "dsp.logic_multiplier_max_bits", 0)
    costs = dsp["logic_per_multiplier"]
    if not isinstance(costs, dict):
        fail("dsp.logic_per_multiplier", 'an object {"operand bits": logic units}', costs)
    logic_costs = []
    for key, cost in costs.items():
        if not (key.isascii() and key.isdigit()) or int(key) < 1:
            fail("dsp.logic_per_multiplier", "keyed by operand bits (positive integers)", costs)
        logic_costs.append((int(key), integer(cost, f"dsp.logic_per_multiplier.{key}", 1)))
    logic_costs.sort()
    if max_logic_bits and (not logic_costs or logic_costs[-1][0] < max_logic_bits):
        fail("dsp.logic_per_multiplier", f"a cost for {max_logic_bits}-bit multiplies "
             f"(dsp.logic_multiplier_max_bits) or wider", costs)

    bits_per_block = integer(ram["bits_per_block"], "ram.bits_per_block", 1)
    if not isinstance(ram["configs"], list) or not ram["configs"]:
        fail("ram.configs", "a non-empty list of [width, depth]", ram["configs"])
    configs = []
    for i, row in enumerate(ram["configs"]):
        width, depth = pair(row, f"ram.configs[{i}]", "[width, depth]")
        configs.append((integer(width, f"ram.configs[{i}][0]", 1), integer(depth, f"ram.configs[{i}][1]", 1)))
        if width * depth > bits_per_block:
            fail(f"ram.configs[{i}]", f"at most ram.bits_per_block = {bits_per_block} bits", row)

    small = section(ram["small_memory"], "ram.small_memory", ("depth", "width", "logic"))
    small_memory = (integer(small["depth"], "ram.small_memory.depth", 1),
                    integer(small["width"], "ram.small_memory.width", 1),
                    integer(small["logic"], "ram.small_memory.logic", 1))

    notes = top.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(note, str) for note in notes):
        fail("notes", "a list of strings", notes)

    return Board(
        name=text(top["name"], "name"),
        device=text(top["device"], "device"),
        board=text(top["board"], "board"),
        logic=Logic(unit=text(logic["unit"], "logic.unit"), count=integer(logic["count"], "logic.count", 1)),
        dsp=Dsp(unit=text(dsp["unit"], "dsp.unit"),
                blocks=integer(dsp["blocks"], "dsp.blocks", 1),
                fixed=tuple(fixed),
                float=number(dsp["float"], "dsp.float", True),
                float_mac_logic=integer(dsp["float_mac_logic"], "dsp.float_mac_logic", 0),
                logic_multiplier_max_bits=max_logic_bits,
                logic_per_multiplier=tuple(logic_costs)),
        ram=Ram(unit=text(ram["unit"], "ram.unit"),
                blocks=integer(ram["blocks"], "ram.blocks", 1),
                bits_per_block=bits_per_block,
                configs=tuple(configs),
                max_register_bits=integer(ram["max_register_bits"], "ram.max_register_bits", 0),
                small_memory=small_memory),
        fmax_mhz=number(top["fmax_mhz"], "fmax_mhz", True),
        ddr_gbs=number(top["ddr_gbs"], "ddr_gbs", True),
        link_gbs=number(top["link_gbs"], "link_gbs", False),
        link_latency_us=number(top["link_latency_us"], "link_latency_us", False),
        reconfiguration_s=number(top["reconfiguration_s"], "reconfiguration_s", False),
        notes=tuple(notes),
        path=path,
    )

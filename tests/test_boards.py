"""Board files and the resource primitives of the hardware model, checked against hand-computed figures."""
import json
from pathlib import Path

import pytest

from cnnfpga.design.boards import (BOARDS_DIR, Board, board_names, dsp_blocks, float_mac_logic, load_board,
                                   logic_multiplier_cost, multipliers_per_block, ram_blocks, register_bits)
from cnnfpga.errors import CnnfpgaError, DesignError

M20K_CONFIGS = ((40, 512), (20, 1024), (10, 2048), (5, 4096), (2, 8192), (1, 16384))

# (logic, RAM blocks, DSP blocks) as fpga_reference.md lists them
REFERENCE = {
    "arria10_gx1150": (("ALM", 427_200), ("M20K", 2_713), ("DSP block", 1_518)),
    "stratix10_gx2800": (("ALM", 933_120), ("M20K", 11_721), ("DSP block", 5_760)),
    "stratixv_gxa7": (("ALM", 234_720), ("M20K", 2_560), ("DSP block", 256)),
    "cyclonev_sea5": (("ALM", 32_070), ("M10K", 397), ("DSP block", 87)),
    "zc706": (("LUT", 218_600), ("BRAM18", 1_090), ("DSP48E1", 900)),
}


def test_bundled_names():
    assert board_names() == sorted(REFERENCE)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_bundled_board_matches_reference(name):
    board = load_board(name)
    (logic_unit, logic), (ram_unit, ram), (dsp_unit, dsp) = REFERENCE[name]
    assert isinstance(board, Board) and board.name == name and board.path == BOARDS_DIR / f"{name}.json"
    assert (board.logic.unit, board.logic.count) == (logic_unit, logic)
    assert (board.ram.unit, board.ram.blocks) == (ram_unit, ram)
    assert (board.dsp.unit, board.dsp.blocks) == (dsp_unit, dsp)
    assert board.notes, "every board file states its sources and assumptions"
    # every configuration fits the block, and the widest one fills it (parity bits included)
    assert all(w * d <= board.ram.bits_per_block for w, d in board.ram.configs)
    assert max(w * d for w, d in board.ram.configs) == board.ram.bits_per_block
    # 32-bit fixed point (the widest cnnfpga supports) has a DSP row on every board
    assert board.dsp.fixed[-1][0] >= 32


def test_bundled_board_figures():
    a10, s10, sv, cv, zc = (load_board(n) for n in
                            ("arria10_gx1150", "stratix10_gx2800", "stratixv_gxa7", "cyclonev_sea5", "zc706"))
    # M20K and M10K: 20,480 / 10,240 bits; BRAM18: 18 Kbit with parity
    assert a10.ram.bits_per_block == s10.ram.bits_per_block == sv.ram.bits_per_block == 20_480
    assert a10.ram.configs == s10.ram.configs == sv.ram.configs == M20K_CONFIGS
    assert cv.ram.bits_per_block == 10_240
    assert cv.ram.configs == ((40, 256), (20, 512), (10, 1024), (5, 2048), (2, 4096), (1, 8192))
    assert zc.ram.bits_per_block == 18_432
    assert zc.ram.configs == ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384))
    # A10 / S10: 2 x 18x19 or 1 x 27x27 or one hard fp32 multiply-add per block
    assert a10.dsp.fixed[:2] == s10.dsp.fixed[:2] == ((18, 2), (27, 1))
    assert a10.dsp.float == s10.dsp.float == 1 and float_mac_logic(a10) == float_mac_logic(s10) == 0
    # Stratix V and Cyclone V: 3 x 9x9, 2 x 18x18, 1 x 27x27; fp32 needs soft logic
    assert sv.dsp.fixed[:3] == cv.dsp.fixed[:3] == ((9, 3), (18, 2), (27, 1))
    assert float_mac_logic(sv) > 0 and float_mac_logic(cv) > 0 and float_mac_logic(zc) > 0
    # ZC706: one 25x18 multiplier per DSP48E1
    assert zc.dsp.fixed[0] == (18, 1)
    # clocks: not above what published OpenCL designs reached (fpga_reference.md)
    assert (a10.fmax_mhz, s10.fmax_mhz, sv.fmax_mhz, cv.fmax_mhz, zc.fmax_mhz) == (230, 230, 200, 120, 125)
    # board memory and links ("Board memory, links and reconfiguration")
    assert (a10.ddr_gbs, s10.ddr_gbs, sv.ddr_gbs, cv.ddr_gbs, zc.ddr_gbs) == (34.1, 76.8, 25.6, 3.2, 8.5)
    assert a10.link_gbs == 5.0 and cv.link_gbs == 0 and zc.link_gbs == 1.25
    assert zc.reconfiguration_s == 0.08255 and a10.reconfiguration_s == 1.0


def test_board_files_keep_the_schema():
    keys = {"name", "device", "board", "logic", "dsp", "ram", "fmax_mhz", "ddr_gbs", "link_gbs",
            "link_latency_us", "reconfiguration_s", "notes"}
    for path in BOARDS_DIR.glob("*.json"):
        data = json.loads(path.read_text())
        assert set(data) == keys, path
        assert data["name"] == path.stem


def a10_data() -> dict:
    return json.loads((BOARDS_DIR / "arria10_gx1150.json").read_text())


def write(folder: Path, data, name="myboard.json") -> Path:
    path = folder / name
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))
    return path


def test_user_board_by_path(tmp_path):
    data = a10_data()
    data["name"], data["dsp"]["blocks"] = "half_a10", 759
    del data["notes"]                                  # optional in a user's file
    path = write(tmp_path, data)
    for given in (path, str(path)):
        board = load_board(given)
        assert board.name == "half_a10" and board.dsp.blocks == 759 and board.path == path
        assert board.notes == ()


def test_unknown_name_lists_bundled_boards():
    with pytest.raises(DesignError) as error:
        load_board("arria11")
    message = str(error.value)
    assert "'arria11'" in message and all(name in message for name in board_names())
    assert isinstance(error.value, CnnfpgaError)


def test_missing_file(tmp_path):
    with pytest.raises(DesignError, match="gone.json: no such board file"):
        load_board(tmp_path / "gone.json")


def test_json_syntax_error_names_file_and_line(tmp_path):
    text = json.dumps(a10_data(), indent=2).splitlines()
    text[3] = text[3].rstrip(",")                     # drop a comma: the error is on the next line
    path = write(tmp_path, "\n".join(text), "arria10.json")
    with pytest.raises(DesignError, match=r"arria10\.json: invalid JSON at line 5"):
        load_board(path)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["dsp"].update(blocks=-3), "field 'dsp.blocks' must be a positive integer, got -3"),
    (lambda d: d["dsp"].update(blocks=True), "field 'dsp.blocks' must be a positive integer, got true"),
    (lambda d: d["ram"].update(blocks=2.5), "field 'ram.blocks' must be a positive integer, got 2.5"),
    (lambda d: d["logic"].pop("count"), "missing field 'logic.count'"),
    (lambda d: d.pop("ddr_gbs"), "missing field 'ddr_gbs'"),
    (lambda d: d["dsp"].update(flaot=1), "unknown field 'dsp.flaot'"),
    (lambda d: d.update(name=""), "field 'name' must be a non-empty string"),
    (lambda d: d.update(fmax_mhz="fast"), "field 'fmax_mhz' must be a positive number"),
    (lambda d: d.update(link_gbs=-1), "field 'link_gbs' must be a non-negative number"),
    (lambda d: d["dsp"].update(fixed=[[27, 1], [18, 2]]), "field 'dsp.fixed' must be in ascending order"),
    (lambda d: d["dsp"].update(fixed=[[18, 2, 1]]), r"field 'dsp.fixed\[0\]' must be \[max bits"),
    (lambda d: d["dsp"].update(fixed=[]), "field 'dsp.fixed' must be a non-empty list"),
    (lambda d: d["dsp"].update(logic_per_multiplier={"8": 40}), "field 'dsp.logic_per_multiplier' must be a cost "
                                                                "for 10-bit multiplies"),
    (lambda d: d["dsp"].update(logic_per_multiplier={"x": 40}), "'dsp.logic_per_multiplier' must be keyed by"),
    (lambda d: d["ram"].update(configs=[[40, 1024]]), r"field 'ram.configs\[0\]' must be at most ram.bits_per_block"),
    (lambda d: d["ram"].update(configs="40x512"), "field 'ram.configs' must be a non-empty list"),
    (lambda d: d.update(notes="see paper"), "field 'notes' must be a list of strings"),
    (lambda d: d.update(dsp=[]), "field 'dsp' must be a JSON object"),
])
def test_bad_field_names_file_and_field(tmp_path, change, message):
    data = a10_data()
    change(data)
    path = write(tmp_path, data, "arria10.json")
    with pytest.raises(DesignError, match=message) as error:
        load_board(path)
    assert str(error.value).startswith(f"{path}: ")


def test_top_level_must_be_an_object(tmp_path):
    with pytest.raises(DesignError, match=r"field '\(top level\)' must be a JSON object, got \[\]"):
        load_board(write(tmp_path, "[]"))


def test_ram_blocks_by_hand():
    a10 = load_board("arria10_gx1150")
    # 40x512: an exact fit takes one block; one bit more needs a second block side by side
    assert ram_blocks(a10, 40, 512) == 1
    assert ram_blocks(a10, 41, 512) == 2
    # 20 bits x 1024 words: one block in the 20x1024 configuration
    assert ram_blocks(a10, 20, 1024) == 1
    # line buffer of 3 rows x 224 pixels x 64 channels of 16 bits, as 16 bits x 43,008 words:
    #   40x512:   ceil(16/40)=1 * ceil(43008/512)=84    = 84
    #   20x1024:  ceil(16/20)=1 * ceil(43008/1024)=42   = 42   <- best (tie with 10x2048)
    #   10x2048:  ceil(16/10)=2 * ceil(43008/2048)=21   = 42
    #   5x4096:   ceil(16/5)=4  * ceil(43008/4096)=11   = 44
    #   2x8192:   8 * 6 = 48;  1x16384: 16 * 3 = 48
    # (688,128 bits would be 33.6 blocks if the bits packed perfectly)
    assert ram_blocks(a10, 16, 3 * 224 * 64) == 42
    # 9216 bits x 768 words: 40x512 -> 231 * 2 = 462; 20x1024 -> 461 * 1 = 461; 10x2048 -> 922
    assert ram_blocks(a10, 9216, 768) == 461
    # on M10K (Cyclone V) the same line buffer: 20x512 -> 1 * 84; 10x1024 -> 2 * 42 = 84; 5x2048 -> 4 * 21 = 84
    assert ram_blocks(load_board("cyclonev_sea5"), 16, 3 * 224 * 64) == 84
    # on BRAM18 (ZC706): 18x1024 -> 1 * 42 = 42; 36x512 -> 84; 9x2048 -> 2 * 21 = 42
    assert ram_blocks(load_board("zc706"), 16, 3 * 224 * 64) == 42


def test_small_memories_go_to_registers():
    a10 = load_board("arria10_gx1150")
    assert a10.ram.max_register_bits == 640
    # 32 words x 20 bits = 640 bits: one MLAB's worth, no M20K
    assert ram_blocks(a10, 20, 32) == 0 and register_bits(a10, 20, 32) == 640
    # 21 bits x 32 words = 672 bits: over the limit, one M20K (40x512) and no register bits
    assert ram_blocks(a10, 21, 32) == 1 and register_bits(a10, 21, 32) == 0
    # a wide, shallow memory over the limit takes blocks side by side: 641 bits x 1 word = ceil(641 / 40)
    assert ram_blocks(a10, 641, 1) == 17
    # empty memories cost nothing at all
    assert ram_blocks(a10, 0, 4096) == ram_blocks(a10, 16, 0) == 0
    assert register_bits(a10, 0, 4096) == 0
    with pytest.raises(DesignError, match="depth must be a non-negative integer"):
        ram_blocks(a10, 16, -1)


def test_multipliers_per_block_by_precision():
    a10, cv, zc = load_board("arria10_gx1150"), load_board("cyclonev_sea5"), load_board("zc706")
    assert multipliers_per_block(a10, 16) == 2        # 18x19 mode
    assert multipliers_per_block(a10, 18) == 2
    assert multipliers_per_block(a10, 20) == 1        # 27x27 mode
    assert multipliers_per_block(a10, 8) == 2         # the table starts at 18 bits
    assert multipliers_per_block(a10, 32) == 0.5      # 36x36: two blocks
    assert multipliers_per_block(a10, None) == 1      # hard fp32
    assert multipliers_per_block(cv, 8) == 3          # the table starts at 9 bits: 3 x 9x9
    assert multipliers_per_block(cv, 9) == 3
    assert multipliers_per_block(cv, 10) == 2
    assert multipliers_per_block(zc, 16) == 1 and multipliers_per_block(zc, None) == 0.5
    with pytest.raises(DesignError, match="arria10_gx1150: no DSP configuration multiplies 37-bit operands"):
        multipliers_per_block(a10, 37)
    with pytest.raises(DesignError, match="operand bits must be a positive integer"):
        multipliers_per_block(a10, 0)


def test_dsp_blocks_by_precision():
    a10, cv, zc = load_board("arria10_gx1150"), load_board("cyclonev_sea5"), load_board("zc706")
    assert dsp_blocks(a10, 3036, 16) == 1518          # the whole device at 16 bits
    assert dsp_blocks(a10, 3037, 16) == 1519
    assert dsp_blocks(a10, 1518, None) == 1518        # fp32: one per block
    assert dsp_blocks(a10, 5, 20) == 5
    assert dsp_blocks(a10, 3, 32) == 6
    assert dsp_blocks(a10, 0, 16) == 0
    assert dsp_blocks(cv, 10, 8) == 4                 # ceil(10 / 3)
    assert dsp_blocks(cv, 9, 8) == 3
    assert dsp_blocks(zc, 7, None) == 14              # two DSP48E1 per fp32 multiply
    assert dsp_blocks(zc, 3, 25) == 6 and dsp_blocks(zc, 3, 32) == 12
    with pytest.raises(DesignError, match="non-negative integer"):
        dsp_blocks(a10, -1, 16)


def test_dsp_blocks_is_exact_for_fractional_rates(tmp_path):
    data = a10_data()
    data["dsp"]["fixed"] = [[18, 0.1]]               # 3 * (1 / 0.1) is 30.000000000000004 in floats
    board = load_board(write(tmp_path, data))
    assert dsp_blocks(board, 3, 16) == 30


def test_logic_multiplier_cost():
    a10, zc = load_board("arria10_gx1150"), load_board("zc706")
    assert logic_multiplier_cost(a10, 8) == 40
    assert logic_multiplier_cost(a10, 4) == 40        # smallest key >= 4 is 8
    assert logic_multiplier_cost(a10, 9) == 60        # smallest key >= 9 is 10
    assert logic_multiplier_cost(a10, 10) == 60
    assert logic_multiplier_cost(a10, 11) is None     # too wide for logic
    assert logic_multiplier_cost(zc, 8) == 64 and logic_multiplier_cost(zc, 16) is None

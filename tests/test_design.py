"""The hardware model: cost functions by hand-computed cases, the default design's checks, balancing
AlexNet for the bundled boards, the design command, and a design folder run through Net."""
import importlib.util
import json
import time

import numpy as np
import pytest

import cnnfpga
from cnnfpga.design import channel_depth, default_design
from cnnfpga.design.balance import balance
from cnnfpga.design.boards import load_board
from cnnfpga.design.cost import array_cost, memory_cost, multiplier_cost
from cnnfpga.design.model import evaluate, first_input_cycles
from cnnfpga.design.stage import OnChip, Schedule
from cnnfpga.design.window import WindowGeometry, window_schedule
from cnnfpga.errors import DesignError
from cnnfpga.precision import storage_bits
from cnnfpga.placement import place

from conftest import deepen_channels, filler_graph, require_emulator, run_design, shared_path

A10 = load_board("arria10_gx1150")


# ------------------------------------------------------------------------------ cost functions

def test_window_schedule_with_padding_by_hand():
    """3x3, stride 1, pad 1 on 5 rows of 4 pixels, 2 words per pixel, 3 steps per output pixel.
    Output row y needs input rows up to y + 1, i.e. y + 2 rows: the prologue reads 2 rows (16 words);
    rows 0-2 read one more row each; the line buffer holds at most 4 rows (row 2's window starts at row
    1 while row 4 is read).  A phase: max(4 pixels x 3 steps, 1 row x 8 words) = 12 iterations; the
    last output leaves one iteration after its step: 16 + 5 x 12 + 1 = 77."""
    s = window_schedule(WindowGeometry(5, 4, 2, 5, 4, 3, 1, 1), steps_per_pixel=3, emit_len=1)
    assert (s.first_rows, s.first_iters, s.line_rows) == (2, 16, 4)
    assert s.reads == (1, 1, 1, 0, 0)
    assert (s.row_steps, s.row_iters, s.emit_tail, s.image_iters) == (12, 12, 1, 77)
    assert (s.slot_init, s.slot_step, s.next_need) == (3, 1, 3)   # row -1 in slot 3 of 4; row 1 needs 3 rows


def test_window_schedule_with_stride_by_hand():
    """3x3, stride 2, no padding on 7 rows of 5 pixels, one word per pixel: 3 x 2 outputs.  Output row
    y needs 2y + 3 rows: the prologue reads 3 (15 words), then 2 rows per phase (10 words), which is
    more than computing a row (2 pixels x 4 steps = 8): reading limits it.  15 + 3 x 10 = 45."""
    s = window_schedule(WindowGeometry(7, 5, 1, 3, 2, 3, 2, 0), steps_per_pixel=4, emit_len=0)
    assert s.reads == (2, 2, 0) and s.line_rows == 5
    assert (s.row_steps, s.row_iters, s.emit_tail, s.image_iters) == (8, 10, 0, 45)


def test_line_buffer_ram_blocks_of_a_3x3_by_hand():
    """4 rows (3 + a row read ahead) of 224 pixels x 64 channels, 16-bit, read 16 channels at a time:
    a memory 256 bits wide and 57344 / 16 = 3584 deep.  M20K: 40x512 -> 7 x 7 = 49 blocks (20x1024:
    13 x 4 = 52).  A kernel row per step reads 3 columns: 3 copies, 147 blocks.  The whole kernel per
    step also reads 4 rows at once: 4 banks of 896 words, 20x1024 -> 13 blocks each, 3 x 4 x 13 = 156."""
    line = OnChip("line", 16, 4 * 224 * 64, "int16", width=16, copies=3)
    assert array_cost(A10, line) == (147, 0)
    assert array_cost(A10, OnChip("line", 16, 4 * 224 * 64, "int16", width=16, copies=3, banks=4)) == (156, 0)


def test_shallow_wide_memory_goes_to_mlabs():
    """8448 bits x 66 words (a parallel first layer's weights): 212 M20K (7.8% of the board's RAM) or
    ceil(8448 / 20) = 423 MLAB columns x 3 stacked (32 deep each) x 10 ALM = 12,690 ALM (3.0%)."""
    assert memory_cost(A10, 8448, 66) == (0, 12690)
    # deep: RAM blocks; 40x512: 212 x 8 = 1696, 20x1024: 423 x 4 = 1692, 10x2048: 845 x 2 = 1690
    assert memory_cost(A10, 8448, 4096) == (1690, 0)
    assert memory_cost(A10, 20, 32) == (0, 160)             # 640 bits: registers, 4 per ALM


def test_dsp_blocks_by_precision():
    assert multiplier_cost(A10, 100, 16) == (50, 0)         # two 18x19 per block
    assert multiplier_cost(A10, 100, 20) == (100, 0)        # one 27x27
    assert multiplier_cost(A10, 100, None) == (100, 0)      # hard float: a multiply-add per block
    assert multiplier_cost(A10, 100, 8, in_logic=True) == (0, 4000)   # 40 ALM per 8-bit multiply
    assert multiplier_cost(A10, 100, 16, in_logic=True) == (50, 0)    # too wide for logic: DSP anyway
    stratix_v = load_board("stratixv_gxa7")
    assert multiplier_cost(stratix_v, 100, None) == (100, 50000)      # no hard float: 500 ALM of soft logic each


def test_channel_depth_holds_a_burst_of_reads():
    consumer = Schedule(0, 0, phases=((30, 30, 0), (100, 12, 4), (100, 0, 4)))   # reads 12 then computes
    streaming = Schedule(0, 0, phases=((50, 50, 50),))                          # reads every iteration
    assert channel_depth(streaming, consumer) == 12
    assert channel_depth(consumer, streaming) == 8                              # MIN_CHANNEL_DEPTH


# -------------------------------------------------------------------------------- design checks

@pytest.fixture(scope="module")
def alexnet():
    return filler_graph(shared_path("models", "alexnet", "deploy.prototxt")).reshape({"data": (1, 3, 227, 227)})


def test_default_design_checks_parallelism_against_groups(alexnet):
    plan = place(alexnet)
    design = default_design(plan, {"conv2": (4, 2)})
    conv2 = next(s for s in plan.stages if s.name == "conv2")
    assert (design.of(conv2).ci, design.of(conv2).co) == (4, 2)
    with pytest.raises(DesignError, match="conv2.*ci=5 must divide the 48 input channels of a group"):
        default_design(plan, {"conv2": (5, 8)})
    with pytest.raises(DesignError, match="co=3 must divide the 128 outputs of a group"):
        default_design(plan, {"conv2": (4, 3)})
    with pytest.raises(DesignError, match="f=4 must be one of"):
        default_design(plan, {"conv2": (4, 2, 4)})
    with pytest.raises(DesignError, match="'conv9', which is not a device stage"):
        default_design(plan, {"conv9": (1, 1)})
    with pytest.raises(DesignError, match="unknown field 'lanes'"):
        default_design(plan, {"conv2": {"lanes": 4}})
    with pytest.raises(DesignError, match="multiple or a divisor of co=8"):
        default_design(plan, {"conv2": {"ci": 4, "co": 8, "width_out": 6}})


# ------------------------------------------------------------------------------------ balancing

def test_alexnet_balanced_for_arria10_fits_and_is_deterministic(alexnet):
    plan = place(alexnet, "fixed16", {blob: 8.0 for blob in alexnet.shapes})
    start = time.perf_counter()
    design = balance(plan, A10, batch=1, objective="latency")
    seconds = time.perf_counter() - start
    assert seconds < 30, f"designing AlexNet took {seconds:.1f} s"
    evaluation = evaluate(design, A10, 1)
    assert evaluation.fits(0.85), evaluation.utilisation()
    predicted = evaluation.predicted()
    assert predicted["latency_ms"] >= predicted["bound_ms"] and 0 < predicted["efficiency"] <= 1
    # balanced: every conv within 20% of the slowest stage
    slowest = max(cost.schedule.image_iters for cost in evaluation.stages)
    assert all(cost.schedule.image_iters > 0.8 * slowest for cost in evaluation.stages if cost.stage.kind == "conv")
    again = balance(plan, A10, batch=1, objective="latency")
    assert {i: d for i, d in again.stages.items()} == design.stages
    # weight loads by need: together within the DDR bandwidth, conv1 (needed at once) the widest, and
    # every later stage's load over before its producer writes its first word, so it delays nothing
    bytes_per_cycle = A10.ddr_gbs * 1e9 / (A10.fmax_mhz * 1e6)
    loading = [s for s in plan.stages if design.schedule(s).launch_iters]
    value_bytes = {s.index: storage_bits(s.precision.weights) / 8 if s.kind == "conv" else 4 for s in loading}
    assert sum(design.of(s).load_width * value_bytes[s.index] for s in loading) <= bytes_per_cycle
    conv1 = plan.stages[0]
    assert design.of(conv1).load_width == max(design.of(s).load_width for s in loading)
    first_input = first_input_cycles(design, plan.segments[0])
    assert all(design.schedule(s).launch_iters <= first_input[s.index] for s in loading if s is not conv1)


@pytest.mark.parametrize("board,binding", [("stratix10_gx2800", "dsp"), ("stratixv_gxa7", None)])
def test_alexnet_on_other_boards_names_its_binding_resource(alexnet, board, binding):
    plan = place(alexnet, "fixed16", {blob: 8.0 for blob in alexnet.shapes})
    chosen = load_board(board)
    evaluation = evaluate(balance(plan, chosen), chosen, 1)
    assert evaluation.fits(0.85)
    assert evaluation.binding() in ("dsp", "ram_blocks", "logic")
    if binding:
        assert evaluation.binding() == binding


def test_alexnet_does_not_fit_a_cyclone_v_and_says_by_how_much(alexnet):
    plan = place(alexnet, "fixed16", {blob: 8.0 for blob in alexnet.shapes})
    with pytest.raises(DesignError, match=r"does not fit on cyclonev_sea5.*M10K blocks.*allowed \(85% of 397\)"):
        balance(plan, load_board("cyclonev_sea5"))


# ------------------------------------------------------------------------------- the command

def test_design_command_writes_the_report_source_and_design_and_verifies(tmp_path):
    out = tmp_path / "lenet_a10"
    done = run_design("--net", "lenet.prototxt", "--board", "arria10_gx1150", "--precision", "fixed16",
                      "--out", str(out), "--verify")
    assert done.returncode == 0, done.stderr
    assert {"report.json", "report.txt", "design.cl", "design.json", "Makefile"} <= {p.name for p in out.iterdir()}
    report = json.loads((out / "report.json").read_text())
    for key in ("board", "precision", "objective", "batch", "fmax_mhz", "layers", "totals", "predicted"):
        assert key in report
    for key in ("interval_cycles", "latency_ms", "host_latency_ms", "end_to_end_latency_ms", "throughput_img_s",
                "gops", "efficiency"):
        assert key in report["predicted"]
    device_layers = [row for row in report["layers"] if row["location"] == "fpga" and row.get("cycles")]
    assert device_layers and all(row["measured_cycles"] == row["model_cycles"] for row in device_layers)
    assert all(k in row for row in report["layers"] for k in ("name", "type", "location", "parallelism", "cycles",
                                                              "dsp", "ram_blocks", "logic"))
    assert report["verified"]["ok"] and report["verified"]["cycles_equal"]
    assert "conv2" in done.stdout and "binding" in done.stdout
    assert "aoc" in (out / "Makefile").read_text()
    if importlib.util.find_spec("matplotlib"):   # installed with the test extra
        assert (out / "balance.png").stat().st_size > 1000
    assert "__attribute__((depth(" in (out / "design.cl").read_text() or "CHANNEL(" in (out / "design.cl").read_text()


def test_design_folder_runs_through_net_exactly(tmp_path):
    out = tmp_path / "cifar"
    done = run_design("--net", "cifar10_quick.prototxt", "--board", "arria10_gx1150", "--precision", "fixed16",
                      "--out", str(out))
    assert done.returncode == 0, done.stderr
    net = cnnfpga.Net("cifar10_quick.prototxt", backend="opencl", design=str(out))
    assert net.opencl_source() == (out / "design.cl").read_text()
    reference = cnnfpga.Net("cifar10_quick.prototxt")
    x = np.random.default_rng(0).uniform(0, 1, net.blobs["data"].data.shape).astype(np.float32)
    got, want = net.forward(data=x)["prob"], reference.forward(data=x)["prob"]
    assert (got.argmax(1) == want.argmax(1)).mean() > 0.9
    (out / "design.cl").write_text((out / "design.cl").read_text() + "\n/* edited */\n")
    with pytest.raises(DesignError, match="differs from the source"):
        cnnfpga.Net("cifar10_quick.prototxt", backend="opencl", design=str(out)).forward(data=x)
    with pytest.raises(cnnfpga.CnnfpgaError, match="fixes the precision"):
        cnnfpga.Net("cifar10_quick.prototxt", backend="opencl", design=str(out), precision="fixed8")


def test_design_command_errors_are_one_clear_line(tmp_path):
    done = run_design("--net", "lenet.prototxt", "--board", "no_such_board", "--out", str(tmp_path / "x"))
    assert done.returncode == 2 and "unknown board 'no_such_board'" in done.stderr and "Traceback" not in done.stderr
    done = run_design("--net", "alexnet.prototxt", "--board", "cyclonev_sea5", "--out", str(tmp_path / "y"))
    assert done.returncode == 2 and "does not fit on cyclonev_sea5" in done.stderr


# ------------------------------------------------------------- counted cycles equal the model

NETS = {"lenet": ("lenet", "lenet.prototxt"), "cifar10_quick": ("cifar10_quick", "cifar10_quick.prototxt"),
        "cifar10_full": ("cifar10_full", "cifar10_full.prototxt"), "alexnet": ("alexnet", "deploy.prototxt")}


@pytest.mark.parametrize("precision", ["float", "fixed16"])
@pytest.mark.parametrize("name", ["lenet", "cifar10_quick", "cifar10_full",
                                  pytest.param("alexnet", marks=pytest.mark.slow)])
def test_counted_cycles_equal_the_model_at_default_and_balanced_parallelism(name, precision):
    """Every stage counts the iterations of its loops on the OpenCL device (-D CNNFPGA_COUNT_CYCLES):
    they equal the model's cycles, stage by stage, for the default design and for the one balanced
    for an Arria 10 (odd parallelism: e.g. f = 121 or 25, co = 3), and the outputs are the golden
    model's (fixed point bit-exact)."""
    from cnnfpga.design.verify import verify
    from cnnfpga.precision import calibrate
    folder, prototxt = NETS[name]
    graph = filler_graph(shared_path("models", folder, prototxt))
    graph = graph.reshape({n: (1,) + tuple(s[1:]) for n, s in graph.inputs.items()})
    x = {n: np.random.default_rng(1).uniform(-1, 1, s).astype(np.float32) for n, s in graph.inputs.items()}
    plan = place(graph, precision, calibrate(graph, x) if precision != "float" else None)
    for design in (default_design(plan), balance(plan, A10)):
        checked = verify(graph, design)
        assert checked["cycles_equal"], (checked["measured_cycles"], checked["model_cycles"])
        assert checked["ok"], checked["outputs"]


# ---------------------------------------------------- balanced designs on Intel's FPGA emulator

@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Non-empty compiler output")   # the emulator's compiler chats
@pytest.mark.parametrize("name,precision", [("cifar10_quick", "fixed16"), ("cifar10_full", "fixed16"),
                                            ("cifar10_full", "float"), ("alexnet", "fixed16")])
def test_balanced_designs_run_on_the_fpga_emulator(name, precision):
    """The design balanced for an Arria 10, built from the real channel source by Intel's compiler and
    run by its emulator with every stage of a segment at once on blocking channels: the golden model's
    outputs (fixed point bit-exact, the same saturation counts), and every stage's counted loop
    iterations equal to the model's.  The CIFAR-10 designs keep their channel depths; AlexNet's
    channels are made an image deep, or its 12 stages, spinning while they wait on narrow streams,
    take the emulator 540 s per image (see conftest.deepen_channels).  AlexNet has no forks, so depth
    cannot change whether it runs, only how long its stages wait."""
    from cnnfpga.design.verify import verify
    from cnnfpga.precision import calibrate
    emulator = require_emulator()
    folder, prototxt = NETS[name]
    graph = filler_graph(shared_path("models", folder, prototxt))
    graph = graph.reshape({n: (1,) + tuple(s[1:]) for n, s in graph.inputs.items()})
    x = {n: np.random.default_rng(1).uniform(-1, 1, s).astype(np.float32) for n, s in graph.inputs.items()}
    plan = place(graph, precision, calibrate(graph, x) if precision != "float" else None)
    design = balance(plan, A10)
    if name == "alexnet":
        deepen_channels(design, 1)
    checked = verify(graph, design, device=emulator)
    assert "Emulation" in checked["device"]
    assert checked["ok"], checked["outputs"]
    assert checked["cycles_equal"], (checked["measured_cycles"], checked["model_cycles"])


def test_pareto_lists_the_designs_no_other_beats_and_writes_the_fastest(tmp_path):
    """Over several resource caps and both objectives: every listed design is beaten by no other in
    latency, throughput and board share, smaller caps give slower designs, and the written design (the
    lowest latency) runs through Net."""
    out = tmp_path / "pareto"
    done = run_design("--net", "cifar10_quick.prototxt", "--board", "arria10_gx1150", "--precision", "fixed16",
                      "--objective", "pareto", "--batch", "16", "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = json.loads((out / "report.json").read_text())["pareto"]
    assert len({row["max_util"] for row in rows}) >= 3 and "Pareto set" in done.stdout
    key = lambda row: (row["latency_ms"], -row["throughput_img_s"], row["utilisation"])
    for a in rows:
        assert not any(all(x <= y for x, y in zip(key(b), key(a))) and key(b) != key(a) for b in rows)
    assert [row["latency_ms"] for row in rows] == sorted(row["latency_ms"] for row in rows)
    assert rows[-1]["utilisation"] < rows[0]["utilisation"] and rows[-1]["throughput_img_s"] < rows[0]["throughput_img_s"]
    if importlib.util.find_spec("matplotlib"):
        assert (out / "pareto.png").stat().st_size > 1000
    net = cnnfpga.Net("cifar10_quick.prototxt", backend="opencl", design=str(out))
    assert net.forward(data=np.ones(net.blobs["data"].data.shape, np.float32))["prob"].shape[1] == 10

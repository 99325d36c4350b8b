"""Designs beyond one program (cnnfpga.design.partitions): cutting a plan, chains of boards over a
link, partitions on one board with reconfiguration, the break-even batch, the command's output, and
partitioned designs run on PoCL exactly as one program (fixed point bit-exact with the golden
model, counted cycles equal to the model)."""
import json
import time
from dataclasses import replace

import numpy as np
import pytest

import cnnfpga
from cnnfpga import bundled
from cnnfpga.design.balance import balance
from cnnfpga.design.boards import load_board
from cnnfpga.design.model import evaluate
from cnnfpga.design.pareto import explore
from cnnfpga.design import conv as conv_kind, default_design
from cnnfpga.design.partitions import (design_partitions, even_starts, fewest_starts, pays_from_batch,
                                       with_reloading)
from cnnfpga.codegen import program_sources
from cnnfpga.design.store import load_design, save_design
from cnnfpga.design.verify import verify
from cnnfpga.errors import DesignError
from cnnfpga.placement import cut_at, place, reload_filters
from cnnfpga.runtime import DeviceNet

from conftest import filler_graph, run_design

A10 = load_board("arria10_gx1150")


def one_image(name: str):
    """A bundled net (or a prototxt path) with filler weights, one image per batch."""
    graph = filler_graph(bundled.resolve(name))
    return graph.reshape({n: (1,) + tuple(shape[1:]) for n, shape in graph.inputs.items()})


@pytest.fixture(scope="module")
def alexnet_plan():
    return place(one_image("alexnet.prototxt"), "fixed16")


def test_cut_keeps_the_stages_and_adds_a_ddr_round_trip(alexnet_plan):
    plan = alexnet_plan
    conv3 = next(stage for stage in plan.stages if stage.name == "conv3")
    cut = cut_at(plan, [conv3.index])
    assert [s.index for s in cut.stages] == [s.index for s in plan.stages]
    assert len(cut.segments) == len(plan.segments) + 1
    first, second = cut.segments[0], cut.segments[1]
    assert first.stages[-1].name == "pool2" and second.stages[0].index == conv3.index and second.stages[0].from_ddr == (True,)
    assert first.sinks == second.sources and [cut.blob_names[key] for key in first.sinks] == ["pool2"]
    assert not first.cut and second.cut and cut.final_keys == plan.final_keys
    # an even cut of AlexNet's conv work: conv1+conv2 (329 M MACs) against conv3-5 (337 M), at the
    # smallest stream between them (pool2's output, not conv2's or norm2's)
    assert even_starts(plan, 2) == [conv3.index]


def test_a_chain_of_two_boards_halves_the_interval_and_respects_the_bounds(alexnet_plan):
    start = time.perf_counter()
    chain = design_partitions(alexnet_plan, A10, 2, fpgas=2, fmax_mhz=250)
    assert time.perf_counter() - start < 30
    single = balance(alexnet_plan, A10, fmax_mhz=250)
    one, two = evaluate(single, A10, 1, 250), evaluate(chain, A10, 1, 250)
    assert len(chain.partitions) == 2 and chain.fpgas == 2 and two.reconfigurations == 0
    # every board under the cap on its own; totals are the largest board's
    assert all(t.dsp <= 0.85 * A10.dsp.blocks and t.ram_blocks <= 0.85 * A10.ram.blocks
               for t in two.partition_totals)
    assert two.totals.dsp == max(t.dsp for t in two.partition_totals)
    p1, p2 = one.predicted(), two.predicted()
    assert p2["bound_ms"] == pytest.approx(p1["bound_ms"] / 2)
    assert p2["interval_cycles"] < 0.6 * p1["interval_cycles"]
    assert p2["latency_ms"] < p1["latency_ms"]
    interval_ms = p2["interval_cycles"] / 250e3
    assert p2["bound_ms"] <= interval_ms <= p2["latency_ms"]
    # the link carries pool2's 13x13x256 16-bit stream, and its latency is in the chain's latency
    conv3 = chain.plan.segments[1].stages[0]
    link = two.links[(conv3.index, 0)]
    assert link.latency == pytest.approx(A10.link_latency_us * 250)
    assert link.bytes_per_cycle == pytest.approx(A10.link_gbs * 1e3 / 250)


def test_a_slow_link_limits_the_chain(alexnet_plan):
    """At 0.05 GB/s (0.2 bytes per cycle at 250 MHz) pool2's 13 x 13 x 256 x 2 bytes take 432,640
    cycles: the link, not a stage, sets the interval."""
    slow = replace(A10, link_gbs=0.05)
    chain = design_partitions(alexnet_plan, slow, 2, fpgas=2, fmax_mhz=250)
    evaluation = evaluate(chain, slow, 1, 250)
    assert evaluation.interval_cycles >= 13 * 13 * 256 * 2 / 0.2
    assert evaluation.predicted()["latency_ms"] * 250e3 >= 13 * 13 * 256 * 2 / 0.2
    with pytest.raises(DesignError, match="no board-to-board link"):
        evaluate(chain, replace(A10, link_gbs=0.0), 1, 250)


def test_reconfiguration_is_charged_per_partition_and_pays_only_past_a_batch():
    """AlexNet on a Stratix V GXA7: each of two programs gets the board, so the time per image drops
    (the one program is short of RAM and DSP for both halves); two reconfigurations per batch pay off
    from the batch pays_from_batch names, and not one image earlier.  (Reconfiguration here takes 20 ms,
    not the board file's second, so that the batches stay small enough to run the model on.)"""
    board = replace(load_board("stratixv_gxa7"), reconfiguration_s=0.02)
    plan = place(one_image("alexnet.prototxt"), "fixed16")
    single = balance(plan, board, objective="throughput")
    split = design_partitions(plan, board, 2, fpgas=1, objective="throughput")
    evaluation = evaluate(split, board, 1)
    assert evaluation.reconfigurations == 2
    assert evaluation.fpga_seconds == pytest.approx(evaluation.fpga_cycles / (board.fmax_mhz * 1e6)
                                                    + 2 * board.reconfiguration_s)
    batch = pays_from_batch(single, split, board)
    assert batch > 1

    def per_image(design, b):
        return evaluate(design, board, b).fpga_seconds / b
    assert per_image(split, batch) < per_image(single, batch)
    assert per_image(split, batch - 1) >= per_image(single, batch - 1)
    # where the halves are not faster per image (AlexNet on an Arria 10 is DSP-bound), never
    a10_single = balance(plan, A10, objective="throughput")
    a10_split = design_partitions(plan, A10, 2, fpgas=1, objective="throughput")
    assert pays_from_batch(a10_single, a10_split, A10) == 0


def test_a_layer_that_fits_nowhere_is_named_with_the_resource_and_by_how_much():
    plan = place(one_image("vgg16.prototxt"), "fixed16")
    # conv1_2's line buffer alone (three 224-pixel rows of 64 channels, a copy per kernel column) is
    # more than a fifth of a Cyclone V's M10K blocks; reloading weights cannot shrink it
    with pytest.raises(DesignError, match=r"'conv1_2' alone does not fit.*on cyclonev_sea5.*needs 175 M10K blocks "
                                          r"where 79 are allowed \(20% of 397\), 2.2 times as many"):
        design_partitions(plan, load_board("cyclonev_sea5"), "auto", max_util=0.2)


# ------------------------------------------------------------------------------- weights reloading

def test_a_conv_too_large_alone_reloads_its_weights_in_the_fewest_passes_that_fit():
    """VGG16's conv2_2 on a Cyclone V needs 346 M10K blocks as one stage, 337 allowed: in two passes of
    64 filters it holds half the weights; its cycles, weight traffic and input reads double."""
    plan = place(one_image("vgg16.prototxt"), "fixed16")
    cyclone = load_board("cyclonev_sea5")
    reloaded = with_reloading(plan, cyclone, 0.85)
    passes = {stage.name: stage.passes for stage in reloaded.stages if stage.passes > 1}
    assert passes["conv2_2"] == 2 and "conv1_1" not in passes and "conv2_1" not in passes
    conv2_2 = next(stage for stage in reloaded.stages if stage.name == "conv2_2")
    assert conv2_2.out_shape == (1, 64, 112, 112) and conv2_2.weights.shape == (128, 128, 3, 3)
    segment = next(segment for segment in reloaded.segments if conv2_2 in segment.stages)
    assert segment.stages == [conv2_2]          # alone: it reads its input from DDR once per pass
    design = design_partitions(plan, cyclone, "auto")
    assert evaluate(design, cyclone, 1).fits(0.85)
    stage = next(stage for stage in design.plan.stages if stage.name == "conv2_2")
    schedule, passes = design.schedule(stage), stage.passes
    assert passes >= 2 and schedule.passes == passes and stage.out_shape[1] * passes == 128
    assert schedule.cycles(3) == passes * (schedule.launch_iters + 3 * schedule.image_iters)
    one_pass = replace(stage, passes=1)
    resources = conv_kind.resources(stage, design.of(stage), schedule, cyclone)
    single = conv_kind.resources(one_pass, design.of(stage), conv_kind.schedule(one_pass, design.of(stage)), cyclone)
    assert resources.ddr_bytes_per_launch + resources.ddr_bytes_per_image == \
        passes * (single.ddr_bytes_per_launch + single.ddr_bytes_per_image)
    assert resources.ram_blocks == single.ram_blocks


@pytest.mark.slow
def test_more_passes_save_programs_where_latency_counts_and_not_where_throughput_does():
    """Each reconfiguration costs a second: for one image, reloading convolutions take more passes to
    share programs with their neighbours; at a batch of 256 the reconfigurations are amortised and
    fewer passes (more programs) win."""
    plan = with_reloading(place(one_image("vgg16.prototxt"), "fixed16"), load_board("cyclonev_sea5"), 0.85)
    cyclone = load_board("cyclonev_sea5")
    packed, packed_starts = fewest_starts(plan, cyclone, 0.85, pack=True)
    _, starts = fewest_starts(plan, cyclone, 0.85)
    assert len(packed_starts) < len(starts)
    assert sum(s.passes for s in packed.stages) > sum(s.passes for s in plan.stages)
    latency = design_partitions(plan, cyclone, "auto")
    throughput = design_partitions(plan, cyclone, "auto", batch=256, objective="throughput")
    assert len(latency.partitions) < len(throughput.partitions)
    one, many = (evaluate(d, cyclone, b) for d, b in ((latency, 1), (throughput, 256)))
    assert one.fpga_seconds < evaluate(throughput, cyclone, 1).fpga_seconds
    assert many.fpga_seconds < evaluate(latency, cyclone, 256).fpga_seconds


def test_a_reloading_design_is_stored_and_loaded_as_it_was(tmp_path, vgg16_published):
    graph = one_image(str(vgg16_published))
    cyclone = load_board("cyclonev_sea5")
    design = design_partitions(place(graph, "fixed16"), cyclone, "auto")
    save_design(design, tmp_path, vgg16_published)
    loaded = load_design(tmp_path, graph)
    assert [(s.name, s.passes, s.out_shape) for s in loaded.plan.stages] == \
        [(s.name, s.passes, s.out_shape) for s in design.plan.stages]
    assert loaded.partitions == design.partitions and loaded.stages == design.stages
    assert program_sources(loaded) == program_sources(design)
    assert evaluate(loaded, cyclone, 1).predicted() == evaluate(design, cyclone, 1).predicted()


def test_a_chain_does_not_reload_weights():
    """A board of a chain holds its partition for good: a conv that fits no board alone is refused."""
    plan = place(one_image("vgg16.prototxt"), "fixed16")
    tight = replace(A10, ram=replace(A10.ram, blocks=400))   # conv4_2's weights need 2 passes
    assert {s.name: s.passes for s in with_reloading(plan, tight, 0.85).stages}["conv4_2"] == 2
    with pytest.raises(DesignError, match="'conv4_2' alone does not fit"):
        design_partitions(plan, tight, "auto", fpgas=8)


@pytest.mark.parametrize("net, precision, passes", [
    ("cifar10_quick.prototxt", "fixed16", {"conv2": 2, "conv3": 4}),
    ("cifar10_quick.prototxt", "float", {"conv1": 4}),
    ("lenet.prototxt", "fixed8", {"conv2": 5}),
])
def test_reloaded_convolutions_run_on_pocl_as_the_golden_model_with_the_model_cycles(net, precision, passes):
    graph = one_image(net)
    plan = place(graph, precision)
    for name, count in passes.items():
        plan = reload_filters(plan, next(s.index for s in plan.stages if s.name == name), count)
    # the streamed-weights kernel too, in passes
    checked = verify(graph, default_design(plan, {"conv2": {"ci": 4, "co": 2, "weights": "ddr"}}
                                           if precision == "fixed16" else None))
    assert checked["ok"], checked["outputs"]
    assert checked["cycles_equal"], checked["measured_cycles"]


def test_reloading_is_refused_where_it_cannot_apply(alexnet_plan):
    conv2 = next(s for s in alexnet_plan.stages if s.name == "conv2")     # two groups
    conv3 = next(s for s in alexnet_plan.stages if s.name == "conv3")     # 384 outputs
    with pytest.raises(ValueError, match="'conv2' cannot compute its filters in 2 passes"):
        reload_filters(alexnet_plan, conv2.index, 2)
    with pytest.raises(ValueError, match="'conv3' cannot compute its filters in 5 passes"):
        reload_filters(alexnet_plan, conv3.index, 5)


def test_a_chain_runs_on_pocl_exactly_as_one_program(alexnet_plan):
    graph = one_image("alexnet.prototxt")
    chain = design_partitions(alexnet_plan, A10, 2, fpgas=2, fmax_mhz=250)
    x = {"data": np.random.default_rng(0).uniform(-1, 1, (1, 3, 227, 227)).astype(np.float32)}
    net = DeviceNet(graph, design=chain, count_cycles=True)
    assert len(net.programs) == 2
    got = net.forward(x)
    want = DeviceNet(graph, design=balance(place(graph, "fixed16"), A10, fmax_mhz=250)).forward(x)
    assert all(np.array_equal(got[name], want[name]) for name in want)
    assert net.cycles() == {stage.name: chain.schedule(stage).cycles(1) for stage in chain.plan.stages}
    with pytest.raises(cnnfpga.CnnfpgaError, match="one bitstream each"):
        DeviceNet(graph, design=chain, bitstream="design.aocx")
    # each partition on its own device: PoCL twice is two contexts, as two boards would be
    pocl = net.device.platform.name
    two = DeviceNet(graph, design=chain, device=[pocl, pocl], count_cycles=True)
    assert len(two.places) == 2 and two.places[0].context.int_ptr != two.places[1].context.int_ptr
    assert {two.place_of[s.index] is two.places[k] for k, part in enumerate(chain.partitions) for s in
            chain.plan.stages if s.index in part} == {True}
    got_two = two.forward(x)
    assert all(np.array_equal(got_two[name], want[name]) for name in want)
    assert two.cycles() == net.cycles()
    with pytest.raises(cnnfpga.CnnfpgaError, match="3 devices given for a design of 2 partition"):
        DeviceNet(graph, design=chain, device=[pocl] * 3)
    # a stream: the devices work on successive images at once, results in order and as one at a time
    images = [{"data": np.random.default_rng(k).uniform(-1, 1, (1, 3, 227, 227)).astype(np.float32)}
              for k in range(4)]
    two.reset_counters()
    net.reset_counters()
    net.host_threads = 1     # a stream's inner products take one thread: the same sums in the same order
    streamed = list(two.forward_stream(images))
    assert len(streamed) == 4
    for got_k, image in zip(streamed, images):
        alone = net.forward(image)
        assert all(np.array_equal(got_k[name], alone[name]) for name in alone)
    assert two.cycles() == net.cycles()     # both counted the same four images


@pytest.mark.slow
def test_vgg16_partitioned_for_an_arria10_runs_bit_exact(vgg16_published):
    """VGG16 (as published) does not fit an Arria 10 as one program; in partitions it does, and it runs
    on PoCL bit-exact with the fixed-point golden model, every stage's counted cycles equal to the model."""
    graph = one_image(str(vgg16_published))
    plan = place(graph, "fixed16")
    with pytest.raises(DesignError, match="does not fit"):
        balance(plan, A10)
    start = time.perf_counter()
    design = design_partitions(plan, A10, "auto")
    assert time.perf_counter() - start < 120
    assert len(design.partitions) >= 2
    assert evaluate(design, A10, 1).fits(0.85)
    checked = verify(graph, design)
    assert checked["ok"], checked["outputs"]
    assert checked["cycles_equal"]


def test_design_command_writes_one_program_per_partition_and_net_runs_them(tmp_path):
    out = tmp_path / "cifar_p2"
    done = run_design("--net", "cifar10_quick.prototxt", "--board", "arria10_gx1150", "--precision", "fixed16",
                      "--partitions", "2", "--batch", "64", "--objective", "throughput", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert {"design_p1.cl", "design_p2.cl", "design.json", "Makefile"} <= {p.name for p in out.iterdir()}
    assert not (out / "design.cl").exists()
    makefile = (out / "Makefile").read_text()
    assert "design_p1.aocx: design_p1.cl" in makefile and "design_p2.aocx: design_p2.cl" in makefile
    report = json.loads((out / "report.json").read_text())
    assert len(report["partitions"]) == 2 and report["predicted"]["reconfigurations"] == 2
    # one segment of device stages, cut in two; the host runs the inner products and the softmax
    assert report["segments"] == 2 and report["host_layers"] == ["InnerProduct", "Softmax"]
    assert "2 device segment(s), each a round trip through DDR and the host; 3 host layer(s)" in done.stdout
    assert report["partitioning_pays_from_batch"] is not None
    assert "partitions: 2 programs in turn on one board" in done.stdout
    assert {row["partition"] for row in report["layers"] if "partition" in row} == {1, 2}
    net = cnnfpga.Net("cifar10_quick.prototxt", backend="opencl", design=str(out))
    assert set(net.opencl_sources()) == {"design_p1.cl", "design_p2.cl"}
    reference = cnnfpga.Net("cifar10_quick.prototxt", backend="opencl",
                            design=str(_one_program(tmp_path)))
    x = np.random.default_rng(1).uniform(0, 1, net.blobs["data"].data.shape).astype(np.float32)
    assert np.array_equal(net.forward(data=x)["prob"], reference.forward(data=x)["prob"])
    pocl = net.executor.device.platform.name
    on_two = cnnfpga.Net("cifar10_quick.prototxt", backend="opencl", design=str(out), device=[pocl, pocl])
    assert np.array_equal(on_two.forward(data=x)["prob"], reference.forward(data=x)["prob"])
    with pytest.raises(cnnfpga.CnnfpgaError, match="device= takes .* or a list of them"):
        cnnfpga.Net("cifar10_quick.prototxt", backend="opencl", design=str(out), device=[pocl, 2])
    done = run_design("--net", "cifar10_quick.prototxt", "--board", "arria10_gx1150", "--fpgas", "2",
                      "--partitions", "3", "--out", str(tmp_path / "bad"))
    assert done.returncode == 2 and "one partition on each board" in done.stderr and "Traceback" not in done.stderr


def _one_program(tmp_path):
    """cifar10_quick designed as one program, with the fractional bits the partitioned one got (both
    from the bundled weights), for comparing outputs."""
    out = tmp_path / "cifar_p1"
    done = run_design("--net", "cifar10_quick.prototxt", "--board", "arria10_gx1150", "--precision", "fixed16",
                      "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


def test_pareto_explores_partitions_where_one_program_does_not_fit():
    """CIFAR-10 full needs 33,883 ALMs of a Cyclone V as one program (27,260 allowed): the Pareto set is
    its designs in 2 and 3 programs, each paying a 1 s reconfiguration per program per batch."""
    plan = place(one_image("cifar10_full.prototxt"), "fixed16")
    cyclone = load_board("cyclonev_sea5")
    with pytest.raises(DesignError, match="ALMs where 27,260 are allowed"):
        balance(plan, cyclone)
    front = explore(plan, cyclone, 16)
    assert front and all(p.partitions in (2, 3) for p in front)
    assert all(p.latency_ms >= p.partitions * cyclone.reconfiguration_s * 1e3 for p in front)
    assert all(p.utilisation <= 0.85 for p in front)
    assert not any(q.beats(p) for p in front for q in front)
    assert front[0].row()["partitions"] == front[0].partitions

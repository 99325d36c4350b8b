"""Sums on the device (issue 8, item 4's first part): an Eltwise SUM of two blobs is a stage that
streams one operand and reads the other through a port of its own -- a channel where its segment
writes it (a residual block's shortcut), else DDR -- with the ReLU after it fused.  Placement, the
fixed-point golden model by hand, PoCL runs bit-exact with the golden model and with the cycles the
model counts, the design file, and ResNet-50's segments before and after."""
import numpy as np
import pytest

from cnnfpga.design import default_design
from cnnfpga.design.balance import balance
from cnnfpga.design.boards import load_board
from cnnfpga.design.model import evaluate
from cnnfpga.design.verify import verify
from cnnfpga.codegen import generate
from cnnfpga.errors import PrecisionError
from cnnfpga.fixed_reference import eltwise_sum, forward_fixed
from cnnfpga.placement import FLOAT, HostStep, cut_at, place
from cnnfpga.precision import Fixed, Float, Half, LayerPrecision, calibrate
from cnnfpga.quantize import layer_groups
from cnnfpga import reference
from cnnfpga.runtime import DeviceNet

from conftest import assert_emulator_runs_as_pocl, assert_stored_and_loaded_as_it_was, filler_graph, shared_path

# two residual blocks: a projection shortcut (sum1's operands both end segments; it streams its second,
# b, the later one), an identity one (sum2 streams d and reads sum1, which c reads too), then a sum of
# a blob with itself
RESIDUAL = """name: "residual"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 6 dim: 10 dim: 10 } } }
layer { name: "shortcut" type: "Convolution" bottom: "data" top: "shortcut" convolution_param { num_output: 12 kernel_size: 1 } }
layer { name: "a" type: "Convolution" bottom: "data" top: "a" convolution_param { num_output: 12 kernel_size: 3 pad: 1 } }
layer { name: "a_relu" type: "ReLU" bottom: "a" top: "a" }
layer { name: "b" type: "Convolution" bottom: "a" top: "b" convolution_param { num_output: 12 kernel_size: 3 pad: 1 } }
layer { name: "sum1" type: "Eltwise" bottom: "shortcut" bottom: "b" top: "sum1" }
layer { name: "sum1_relu" type: "ReLU" bottom: "sum1" top: "sum1" }
layer { name: "c" type: "Convolution" bottom: "sum1" top: "c" convolution_param { num_output: 12 kernel_size: 3 pad: 1 } }
layer { name: "d" type: "Convolution" bottom: "c" top: "d" convolution_param { num_output: 12 kernel_size: 1 } }
layer { name: "sum2" type: "Eltwise" bottom: "d" bottom: "sum1" top: "sum2" }
layer { name: "pool" type: "Pooling" bottom: "sum2" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "sum3" type: "Eltwise" bottom: "pool" bottom: "pool" top: "sum3" }
"""


@pytest.fixture(scope="module")
def residual(tmp_path_factory):
    path = tmp_path_factory.mktemp("residual") / "residual.prototxt"
    path.write_text(RESIDUAL)
    return filler_graph(path)


@pytest.fixture(scope="module")
def stats(residual):
    """Calibrated ranges: the two operands of each sum get different fractional bits in fixed point."""
    return calibrate(residual, {"data": np.random.default_rng(1).uniform(-1, 1, (1, 6, 10, 10)).astype(np.float32)})


def test_residual_blocks_are_one_segment_whose_sums_join_forked_streams(residual):
    """data is read from DDR by both shortcut and a; sum1's output forks into c and sum2 (the identity
    shortcut), pool's into both operands of sum3; every sum streams its first operand and reads the
    other from a channel."""
    plan = place(residual)
    assert not [s for s in plan.steps if isinstance(s, HostStep)]
    segment, = plan.segments
    assert [stage.name for stage in segment.stages] == ["shortcut", "a", "b", "sum1", "c", "d", "sum2", "pool", "sum3"]
    assert segment.sources == ["data"] and segment.sinks == ["sum3"]
    assert [stage.name for stage in segment.stages if stage.from_ddr[stage.streamed]] == ["shortcut", "a"]
    sums = {stage.name: stage for stage in plan.stages if stage.kind == "eltwise"}
    assert {name: [plan.blob_names[key] for key in s.sides] for name, s in sums.items()} == \
        {"sum1": ["b"], "sum2": ["sum1"], "sum3": ["pool"]}
    assert {name: (s.streamed, s.from_ddr) for name, s in sums.items()} == \
        {name: (0, (False, False)) for name in sums}
    readers = {stage.name: sorted((reader.name, k) for reader, k in segment.readers(stage)) for stage in segment.stages}
    assert readers["sum1"] == [("c", 0), ("sum2", 1)] and readers["pool"] == [("sum3", 0), ("sum3", 1)]
    assert sums["sum1"].fused == ["sum1_relu"] and sums["sum1"].relu_slope == 0.0
    assert "device stage 3 (streamed, + b streamed)" in plan.describe()


# the shortcut conv reads the image through a host layer (Sigmoid): it is a segment of its own, written
# before a's segment starts, so sum1 joins a's segment, streaming its second operand, b, and reading the
# first from DDR
SHORTCUT_ON_HOST = RESIDUAL.replace(
    'layer { name: "shortcut" type: "Convolution" bottom: "data"',
    'layer { name: "data_sigmoid" type: "Sigmoid" bottom: "data" top: "data_sigmoid" }\n'
    'layer { name: "shortcut" type: "Convolution" bottom: "data_sigmoid"')


def test_a_sum_streams_the_operand_its_segment_writes_in_that_format(tmp_path):
    """sum1 streams its second bottom: the stage's `inputs` is that operand's format, `sides` the first's;
    the plan's precisions stay in bottom order, for the golden model.  It runs as the golden model."""
    path = tmp_path / "shortcut_on_host.prototxt"
    path.write_text(SHORTCUT_ON_HOST)
    graph = filler_graph(path)
    x = {"data": np.random.default_rng(1).uniform(-4, 4, (1, 6, 10, 10)).astype(np.float32)}
    plan = place(graph, "fixed16", calibrate(graph, x))
    assert [[stage.name for stage in s.stages] for s in plan.segments] == \
        [["shortcut"], ["a", "b", "sum1", "c", "d", "sum2", "pool", "sum3"]]
    stage = plan.stage(next(s.index for s in plan.stages if s.name == "sum1"))
    assert stage.streamed == 1 and stage.from_ddr == (True, False)
    assert "device stage 3 (streamed, + shortcut from DDR)" in plan.describe()
    as_written = plan.precisions["sum1"]
    assert (as_written.inputs,) != as_written.sides          # the two blobs' ranges differ
    assert (stage.precision.inputs, stage.precision.sides) == (as_written.sides[0], (as_written.inputs,))
    assert stage.precision.inputs == plan.precisions["b"].outputs
    checked = verify(graph, default_design(plan))
    assert checked["ok"] and checked["cycles_equal"], (checked["outputs"], checked["measured_cycles"])


def test_a_sum_the_device_does_not_run_stays_float_on_the_host(tmp_path):
    text = RESIDUAL.replace('bottom: "pool" bottom: "pool" top: "sum3" }',
                            'bottom: "pool" bottom: "pool" top: "sum3" eltwise_param { operation: MAX } }')
    text = text.replace('bottom: "shortcut" bottom: "b" top: "sum1" }',
                        'bottom: "shortcut" bottom: "b" top: "sum1" eltwise_param { coeff: -1 coeff: 1 } }')
    path = tmp_path / "refused.prototxt"
    path.write_text(text)
    graph = filler_graph(path)
    plan = place(graph, "fixed16")
    host = {s.layer.name: s.reason for s in plan.steps if isinstance(s, HostStep)}
    assert host == {"sum1": "not a sum of two blobs", "sum3": "not a sum of two blobs"}
    assert plan.precisions["sum1"] == plan.precisions["sum3"] == FLOAT
    assert "sum2" in [stage.name for stage in plan.stages]
    # the golden model computes the refused ones in float, as the host does: b - shortcut (then the
    # ReLU after it, on the device in fixed16.8: within half a step), and max(pool, pool)
    x = {"data": np.random.default_rng(0).uniform(-1, 1, (1, 6, 10, 10)).astype(np.float32)}
    golden = forward_fixed(plan.graph, x, plan.precisions)
    difference = np.maximum(golden.blobs["b"] - golden.blobs["shortcut"], 0)
    np.testing.assert_allclose(golden.blobs["sum1"], difference, rtol=0, atol=2.0 ** -9)
    np.testing.assert_array_equal(golden.blobs["sum3"], golden.blobs["pool"])


def test_fixed_point_sum_by_hand():
    # 0.75 (3 at 2 fractional bits) + 2.5 (5 at 1): 13 at 2 bits = 3.25, to 1 bit rounds half up: 7 = 3.5
    out, saturated = eltwise_sum(np.array([3]), Fixed(8, 2), np.array([5]), Fixed(8, 1), Fixed(8, 1))
    assert out.tolist() == [7] and saturated == 0
    # 127 + 127 at the same format saturates at 127, counted; -128 + -128 at -128
    out, saturated = eltwise_sum(np.array([127, -128]), Fixed(8, 0), np.array([127, -128]), Fixed(8, 0), Fixed(8, 0))
    assert out.tolist() == [127, -128] and saturated == 2
    # to float: exact
    out, _ = eltwise_sum(np.array([3]), Fixed(8, 2), np.array([-5]), Fixed(8, 1), Float())
    assert out.tolist() == [-1.75]
    # float operands: a float32 sum, then the output format
    out, saturated = eltwise_sum(np.float32([60000.0]), Half(), np.float32([10000.0]), Half(), Half())
    assert np.isinf(out[0]) and saturated == 1
    with pytest.raises(PrecisionError, match="two fixed-point operands or two float ones"):
        eltwise_sum(np.array([1]), Fixed(8, 0), np.float32([1.0]), Float(), Float())
    with pytest.raises(PrecisionError, match="past 64-bit arithmetic"):
        eltwise_sum(np.array([1]), Fixed(32, -32), np.array([1]), Fixed(32, 64), Fixed(32, 0))


def test_the_code_generator_refuses_a_sum_the_golden_model_refuses(residual):
    """Formats a design file could hold but resolve_precision never makes: aligning fixed32.0 to 40
    fractional bits would overflow a long, in the kernel as in the golden model."""
    plan = place(residual, "fixed16")
    stage = next(stage for stage in plan.stages if stage.name == "sum2")
    stage.precision = LayerPrecision(Fixed(32, 0), Fixed(32, 0), Fixed(32, 0), (Fixed(32, 40),))
    with pytest.raises(PrecisionError, match="past 64-bit arithmetic"):
        eltwise_sum(np.array([1]), Fixed(32, 0), np.array([1]), Fixed(32, 40), Fixed(32, 0))
    with pytest.raises(PrecisionError, match="past 64-bit arithmetic"):
        generate(plan, default_design(plan))


@pytest.mark.parametrize("precision", ["float", "half", "fixed16", "fixed8"])
def test_sums_run_on_pocl_as_the_golden_model_with_the_model_cycles(residual, stats, precision):
    plan = place(residual, precision, stats)
    checked = verify(residual, default_design(plan))
    assert checked["ok"], checked["outputs"]
    assert checked["cycles_equal"], checked["measured_cycles"]
    if precision.startswith("fixed"):
        assert "bit-exact" in checked["outputs"]


def test_a_balanced_and_cut_design_with_sums_runs_bit_exact(residual, stats):
    a10 = load_board("arria10_gx1150")
    plan = place(residual, "fixed16", stats)
    sum1 = next(s.index for s in plan.stages if s.name == "sum1")
    cut = cut_at(plan, [sum1])          # the sum starts a segment: both operands from DDR
    second = next(s for s in cut.segments if s.stages[0].index == sum1)
    assert second.cut and second.stages[0].from_ddr == (True, True)
    assert [cut.blob_names[key] for key in second.sources] == ["shortcut", "b"]
    for design in (balance(plan, a10), balance(cut, a10)):
        checked = verify(residual, design)
        assert checked["ok"] and checked["cycles_equal"], (checked["outputs"], checked["measured_cycles"])
    # the side operand's traffic where it comes from DDR: every pixel's 12 channels, padded to the
    # stage's words, 2 bytes each; none where it streams
    for design, ddr in ((balance(plan, a10), False), (balance(cut, a10), True)):
        costs = {cost.stage.name: cost.resources for cost in evaluate(design, a10).stages}
        width = design.of(plan.stage(sum1)).width_in
        assert costs["sum1"].ddr_bytes_per_image == ddr * 10 * 10 * -(-12 // width) * width * 2


def test_the_fast_variant_runs_sums(residual):
    """sum1 streams on to c and sum2: kept, it is written to device memory for forward() as well."""
    x = {"data": np.random.default_rng(0).uniform(-1, 1, (1, 6, 10, 10)).astype(np.float32)}
    net = DeviceNet(residual, variant="fast", keep=["sum1"])
    assert [net.plan.blob_names[key] for key in net.plan.segments[0].sinks] == ["sum1", "sum3"]
    got = net.forward(x)
    want = reference.forward(residual, x)
    for blob in ("sum1", "sum3"):
        np.testing.assert_allclose(got[blob], want[blob], rtol=1e-5, atol=1e-5)


def test_a_design_with_sums_is_stored_and_loaded_as_it_was(residual, stats, tmp_path):
    path = tmp_path / "residual.prototxt"
    path.write_text(RESIDUAL)
    assert_stored_and_loaded_as_it_was(default_design(place(residual, "fixed16", stats)), residual, path, tmp_path)


def test_both_operands_of_a_sum_share_a_quantisation_group(residual):
    """sum2 reads sum1 (its second operand) from DDR, as c does: both must get one format, so the
    quantiser gives them one number of bits -- c's, not that of d, which writes sum2's other operand
    (and converts it to what sum2 wants)."""
    groups = {name: group.name for group in layer_groups(residual) for name in group.layers}
    assert groups["sum2"] == groups["c"] != groups["d"]


def test_resnet50_runs_as_one_segment_with_no_sum_on_the_host():
    """Before sums ran on the device: 37 segments and 16 Eltwise layers on the host (README); with sums
    on the device but no forks, 21 segments; with forks, one: every block's input forks into its branch
    and its shortcut, and the sum joins them."""
    graph = filler_graph(shared_path("models", "resnet50", "deploy.prototxt"), fill=False)
    plan = place(graph)
    segment, = plan.segments
    assert [s.layer.type for s in plan.steps if isinstance(s, HostStep)] == ["InnerProduct", "Softmax"]
    sums = [stage for stage in plan.stages if stage.kind == "eltwise"]
    assert len(sums) == 16 and all(stage.fused and not any(stage.from_ddr) for stage in sums)
    assert segment.sources == ["data"] and len(segment.sinks) == 1
    # every block's input (the stem's pool, then each sum) forks into the block's first conv(s) and its sum
    forks = [stage for stage in segment.stages if len(segment.readers(stage)) > 1]
    assert len(forks) == 16 and forks[0].name == "pool1" and all(stage.kind == "eltwise" for stage in forks[1:])


@pytest.mark.parametrize("precision", ["float", "fixed16"])
def test_sums_run_on_intels_emulator_as_on_pocl(residual, stats, precision):
    """The sums read both operands from channels: a residual block's input forks into its branch and
    its shortcut."""
    x = {"data": np.random.default_rng(0).uniform(-1, 1, (1, 6, 10, 10)).astype(np.float32)}
    assert_emulator_runs_as_pocl(residual, default_design(place(residual, precision, stats)), x)

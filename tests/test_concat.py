"""Concatenations on the device (issue 8, item 4): a Concat along the channels is a stage that streams
one input and reads the others from DDR, converting each to its output format.  Placement, the
golden model by hand, default widths, PoCL runs bit-exact with the golden model and with the cycles
the model counts, Intel's emulator, the design file, and GoogLeNet's and SqueezeNet's segments."""
import numpy as np
import pytest

from cnnfpga import reference
from cnnfpga.design import default_design
from cnnfpga.design.balance import balance
from cnnfpga.design.boards import load_board
from cnnfpga.design.model import evaluate
from cnnfpga.design.verify import verify
from cnnfpga.errors import DesignError
from cnnfpga.fixed_reference import concat_channels
from cnnfpga.placement import HostStep, place
from cnnfpga.precision import Fixed, Float, Half, calibrate
from cnnfpga.runtime import DeviceNet

from conftest import assert_emulator_runs_as_pocl, assert_stored_and_loaded_as_it_was, filler_graph, shared_path

# an inception-like module (three branches of conv0's output joined by cat1, which streams its last
# input, the pool branch), then a fire-like one (squeeze, two expands joined by cat2, which streams
# its first input, e3: the later segment); cat1's inputs have 8, 12 and 8 channels, so its words hold
# at most 4 values
MODULES = """name: "modules"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 8 dim: 10 dim: 10 } } }
layer { name: "conv0" type: "Convolution" bottom: "data" top: "conv0" convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
layer { name: "conv0_relu" type: "ReLU" bottom: "conv0" top: "conv0" }
layer { name: "b1" type: "Convolution" bottom: "conv0" top: "b1" convolution_param { num_output: 8 kernel_size: 1 } }
layer { name: "b2a" type: "Convolution" bottom: "conv0" top: "b2a" convolution_param { num_output: 8 kernel_size: 1 } }
layer { name: "b2a_relu" type: "ReLU" bottom: "b2a" top: "b2a" }
layer { name: "b2b" type: "Convolution" bottom: "b2a" top: "b2b" convolution_param { num_output: 12 kernel_size: 3 pad: 1 } }
layer { name: "b3a" type: "Pooling" bottom: "conv0" top: "b3a" pooling_param { pool: MAX kernel_size: 3 stride: 1 pad: 1 } }
layer { name: "b3b" type: "Convolution" bottom: "b3a" top: "b3b" convolution_param { num_output: 8 kernel_size: 1 } }
layer { name: "cat1" type: "Concat" bottom: "b1" bottom: "b2b" bottom: "b3b" top: "cat1" }
layer { name: "squeeze" type: "Convolution" bottom: "cat1" top: "squeeze" convolution_param { num_output: 6 kernel_size: 1 } }
layer { name: "squeeze_relu" type: "ReLU" bottom: "squeeze" top: "squeeze" }
layer { name: "e1" type: "Convolution" bottom: "squeeze" top: "e1" convolution_param { num_output: 8 kernel_size: 1 } }
layer { name: "e3" type: "Convolution" bottom: "squeeze" top: "e3" convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
layer { name: "cat2" type: "Concat" bottom: "e3" bottom: "e1" top: "cat2" }
layer { name: "pool" type: "Pooling" bottom: "cat2" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
"""
SHAPE = (1, 8, 10, 10)


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    path = tmp_path_factory.mktemp("modules") / "modules.prototxt"
    path.write_text(MODULES)
    return filler_graph(path)


@pytest.fixture(scope="module")
def stats(modules):
    """Calibrated ranges: each input of a concat gets fractional bits of its own in fixed point."""
    return calibrate(modules, {"data": np.random.default_rng(1).uniform(-1, 1, SHAPE).astype(np.float32)})


def image(seed: int = 0) -> dict:
    return {"data": np.random.default_rng(seed).uniform(-1, 1, SHAPE).astype(np.float32)}


def test_a_concat_streams_its_latest_input_and_reads_the_others_from_ddr(modules):
    plan = place(modules)
    assert not [s for s in plan.steps if isinstance(s, HostStep)]
    assert [[stage.name for stage in s.stages] for s in plan.segments] == \
        [["conv0"], ["b1"], ["b2a", "b2b"], ["b3a", "b3b", "cat1", "squeeze"], ["e1"], ["e3", "cat2", "pool"]]
    cats = {stage.name: stage for stage in plan.stages if stage.kind == "concat"}
    assert {name: ([plan.blob_names[key] for key in s.sides], s.streamed) for name, s in cats.items()} == \
        {"cat1": (["b1", "b2b"], 2), "cat2": (["e1"], 0)}
    assert [list(shape) for shape in cats["cat1"].side_shapes] == [[1, 8, 10, 10], [1, 12, 10, 10]]
    assert cats["cat1"].in_shape == (1, 8, 10, 10) and cats["cat1"].out_shape == (1, 28, 10, 10)
    assert "device stage 6 (streamed, + b1, b2b from DDR)" in plan.describe()


def test_each_input_keeps_its_own_format_and_the_streamed_one_comes_first(modules, stats):
    plan = place(modules, "fixed16", stats)
    cat1 = next(stage for stage in plan.stages if stage.name == "cat1")
    as_written = plan.precisions["cat1"]      # in bottom order, for the golden model
    assert (as_written.inputs, *as_written.sides) == tuple(plan.precisions[b].outputs for b in ("b1", "b2b", "b3b"))
    assert len({as_written.inputs, *as_written.sides, as_written.outputs}) > 1     # conversions to do
    assert cat1.precision.inputs == plan.precisions["b3b"].outputs
    assert cat1.precision.sides == (plan.precisions["b1"].outputs, plan.precisions["b2b"].outputs)


def test_concat_by_hand():
    # 3 at 2 fractional bits (0.75) to 1 bit: 1.5 rounds half up to 2 (1.0); 5 at 1 bit stays 5;
    # 100 at 0 bits to 1 bit: 200 saturates at 127, counted
    a, b, c = np.array([[[[3]]]]), np.array([[[[5]]]]), np.array([[[[100]]]])
    out, saturated = concat_channels([a, b, c], [Fixed(8, 2), Fixed(8, 1), Fixed(8, 0)], Fixed(8, 1))
    assert out.ravel().tolist() == [2, 5, 127] and saturated == 1 and out.shape == (1, 3, 1, 1)
    # fixed to float: exact; float to fixed: quantised, round half up; half: rounded to fp16
    out, _ = concat_channels([a, np.float32([[[[0.3]]]])], [Fixed(8, 2), Float()], Float())
    assert out.ravel().tolist() == [0.75, np.float32(0.3)]
    out, saturated = concat_channels([np.float32([[[[0.25]]]]), a], [Float(), Fixed(8, 2)], Fixed(8, 1))
    assert out.ravel().tolist() == [1, 2] and saturated == 0
    out, saturated = concat_channels([np.float32([[[[70000.0]]]]), np.float32([[[[1 / 3]]]])], [Float(), Half()], Half())
    assert np.isinf(out.ravel()[0]) and saturated == 1 and out.ravel()[1] == np.float16(1 / 3)


def test_default_widths_narrow_the_stream_into_a_concat(modules):
    """b3b writes 8 channels, so its words would hold 8 values; cat1's other inputs have 8 and 12
    channels, so the stream into cat1 narrows to 4 values, back to b3b (co 4)."""
    plan = place(modules)
    design = default_design(plan)
    by_name = {stage.name: design.of(stage) for stage in plan.stages}
    assert (by_name["b3b"].co, by_name["b3b"].width_out) == (4, 4)
    assert (by_name["cat1"].width_in, by_name["cat1"].width_out) == (4, 4)
    assert by_name["squeeze"].width_in == 4
    assert by_name["cat2"].width_in == 16               # e3's 16: the first input, 16 channels
    cat1 = next(stage for stage in plan.stages if stage.name == "cat1")
    with pytest.raises(DesignError, match="must divide the channels of every input but the last"):
        from cnnfpga.design import concat
        concat.check(cat1, by_name["cat1"].__class__(cat1.index, "concat", 8, 8))


@pytest.mark.parametrize("precision", ["float", "half", "fixed16", "fixed8"])
def test_concats_run_on_pocl_as_the_golden_model_with_the_model_cycles(modules, stats, precision):
    plan = place(modules, precision, stats)
    checked = verify(modules, default_design(plan))
    assert checked["ok"], checked["outputs"]
    assert checked["cycles_equal"], checked["measured_cycles"]
    if precision.startswith("fixed"):
        assert "bit-exact" in checked["outputs"]


def test_a_balanced_design_with_concats_runs_bit_exact(modules, stats):
    a10 = load_board("arria10_gx1150")
    plan = place(modules, "fixed16", stats)
    design = balance(plan, a10)
    checked = verify(modules, design)
    assert checked["ok"] and checked["cycles_equal"], (checked["outputs"], checked["measured_cycles"])
    cat1 = next(stage for stage in plan.stages if stage.name == "cat1")
    width = design.of(cat1).width_in
    assert 8 % width == 0 and 12 % width == 0
    costs = {cost.stage.name: cost.resources for cost in evaluate(design, a10).stages}
    # the inputs read from DDR: b1 and b2b, every pixel's channels in the stage's words, 2 bytes each
    assert costs["cat1"].ddr_bytes_per_image == 10 * 10 * (8 + 12) * 2


def test_segments_take_the_blobs_they_read_from_device_memory(modules, stats, monkeypatch):
    """Every blob a segment reads from another is in the format it wants (the producer converts): the
    runtime moves it on the device -- a copy where the word widths agree (squeeze -> e1, e3), a
    re-layout where they do not (conv0's 16-value words into b1's 8, b1's 8 into cat1's 4) -- instead
    of reading it back and converting it; the outputs stay bit-exact."""
    plan = place(modules, "fixed16", stats)
    taken = []
    hands_over = DeviceNet._hands_over

    def spy(self, run, stage, port):
        written = self.codes[run.segment.stages[-1].index].source_out.width
        taken.append((stage.name, port.width, written, hands_over(self, run, stage, port)))
        return taken[-1][-1]
    monkeypatch.setattr(DeviceNet, "_hands_over", spy)
    checked = verify(modules, default_design(plan))
    assert checked["ok"] and checked["cycles_equal"], (checked["outputs"], checked["measured_cycles"])
    assert all(handed for *_, handed in taken) and len(taken) == 8
    assert ("e1", 6, 6, True) in taken and ("b1", 8, 16, True) in taken and ("cat1", 4, 8, True) in taken


def test_the_fast_variant_runs_concats_whose_inputs_fill_its_words(modules):
    """The fast variant's words are 8 values: cat2 (16 and 8 channels) runs on the device, cat1 (8, 12
    and 8) on the host."""
    net = DeviceNet(modules, variant="fast")
    assert [stage.name for stage in net.plan.stages if stage.kind == "concat"] == ["cat2"]
    assert {s.layer.name: s.reason for s in net.plan.steps if isinstance(s, HostStep)} == \
        {"cat1": "an input's channels not in whole 8-value words"}
    got = net.forward(image())
    want = reference.forward(modules, image())
    for blob in ("cat1", "pool"):
        np.testing.assert_allclose(got[blob], want[blob], rtol=1e-5, atol=1e-5)


def test_a_design_with_concats_is_stored_and_loaded_as_it_was(modules, stats, tmp_path):
    path = tmp_path / "modules.prototxt"
    path.write_text(MODULES)
    assert_stored_and_loaded_as_it_was(default_design(place(modules, "fixed16", stats)), modules, path, tmp_path)


def test_a_concat_along_another_axis_stays_on_the_host(tmp_path):
    text = MODULES.replace('top: "cat2" }', 'top: "cat2" concat_param { axis: 2 } }').replace(
        'top: "e3" convolution_param { num_output: 16', 'top: "e3" convolution_param { num_output: 8')
    path = tmp_path / "axis2.prototxt"
    path.write_text(text)
    plan = place(filler_graph(path), "fixed16")
    assert {s.layer.name: s.reason for s in plan.steps if isinstance(s, HostStep)} == {"cat2": "not along the channels"}


@pytest.mark.parametrize("net, before, after", [("googlenet", 40, 37), ("squeezenet_v1.1", 25, 18)])
def test_inception_and_fire_modules_end_in_a_device_concat(net, before, after):
    """Before concats ran on the device: GoogLeNet 40 segments and 9 host Concats, SqueezeNet 25 and 8."""
    graph = filler_graph(shared_path("models", net, "deploy.prototxt"), fill=False)
    plan = place(graph)
    assert len(plan.segments) == after
    assert "Concat" not in [s.layer.type for s in plan.steps if isinstance(s, HostStep)]
    assert sum(stage.kind == "concat" for stage in plan.stages) == {"googlenet": 9, "squeezenet_v1.1": 8}[net]
    assert default_design(plan).plan is plan    # every concat's widths are valid


@pytest.mark.parametrize("precision", ["float", "fixed16"])
def test_concats_run_on_intels_emulator_as_on_pocl(modules, stats, precision):
    """The concats read their other inputs from global buffers beside the stream."""
    assert_emulator_runs_as_pocl(modules, default_design(place(modules, precision, stats)), image())

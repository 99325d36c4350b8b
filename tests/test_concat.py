"""Concatenations on the device (issue 8, item 4): a Concat along the channels is a stage that streams
one input and reads the others from DDR, converting each to its output format.  Placement, the
golden model by hand, default widths, PoCL runs bit-exact with the golden model and with the cycles
the model counts, Intel's emulator, the design file, and GoogLeNet's and SqueezeNet's segments."""
from pathlib import Path
import subprocess
import sys

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

from conftest import (assert_emulator_runs_as_pocl, assert_stored_and_loaded_as_it_was, filler_graph, require_emulator,
                      shared_path)

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


def test_the_modules_are_one_segment_whose_streams_fork_and_join(modules):
    """conv0's stream forks into three channels (b1, b2a, b3a), squeeze's into two (e1, e3); cat1 and
    cat2 join them again, streaming their first input and reading the others from channels too.  Only
    the net's output goes to DDR."""
    plan = place(modules)
    assert not [s for s in plan.steps if isinstance(s, HostStep)]
    segment, = plan.segments
    assert [stage.name for stage in segment.stages] == \
        ["conv0", "b1", "b2a", "b2b", "b3a", "b3b", "cat1", "squeeze", "e1", "e3", "cat2", "pool"]
    assert segment.sources == ["data"] and segment.sinks == ["pool"]
    readers = {stage.name: sorted(reader.name for reader, _ in segment.readers(stage)) for stage in segment.stages}
    assert readers["conv0"] == ["b1", "b2a", "b3a"] and readers["squeeze"] == ["e1", "e3"]
    cats = {stage.name: stage for stage in plan.stages if stage.kind == "concat"}
    assert {name: ([plan.blob_names[key] for key in s.sides], s.streamed, s.from_ddr) for name, s in cats.items()} == \
        {"cat1": (["b2b", "b3b"], 0, (False,) * 3), "cat2": (["e1"], 0, (False,) * 2)}
    assert [list(shape) for shape in cats["cat1"].side_shapes] == [[1, 12, 10, 10], [1, 8, 10, 10]]
    assert cats["cat1"].in_shape == (1, 8, 10, 10) and cats["cat1"].out_shape == (1, 28, 10, 10)
    assert "device stage 6 (streamed, + b2b streamed, + b3b streamed)" in plan.describe()


# b1 goes through a host layer (Sigmoid has no device kernel): cat1 can no longer join the segment
# writing b2b and b3b (b1 is written after it), so it starts a segment of its own reading all three
# from DDR
AFTER_HOST = MODULES.replace('layer { name: "b2a" ', 'layer { name: "b1_sigmoid" type: "Sigmoid" bottom: "b1" '
                                                      'top: "b1" }\nlayer { name: "b2a" ')


@pytest.fixture(scope="module")
def after_host(tmp_path_factory):
    path = tmp_path_factory.mktemp("after_host") / "after_host.prototxt"
    path.write_text(AFTER_HOST)
    return filler_graph(path)


def test_a_join_of_streams_from_before_a_host_layer_reads_them_from_device_memory(after_host, monkeypatch):
    """The first segment writes b1 (for the host), b2b and b3b; cat1's segment reads them back from DDR,
    b2b and b3b where the first segment left them on the device -- re-laid out from their words (12 and
    8 values: their co) into cat1's 4 -- and the outputs are the golden model's, with the model's cycles."""
    plan = place(after_host, "fixed16", calibrate(after_host, image(1)))
    first, host, second = plan.steps
    assert isinstance(host, HostStep) and host.layer.name == "b1_sigmoid"
    assert [plan.blob_names[key] for key in first.sinks] == ["b1", "b2b", "b3b"]
    cat1 = second.stages[0]
    assert cat1.name == "cat1" and cat1.from_ddr == (True,) * 3 and second.sources == ["b1#1", "b2b", "b3b"]
    assert "device stage 6 (from DDR, + b2b from DDR, + b3b from DDR)" in plan.describe()
    taken = []
    hands_over = DeviceNet._hands_over

    def spy(self, run, key, stage, port):
        written = self.codes[run.segment.producer(key).index].sink.width
        taken.append((stage.name, key, port.width, written, hands_over(self, run, key, stage, port)))
        return taken[-1][-1]
    monkeypatch.setattr(DeviceNet, "_hands_over", spy)
    checked = verify(after_host, default_design(plan))
    assert checked["ok"] and checked["cycles_equal"], (checked["outputs"], checked["measured_cycles"])
    assert "bit-exact" in checked["outputs"]
    assert sorted(taken) == [("cat1", "b2b", 4, 12, True), ("cat1", "b3b", 4, 8, True)]


def test_each_input_keeps_its_own_format(modules, stats):
    plan = place(modules, "fixed16", stats)
    cat1 = next(stage for stage in plan.stages if stage.name == "cat1")
    as_written = plan.precisions["cat1"]      # in bottom order, for the golden model
    assert (as_written.inputs, *as_written.sides) == tuple(plan.precisions[b].outputs for b in ("b1", "b2b", "b3b"))
    assert len({as_written.inputs, *as_written.sides, as_written.outputs}) > 1     # conversions to do
    assert cat1.streamed == 0 and (cat1.precision.inputs, *cat1.precision.sides) == \
        (as_written.inputs, *as_written.sides)


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


def test_default_widths_narrow_the_streams_into_a_concat(modules):
    """cat1's inputs (b1, b2b, b3b: 8, 12 and 8 channels) are one width, which divides the channels of
    all but the last: 4 values, and the convolutions writing them step 4 outputs at a time (co 4);
    cat2's (e3's 16 and e1's 8 channels) take the widest that divides both convolutions' co: 8."""
    plan = place(modules)
    design = default_design(plan)
    by_name = {stage.name: design.of(stage) for stage in plan.stages}
    assert {name: (by_name[name].co, by_name[name].width_out) for name in ("b1", "b2b", "b3b")} == \
        {"b1": (4, 4), "b2b": (4, 4), "b3b": (4, 4)}
    assert (by_name["cat1"].width_in, by_name["cat1"].width_out) == (4, 4)
    assert by_name["squeeze"].width_in == 4
    assert by_name["cat2"].width_in == 8 and (by_name["e3"].co, by_name["e1"].co) == (8, 8)
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
    evaluation = evaluate(design, a10)
    costs = {cost.stage.name: cost.resources for cost in evaluation.stages}
    assert costs["cat1"].ddr_bytes_per_image == 0        # its inputs stream in
    # DDR: the image in (8 channels) and pool's output (24 channels), 2 bytes each
    assert evaluation.totals.ddr_bytes_per_image == 2 * (10 * 10 * 8 + 5 * 5 * 24)


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


@pytest.mark.parametrize("net, concats, segments", [("googlenet", 9, 1), ("squeezenet_v1.1", 8, 2)])
def test_inception_and_fire_modules_stream_on_the_device(net, concats, segments):
    """Before concats ran on the device: GoogLeNet 40 segments and 9 host Concats, SqueezeNet 25 and 8;
    with concats on the device but no forks, 37 and 18; with forks, every device layer between two
    host layers is one segment (SqueezeNet's dropout, on the host, splits it in two)."""
    graph = filler_graph(shared_path("models", net, "deploy.prototxt"), fill=False)
    plan = place(graph)
    assert len(plan.segments) == segments
    assert "Concat" not in [s.layer.type for s in plan.steps if isinstance(s, HostStep)]
    assert sum(stage.kind == "concat" for stage in plan.stages) == concats
    assert all(len(segment.sinks) == 1 for segment in plan.segments)
    assert default_design(plan).plan is plan    # every concat's widths are valid


@pytest.mark.parametrize("precision", ["float", "fixed16"])
def test_concats_run_on_intels_emulator_as_on_pocl(modules, stats, precision):
    """The concats read their other inputs from global buffers beside the stream."""
    assert_emulator_runs_as_pocl(modules, default_design(place(modules, precision, stats)), image())


# The modules through Intel's emulator in a child process (a stalled pipeline's kernels spin on after
# the error): with the design's FIFO depths, and with the channels on the modules' loops only 2 deep.
FIFO_SCRIPT = """
import sys, warnings
import numpy as np
sys.path.insert(0, sys.argv[4])
warnings.simplefilter("ignore")
from conftest import filler_graph
from cnnfpga.design import default_design
from cnnfpga.design.model import fork_join_channels
from cnnfpga.errors import DeviceError
from cnnfpga.placement import place
from cnnfpga.runtime import DeviceNet
graph = filler_graph(sys.argv[1])
design = default_design(place(graph, "fixed16"))
loops = fork_join_channels(design.plan.segments[0])
print("depths", sorted((design.channel_depths[name], name) for name in loops))
if sys.argv[3] == "shallow":
    design.channel_depths.update((name, 2) for name in loops)
x = {"data": np.random.default_rng(0).uniform(-1, 1, (1, 8, 10, 10)).astype(np.float32)}
want = DeviceNet(graph, design=design).forward(x)
net = DeviceNet(graph, design=design, device=sys.argv[2], stall_seconds=10)
try:
    got = net.forward(x)
    print("ran", "as PoCL" if all(np.array_equal(got[k], want[k]) for k in want) else "NOT as PoCL")
except DeviceError as error:
    print(error)
"""


@pytest.mark.slow
@pytest.mark.parametrize("depths", ["design", "shallow"])
def test_forked_streams_need_the_fifo_depths_the_model_gives(tmp_path, depths):
    """On Intel's channels, which block: at the depths the design sized from the pipeline model's
    backlogs (channel_backlogs), the modules run as on PoCL; with the channels on their loops 2 words
    deep, conv0 fills the short branches' FIFOs and stops before the long ones bring cat1 its first
    pixel -- every stage waits, the fork and the join among them."""
    device = require_emulator()
    path = tmp_path / "modules.prototxt"
    path.write_text(MODULES)
    child = subprocess.run([sys.executable, "-c", FIFO_SCRIPT, str(path), device, depths, str(Path(__file__).parent)],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    assert lines[0].startswith("depths") and "ch_1_6" in lines[0] and "ch_6_7" not in lines[0]  # a bridge
    if depths == "design":
        assert lines[-1] == "ran as PoCL", child.stdout
    else:
        assert "stalled" in lines[-1] and "stage 0 'conv0'" in lines[-1] and "stage 6 'cat1'" in lines[-1], child.stdout

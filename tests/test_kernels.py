"""Each stage kernel (the FPGA variant, channels emulated) on PoCL against the numpy float reference,
with every stage counting its loop iterations, which must equal the design's cycles.

To keep OpenCL builds few, one net holds many single-layer branches that all read the same input;
each branch becomes a device segment of its own and every branch's output is checked.
"""

import numpy as np
import pytest

from cnnfpga import reference
from cnnfpga.precision import Fixed, Half
from cnnfpga.runtime import DeviceNet
from conftest import filler_graph

INPUT = (2, 6, 11, 13)   # 6 channels: not a whole stream word; odd, non-square size

CONVS = {  # name: convolution_param body
    "conv_plain": "num_output: 10 kernel_size: 3",
    "conv_stride_pad": "num_output: 9 kernel_size: 3 stride: 2 pad: 1",
    "conv_rect": "num_output: 16 kernel_h: 3 kernel_w: 5 stride_h: 2 stride_w: 1 pad_h: 2 pad_w: 0",
    "conv_group2": "num_output: 10 kernel_size: 3 group: 2 pad: 1",
    "conv_group3": "num_output: 12 kernel_size: 2 group: 3 stride: 3",
    "conv_dilated": "num_output: 8 kernel_size: 3 dilation: 2 pad: 2",
    "conv_1x1_s2": "num_output: 17 kernel_size: 1 stride: 2 bias_term: false",
    "conv_big": "num_output: 4 kernel_size: 5 pad: 3 stride: 3",
}
POOLS = {
    "pool_max_ceil": "pool: MAX kernel_size: 3 stride: 2",
    "pool_ave_ceil": "pool: AVE kernel_size: 3 stride: 2",
    "pool_max_pad": "pool: MAX kernel_size: 3 stride: 2 pad: 1",
    "pool_ave_pad": "pool: AVE kernel_size: 3 stride: 2 pad: 1",
    "pool_ave_drop": "pool: AVE kernel_size: 2 stride: 2 pad: 1",   # the last window would start in the padding
    "pool_max_rect": "pool: MAX kernel_h: 2 kernel_w: 4 stride_h: 1 stride_w: 3",
    "pool_ave_global": "pool: AVE global_pooling: true",
    "pool_max_global": "pool: MAX global_pooling: true",
}
LRNS = {
    "lrn_across": "local_size: 5 alpha: 0.5 beta: 0.75 k: 2",
    "lrn_across_3": "local_size: 3 alpha: 1e-2 beta: 0.5",
    "lrn_within": "local_size: 3 alpha: 0.7 beta: 0.75 norm_region: WITHIN_CHANNEL",
}


def layer(name, type_, body_key, body, bottom="data", top=None):
    return (f'layer {{ name: "{name}" type: "{type_}" bottom: "{bottom}" top: "{top or name}" '
            f'{body_key} {{ {body} }} }}\n')


def stage_net_text() -> str:
    text = f'name: "stages"\ninput: "data"\ninput_shape {{ {" ".join(f"dim: {d}" for d in INPUT)} }}\n'
    for name, body in CONVS.items():
        text += layer(name, "Convolution", "convolution_param", body)
    for name, body in POOLS.items():
        text += layer(name, "Pooling", "pooling_param", body)
    for name, body in LRNS.items():
        text += layer(name, "LRN", "lrn_param", body)
    # a standalone leaky ReLU (not after a conv), and a conv with a fused leaky ReLU (in place)
    text += layer("relu_leaky", "ReLU", "relu_param", "negative_slope: 0.1")
    text += layer("conv_relu", "Convolution", "convolution_param", "num_output: 11 kernel_size: 3 pad: 1")
    text += layer("relu_fused", "ReLU", "relu_param", "negative_slope: 0.25", bottom="conv_relu", top="conv_relu")
    # a streamed chain: conv -> pool -> LRN -> conv, channels between every stage
    text += layer("chain_conv", "Convolution", "convolution_param", "num_output: 12 kernel_size: 3")
    text += layer("chain_pool", "Pooling", "pooling_param", "pool: MAX kernel_size: 2 stride: 2", bottom="chain_conv")
    text += layer("chain_lrn", "LRN", "lrn_param", "local_size: 5 alpha: 0.1 beta: 0.75", bottom="chain_pool")
    text += layer("chain_conv2", "Convolution", "convolution_param", "num_output: 3 kernel_size: 2",
                  bottom="chain_lrn")
    return text


@pytest.fixture(scope="module")
def stage_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("stages") / "stages.prototxt"
    path.write_text(stage_net_text())
    graph = filler_graph(path)
    x = np.random.default_rng(1).standard_normal(INPUT).astype(np.float32)
    net = DeviceNet(graph, count_cycles=True)
    return graph, net, net.forward({"data": x}), reference.forward(graph, {"data": x})


def assert_cycles_match_the_design(net, batch):
    """Every stage ran exactly the iterations its schedule gives (cnnfpga.design)."""
    model = {stage.name: net.design.schedule(stage).cycles(batch) for stage in net.plan.stages}
    assert net.cycles() == model


def relative_error(got, want) -> float:
    assert got.shape == want.shape
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("name", list(CONVS) + list(POOLS) + list(LRNS) +
                         ["relu_leaky", "conv_relu", "chain_conv2"])
def test_stage_matches_reference(stage_run, name):
    graph, net, got, want = stage_run
    assert relative_error(got[name], want[name]) < 1e-5


def test_every_branch_ran_on_the_device(stage_run):
    graph, net, _, _ = stage_run
    on_device = {stage.name for stage in net.plan.stages}
    assert on_device >= set(CONVS) | set(POOLS) | set(LRNS) | {"relu_leaky", "conv_relu"}
    # every branch reads the image from DDR, so all are one segment; the chain streams stage to stage
    segment, = net.plan.segments
    stages = {stage.name: stage for stage in segment.stages}
    chain = ["chain_conv", "chain_pool", "chain_lrn", "chain_conv2"]
    assert [[reader.name for reader, _ in segment.readers(stages[name])] for name in chain[:-1]] == [[n] for n in chain[1:]]
    assert stages["chain_conv"].from_ddr == (True,) and all(stages[name].from_ddr == (False,) for name in chain[1:])
    fused = [s for s in net.plan.stages if s.name == "conv_relu"][0]
    assert fused.fused == ["relu_fused"] and fused.relu_slope == 0.25
    # device time per stage, keyed by the stage's name: the fused ReLU's time counts with its convolution
    assert set(net.stage_seconds) == {stage.name for stage in net.plan.stages} and "relu_fused" not in net.stage_seconds
    assert all(seconds > 0 for seconds in net.stage_seconds.values())
    assert_cycles_match_the_design(net, INPUT[0])


def test_fast_variant_matches_reference(stage_run):
    graph, _, _, want = stage_run
    x = np.random.default_rng(1).standard_normal(INPUT).astype(np.float32)
    net = DeviceNet(graph, variant="fast")
    fast = {code.stage.name for code in net.program_code.stages if code.ndrange}
    assert fast >= set(CONVS) - {"conv_group2", "conv_group3"} | {"conv_relu"}
    assert {code.stage.name for code in net.program_code.stages if code.per_pixel} == {"lrn_across", "lrn_across_3",
                                                                                        "chain_lrn"}
    got = net.forward({"data": x})
    for name in list(CONVS) + list(LRNS) + ["conv_relu", "chain_conv2"]:
        assert relative_error(got[name], want[name]) < 1e-5, name


# odd parallelism: every F, both places for the weights, outputs gathered into wider words or split
# into narrower ones, groups, channels that are not whole words, narrow DDR loads
ODD_DESIGNS = {
    "conv_plain": {"ci": 3, "co": 5, "f": 9},
    "conv_stride_pad": {"ci": 6, "co": 9, "f": 3, "weights": "ddr", "width_out": 4},
    "conv_rect": {"ci": 1, "co": 8, "f": 5, "width_out": 2},
    "conv_group2": {"ci": 3, "co": 5, "f": 1, "weights": "ddr"},
    "conv_group3": {"ci": 2, "co": 4, "f": 4, "width_out": 8},
    "conv_dilated": {"ci": 6, "co": 8, "f": 9, "width_out": 16, "load_width": 5},
    "conv_1x1_s2": {"ci": 6, "co": 17, "f": 1},
    "conv_big": {"ci": 3, "co": 2, "f": 5, "weights": "ddr", "load_width": 3},
    "chain_conv": {"ci": 2, "co": 6, "f": 3, "width_out": 3},
}


@pytest.mark.parametrize("setting", ["float", "fixed16"])
def test_odd_parallelism_gives_the_same_results_in_the_cycles_of_its_design(stage_run, setting):
    from cnnfpga.fixed_reference import forward_fixed
    from cnnfpga.precision import calibrate, resolve_precision
    graph, _, _, want = stage_run
    x = np.random.default_rng(1).standard_normal(INPUT).astype(np.float32)
    stats = calibrate(graph, {"data": x}) if setting != "float" else None
    net = DeviceNet(graph, precision=setting, calibration=stats, parallelism=ODD_DESIGNS, count_cycles=True)
    for name, design in ODD_DESIGNS.items():
        stage_design = net.design.of(next(s for s in net.plan.stages if s.name == name))
        assert all(getattr(stage_design, key) == value for key, value in design.items()), name
    got = net.forward({"data": x})
    checked = [name for name in ODD_DESIGNS if name != "chain_conv"] + ["chain_conv2"]   # chain_conv streams on
    if setting == "float":
        for name in checked:
            assert relative_error(got[name], want[name]) < 1e-5, name
    else:
        golden = forward_fixed(graph, {"data": x}, resolve_precision(graph, setting, stats))
        for name in checked:
            np.testing.assert_array_equal(got[name], golden.blobs[name], err_msg=name)
    assert_cycles_match_the_design(net, INPUT[0])


# ------------------------------------------------------------------------------- half, fixed point

@pytest.fixture(scope="module")
def stage_graph(stage_run):
    return stage_run[0]


def test_half_stages_within_one_rounding_of_the_half_golden_model(stage_graph):
    from cnnfpga.fixed_reference import forward_fixed
    from cnnfpga.precision import resolve_precision
    x = np.random.default_rng(1).standard_normal(INPUT).astype(np.float32)
    net = DeviceNet(stage_graph, precision="half", count_cycles=True)
    assert all(isinstance(port.fmt, Half) for code in net.program_code.stages for port in code.outs)
    got = net.forward({"data": x})
    want = forward_fixed(stage_graph, {"data": x}, resolve_precision(stage_graph, "half")).blobs
    for name in list(CONVS) + list(POOLS) + list(LRNS) + ["relu_leaky", "conv_relu", "chain_conv2"]:
        # float sums in another order may land on the other side of an fp16 rounding: one unit
        scale = np.abs(want[name]).max()
        assert np.abs(got[name] - want[name]).max() <= 2.0 ** -10 * scale, name
    assert_cycles_match_the_design(net, INPUT[0])


@pytest.mark.parametrize("setting", ["fixed16", "fixed6.4"])
def test_fixed_stages_are_bit_exact_and_count_saturation(stage_graph, setting):
    from cnnfpga.fixed_reference import forward_fixed
    from cnnfpga.precision import calibrate, resolve_precision
    x = np.random.default_rng(1).standard_normal(INPUT).astype(np.float32)
    stats = calibrate(stage_graph, {"data": x})
    net = DeviceNet(stage_graph, precision=setting, calibration=stats, count_cycles=True)
    assert all(isinstance(code.source_in.fmt, Fixed) for code in net.program_code.stages)
    got = net.forward({"data": x})
    golden = forward_fixed(stage_graph, {"data": x}, resolve_precision(stage_graph, setting, stats))
    for name in list(CONVS) + list(POOLS) + list(LRNS) + ["relu_leaky", "conv_relu", "chain_conv2"]:
        np.testing.assert_array_equal(got[name], golden.blobs[name], err_msg=name)
    counts = net.saturation()
    assert counts == {name: golden.saturation[name] for name in counts}
    if setting == "fixed6.4":   # +-2 in steps of 1/16: normal inputs and outputs overflow it
        assert sum(counts.values()) > 0
    else:
        assert sum(counts.values()) == 0
    # a leaky ReLU in fixed point does not fuse: it needs its own rescaling
    assert "relu_fused" in {stage.name for stage in net.plan.stages}
    assert_cycles_match_the_design(net, INPUT[0])


# ------------------------------------------------------------------ ReLU fusion across formats

FUSION_NET = """name: "fusion"
input: "data" input_shape { dim: 2 dim: 6 dim: 9 dim: 9 }
layer { name: "conv_f" type: "Convolution" bottom: "data" top: "conv_f" convolution_param { num_output: 10 kernel_size: 3 } }
layer { name: "relu_f" type: "ReLU" bottom: "conv_f" top: "conv_f" }
layer { name: "conv_h" type: "Convolution" bottom: "data" top: "conv_h" convolution_param { num_output: 10 kernel_size: 3 } }
layer { name: "relu_h" type: "ReLU" bottom: "conv_h" top: "conv_h" relu_param { negative_slope: 0.1 } }
layer { name: "conv_l" type: "Convolution" bottom: "data" top: "conv_l" convolution_param { num_output: 10 kernel_size: 3 } }
layer { name: "relu_l" type: "ReLU" bottom: "conv_l" top: "conv_l" relu_param { negative_slope: 0.1 } }
"""


def test_relu_fuses_wherever_the_formats_make_it_exact(tmp_path):
    from cnnfpga.fixed_reference import forward_fixed
    from cnnfpga.precision import resolve_precision
    path = tmp_path / "fusion.prototxt"
    path.write_text(FUSION_NET)
    graph = filler_graph(path)
    # float conv -> fixed ReLU; half conv -> float leaky ReLU; float conv -> fixed leaky ReLU
    setting = {"conv_f": "float", "conv_h": "half", "relu_h": "float", "conv_l": "float", "*": "fixed6.2"}
    x = {"data": 3 * np.random.default_rng(2).standard_normal((2, 6, 9, 9)).astype(np.float32)}
    net = DeviceNet(graph, precision=setting)
    stages = {stage.name: stage for stage in net.plan.stages}
    assert stages["conv_f"].fused == ["relu_f"] and stages["conv_h"].fused == ["relu_h"]
    assert stages["conv_h"].relu_slope == pytest.approx(0.1)
    assert stages["conv_l"].fused == [] and "relu_l" in stages   # a leaky ReLU before quantising: not exact
    got = net.forward(x)
    golden = forward_fixed(graph, x, resolve_precision(graph, setting))
    step = 0.25
    for name in ("conv_f", "conv_l"):   # float sums in another order: at most one step apart
        assert np.abs(got[name] - golden.blobs[name]).max() <= step, name
        assert np.mean(got[name] == golden.blobs[name]) > 0.95, name
    assert relative_error(got["conv_h"], golden.blobs["conv_h"]) < 1e-5
    # fixed6.2 holds [-8, 7.75]: the conv saturates on both sides, and the values its fused ReLU
    # zeroes still count, as they do when the ReLU runs on its own
    before_relu = reference.forward(graph, x, until="conv_f")["conv_f"]
    assert (before_relu < -8.125).any() and (before_relu >= 7.875).any()
    counts = net.saturation()
    assert counts["conv_f"] == golden.saturation["conv_f"] and counts["conv_l"] == golden.saturation["conv_l"]


# ------------------------------------------------------------------------------- half overflow

OVERFLOW_NET = """name: "overflow"
input: "data" input_shape { dim: 2 dim: 6 dim: 9 dim: 9 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 10 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "leaky" type: "ReLU" bottom: "data" top: "leaky" relu_param { negative_slope: 3 } }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layer { name: "conv_relu" type: "Convolution" bottom: "data" top: "conv_relu"
        convolution_param { num_output: 10 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu" type: "ReLU" bottom: "conv_relu" top: "conv_relu" }
"""


def test_half_stages_count_overflow_to_infinity_like_the_golden_model(tmp_path):
    from cnnfpga.fixed_reference import forward_fixed
    from cnnfpga.precision import resolve_precision
    path = tmp_path / "overflow.prototxt"
    path.write_text(OVERFLOW_NET)
    graph = filler_graph(path)
    # inputs up to 30000 fit fp16 (65504 at most); the convolutions and the slope-3 ReLU exceed it
    x = {"data": np.random.default_rng(3).uniform(-30000, 30000, (2, 6, 9, 9)).astype(np.float32)}
    net = DeviceNet(graph, precision="half")
    got = net.forward(x)
    golden = forward_fixed(graph, x, resolve_precision(graph, "half"))
    counts = net.saturation()
    for name in ("conv", "leaky", "conv_relu"):
        assert np.isinf(got[name]).any(), name
        np.testing.assert_array_equal(np.isinf(got[name]), np.isinf(golden.blobs[name]), err_msg=name)
    assert counts["conv"] == golden.saturation["conv"] > 0
    assert counts["leaky"] == golden.saturation["leaky"] == np.count_nonzero(x["data"] * 3 <= -65520)
    assert counts["pool"] == golden.saturation["pool"] == 0
    # the fused ReLU zeroes negative values before the store: only the positive ones can overflow there,
    # while the golden model, storing the convolution first, also counts the negative ones
    before_relu = reference.forward(graph, x, until="conv_relu")["conv_relu"]
    assert counts["conv_relu"] == np.count_nonzero(before_relu >= 65520) > 0
    assert golden.saturation["conv_relu"] == np.count_nonzero(np.abs(before_relu) >= 65520)

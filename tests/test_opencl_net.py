"""Whole nets on PoCL (FPGA-variant kernels, emulated channels, host inner products) vs the golden model."""

import numpy as np
import pyopencl as cl
import pytest

from cnnfpga import fast, reference
from cnnfpga.errors import DeviceError, PrecisionError
from cnnfpga.fixed_reference import forward_fixed
from cnnfpga.precision import Fixed, calibrate, resolve_precision
from cnnfpga.placement import Segment
from cnnfpga.runtime import DeviceNet, half_error_bound, select_device

from conftest import assert_bit_exact, filler_graph, shared_path

NETS = {  # name: (folder, prototxt, slow)
    "lenet": ("lenet", "lenet.prototxt", False),
    "cifar10_quick": ("cifar10_quick", "cifar10_quick.prototxt", False),
    "cifar10_full": ("cifar10_full", "cifar10_full.prototxt", False),
    "alexnet": ("alexnet", "deploy.prototxt", True),
    "caffenet": ("caffenet", "deploy.prototxt", True),
    "googlenet": ("googlenet", "deploy.prototxt", True),
    "resnet50": ("resnet50", "deploy.prototxt", True),
    "squeezenet": ("squeezenet_v1.1", "deploy.prototxt", True),
}



def random_inputs(graph, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    return {name: rng.uniform(-1, 1, shape).astype(np.float32) for name, shape in graph.inputs.items()}


def relative_error(got, want) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def check_net(graph, **options):
    """Run graph on the device and the golden model; return (net, worst relative error over the
    outputs and every blob a device segment wrote)."""
    x = random_inputs(graph)
    net = DeviceNet(graph, **options)
    got = net.forward(x)
    want = reference.forward(graph, x)
    plan = net.plan
    # a blob a segment wrote, unless an in-place host layer rewrote it later under the same name
    names = set(graph.outputs) | set(plan.written_blobs())
    return net, max(relative_error(got[n], want[n]) for n in names)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if NETS[n][2] else n for n in NETS])
def test_net_float_matches_golden_model(name):
    folder, prototxt, _ = NETS[name]
    graph = filler_graph(shared_path("models", folder, prototxt))
    net, error = check_net(graph)
    assert error < 1e-4, f"{name}: relative error {error}"
    assert net.plan.stages, "nothing ran on the device"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["alexnet", "googlenet"])
def test_fast_variant_matches_golden_model(name):
    folder, prototxt, _ = NETS[name]
    graph = filler_graph(shared_path("models", folder, prototxt))
    net, error = check_net(graph, variant="fast")
    assert error < 1e-4
    assert any(code.ndrange for code in net.program_code.stages)


@pytest.mark.slow
def test_vgg16_float_matches_golden_model(vgg16_published):
    graph = filler_graph(vgg16_published)
    net, error = check_net(graph)
    assert error < 1e-4
    assert sum(s.kind == "conv" for s in net.plan.stages) == 13


@pytest.mark.slow
def test_vgg16_fixed16_bit_exact_and_half_within_bound(vgg16_published):
    graph = filler_graph(vgg16_published, input_shapes={"data": (1, 3, 224, 224)})
    x = random_inputs(graph)
    net, got, golden = check_fixed(graph, "fixed16", x, calibrate(graph, x))
    assert_bit_exact(net, got, golden)
    half, error = check_net(graph, precision="half")
    assert 0 < error < half_error_bound(half.plan)


def test_trained_lenet_classifies_like_the_golden_model():
    graph = filler_graph(shared_path("models", "lenet", "lenet.prototxt"),
                       shared_path("models", "lenet", "lenet_iter_10000.caffemodel"))
    x = random_inputs(graph)
    x["data"] = (x["data"] + 1) / 2
    got = DeviceNet(graph).forward(x)["prob"]
    want = reference.forward(graph, x)["prob"]
    assert relative_error(got, want) < 1e-4
    assert (got.argmax(1) == want.argmax(1)).all()


@pytest.mark.parametrize("split", [None, False, True])   # decided by the stream, or set beforehand
def test_stream_overlaps_host_layers_and_gives_the_same_results(split):
    from cnnfpga.runtime.executor import TIMED_BATCHES, WARM_UP_BATCHES
    graph = filler_graph(shared_path("models", "cifar10_quick", "cifar10_quick.prototxt"))
    net = DeviceNet(graph)
    assert [step.layer.type for step in net.tail] == ["InnerProduct", "InnerProduct", "Softmax"]
    assert len(net.head) == 1   # one segment: the stream keeps the next batch on the device's queue
    n = graph.inputs["data"][0]
    if split is not None:
        if split and net.sub_device is None:
            pytest.skip("the OpenCL device cannot be split into sub-devices")
        net.stream_split_cores[n] = split
    count = WARM_UP_BATCHES + TIMED_BATCHES + 3   # the last ones overlap, whatever was timed before
    batches = [random_inputs(graph, seed) for seed in range(count)]
    streamed = list(net.forward_stream(iter(batches)))
    assert len(streamed) == count
    for batch, result in zip(batches, streamed):   # forward() splits the products over threads: rounding
        np.testing.assert_allclose(result["prob"], net.forward(batch)["prob"], rtol=1e-6, atol=1e-7)
    assert net.inner_products["ip1"].stats.calls == 2 * count   # one GEMM per batch, whole batch at once
    assert isinstance(net.stream_split_cores.get(n, False), bool)


def test_stream_with_host_layers_between_device_segments(tmp_path):
    """A head of several segments with a host layer between them runs batch by batch (no device look-ahead)."""
    path = tmp_path / "branches.prototxt"
    path.write_text("""name: "branches"
input: "data"
input_shape { dim: 2 dim: 3 dim: 8 dim: 8 }
layer { name: "a" type: "Convolution" bottom: "data" top: "a" convolution_param { num_output: 8 kernel_size: 3 } }
layer { name: "b" type: "Convolution" bottom: "data" top: "b" convolution_param { num_output: 8 kernel_size: 3 } }
layer { name: "ab" type: "Concat" bottom: "a" bottom: "b" top: "ab" }
layer { name: "s" type: "Sigmoid" bottom: "ab" top: "s" }
layer { name: "c" type: "Convolution" bottom: "s" top: "c" convolution_param { num_output: 8 kernel_size: 3 } }
layer { name: "fc" type: "InnerProduct" bottom: "c" top: "fc" inner_product_param { num_output: 5 } }
""")
    graph = filler_graph(path)
    net = DeviceNet(graph, variant="fast")
    assert sum(isinstance(step, Segment) for step in net.head) > 1
    batches = [random_inputs(graph, seed) for seed in range(9)]
    for batch, result in zip(batches, net.forward_stream(iter(batches))):
        np.testing.assert_allclose(result["fc"], net.forward(batch)["fc"], rtol=1e-5, atol=1e-6)


def test_splitting_the_cores_pays_where_device_and_host_layers_take_similar_times():
    net = DeviceNet(filler_graph(shared_path("models", "lenet", "lenet.prototxt")))
    if net.sub_device is None:
        assert not net.split_cores_pays(0.006, 0.0095)
        return
    cores = net.device.max_compute_units
    assert net.split_cores_pays(0.006, 0.006 * cores)               # host layers as long as the device's work
    assert not net.split_cores_pays(0.095, 0.040)                   # device dominates (AlexNet batch 16)
    assert not net.split_cores_pays(0.001, 0.050)                   # host dominates: no gain from a split


FAST_LAYERS = {  # name: (type, parameter text); each reads "data" (2, 20, 9, 11): 20 channels, not whole words
    "conv_1x1": ("Convolution", "convolution_param { num_output: 24 kernel_size: 1 }"),
    "conv_rows_padded": ("Convolution", "convolution_param { num_output: 16 kernel_h: 3 kernel_w: 2 pad_h: 2 pad_w: 0 stride_h: 1 stride_w: 2 }"),
    "conv_groups_unpadded": ("Convolution", "convolution_param { num_output: 32 kernel_size: 3 group: 2 dilation: 2 }"),
    "conv_padded": ("Convolution", "convolution_param { num_output: 40 kernel_size: 3 pad: 1 stride: 2 }"),
    "winograd_groups_padded": ("Convolution", "convolution_param { num_output: 32 kernel_size: 3 pad: 1 group: 2 }"),
    "winograd_unpadded": ("Convolution", "convolution_param { num_output: 24 kernel_size: 3 }"),
    "winograd_wide_pad": ("Convolution", "convolution_param { num_output: 8 kernel_size: 3 pad: 2 bias_term: false }"),
    "winograd5_groups_padded": ("Convolution", "convolution_param { num_output: 32 kernel_size: 5 pad: 2 group: 2 }"),
    "winograd5_unpadded": ("Convolution", "convolution_param { num_output: 16 kernel_size: 5 }"),
    "pool_max": ("Pooling", "pooling_param { pool: MAX kernel_size: 3 stride: 2 }"),
    "pool_ave_pad": ("Pooling", "pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }"),
    "pool_ave_drop": ("Pooling", "pooling_param { pool: AVE kernel_size: 2 stride: 2 pad: 1 }"),
    "pool_global": ("Pooling", "pooling_param { pool: AVE global_pooling: true }"),
    "lrn_075": ("LRN", "lrn_param { local_size: 5 alpha: 0.3 beta: 0.75 k: 2 }"),
    "lrn_050": ("LRN", "lrn_param { local_size: 3 alpha: 0.1 beta: 0.5 }"),
    "lrn_100": ("LRN", "lrn_param { local_size: 5 alpha: 0.2 beta: 1 k: 1.5 }"),
    "lrn_060": ("LRN", "lrn_param { local_size: 7 alpha: 0.4 beta: 0.6 }"),
}


@pytest.fixture(scope="module")
def fast_layers_net(tmp_path_factory):
    text = 'name: "fast_layers"\ninput: "data"\ninput_shape { dim: 2 dim: 20 dim: 9 dim: 11 }\n'
    for name, (kind, param) in FAST_LAYERS.items():
        text += f'layer {{ name: "{name}" type: "{kind}" bottom: "data" top: "{name}" {param} }}\n'
    path = tmp_path_factory.mktemp("fast") / "fast_layers.prototxt"
    path.write_text(text)
    return filler_graph(path)


def test_fast_variant_kernels_match_the_reference(fast_layers_net):
    """The fast variant's conv (unpadded rows, padded rows, groups; Winograd with odd output sizes),
    pooling and LRN (each beta form)."""
    graph = fast_layers_net
    x = {"data": np.random.default_rng(3).normal(0, 2, graph.inputs["data"]).astype(np.float32)}
    net = DeviceNet(graph, variant="fast")
    codes = {code.stage.name: code for code in net.program_code.stages}
    assert all(codes[name].ndrange for name in FAST_LAYERS if name.startswith(("conv", "winograd")))
    assert {name for name in FAST_LAYERS if codes[name].winograd} == {n for n in FAST_LAYERS if n.startswith("winograd")}
    assert all(codes[name].fast_pool for name in FAST_LAYERS if name.startswith("pool"))
    assert all(codes[name].per_pixel for name in FAST_LAYERS if name.startswith("lrn"))
    got, want = net.forward(x), reference.forward(graph, x)
    for name in FAST_LAYERS:
        assert relative_error(got[name], want[name]) < 1e-5, name
    fpga = DeviceNet(graph).forward(x)
    for name in FAST_LAYERS:   # pooling: the same arithmetic as the FPGA stage, bit for bit
        if name.startswith("pool"):
            np.testing.assert_array_equal(got[name], fpga[name], err_msg=name)


@pytest.mark.parametrize("taps", sorted(fast.WINOGRAD))
def test_winograd_matrices_compute_a_correlation(taps):
    a_t, g, b_t = (np.array(m, np.float64) for m in fast.WINOGRAD[taps])
    rng = np.random.default_rng(taps)
    d, w = rng.normal(size=taps + 1), rng.normal(size=taps)
    np.testing.assert_allclose(a_t @ ((g @ w) * (b_t @ d)), np.correlate(d, w, "valid"), rtol=1e-12, atol=1e-12)


def test_host_threads_split_the_inner_products_within_rounding():
    graph = filler_graph(shared_path("models", "cifar10_full", "cifar10_full.prototxt"))
    x = random_inputs(graph)
    split = DeviceNet(graph, host_threads=3).forward(x)["prob"]
    np.testing.assert_allclose(split, DeviceNet(graph, host_threads=1).forward(x)["prob"], rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------- half, fixed point

@pytest.mark.parametrize("name", ["lenet", "cifar10_full", pytest.param("alexnet", marks=pytest.mark.slow)])
def test_net_half_within_the_documented_bound(name):
    folder, prototxt, _ = NETS[name]
    graph = filler_graph(shared_path("models", folder, prototxt))
    net, error = check_net(graph, precision="half")
    bound = half_error_bound(net.plan)
    assert 0 < error < bound, f"{name}: half error {error}, bound {bound}"


def check_fixed(graph, setting, x, stats=None):
    """Device vs the fixed-point golden model: every blob a segment wrote, and the saturation counts."""
    net = DeviceNet(graph, precision=setting, calibration=stats)
    got = net.forward(x)
    golden = forward_fixed(graph, x, resolve_precision(graph, setting, stats))
    return net, got, golden


@pytest.mark.parametrize("name,setting", [("lenet", "fixed16"), ("lenet", "fixed8"), ("cifar10_quick", "fixed16"),
                                          ("cifar10_full", "fixed12"),
                                          pytest.param("alexnet", "fixed16", marks=pytest.mark.slow)])
def test_net_fixed_is_bit_exact_with_the_golden_model(name, setting):
    folder, prototxt, _ = NETS[name]
    graph = filler_graph(shared_path("models", folder, prototxt))
    x = random_inputs(graph)
    stats = calibrate(graph, x)
    net, got, golden = check_fixed(graph, setting, x, stats)
    assert_bit_exact(net, got, golden)
    for blob in graph.outputs:   # host layers after the device: BLAS order only
        np.testing.assert_allclose(got[blob], golden.blobs[blob], rtol=1e-4, atol=1e-6)


def test_trained_lenet_fixed8_saturates_and_counts_like_the_golden_model():
    graph = filler_graph(shared_path("models", "lenet", "lenet.prototxt"),
                       shared_path("models", "lenet", "lenet_iter_10000.caffemodel"))
    x = {"data": (random_inputs(graph)["data"] + 1) / 2}
    net, got, golden = check_fixed(graph, "fixed8.6", x)   # +-2: the convolutions of trained weights overflow it
    np.testing.assert_array_equal(got["pool2"], golden.blobs["pool2"])
    counts = net.saturation()
    assert counts == {n: golden.saturation[n] for n in counts}
    assert counts["conv1"] > 0 and counts["conv2"] > 0


def test_mixed_precision_converts_at_stage_boundaries():
    graph = filler_graph(shared_path("models", "cifar10_quick", "cifar10_quick.prototxt"))
    x = random_inputs(graph)
    stats = calibrate(graph, x)
    setting = {"conv1": "float", "*": "fixed16"}
    net, got, golden = check_fixed(graph, setting, x, stats)
    conv1, pool1 = net.plan.stages[:2]
    assert conv1.precision.inputs == conv1.precision.weights == type(conv1.precision.inputs)()   # float
    assert conv1.precision.outputs == pool1.precision.inputs and pool1.precision.inputs.total_bits == 16
    assert isinstance(net.codes[conv1.index].outs[0].fmt, Fixed)    # the float stage quantises what it writes
    # the float conv1 sums in another order than the golden model, so a value at a rounding boundary
    # of the fixed format may land one step away; everything downstream is integer and exact
    out = got["pool3"]
    step = 2.0 ** -net.plan.stages[-1].precision.outputs.frac_bits
    assert np.abs(out - golden.blobs["pool3"]).max() <= 4 * step
    assert np.mean(out == golden.blobs["pool3"]) > 0.9


# ------------------------------------------------------------------------------------------- errors

@pytest.fixture(scope="module")
def lenet():
    return filler_graph(shared_path("models", "lenet", "lenet.prototxt"))


def test_no_platform_says_how_to_install_pocl(monkeypatch, lenet):
    monkeypatch.setattr(cl, "get_platforms", lambda: [])
    with pytest.raises(DeviceError, match="apt-get install pocl-opencl-icd"):
        DeviceNet(lenet)


def test_unknown_device_lists_the_available_ones(monkeypatch):
    with pytest.raises(DeviceError, match="no OpenCL device matches 'no-such-board'.*0:0"):
        select_device("no-such-board")
    monkeypatch.setenv("CNNFPGA_DEVICE", "7:3")
    with pytest.raises(DeviceError, match="'7:3'"):
        select_device()
    monkeypatch.setenv("CNNFPGA_DEVICE", "0:0")
    assert select_device() == cl.get_platforms()[0].get_devices()[0]


def test_build_error_names_the_stage_and_carries_the_log(lenet, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNFPGA_CACHE", str(tmp_path))
    with pytest.raises(DeviceError) as info:
        DeviceNet(lenet, inject={2: "this is not OpenCL;"})
    message = str(info.value)
    assert "stage 2 'conv2'" in message and "lenet.prototxt:" in message
    assert "error" in message.split("Build log:")[1]   # the compiler's own words


def test_programs_are_cached_by_source(lenet, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNFPGA_CACHE", str(tmp_path))
    first = DeviceNet(lenet)
    cached = list(tmp_path.glob("*.bin"))
    assert len(cached) == 1
    second = DeviceNet(lenet)   # built from the cached binary
    x = random_inputs(lenet)
    np.testing.assert_array_equal(first.forward(x)["prob"], second.forward(x)["prob"])
    DeviceNet(lenet, parallelism={"conv2": (4, 2)})
    assert len(list(tmp_path.glob("*.bin"))) == 2


def test_unreadable_bitstream(lenet, tmp_path):
    with pytest.raises(DeviceError, match="missing.aocx"):
        DeviceNet(lenet, bitstream=str(tmp_path / "missing.aocx"))


def test_bad_precision_settings(lenet):
    with pytest.raises(PrecisionError, match="unknown precision 'double'"):
        DeviceNet(lenet, precision="double")
    with pytest.raises(PrecisionError, match="total_bits"):
        DeviceNet(lenet, precision="fixed40")
    with pytest.raises(PrecisionError, match="'conv9'.*not a layer"):
        DeviceNet(lenet, precision={"conv9": "fixed16"})
    with pytest.raises(PrecisionError, match="conv1.*shift"):   # accumulator 2^-90 or so, output 2^30
        DeviceNet(lenet, precision={"conv1": "fixed32.60", "pool1": "fixed32.-30"})


@pytest.mark.slow
@pytest.mark.parametrize("name", ["caffenet", "googlenet", "squeezenet"])
def test_branching_and_imagenet_nets_fixed16_bit_exact_and_half_within_bound(name):
    """The other shared nets at batch 1: fixed16 bit-exact with the fixed golden model (every blob a
    device segment wrote, saturation counts), half within its documented bound."""
    folder, prototxt, _ = NETS[name]
    graph = filler_graph(shared_path("models", folder, prototxt))
    graph = graph.reshape({name: (1,) + tuple(shape[1:]) for name, shape in graph.inputs.items()})
    x = random_inputs(graph)
    net, got, golden = check_fixed(graph, "fixed16", x, calibrate(graph, x))
    assert_bit_exact(net, got, golden)
    half, error = check_net(graph, precision="half")
    assert 0 < error < half_error_bound(half.plan), f"{name}: half error {error}"


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["float", "fixed16"])
def test_alexnet_at_odd_parallelism_gives_the_same_results_in_the_model_cycles(setting):
    """AlexNet's conv1 at ci=3 co=96 f=11 (a whole output pixel's channels every 11 cycles), conv2 at
    ci=48 with its 2 groups and co=8 split into words of 4, conv3 with its weights streamed from DDR,
    conv5 at f=9: the outputs of the default design's, in the cycles of the model."""
    graph = filler_graph(shared_path("models", "alexnet", "deploy.prototxt"), input_shapes={"data": (1, 3, 227, 227)})
    x = random_inputs(graph)
    stats = calibrate(graph, x) if setting != "float" else None
    odd = {"conv1": (3, 96, 11), "conv2": {"ci": 48, "co": 8, "f": 1, "width_out": 4},
           "conv3": {"ci": 16, "co": 12, "f": 3, "weights": "ddr"}, "conv5": (8, 4, 9)}
    net = DeviceNet(graph, precision=setting, calibration=stats, parallelism=odd, count_cycles=True)
    got = net.forward(x)
    if setting == "float":
        assert relative_error(got["pool5"], reference.forward(graph, x)["pool5"]) < 1e-4
    else:
        golden = forward_fixed(net.plan.graph, x, net.plan.precisions)
        np.testing.assert_array_equal(got["pool5"], golden.blobs["pool5"])
    model = {stage.name: net.design.schedule(stage).cycles(1) for stage in net.plan.stages}
    assert net.cycles() == model

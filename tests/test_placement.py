"""Placement, the device / host split: segments, fusion, BatchNorm folding, the plan table."""
import numpy as np
import pytest

from cnnfpga.errors import PrecisionError
from cnnfpga.graph import load_graph
from cnnfpga.layers import REGISTRY
from cnnfpga.placement import HostStep, fold_batch_norm, place
from cnnfpga.precision import Fixed, frac_bits_for

from conftest import filler_graph, shared_path


def quiet_load(folder, name="deploy.prototxt"):
    return filler_graph(shared_path("models", folder, name))


def test_alexnet_is_one_segment_with_relus_fused():
    plan = place(quiet_load("alexnet"))
    assert len(plan.segments) == 1
    stages = plan.stages
    assert [s.kind for s in stages] == ["conv", "lrn", "pool", "conv", "lrn", "pool", "conv", "conv", "conv", "pool"]
    assert all(s.fused == [f"relu{s.name[-1]}"] for s in stages if s.kind == "conv")
    host = [s.layer.name for s in plan.steps if isinstance(s, HostStep)]
    assert host == ["fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8", "prob"]
    assert plan.steps[0] is plan.segments[0]


def test_describe_lists_every_layer_with_place_precision_parallelism_shape():
    graph = quiet_load("alexnet")
    plan = place(graph)
    text = plan.describe(parallelism=lambda stage: f"p{stage.index}")
    for layer in graph.layers:
        if layer.type != "Input":
            assert layer.name in text
    conv2 = next(line for line in text.splitlines() if line.startswith("conv2 "))
    assert "device stage 3" in conv2 and "float" in conv2 and " p3 " in conv2 and "[10, 256, 27, 27]" in conv2
    assert "fused into stage 3" in next(line for line in text.splitlines() if line.startswith("relu2 "))
    assert "host" in next(line for line in text.splitlines() if line.startswith("fc6 "))


def test_googlenet_device_layers_are_one_segment_in_topological_order():
    """Every inception module's input forks into its four branches and its concat joins them, all
    streamed: the device layers between the input and pool5 are one segment, written in an order in
    which every stage reads only what is read from DDR or written before it."""
    graph = quiet_load("googlenet")
    plan = place(graph)
    segment, = plan.segments
    assert segment.sources == ["data"] and [plan.blob_names[key] for key in segment.sinks] == ["pool5/7x7_s1"]
    written = set(segment.sources)
    for stage in segment.stages:
        assert all(key in written for key in stage.inputs), stage.name
        assert stage.from_ddr == tuple(key in segment.sources for key in stage.inputs)
        written.add(stage.output)
    concats = [stage for stage in plan.stages if stage.kind == "concat"]
    assert len(concats) == 9 and all(not any(stage.from_ddr) and len(stage.inputs) == 4 for stage in concats)
    forks = [stage.name for stage in segment.stages if len(segment.readers(stage)) > 1]
    assert len(forks) == 9 and all(len(segment.readers(plan.stage(index))) == 4
                                   for index in [s.index for s in segment.stages if s.name in forks])
    # the 3x3 branch of an inception streams reduce conv -> ReLU -> 3x3 conv -> ReLU
    reduce = next(stage for stage in segment.stages if stage.name == "inception_3a/3x3_reduce")
    assert [reader.name for reader, _ in segment.readers(reduce)] == ["inception_3a/3x3"]


def test_a_segment_cut_writes_every_stream_crossing_the_cut_to_ddr():
    """Cutting GoogLeNet's segment inside inception 3a (at its 5x5 branch's reduce): the four streams
    from before the cut that later stages read -- pool2's output (read by the 5x5 reduce and the pool
    branch) and the 1x1 and 3x3 branches' outputs (read by the concat) -- go to DDR and are read back."""
    from cnnfpga.placement import cut_at
    plan = place(quiet_load("googlenet"))
    start = next(stage for stage in plan.stages if stage.name == "inception_3a/5x5_reduce")
    first, second = cut_at(plan, [start.index]).segments
    assert not first.cut and second.cut
    assert [plan.blob_names[key] for key in first.sinks] == \
        ["pool2/3x3_s2", "inception_3a/1x1", "inception_3a/3x3"]
    assert second.sources == first.sinks
    assert len(first.stages) + len(second.stages) == len(plan.stages)


def test_resnet_batch_norm_and_scale_fold_into_the_conv():
    graph = quiet_load("resnet50")
    plan = place(graph)
    conv1 = plan.stages[0]
    assert conv1.name == "conv1" and conv1.fused == ["bn_conv1", "scale_conv1", "conv1_relu"]
    assert not any(isinstance(s, HostStep) and s.layer.type in ("BatchNorm", "Scale") for s in plan.steps)
    # the folded weights compute conv -> BatchNorm -> Scale
    layers = {l.name: l for l in graph.layers}
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    conv = layers["conv1"]
    y = REGISTRY["Convolution"].reference(conv.spec, [x], conv.blobs)[0]
    y = REGISTRY["BatchNorm"].reference(layers["bn_conv1"].spec, [y], layers["bn_conv1"].blobs)[0]
    y = REGISTRY["Scale"].reference(layers["scale_conv1"].spec, [y], layers["scale_conv1"].blobs)[0]
    w, b = fold_batch_norm(conv.blobs[0], conv.blobs[1] if conv.spec.bias_term else np.zeros(64, np.float32),
                           layers["bn_conv1"], layers["scale_conv1"])
    folded = REGISTRY["Convolution"].reference(conv.spec, [x], [w, b] if conv.spec.bias_term else [w])[0]
    if not conv.spec.bias_term:
        folded = folded + b.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(folded, y, rtol=1e-4, atol=1e-4 * np.abs(y).max())


def test_in_place_relu_read_by_two_layers_is_not_fused_away():
    graph = quiet_load("squeezenet_v1.1")
    plan = place(graph)
    # fire2/squeeze1x1 (+ ReLU in place) feeds both expand convs: its ReLU'd output forks to both
    segment = next(s for s in plan.segments if "fire2/squeeze1x1" in [stage.name for stage in s.stages])
    squeeze = next(stage for stage in segment.stages if stage.name == "fire2/squeeze1x1")
    assert squeeze.fused == ["fire2/relu_squeeze1x1"]
    assert sorted(reader.name for reader, _ in segment.readers(squeeze)) == ["fire2/expand1x1", "fire2/expand3x3"]
    assert plan.blob_names[squeeze.output] == "fire2/squeeze1x1" and squeeze.output != squeeze.inputs[0]


def test_half_precision_plan_and_bad_setting():
    graph = quiet_load("lenet", "lenet.prototxt")
    assert "half" in place(graph, "half").describe()
    with pytest.raises(PrecisionError):
        place(graph, "double")


def test_describe_shows_weight_formats_only_for_convolutions():
    graph = quiet_load("cifar10_quick", "cifar10_quick.prototxt")
    stats = {blob: 4.0 for blob in graph.shapes}
    text = place(graph, {"relu1": "float", "*": "fixed16"}, stats=stats).describe()
    row = {line.split()[0]: line for line in text.splitlines()[2:-1]}
    assert "w fixed16." in row["conv1"] and " in fixed16." in row["conv1"]
    # pool1 converts to the float ReLU after it: its input and output differ, it has no weights
    assert "in fixed16.12 out float" in row["pool1"] and "w " not in row["pool1"]   # 4.0 -> 12 fraction bits
    assert "fixed16.12" in row["pool2"] and " in " not in row["pool2"]


def test_fixed_point_weight_formats_are_sized_from_the_folded_weights():
    graph = quiet_load("resnet50")
    plan = place(graph, "fixed16", stats={blob: 8.0 for blob in graph.shapes})
    convs = [stage for stage in plan.stages if stage.kind == "conv"]
    assert len(convs) == 53
    assert all(stage.fused[0].startswith("bn") and stage.fused[1].startswith("scale") for stage in convs)
    for stage in convs:
        assert stage.precision.weights == Fixed(16, frac_bits_for(np.abs(stage.weights).max(), 16)), stage.name
        assert plan.precisions[stage.name] == stage.precision
    # BatchNorm rescales the weights: sized on the unfolded blob, many formats would differ
    unfolded = [Fixed(16, frac_bits_for(np.abs(graph.layer(s.name).blobs[0]).max(), 16)) for s in convs]
    assert sum(s.precision.weights != u for s, u in zip(convs, unfolded)) > 10
    assert not any(layer.type in ("BatchNorm", "Scale") for layer in plan.graph.layers)


def test_shapes_only_graph_plans_like_the_weighted_one():
    bare = load_graph(str(shared_path("models", "resnet50", "deploy.prototxt")), fill=False)
    assert place(bare).describe() == place(quiet_load("resnet50")).describe()
    with pytest.raises(PrecisionError, match="conv1.*shapes-only"):
        place(bare, "fixed16", stats={blob: 8.0 for blob in bare.shapes})

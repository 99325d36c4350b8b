"""The golden model against OpenCV's Caffe importer (an independent implementation of the same nets).

Same filler weights (written by our writer, read by both), same input, batch 1. Every blob is compared,
not only the softmax output (which saturates and hides errors): the pre-softmax blob and every
intermediate one, plus the pre-activation output of each convolution that an in-place ReLU overwrites.
"""
import cv2
import numpy as np
import pytest

from cnnfpga import reference

from conftest import shared_path

TOLERANCE = 1e-4  # max abs error / max abs value

NETS = {
    "alexnet": "deploy.prototxt", "caffenet": "deploy.prototxt", "googlenet": "deploy.prototxt",
    "resnet50": "deploy.prototxt", "squeezenet_v1.1": "deploy.prototxt", "lenet": "lenet.prototxt",
    "cifar10_quick": "cifar10_quick.prototxt", "cifar10_full": "cifar10_full.prototxt",
    "lenet_v1": "lenet.prototxt", "cifar10_quick_v1": "cifar10_quick.prototxt",
    "cifar10_full_v1": "cifar10_full.prototxt",
}


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    assert ours.shape == theirs.shape
    scale = float(np.abs(theirs).max())
    assert scale > 0, "an all-zero blob proves nothing"
    return float(np.abs(ours.astype(np.float64) - theirs).max()) / scale


def image_like_input(shape) -> np.ndarray:
    """Mean-subtracted pixel values, the range a Caffe net sees."""
    return np.random.default_rng(7).uniform(-120.0, 130.0, size=shape).astype(np.float32)


def compare_with_opencv(prototxt, graph, caffemodel) -> dict:
    """Run both at batch 1; return {blob or 'layer (pre-activation)': relative error}."""
    graph = graph.reshape({"data": (1,) + tuple(graph.inputs["data"][1:])})
    x = image_like_input(graph.inputs["data"])
    ours = reference.forward(graph, {"data": x})
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.enableFusion(False)  # keep each layer's own output readable
    net.setInput(x)
    # OpenCV names outputs by layer: an in-place chain's final value is the last writer's output,
    # and an earlier writer's output is the value before the in-place layers ran.
    last_writer = {top: layer.name for layer in graph.layers if layer.type != "Input" for top in layer.tops}
    # a few are enough: each costs a partial forward of ours
    overwritten = [layer for layer in graph.layers if layer.type == "Convolution"
                   and last_writer[layer.tops[0]] != layer.name][:4]
    names = [last_writer[blob] for blob in last_writer] + [layer.name for layer in overwritten]
    theirs = net.forward(names)
    errors = {blob: relative_error(ours[blob], t) for blob, t in zip(last_writer, theirs)}
    for layer, t in zip(overwritten, theirs[len(last_writer):]):
        before_activation = reference.forward(graph, {"data": x}, until=layer.name)[layer.tops[0]]
        errors[f"{layer.name} (pre-activation)"] = relative_error(before_activation, t)
    return errors


def pre_softmax_blob(graph) -> str:
    (softmax,) = [layer for layer in graph.layers if layer.type == "Softmax"]
    return softmax.bottoms[0]


def check(prototxt, filler_caffemodel):
    graph, caffemodel = filler_caffemodel(prototxt)
    errors = compare_with_opencv(prototxt, graph, caffemodel)
    final, logits = graph.outputs[0], pre_softmax_blob(graph)
    assert errors[final] <= TOLERANCE
    assert errors[logits] <= TOLERANCE
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE, f"{worst}: relative error {errors[worst]:.2e}"
    assert any(key.endswith("(pre-activation)") for key in errors) or "lenet" in str(prototxt)
    return errors


@pytest.mark.parametrize("folder", list(NETS))
def test_golden_model_matches_opencv(folder, filler_caffemodel):
    errors = check(shared_path("models", folder, NETS[folder]), filler_caffemodel)
    assert len(errors) >= 5


@pytest.mark.slow
def test_vgg16_matches_opencv(vgg16_published, filler_caffemodel):
    """VGG16 with the published 2x2/stride-2 pooling (15.5 GMAC); the shared copy's stride-1 variant
    cannot be built at all (see test_graph.py)."""
    check(vgg16_published, filler_caffemodel)


def test_a_wrong_weight_is_detected(filler_caffemodel):
    """The comparison can fail: a 1% change to one conv weight shows up far above the tolerance."""
    prototxt = shared_path("models", "cifar10_quick", NETS["cifar10_quick"])
    graph, caffemodel = filler_caffemodel(prototxt)
    graph = graph.reshape(graph.inputs)  # a copy whose blob list we may replace
    conv2 = graph.layer("conv2")
    changed = conv2.blobs[0].copy()
    changed[0, 0, 2, 2] *= 1.01
    conv2.blobs = [changed] + conv2.blobs[1:]
    errors = compare_with_opencv(prototxt, graph, caffemodel)
    assert errors["conv1"] <= TOLERANCE
    assert errors["conv2 (pre-activation)"] > TOLERANCE

"""The graph: every shared prototxt loads, and every blob's shape is the one OpenCV's Caffe importer computes."""
import time
import tracemalloc

import cv2
import numpy as np
import pytest

from cnnfpga import NetDefinitionError, ResourceError
from cnnfpga.graph import load_graph

from conftest import filler_graph, shared_path, vgg16_with_pool_stride

# folder -> prototxt (every prototxt in shared/models except VGG16, which has tests of its own below)
NETS = {
    "alexnet": "deploy.prototxt", "caffenet": "deploy.prototxt", "googlenet": "deploy.prototxt",
    "resnet50": "deploy.prototxt", "squeezenet_v1.1": "deploy.prototxt",
    "lenet": "lenet.prototxt", "lenet_v1": "lenet.prototxt",
    "cifar10_quick": "cifar10_quick.prototxt", "cifar10_quick_v1": "cifar10_quick.prototxt",
    "cifar10_full": "cifar10_full.prototxt", "cifar10_full_v1": "cifar10_full.prototxt",
}
VGG16_FILE = "VGG_ILSVRC_16_layers_deploy.prototxt"


def model(folder: str, name: str = None):
    return shared_path("models", folder, name or NETS[folder])



def opencv_shapes(prototxt, caffemodel, input_shape) -> dict:
    """layer name -> output shapes, from OpenCV's own shape inference (it allocates no blobs for this)."""
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    ids, _, outs = net.getLayersShapes([list(input_shape)])
    names = {net.getLayerId(name): name for name in net.getLayerNames()}
    return {names[i]: [tuple(int(d) for d in s.ravel()) for s in shapes] for i, shapes in zip(ids, outs) if i in names}


def assert_shapes_match_opencv(graph, prototxt, caffemodel) -> None:
    (input_shape,) = graph.inputs.values()
    theirs = opencv_shapes(prototxt, caffemodel, input_shape)
    compute_layers = [layer for layer in graph.layers if layer.type != "Input"]
    assert compute_layers
    for layer in compute_layers:
        assert layer.name in theirs, f"OpenCV has no layer '{layer.name}'"
        ours = [tuple(s) for s in layer.out_shapes]
        if layer.type == "Pooling" and len(theirs[layer.name]) == 2:
            # OpenCV gives a MAX pooling that ends the net a second top, its argmax mask, of the same shape
            assert theirs[layer.name][1] == theirs[layer.name][0]
            theirs[layer.name] = theirs[layer.name][:1]
        # every top of every layer, so each step of an in-place chain (conv -> relu on one name) counts
        assert ours == theirs[layer.name], layer.where
    # the blob table holds, for each name, the shape the last layer writing it gives
    last_writer = {top: layer for layer in graph.layers for top in layer.tops}
    for blob, layer in last_writer.items():
        assert tuple(graph.shapes[blob]) == tuple(layer.out_shapes[layer.tops.index(blob)])


@pytest.mark.parametrize("folder", sorted(NETS))
def test_every_blob_shape_matches_opencv(folder, filler_caffemodel):
    """At the prototxt's own batch size and at batch 1. OpenCV needs weights to build, so fillers are written."""
    prototxt = model(folder)
    graph, weights = filler_caffemodel(prototxt)
    assert graph.outputs == ["prob"]
    assert_shapes_match_opencv(graph, prototxt, weights)
    one = graph.reshape({"data": (1,) + tuple(graph.inputs["data"][1:])})
    assert all(shape[0] == 1 for shape in one.shapes.values())
    assert_shapes_match_opencv(one, prototxt, weights)


@pytest.mark.slow
def test_vgg16_published_shapes_match_opencv(vgg16_published, filler_caffemodel):
    graph, weights = filler_caffemodel(vgg16_published)
    assert graph.shapes["pool5"] == (10, 512, 7, 7)
    assert_shapes_match_opencv(graph, vgg16_published, weights)


def test_bundled_vgg16_is_the_shared_copy_with_the_published_pool_stride(vgg16_published):
    stored = shared_path("models", "vgg16", VGG16_FILE).read_text()
    assert vgg16_with_pool_stride(stored, 2) == vgg16_published.read_text() != stored
    assert load_graph(str(vgg16_published), fill=False).layer("fc6").params == 512 * 7 * 7 * 4096 + 4096


def test_vgg16_as_stored_is_refused_before_allocating():
    """The shared copy pools 2x2 with stride 1: 224 -> 219 after five pools, so fc6 would need
    4096 x 512*219*219 weights (about 400 GB). Loading must say so at once, without trying."""
    path = shared_path("models", "vgg16", VGG16_FILE)
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(ResourceError) as error:
        filler_graph(path, input_shapes={"data": (1, 3, 224, 224)})
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert VGG16_FILE in str(error.value) and "GiB" in str(error.value)
    assert elapsed < 2.0 and peak < 64 * 2**20
    # its shapes are still there for planning: a graph without weights
    shapes_only = load_graph(path, fill=False)
    assert shapes_only.shapes["pool5"] == (10, 512, 219, 219) and shapes_only.shapes["fc6"] == (10, 4096)
    assert shapes_only.layer("fc6").params == 512 * 219 * 219 * 4096 + 4096
    assert all(not layer.blobs for layer in shapes_only.layers)


def test_vgg16_as_stored_conv_part_matches_opencv(tmp_path, filler_caffemodel):
    """Everything up to pool5 of the file as stored (fc6 onwards cannot be built by anyone)."""
    text = shared_path("models", "vgg16", VGG16_FILE).read_text()
    cut = text.index('layers {\n  bottom: "pool5"\n  top: "fc6"')
    prototxt = tmp_path / "vgg16_conv_part.prototxt"
    prototxt.write_text(text[:cut].replace("input_dim: 10\n", "input_dim: 1\n", 1))
    graph, weights = filler_caffemodel(prototxt)
    assert graph.shapes["pool5"] == (1, 512, 219, 219)  # 224 - 5 (each 2x2 stride-1 pool takes one off)
    assert_shapes_match_opencv(graph, prototxt, weights)


@pytest.mark.parametrize("new, old", [("lenet", "lenet_v1"), ("cifar10_quick", "cifar10_quick_v1"),
                                      ("cifar10_full", "cifar10_full_v1")])
def test_v1_prototxt_upgrades_to_the_same_graph(new, old):
    """The V1 (`layers`, enum types, input_dim) and current (`layer`, Input layer) files describe one net."""
    a, b = filler_graph(model(new)), filler_graph(model(old))
    b = b.reshape({"data": a.inputs["data"]})
    layers_a = [(l.name, l.type, l.bottoms, l.tops, l.spec, l.out_shapes) for l in a.layers if l.type != "Input"]
    layers_b = [(l.name, l.type, l.bottoms, l.tops, l.spec, l.out_shapes) for l in b.layers if l.type != "Input"]
    assert layers_a == layers_b
    assert a.shapes == b.shapes and a.outputs == b.outputs


@pytest.mark.parametrize("folder, weights", [("lenet", "lenet_iter_10000.caffemodel"),
                                             ("lenet_v1", "lenet_iter_10000.caffemodel"),
                                             ("cifar10_full_v1", "cifar10_full_iter_70000.caffemodel")])
def test_trained_weights_are_attached_in_caffe_shapes(folder, weights):
    """V1 caffemodels store biases as (1,1,1,O) and InnerProduct weights as (1,1,O,K): the graph gives the
    current shapes, with the same numbers OpenCV reads."""
    prototxt, caffemodel = model(folder), shared_path("models", folder, weights)
    graph = load_graph(prototxt, caffemodel)
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    checked = 0
    for layer in graph.layers:
        expected = layer.kind.blob_shapes(layer.spec, layer.in_shapes)
        assert [b.shape for b in layer.blobs] == [tuple(s) for s in expected]
        for i, blob in enumerate(layer.blobs):
            assert blob.dtype == np.float32 and blob.flags.c_contiguous
            np.testing.assert_array_equal(blob.ravel(), net.getParam(layer.name, i).ravel())
            checked += 1
    assert checked == 2 * sum(1 for l in graph.layers if l.type in ("Convolution", "InnerProduct"))


def test_fillers_are_seeded_per_layer(tmp_path):
    """Same seed, same weights; another seed, other weights; and a layer's weights do not depend on the
    layers around it (each layer draws from its own stream)."""
    path = model("cifar10_quick")
    a, b, c = filler_graph(path, seed=0), filler_graph(path, seed=0), filler_graph(path, seed=1)
    for la, lb, lc in zip(a.layers, b.layers, c.layers):
        for wa, wb, wc in zip(la.blobs, lb.blobs, lc.blobs):
            np.testing.assert_array_equal(wa, wb)
            assert not np.array_equal(wa, wc)
    # drop the last three layers: the remaining layers' weights stay as they were
    text = path.read_text()
    shorter = tmp_path / "shorter.prototxt"
    shorter.write_text(text[:text.index('layer {\n  name: "ip2"')])
    d = filler_graph(shorter, seed=0)
    for layer in d.layers:
        for wa, wd in zip(a.layer(layer.name).blobs, layer.blobs):
            np.testing.assert_array_equal(wa, wd)


def test_reshape_keeps_weights_and_checks_names():
    graph = filler_graph(model("alexnet"))
    bigger = graph.reshape({"data": (3, 3, 227, 227)})
    assert bigger.shapes["fc8"] == (3, 1000) and bigger.shapes["conv1"] == (3, 96, 55, 55)
    assert bigger.layer("conv1").blobs[0] is graph.layer("conv1").blobs[0]
    assert graph.shapes["fc8"] == (10, 1000)  # the original graph is unchanged
    with pytest.raises(NetDefinitionError, match="'image'"):
        graph.reshape({"image": (1, 3, 227, 227)})
    with pytest.raises(NetDefinitionError, match="no layer named 'conv9'"):
        graph.layer("conv9")


def test_googlenet_structure():
    """Concat of four branches, in-place ReLUs, training-only layers dropped, one output."""
    graph = filler_graph(model("googlenet"))
    concat = graph.layer("inception_3a/output")
    assert concat.type == "Concat" and len(concat.bottoms) == 4
    assert graph.shapes["inception_3a/output"] == (10, 64 + 128 + 32 + 32, 28, 28)
    relu = graph.layer("inception_3a/relu_1x1")
    assert relu.bottoms == relu.tops == ["inception_3a/1x1"]
    assert graph.inputs == {"data": (10, 3, 224, 224)} and graph.outputs == ["prob"]


def test_loading_grows_linearly_with_depth(tmp_path):
    """A chain of in-place ReLUs 5x longer takes about 5x as long to load (a quadratic reader: 25x);
    the bound leaves room for a noisy machine."""
    import warnings
    times = {}
    for layers in (2000, 10000):
        path = tmp_path / f"deep{layers}.prototxt"
        path.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 '
                        'dim: 8 } } }\n' + "".join(f'layer {{ name: "r{i}" type: "ReLU" bottom: "data" top: "data" }}\n'
                                                    for i in range(layers)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            started = time.perf_counter()
            graph = load_graph(str(path))
            times[layers] = time.perf_counter() - started
        assert len(graph.layers) == layers + 1 and graph.outputs == ["data"]
    assert times[10000] < 12 * times[2000], times

"""Bad input through the public entry points (cnnfpga.Net, load_graph): a specific error type, and a
message that names the file and, where there is one, the line or the layer."""
import re
import time
import tracemalloc
import warnings

import numpy as np
import pytest

import cnnfpga
from cnnfpga import (CnnfpgaError, InputError, ModelFileError, NetDefinitionError, ResourceError, WeightsError,
                     load_graph, reference)
from cnnfpga.caffe.writer import write_caffemodel

from conftest import shared_path


@pytest.fixture
def lenet_text() -> str:
    return shared_path("models", "lenet", "lenet.prototxt").read_text()


@pytest.fixture
def lenet_weights():
    return shared_path("models", "lenet", "lenet_iter_10000.caffemodel")


def line_of(text: str, fragment: str) -> int:
    """1-based line of the first occurrence of `fragment`."""
    return text[:text.index(fragment)].count("\n") + 1


def layer_line(text: str, name: str) -> int:
    """The line where the `layer {` block holding `name: "<name>"` starts."""
    at = text.index(f'name: "{name}"')
    return text[:text.rindex("layer {", 0, at)].count("\n") + 1


def write(tmp_path, text: str, name: str = "net.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def raises_from_both(error_type, path, weights=None):
    """The same error from load_graph and from cnnfpga.Net (which may add a hint); returns the message."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(error_type) as from_graph:
            load_graph(str(path), None if weights is None else str(weights))
        with pytest.raises(error_type) as from_net:
            cnnfpga.Net(str(path), None if weights is None else str(weights))
    assert isinstance(from_graph.value, CnnfpgaError)
    assert str(from_net.value).startswith(str(from_graph.value))
    return str(from_graph.value)


# ---------------------------------------------------------------- prototxt

def test_syntax_error_names_file_and_line(tmp_path, lenet_text):
    bad_line = 'top: "conv1" }}'
    broken = lenet_text.replace('top: "conv1"', bad_line, 1)
    message = raises_from_both(ModelFileError, write(tmp_path, broken))
    assert f"net.prototxt:{line_of(broken, bad_line)}:" in message


def test_unknown_field_names_file_and_line(tmp_path, lenet_text):
    broken = lenet_text.replace("stride: 1", "strid: 1", 1)
    message = raises_from_both(ModelFileError, write(tmp_path, broken))
    assert f"net.prototxt:{line_of(broken, 'strid: 1')}:" in message and "strid" in message


def test_unknown_layer_type_lists_the_supported_ones(tmp_path, lenet_text):
    broken = lenet_text.replace('type: "Pooling"', 'type: "Poolin"', 1)
    message = raises_from_both(NetDefinitionError, write(tmp_path, broken))
    assert f"net.prototxt:{layer_line(broken, 'pool1')} (layer 'pool1')" in message
    assert "'Poolin'" in message
    for supported in ("Convolution", "Pooling", "LRN", "InnerProduct", "Concat", "Eltwise", "BatchNorm"):
        assert supported in message


def test_bottom_that_no_layer_produces(tmp_path, lenet_text):
    broken = lenet_text.replace('bottom: "pool1"', 'bottom: "pool9"', 1)
    message = raises_from_both(NetDefinitionError, write(tmp_path, broken))
    assert f"net.prototxt:{layer_line(broken, 'conv2')} (layer 'conv2')" in message and "'pool9'" in message


def test_two_layers_of_one_name(tmp_path, lenet_text):
    broken = lenet_text.replace('name: "pool2"', 'name: "pool1"', 1)
    message = raises_from_both(NetDefinitionError, write(tmp_path, broken))
    assert "a second layer named 'pool1'" in message and "must be unique" in message
    assert f"net.prototxt:{layer_line(lenet_text, 'pool1')}" in message   # where the first one is


def test_a_top_written_by_two_layers_not_in_place(tmp_path, lenet_text):
    """Caffe refuses it ("produced by multiple sources"); in place (top == bottom) is fine."""
    broken = lenet_text.replace('top: "pool2"', 'top: "pool1"', 1)
    message = raises_from_both(NetDefinitionError, write(tmp_path, broken))
    assert "(layer 'pool2')" in message and "top 'pool1' is already produced by layer 'pool1'" in message


def test_a_deep_net_loads_in_linear_time(tmp_path):
    """20,000 in-place ReLUs: finding the outputs used to scan every later layer for every top."""
    layers = "".join(f'layer {{ name: "relu{i}" type: "ReLU" bottom: "data" top: "data" }}\n' for i in range(20000))
    path = write(tmp_path, 'input: "data"\ninput_shape { dim: 1 dim: 2 dim: 3 dim: 3 }\n' + layers)
    start = time.perf_counter()
    graph = load_graph(str(path), fill=False)
    assert time.perf_counter() - start < 5 and graph.outputs == ["data"] and len(graph.layers) == 20000


@pytest.mark.parametrize("old, new, layer, what", [
    ("stride: 1", "stride: 0", "conv1", "stride"),
    ("kernel_size: 5", "kernel_size: 0", "conv1", "kernel"),
    ("stride: 2", "stride: 0", "pool1", "stride"),
    ("kernel_size: 2", "kernel_size: 0", "pool1", "kernel"),
    ("num_output: 20", "num_output: 0", "conv1", "num_output"),
])
def test_zero_stride_or_kernel(tmp_path, lenet_text, old, new, layer, what):
    broken = lenet_text.replace(old, new, 1)
    message = raises_from_both(NetDefinitionError, write(tmp_path, broken))
    assert f"net.prototxt:{layer_line(broken, layer)} (layer '{layer}')" in message
    assert what in message and "positive" in message


@pytest.mark.parametrize("old, new", [("stride: 1", "stride: -1"), ("kernel_size: 5", "kernel_size: -5")])
def test_negative_stride_or_kernel_is_a_parse_error_with_its_line(tmp_path, lenet_text, old, new):
    """The fields are uint32: a negative number does not parse, and the error says where it is."""
    broken = lenet_text.replace(old, new, 1)
    message = raises_from_both(ModelFileError, write(tmp_path, broken))
    assert f"net.prototxt:{line_of(broken, new)}:" in message and new.split(": ")[1] in message


def test_kernel_larger_than_the_input(tmp_path, lenet_text):
    broken = lenet_text.replace("kernel_size: 5", "kernel_size: 29", 1)
    message = raises_from_both(NetDefinitionError, write(tmp_path, broken))
    assert "(layer 'conv1')" in message and "28x28" in message


@pytest.mark.parametrize("text, words", [("", "empty"), ("  \n\n", "empty"), ("\x89PNG\r\n\x1a\n\x00\x00", "UTF-8")])
def test_empty_or_binary_prototxt(tmp_path, text, words):
    path = tmp_path / "net.prototxt"
    path.write_bytes(text.encode("latin-1"))
    message = raises_from_both(ModelFileError, path)
    assert "net.prototxt" in message and words in message


def test_prototxt_without_layers(tmp_path):
    message = raises_from_both(NetDefinitionError, write(tmp_path, '# a comment\nname: "nothing"\n'))
    assert "net.prototxt" in message and "no layers" in message


def test_missing_prototxt(tmp_path):
    missing = tmp_path / "nowhere" / "net.prototxt"
    message = raises_from_both(ModelFileError, missing)
    assert str(missing) in message and "no such file" in message


def test_directory_as_prototxt(tmp_path):
    message = raises_from_both(ModelFileError, tmp_path)
    assert str(tmp_path) in message


# ---------------------------------------------------------------- caffemodel

def test_missing_caffemodel(tmp_path, lenet_text):
    message = raises_from_both(ModelFileError, write(tmp_path, lenet_text), tmp_path / "gone.caffemodel")
    assert "gone.caffemodel" in message and "no such file" in message


def test_empty_caffemodel(tmp_path, lenet_text):
    (tmp_path / "empty.caffemodel").write_bytes(b"")
    message = raises_from_both(ModelFileError, write(tmp_path, lenet_text), tmp_path / "empty.caffemodel")
    assert "empty.caffemodel" in message and "empty" in message


@pytest.mark.parametrize("fraction", [0.5, 0.999])
def test_truncated_caffemodel(tmp_path, lenet_text, lenet_weights, fraction):
    data = lenet_weights.read_bytes()
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes(data[:int(len(data) * fraction)])
    message = raises_from_both(ModelFileError, write(tmp_path, lenet_text), cut)
    assert "cut.caffemodel" in message and re.search(r"byte \d+", message)


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes_as_caffemodel(tmp_path, lenet_text, seed):
    junk = tmp_path / "junk.caffemodel"
    junk.write_bytes(np.random.default_rng(seed).bytes(4096))
    message = raises_from_both(ModelFileError, write(tmp_path, lenet_text), junk)
    assert "junk.caffemodel" in message


def test_prototxt_given_as_caffemodel(tmp_path, lenet_text):
    net = write(tmp_path, lenet_text)
    message = raises_from_both(ModelFileError, net, net)
    assert "net.prototxt" in message and "text" in message


def test_weights_of_another_net(tmp_path, lenet_text):
    """CIFAR-10 weights for LeNet: conv1 has the right name and the wrong shape."""
    other = shared_path("models", "cifar10_quick_v1", "cifar10_quick_iter_5000.caffemodel")
    message = raises_from_both(WeightsError, write(tmp_path, lenet_text), other)
    assert "cifar10_quick_iter_5000.caffemodel" in message
    assert f"net.prototxt:{layer_line(lenet_text, 'conv1')} (layer 'conv1')" in message
    assert "[32, 3, 5, 5]" in message and "[20, 1, 5, 5]" in message


def test_weight_shape_disagrees_with_prototxt(tmp_path, lenet_text):
    """A caffemodel whose ip1 was trained for 400 hidden units while the prototxt says 500."""
    graph = load_graph(str(shared_path("models", "lenet", "lenet.prototxt")),
                       str(shared_path("models", "lenet", "lenet_iter_10000.caffemodel")))
    layers = [(l.name, l.type, [b[:400] if l.name == "ip1" else b for b in l.blobs]) for l in graph.layers if l.blobs]
    write_caffemodel(tmp_path / "w.caffemodel", graph.name, layers)
    message = raises_from_both(WeightsError, write(tmp_path, lenet_text), tmp_path / "w.caffemodel")
    assert "w.caffemodel" in message and "'ip1'" in message and "[400, 800]" in message and "[500, 800]" in message
    assert f"net.prototxt:{layer_line(lenet_text, 'ip1')}" in message


def test_missing_layer_in_caffemodel(tmp_path, lenet_text, lenet_weights):
    graph = load_graph(str(shared_path("models", "lenet", "lenet.prototxt")), str(lenet_weights))
    write_caffemodel(tmp_path / "w.caffemodel", graph.name,
                     [(l.name, l.type, l.blobs) for l in graph.layers if l.blobs and l.name != "conv2"])
    message = raises_from_both(WeightsError, write(tmp_path, lenet_text), tmp_path / "w.caffemodel")
    assert "w.caffemodel" in message and "conv2" in message


# ---------------------------------------------------------------- memory

HUGE = "dim: 100000 dim: 3 dim: 4096 dim: 4096"


def assert_refused_quickly(call, name: str) -> str:
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(ResourceError) as error:
        call()
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 2.0, f"took {elapsed:.1f} s"
    assert peak < 64 * 2**20, f"allocated {peak / 2**20:.0f} MiB before refusing"
    message = str(error.value)
    assert name in message and "GiB" in message and "available" in message
    return message


def test_huge_input_is_refused_before_allocating(tmp_path, lenet_text):
    """100000 x 3 x 4096 x 4096: petabytes of blobs and (through ip1) hundreds of GiB of weights."""
    path = write(tmp_path, lenet_text.replace("dim: 64 dim: 1 dim: 28 dim: 28", HUGE), "huge.prototxt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert_refused_quickly(lambda: load_graph(str(path)), "huge.prototxt")
        assert_refused_quickly(lambda: cnnfpga.Net(str(path)), "huge.prototxt")


def test_huge_blobs_with_small_weights_are_refused_at_run_time(tmp_path, lenet_text):
    """Only convolutions: the weights fit, the blobs do not; forward and Net refuse before allocating."""
    text = lenet_text.replace("dim: 64 dim: 1 dim: 28 dim: 28", HUGE)
    path = write(tmp_path, text[:text.index('layer {\n  name: "ip1"')], "convs.prototxt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        graph = load_graph(str(path))  # weights are small: loading is fine
        assert_refused_quickly(lambda: reference.forward(graph, {"data": np.zeros((1, 3, 1, 1))}), "convs.prototxt")
        assert_refused_quickly(lambda: cnnfpga.Net(str(path)), "convs.prototxt")


# ---------------------------------------------------------------- inputs at run time

def test_wrong_input_shape_and_name(lenet_weights):
    net = cnnfpga.Net(str(shared_path("models", "lenet", "lenet.prototxt")), str(lenet_weights))
    with pytest.raises(InputError, match="'image' is not an input"):
        net.forward(image=np.zeros((1, 1, 28, 28)))
    graph = net.graph
    with pytest.raises(InputError, match=r"\[2, 1, 27, 28\].*\[64, 1, 28, 28\]"):
        reference.forward(graph, {"data": np.zeros((2, 1, 27, 28))})
    with pytest.raises(InputError, match="no data given"):
        reference.forward(graph, {})
    with pytest.raises(InputError, match="non-numeric"):
        reference.forward(graph, {"data": np.full((64, 1, 28, 28), "x")})


def test_error_types_are_distinct_cnnfpga_errors():
    types = (ModelFileError, NetDefinitionError, WeightsError, ResourceError, InputError)
    assert all(issubclass(t, CnnfpgaError) and t is not CnnfpgaError for t in types)
    assert not any(issubclass(a, b) for a in types for b in types if a is not b)

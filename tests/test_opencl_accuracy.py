"""Real trained weights through the OpenCL path on PoCL: the FPGA-variant kernels (single work-item stages,
emulated channels) classify real images as well as the golden model, in float, 16-bit and 8-bit fixed point,
and activation pruning on the host changes no prediction.

Data: the first 1000 MNIST test digits (LeNet) and the 1000 CIFAR-10 test JPEGs (both CIFAR-10 nets).
Calibration (activation statistics for the fixed-point fractional bits) never uses the images it scores:
MNIST digits 1000-1199, and for CIFAR-10 the mirror images of every 10th JPEG.
"""
import warnings

import numpy as np
import pytest

import cnnfpga
from cnnfpga.host import inner_product
from conftest import shared_path
from data_sets import cifar_files, cifar_rgb, mnist_test

pytestmark = pytest.mark.slow

CIFAR_MEAN_RGB = np.array([125.27, 122.93, 113.86], dtype=np.float32)
BATCH = 250


def cifar_inputs(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) - CIFAR_MEAN_RGB).transpose(0, 3, 1, 2).copy()


@pytest.fixture(scope="module")
def mnist():
    images, labels = mnist_test(shared_path("data", "mnist"), count=1200)
    digits = images.astype(np.float32)[:, None] * np.float32(0.00390625)
    return {"x": digits[:1000], "labels": labels[:1000], "calibration": digits[1000:]}


@pytest.fixture(scope="module")
def cifar():
    paths, labels = cifar_files(shared_path("data", "cifar10_test_jpg"))
    images = cifar_rgb(paths)
    return {"x": cifar_inputs(images), "labels": labels, "calibration": cifar_inputs(images[::10, :, ::-1])}


NETS = {"lenet": ("lenet.prototxt", "lenet.caffemodel", "mnist"),
        "cifar10_quick": ("cifar10_quick.prototxt", "cifar10_quick.caffemodel", "cifar"),
        "cifar10_full": ("cifar10_full.prototxt", "cifar10_full.caffemodel", "cifar")}


def data_for(name, request):
    return request.getfixturevalue(NETS[name][2])


def predictions(net, x: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """Top-1 class of every image, run in batches."""
    out = []
    for start in range(0, len(x), batch):
        scores = net.forward(**{net.inputs[0]: x[start:start + batch]})[net.outputs[-1]]
        out.append(scores.reshape(len(scores), -1).argmax(axis=1))
    return np.concatenate(out)


def make_net(name, **options):
    prototxt, weights, _ = NETS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # real weights and calibration: nothing to warn about
        return cnnfpga.Net(prototxt, weights, **options)


_golden = {}


def golden(name, data):
    if name not in _golden:
        _golden[name] = predictions(make_net(name), data["x"])
    return _golden[name]


def accuracy(predicted, labels) -> float:
    return 100.0 * float(np.mean(predicted == labels))


@pytest.mark.parametrize("name", list(NETS))
def test_float_kernels_give_the_golden_models_predictions(name, request):
    data = data_for(name, request)
    reference = golden(name, data)
    device = predictions(make_net(name, backend="opencl", precision="float"), data["x"])
    # float stages sum in another order than BLAS: only an exact tie between two classes could flip
    assert np.mean(device == reference) >= 0.999
    assert accuracy(device, data["labels"]) == pytest.approx(accuracy(reference, data["labels"]), abs=0.1)


@pytest.mark.parametrize("name", list(NETS))
def test_fixed16_within_0_2_points_of_float(name, request):
    data = data_for(name, request)
    float_accuracy = accuracy(golden(name, data), data["labels"])
    net = make_net(name, backend="opencl", precision="fixed16", calibration=data["calibration"])
    fixed_accuracy = accuracy(predictions(net, data["x"]), data["labels"])
    assert abs(fixed_accuracy - float_accuracy) <= 0.2, (fixed_accuracy, float_accuracy)


@pytest.mark.parametrize("name", ["lenet", "cifar10_full"])
def test_fixed8_with_calibrated_fractional_bits_within_1_point_of_float(name, request):
    data = data_for(name, request)
    float_accuracy = accuracy(golden(name, data), data["labels"])
    net = make_net(name, backend="opencl", precision="fixed8", calibration=data["calibration"])
    outputs = [stage.precision.outputs for stage in net.executor.plan.stages]
    assert {fmt.total_bits for fmt in outputs} == {8}
    # fractional bits are chosen per layer from the statistics, not one format for all
    assert len({fmt.frac_bits for fmt in outputs}) > 1, net.plan()
    fixed_accuracy = accuracy(predictions(net, data["x"]), data["labels"])
    assert abs(fixed_accuracy - float_accuracy) <= 1.0, (fixed_accuracy, float_accuracy)


@pytest.mark.parametrize("name", list(NETS))
def test_activation_pruning_changes_no_prediction(name, request, monkeypatch):
    data = data_for(name, request)
    # small batches: a column is skipped only when it is zero in every image of the batch
    dense = predictions(make_net(name, backend="opencl", prune_threshold=None), data["x"], batch=4)
    # take the pruned (gathered) path on every call, also where the dense product would be faster
    monkeypatch.setattr(inner_product, "gather_pays", lambda live, columns, batch: True)
    net = make_net(name, backend="opencl", prune_threshold=0.0)
    pruned = predictions(net, data["x"], batch=4)
    stats = [layer.stats for layer in net.executor.inner_products.values()]
    assert all(s.gathered_calls > 0 for s in stats)
    assert min(s.live_fraction for s in stats) < 1.0  # some inputs really were skipped
    assert np.array_equal(pruned, dense)

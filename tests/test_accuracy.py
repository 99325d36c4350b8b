"""Real trained weights on real data: the golden model's accuracy equals OpenCV's on the same inputs.

LeNet (both file formats) on the first 1000 MNIST test digits; CIFAR-10 quick and full on the 1000
CIFAR test JPEGs. Preprocessing as shared/models/SOURCES.md says: MNIST pixels * 1/256; CIFAR in
RGB order minus the per-channel mean (125.27, 122.93, 113.86).
"""
import cv2
import numpy as np
import pytest

from cnnfpga import reference
from cnnfpga.graph import load_graph
from cnnfpga.io import Transformer, load_image

from conftest import shared_path
from data_sets import cifar_files, cifar_rgb, mnist_test

BATCH = 100
CIFAR_MEAN_RGB = np.array([125.27, 122.93, 113.86], dtype=np.float32)
# (folder, prototxt, caffemodel, OpenCV 4.10's accuracy in percent as measured when the data was added)
MNIST_NETS = [("lenet", "lenet.prototxt", "lenet_iter_10000.caffemodel", 98.90),
              ("lenet_v1", "lenet.prototxt", "lenet_iter_10000.caffemodel", 99.00)]
CIFAR_NETS = [("cifar10_quick_v1", "cifar10_quick.prototxt", "cifar10_quick_iter_5000.caffemodel", 73.1),
              ("cifar10_full_v1", "cifar10_full.prototxt", "cifar10_full_iter_70000.caffemodel", 79.6)]


def files(folder, prototxt, caffemodel):
    return shared_path("models", folder, prototxt), shared_path("models", folder, caffemodel)


def our_scores(prototxt, caffemodel, x: np.ndarray) -> np.ndarray:
    graph = load_graph(prototxt, caffemodel, input_shapes={"data": (BATCH,) + x.shape[1:]})
    return np.concatenate([reference.forward(graph, {"data": x[i:i + BATCH]})["prob"]
                           for i in range(0, len(x), BATCH)])


def opencv_scores(prototxt, caffemodel, x: np.ndarray) -> np.ndarray:
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    scores = []
    for i in range(0, len(x), BATCH):
        net.setInput(x[i:i + BATCH])
        scores.append(net.forward().copy())
    return np.concatenate(scores).reshape(len(x), -1)


def percent_correct(scores: np.ndarray, labels: np.ndarray) -> float:
    return 100.0 * float(np.mean(scores.argmax(axis=1) == labels))


def assert_same_accuracy(ours, theirs, labels, known: float) -> None:
    ours_pct, theirs_pct = percent_correct(ours, labels), percent_correct(theirs, labels)
    disagreements = int(np.sum(ours.argmax(axis=1) != theirs.argmax(axis=1)))
    assert disagreements <= 2, f"{disagreements} predictions differ from OpenCV's"
    assert abs(ours_pct - theirs_pct) <= 0.1 + 1e-9, (ours_pct, theirs_pct)
    assert abs(ours_pct - known) <= 1.0, f"{ours_pct:.2f}% is far from the known {known}%"
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


@pytest.fixture(scope="module")
def mnist():
    images, labels = mnist_test(shared_path("data", "mnist"), count=1000)
    assert images.shape == (1000, 28, 28) and set(labels.tolist()) == set(range(10))
    return (images[:, None].astype(np.float32) * np.float32(0.00390625)), labels


@pytest.fixture(scope="module")
def cifar():
    paths, labels = cifar_files(shared_path("data", "cifar10_test_jpg"))
    assert len(paths) == 1000 and np.bincount(labels).tolist() == [100] * 10
    rgb = cifar_rgb(paths)
    x = np.ascontiguousarray((rgb.astype(np.float32) - CIFAR_MEAN_RGB).transpose(0, 3, 1, 2))
    return paths, x, labels


@pytest.mark.parametrize("folder, prototxt, caffemodel, known", MNIST_NETS)
def test_lenet_accuracy_equals_opencv(folder, prototxt, caffemodel, known, mnist):
    x, labels = mnist
    net, weights = files(folder, prototxt, caffemodel)
    assert_same_accuracy(our_scores(net, weights, x), opencv_scores(net, weights, x), labels, known)


@pytest.mark.parametrize("folder, prototxt, caffemodel, known", CIFAR_NETS)
def test_cifar_accuracy_equals_opencv(folder, prototxt, caffemodel, known, cifar):
    _, x, labels = cifar
    net, weights = files(folder, prototxt, caffemodel)
    ours = our_scores(net, weights, x)
    assert_same_accuracy(ours, opencv_scores(net, weights, x), labels, known)
    # BGR order loses many points (SOURCES.md): a check that the channel order matters at all
    assert percent_correct(our_scores(net, weights, np.ascontiguousarray(x[:, ::-1])), labels) < \
        percent_correct(ours, labels) - 5


def test_cifar_through_cnnfpga_io(cifar):
    """load_image + Transformer (the pycaffe recipe) give the same inputs and the same accuracy."""
    paths, x, labels = cifar
    net, weights = files(*CIFAR_NETS[0][:3])
    transformer = Transformer({"data": (1, 3, 32, 32)})
    transformer.set_transpose("data", (2, 0, 1))
    transformer.set_raw_scale("data", 255)
    transformer.set_mean("data", CIFAR_MEAN_RGB)
    through_io = np.stack([transformer.preprocess("data", load_image(str(p))) for p in paths])
    np.testing.assert_allclose(through_io, x, atol=1e-4)
    ours = our_scores(net, weights, through_io)
    assert percent_correct(ours, labels) == percent_correct(our_scores(net, weights, x), labels)
    assert_same_accuracy(ours, opencv_scores(net, weights, x), labels, CIFAR_NETS[0][3])

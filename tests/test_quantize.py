"""cnnfpga quantize: per-layer word lengths within an accuracy budget, on real trained nets and data.

The mixes found are checked against the fixed-point golden model run here independently of the
search: a written precision file must load and keep its accuracy within the budget of float.
"""
import json
from pathlib import Path
import re
import subprocess
import sys

import numpy as np
from PIL import Image, ImageOps
import pytest

import cnnfpga
from cnnfpga import quantize
from cnnfpga.fixed_reference import forward_fixed
from cnnfpga.graph import load_graph
from cnnfpga.precision import resolve_precision
from cnnfpga.quantize import layer_groups, quantize_net

from conftest import shared_path
from data_sets import CIFAR10_CLASSES, cifar_files, cifar_rgb, mnist_test

CIFAR_MEAN_RGB = np.array([125.27, 122.93, 113.86], dtype=np.float32)
FORMAT = re.compile(r"fixed(\d+)\.(-?\d+)")


def top1(net: str, precision, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 (%) of a bundled net on the fixed-point golden model, ``precision`` resolved as Net would."""
    graph = load_graph(str(cnnfpga.bundled.resolve(f"{net}.prototxt")),
                       str(cnnfpga.bundled.resolve(f"{net}.caffemodel"))).reshape({"data": images.shape})
    blobs = forward_fixed(graph, {"data": images}, resolve_precision(graph, precision)).blobs
    return 100.0 * float(np.mean(blobs["prob"].reshape(len(images), -1).argmax(axis=1) == labels))


def word_lengths(mapping: dict) -> list:
    return [int(FORMAT.fullmatch(value).group(1)) for value in mapping.values()]


def cifar_prepared(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray((rgb.astype(np.float32) - CIFAR_MEAN_RGB).transpose(0, 3, 1, 2))


@pytest.fixture(scope="module")
def calibration_folder(tmp_path_factory) -> Path:
    """Mirrored copies of every 50th CIFAR-10 JPEG as PNGs (lossless): held-out-like calibration images."""
    folder = tmp_path_factory.mktemp("calibration")
    paths, _ = cifar_files(shared_path("data", "cifar10_test_jpg"))
    for k, path in enumerate(paths[::50]):
        with Image.open(path) as image:
            ImageOps.mirror(image.convert("RGB")).save(folder / f"{k:03d}.png")
    return folder


def test_cli_on_cifar10_quick_writes_a_mix_within_budget(calibration_folder, tmp_path):
    out = tmp_path / "precision.json"
    eval_folder = shared_path("data", "cifar10_test_jpg")
    done = subprocess.run([sys.executable, "-m", "cnnfpga.cli", "quantize", "--net", "cifar10_quick.prototxt",
                           "--calibration", str(calibration_folder), "--eval", str(eval_folder), "--limit", "100",
                           "--batch", "25", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and re.search(r"candidate \d+: conv2 at \d+ bits", done.stderr)
    mapping = json.loads(out.read_text())
    assert set(mapping) == {"conv1", "pool1", "relu1", "conv2", "relu2", "pool2", "conv3", "relu3", "pool3"}
    bits = word_lengths(mapping)
    assert max(bits) <= 16 and min(bits) < 16, mapping
    # the file is what the OpenCL backend and the design tool take (parsed and resolved here, no device)
    assert "conv1" in cnnfpga.Net("cifar10_quick.prototxt", "cifar10_quick.caffemodel", backend="opencl",
                                  precision=str(out)).opencl_source()
    # --limit 100 takes the classes in turn: the first 10 images of each
    paths = [path for name in CIFAR10_CLASSES for path in sorted((eval_folder / name).glob("*.jpg"))[:10]]
    images, labels = cifar_prepared(cifar_rgb(paths)), np.repeat(np.arange(10), 10)
    float_top1 = top1("cifar10_quick", "float", images, labels)
    mix_top1 = top1("cifar10_quick", str(out), images, labels)
    assert mix_top1 >= float_top1 - 0.5
    assert f"float {float_top1:.2f}%, mix {mix_top1:.2f}%" in done.stdout
    assert re.search(r"every layer at 16 bits [\d.]+%, 10 bits [\d.]+%, 8 bits [\d.]+%", done.stdout)


@pytest.fixture(scope="module")
def mnist():
    digits, labels = mnist_test(shared_path("data", "mnist"), count=1200)
    return digits[:, None].astype(np.float32) * np.float32(0.00390625), labels


def test_lenet_from_mnist_arrays(mnist):
    digits, labels = mnist
    result = quantize_net("lenet.prototxt", "lenet.caffemodel", digits[1000:1200], digits[:500], labels[:500])
    # relu1 sits between the two host inner products: nothing to narrow there, it stays float
    assert set(result.precision) == {"conv1", "pool1", "conv2", "pool2"}
    bits = word_lengths(result.precision)
    assert max(bits) <= 16 and min(bits) < 16
    assert result.float_accuracy == top1("lenet", "float", digits[:500], labels[:500])
    assert result.accuracy == top1("lenet", result.precision, digits[:500], labels[:500])
    assert result.accuracy >= result.float_accuracy - 0.5
    assert sorted(result.uniform) == [8, 10, 16]
    # the search starts from the narrowest uniform width within budget; no layer ends up wider
    assert result.start in result.bits and max(bits) <= result.start
    assert result.start_accuracy >= result.float_accuracy - 0.5
    # each layer's effect is the change its lowering made; together they are the mix against the start
    effects = [row.effect for row in result.layers if row.effect is not None]
    assert len(effects) == 2 and sum(effects) == pytest.approx(result.accuracy - result.start_accuracy)
    assert "relu1" in result.table() and "float" in result.table()


@pytest.mark.slow
def test_opencl_backend_makes_the_golden_models_choices(calibration_folder):
    """The kernels are bit-exact with the golden model, so the search takes the same path on both."""
    paths, labels = cifar_files(shared_path("data", "cifar10_test_jpg"))
    images = cifar_prepared(cifar_rgb(paths[::50]))
    calibration = cifar_prepared(np.stack([np.asarray(Image.open(path))
                                           for path in sorted(calibration_folder.glob("*.png"))]))
    found = {backend: quantize_net("cifar10_quick.prototxt", "cifar10_quick.caffemodel", calibration, images,
                                   labels[::50], max_drop=5, bits=[6, 8, 16], backend=backend, batch=10, uniform=())
             for backend in ("reference", "opencl")}
    assert found["opencl"].precision == found["reference"].precision
    assert (found["opencl"].float_accuracy, found["opencl"].accuracy) == \
        (found["reference"].float_accuracy, found["reference"].accuracy)
    assert len(set(word_lengths(found["opencl"].precision))) > 1   # the per-layer step lowered a layer


def test_groups_follow_the_layers_that_compute():
    graph = load_graph(str(cnnfpga.bundled.resolve("cifar10_full.prototxt")),
                       str(cnnfpga.bundled.resolve("cifar10_full.caffemodel")))
    assert [(g.name, g.layers) for g in layer_groups(graph)] == [
        ("conv1", ["conv1"]), ("norm1", ["pool1", "relu1", "norm1"]), ("conv2", ["conv2"]),
        ("norm2", ["relu2", "pool2", "norm2"]), ("conv3", ["conv3", "relu3", "pool3"])]


MLP = """name: "mlp"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


@pytest.fixture
def bad_inputs(tmp_path, calibration_folder) -> dict:
    """Folders and files for the bad-input cases."""
    (tmp_path / "kitten").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp_path / "kitten" / "a.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "list.txt").write_text(f"{calibration_folder / '000.png'} cat\n{calibration_folder / '001.png'}\n")
    (tmp_path / "good.txt").write_text(f"{calibration_folder / '000.png'} cat\n{calibration_folder / '001.png'} 3\n")
    (tmp_path / "mlp.prototxt").write_text(MLP)
    (tmp_path / "digits" / "7").mkdir(parents=True)
    Image.new("L", (8, 8)).save(tmp_path / "digits" / "7" / "a.png")
    return {"tmp": tmp_path, "cal": calibration_folder}


CIFAR = ["--net", "cifar10_quick.prototxt"]
BAD = {   # case: (arguments, what the one error line must say)
    "no eval folder": (CIFAR + ["--calibration", "{cal}", "--eval", "{tmp}/nowhere"], "no such folder or list file"),
    "unknown class folder": (CIFAR + ["--calibration", "{cal}", "--eval", "{tmp}"], "'digits' names no class"),
    "list line without label": (CIFAR + ["--calibration", "{cal}", "--eval", "{tmp}/list.txt"], "list.txt:2:"),
    "no calibration images": (CIFAR + ["--calibration", "{tmp}/empty", "--eval", "{tmp}/good.txt"],
                              "folder with no images"),
    "negative budget": (CIFAR + ["--calibration", "{cal}", "--eval", "{tmp}/good.txt", "--max-drop", "-1"],
                        "--max-drop: expected accuracy points >= 0"),
    "empty bits range": (CIFAR + ["--calibration", "{cal}", "--eval", "{tmp}/good.txt", "--bits-range", "16..4"],
                         "--bits-range"),
    "bits below 2": (CIFAR + ["--calibration", "{cal}", "--eval", "{tmp}/good.txt", "--bits-range", "1..8"],
                     "--bits-range"),
    "out folder missing": (CIFAR + ["--calibration", "{cal}", "--eval", "{tmp}/good.txt", "--out", "{tmp}/no/p.json"],
                           "no folder"),
    "device without opencl": (CIFAR + ["--calibration", "{cal}", "--eval", "{tmp}/good.txt", "--device", "pocl"],
                              "--backend opencl"),
    "no fixed-point layers": (["--net", "{tmp}/mlp.prototxt", "--calibration", "{tmp}/digits", "--eval",
                               "{tmp}/digits"], "nothing to quantise"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_error_line(case, bad_inputs, capsys):
    arguments, expected = BAD[case]
    try:
        status = quantize.main([argument.format(**bad_inputs) for argument in arguments])
    except SystemExit as stop:   # argparse refuses a bad option value before run()
        status = stop.code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert expected in errors[0]

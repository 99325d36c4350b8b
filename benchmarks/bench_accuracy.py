"""Top-1 accuracy of the real trained nets in every precision, side by side, on PoCL.

    python benchmarks/bench_accuracy.py [--shared ../shared]

LeNet on the first 1000 MNIST test digits, CIFAR-10 quick and full on the 1000 CIFAR-10 test JPEGs.
Columns: the numpy golden model, the OpenCL FPGA-variant kernels in float, half, fixed16 and fixed8
(fractional bits per layer from activation statistics of held-out calibration images: MNIST digits
1000-1199; mirrored copies of every 10th CIFAR JPEG), and OpenCV's dnn module as an outside reference.
"""
import argparse
from pathlib import Path
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from data_sets import cifar_files, cifar_rgb, mnist_test  # noqa: E402

import cnnfpga  # noqa: E402
from cnnfpga.bundled import resolve  # noqa: E402

CIFAR_MEAN_RGB = np.array([125.27, 122.93, 113.86], dtype=np.float32)


def load_data(shared: Path) -> dict:
    digits, digit_labels = mnist_test(shared / "data" / "mnist", count=1200)
    digits = digits.astype(np.float32)[:, None] * np.float32(0.00390625)
    paths, cifar_labels = cifar_files(shared / "data" / "cifar10_test_jpg")
    images = cifar_rgb(paths)

    def prepare(batch):
        return (batch.astype(np.float32) - CIFAR_MEAN_RGB).transpose(0, 3, 1, 2).copy()

    mnist = (digits[:1000], digit_labels[:1000], digits[1000:])
    cifar = (prepare(images), cifar_labels, prepare(images[::10, :, ::-1]))
    return {"lenet": mnist, "cifar10_quick": cifar, "cifar10_full": cifar}


def accuracy(net, x, labels, batch=250) -> float:
    predicted = []
    for start in range(0, len(x), batch):
        scores = net.forward(**{net.inputs[0]: x[start:start + batch]})[net.outputs[-1]]
        predicted.append(scores.reshape(len(scores), -1).argmax(axis=1))
    return 100.0 * float(np.mean(np.concatenate(predicted) == labels))


def opencv_accuracy(name, x, labels) -> float:
    import cv2
    net = cv2.dnn.readNetFromCaffe(resolve(f"{name}.prototxt"), resolve(f"{name}.caffemodel"))
    net.setInput(x)
    return 100.0 * float(np.mean(net.forward().reshape(len(x), -1).argmax(axis=1) == labels))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    args = parser.parse_args()
    data = load_data(Path(args.shared))
    columns = ["golden", "float", "half", "fixed16", "fixed8"]
    print(f"{'net':14s} " + " ".join(f"{c:>8s}" for c in columns) + f" {'OpenCV':>8s}  (top-1 %, seconds)")
    for name, (x, labels, calibration) in data.items():
        row, start = [], time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            row.append(accuracy(cnnfpga.Net(f"{name}.prototxt", f"{name}.caffemodel"), x, labels))
            for precision in columns[1:]:
                net = cnnfpga.Net(f"{name}.prototxt", f"{name}.caffemodel", backend="opencl", precision=precision,
                                  calibration=calibration if precision.startswith("fixed") else None)
                row.append(accuracy(net, x, labels))
        row.append(opencv_accuracy(name, x, labels))
        print(f"{name:14s} " + " ".join(f"{v:8.2f}" for v in row) + f"  ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()

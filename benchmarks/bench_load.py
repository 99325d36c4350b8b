"""Load time of an AlexNet-sized caffemodel (244 MB): our read_caffemodel vs OpenCV's readNetFromCaffe.

Writes AlexNet-shaped filler weights to a temp folder once, then times both loaders (best of 3 each).
Run: python benchmarks/bench_load.py [path/to/alexnet/deploy.prototxt]
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cnnfpga.caffe import caffe_pb2
from cnnfpga.caffe.fillers import fill
from cnnfpga.caffe.reader import read_caffemodel
from cnnfpga.caffe.writer import write_caffemodel

DEFAULT_PROTOTXT = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "alexnet" / "deploy.prototxt"
# Weight shapes of BVLC AlexNet (deploy.prototxt: conv2, conv4 and conv5 use group 2).
ALEXNET_WEIGHTS = {
    "conv1": ("Convolution", (96, 3, 11, 11)), "conv2": ("Convolution", (256, 48, 5, 5)),
    "conv3": ("Convolution", (384, 256, 3, 3)), "conv4": ("Convolution", (384, 192, 3, 3)),
    "conv5": ("Convolution", (256, 192, 3, 3)), "fc6": ("InnerProduct", (4096, 9216)),
    "fc7": ("InnerProduct", (4096, 4096)), "fc8": ("InnerProduct", (1000, 4096)),
}


def write_alexnet_fillers(path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    xavier = caffe_pb2.FillerParameter(type="xavier")
    bias = caffe_pb2.FillerParameter(type="constant", value=0.1)
    layers = ((name, type_, [fill(xavier, shape, rng), fill(bias, shape[:1], rng)])
              for name, (type_, shape) in ALEXNET_WEIGHTS.items())
    write_caffemodel(path, "AlexNet", layers)


def best_of(repeats: int, func) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def time_load(prototxt, caffemodel, repeats: int = 3) -> dict:
    """Best-of-`repeats` seconds to load `caffemodel` with our reader and with OpenCV, and their ratio."""
    import cv2  # test-only dependency, the oracle

    ours = best_of(repeats, lambda: read_caffemodel(caffemodel))
    opencv = best_of(repeats, lambda: cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel)))
    return {"ours_s": ours, "opencv_s": opencv, "ratio": ours / opencv}


def main(argv: list[str]) -> None:
    prototxt = Path(argv[1]) if len(argv) > 1 else DEFAULT_PROTOTXT
    with tempfile.TemporaryDirectory(prefix="bench_load_") as folder:
        caffemodel = Path(folder) / "alexnet_fillers.caffemodel"
        start = time.perf_counter()
        write_alexnet_fillers(caffemodel)
        written = time.perf_counter() - start
        print(f"wrote {caffemodel.stat().st_size / 1e6:.1f} MB AlexNet filler weights in {written:.2f} s")
        result = time_load(prototxt, caffemodel)
    print(f"{'read_caffemodel':>24} {'cv2.readNetFromCaffe':>22} {'ratio':>7}")
    print(f"{result['ours_s']:>22.3f} s {result['opencv_s']:>20.3f} s {result['ratio']:>7.2f}")


if __name__ == "__main__":
    main(sys.argv)

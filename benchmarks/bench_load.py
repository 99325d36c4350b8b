"""Load time of a net's caffemodel (AlexNet's: 244 MB): our read_caffemodel vs OpenCV's readNetFromCaffe.

Writes the net's seeded filler weights into a temporary folder, times both loaders on them (best of
--repeats each) and removes the folder.

    python benchmarks/bench_load.py [PROTOTXT] [--repeats 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

from cnnfpga.bench import opencv_module, write_weights
from cnnfpga.bundled import resolve
from cnnfpga.caffe.reader import read_caffemodel
from cnnfpga.errors import CnnfpgaError
from cnnfpga.graph import load_graph


def best_of(repeats: int, func) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def time_load(prototxt, caffemodel, repeats: int) -> dict:
    """Best-of-`repeats` seconds to load `caffemodel` with our reader and with OpenCV, and their ratio."""
    cv2 = opencv_module()
    ours = best_of(repeats, lambda: read_caffemodel(caffemodel))
    opencv = best_of(repeats, lambda: cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel)))
    return {"ours_s": ours, "opencv_s": opencv, "ratio": ours / opencv}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prototxt", nargs="?", default="alexnet.prototxt",
                        help="prototxt path or a bundled net's name (default: the bundled AlexNet)")
    parser.add_argument("--repeats", type=int, default=3, help="loads per loader; the fastest counts")
    args = parser.parse_args(argv)
    if opencv_module() is None:   # found out before writing hundreds of MB
        parser.error("OpenCV (cv2) is not installed: pip install opencv-python-headless")
    try:
        prototxt = resolve(args.prototxt)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # filler weights: intended
            graph = load_graph(prototxt)
    except CnnfpgaError as error:
        parser.error(str(error))
    with tempfile.TemporaryDirectory(prefix="bench_load_") as folder:
        caffemodel = Path(folder) / "filler_weights.caffemodel"
        start = time.perf_counter()
        write_weights(graph, caffemodel)
        written = time.perf_counter() - start
        print(f"wrote {caffemodel.stat().st_size / 1e6:.1f} MB of {graph.name} filler weights in {written:.2f} s")
        result = time_load(prototxt, caffemodel, args.repeats)
    print(f"{'read_caffemodel':>24} {'cv2.readNetFromCaffe':>22} {'ratio':>7}")
    print(f"{result['ours_s']:>22.3f} s {result['opencv_s']:>20.3f} s {result['ratio']:>7.2f}")


if __name__ == "__main__":
    main()

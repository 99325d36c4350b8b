"""The golden model against OpenCV on AlexNet: loading the 244 MB caffemodel, and the forward pass.

Side by side in one run, same weights (seeded fillers written once into a cache folder) and same input:
  - load: our whole-graph load (`load_graph(prototxt, caffemodel)`) vs `cv2.dnn.readNetFromCaffe`
  - forward at batch 1 and 10: `cnnfpga.reference.forward` vs OpenCV's `net.forward()`
Each is warmed up once, then timed several times; best and median are printed with ours/OpenCV ratios
(targets: load <= 2x, forward <= 3x). A per-layer profile of our forward shows where the time goes.

`--threads N` gives both sides N threads (OpenBLAS through its environment variable, read when numpy
loads, so the script restarts itself with it set; OpenCV through cv2.setNumThreads). On a machine that
other jobs keep busy, OpenBLAS's spinning worker threads lose far more than OpenCV's pool does (AlexNet
batch 1 at load average 4: 0.19 s with 2 threads, 0.04 s with 1), so compare with --threads 1 there too.

Run: python benchmarks/bench_reference.py [--prototxt PATH] [--cache DIR] [--repeats N] [--threads N]
"""
import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from cnnfpga import reference
from cnnfpga.bench import write_weights
from cnnfpga.graph import load_graph

DEFAULT_PROTOTXT = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "alexnet" / "deploy.prototxt"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cnnfpga" / "bench"
TARGETS = {"load": 2.0, "forward": 3.0}


def filler_caffemodel(prototxt: Path, cache: Path) -> Path:
    """AlexNet's seeded filler weights as a caffemodel, written on the first run only."""
    path = cache / f"{prototxt.parent.name}_fillers_seed0.caffemodel"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "no weights given": intended
            graph = load_graph(str(prototxt), seed=0)
        write_weights(graph, path)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB)")
    return path


def timings(func, repeats: int) -> list:
    func()  # warm-up: page cache, BLAS thread pool, OpenCV's layer setup
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return times


def row(what: str, ours: list, theirs: list, target: float) -> str:
    ratio = min(ours) / min(theirs)
    verdict = "ok" if ratio <= target else f"MISSES {target:g}x"
    return (f"{what:22s} {min(ours):8.3f} {statistics.median(ours):8.3f}   {min(theirs):8.3f} "
            f"{statistics.median(theirs):8.3f}   {ratio:6.2f}  {statistics.median(ours) / statistics.median(theirs):6.2f}"
            f"   {verdict}")


def profile(graph, x: np.ndarray, repeats: int) -> list:
    """(layer name, type, best seconds) for each layer of our forward, slowest first."""
    best = {}
    for _ in range(repeats):
        blobs = {"data": x}
        for layer in graph.layers:
            if layer.type == "Input":
                continue
            start = time.perf_counter()
            reference.run_layer(layer, blobs)
            elapsed = time.perf_counter() - start
            best[layer.name] = min(best.get(layer.name, elapsed), elapsed)
    return sorted(((name, graph.layer(name).type, t) for name, t in best.items()), key=lambda item: -item[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prototxt", type=Path, default=DEFAULT_PROTOTXT)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="threads for both sides (default: as configured)")
    args = parser.parse_args()
    if args.threads and os.environ.get("OPENBLAS_NUM_THREADS") != str(args.threads):
        # OpenBLAS reads its thread count once, when numpy loads: start again with it set
        os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(args.threads)
        os.execv(sys.executable, [sys.executable] + sys.argv)
    import cv2  # the oracle; a test-only dependency

    if args.threads:
        cv2.setNumThreads(args.threads)
    caffemodel = filler_caffemodel(args.prototxt, args.cache)
    print(f"OpenCV {cv2.__version__} threads: {cv2.getNumThreads()}; numpy {np.__version__}, OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}; cpus: {os.cpu_count()}; load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'':22s} {'ours best':>8s} {'median':>8s}   {'OpenCV':>8s} {'median':>8s}   {'ratio':>6s}  {'median':>6s}")
    ours = timings(lambda: load_graph(str(args.prototxt), str(caffemodel)), args.repeats)
    theirs = timings(lambda: cv2.dnn.readNetFromCaffe(str(args.prototxt), str(caffemodel)), args.repeats)
    print(row("load (s)", ours, theirs, TARGETS["load"]))

    graph = load_graph(str(args.prototxt), str(caffemodel))
    channels, height, width = graph.inputs["data"][1:]
    for batch in (1, 10):
        sized = graph.reshape({"data": (batch, channels, height, width)})
        x = np.random.default_rng(batch).uniform(-120, 130, (batch, channels, height, width)).astype(np.float32)
        net = cv2.dnn.readNetFromCaffe(str(args.prototxt), str(caffemodel))

        def opencv_forward():
            net.setInput(x)
            return net.forward()

        ours = timings(lambda: reference.forward(sized, {"data": x}), args.repeats)
        theirs = timings(opencv_forward, args.repeats)
        ours_out, theirs_out = reference.forward(sized, {"data": x})[graph.outputs[0]], opencv_forward()
        error = np.abs(ours_out - theirs_out.reshape(ours_out.shape)).max() / np.abs(theirs_out).max()
        print(row(f"forward batch {batch} (s)", ours, theirs, TARGETS["forward"]) + f"   (rel. error {error:.1e})")

    sized = graph.reshape({"data": (10, channels, height, width)})
    layers = profile(sized, np.random.default_rng(0).standard_normal(sized.inputs["data"]).astype(np.float32),
                     args.repeats)
    total = sum(t for _, _, t in layers)
    print(f"\nour forward at batch 10, per layer (best of {args.repeats}; {total:.3f} s in all):")
    for name, kind, t in layers[:10]:
        macs = graph.layer(name).macs * 10
        rate = f"{macs / t / 1e9:6.1f} GMAC/s" if macs else ""
        print(f"  {name:8s} {kind:13s} {t:7.4f} s  {100 * t / total:5.1f} %  {rate}")


if __name__ == "__main__":
    main()

"""AlexNet float32: our OpenCL path (device stages on PoCL + inner products on the host) vs OpenCV dnn.

Both run the bundled AlexNet with the same seeded filler weights (written as a caffemodel for
OpenCV).  For each batch size, images/second of
  * ours, "fast" variant: the float convolutions as NDRange register-tiled GEMM kernels (a CPU/GPU
    kernel, NOT the FPGA design), pool/LRN as the FPGA stages, host inner products overlapping the
    device work of the next batch (DeviceNet.forward_stream);
  * ours, "fpga" variant: every stage the single work-item kernel aoc would get, channels emulated
    (what an FPGA would run; on a CPU it is one work-item per stage);
  * OpenCV dnn on the CPU (cv2.dnn.readNetFromCaffe, default backend).
Then per-stage device times from OpenCL profiling events and the outputs' agreement.

    python benchmarks/bench_opencl.py [--batches 1 16] [--seconds 8] [--no-fpga]

OpenBLAS gets one thread (unless OPENBLAS_NUM_THREADS is set): its spinning worker threads and
PoCL's compete for the two cores, which made the host inner products five times slower here.
"""
import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # before numpy loads OpenBLAS
import tempfile
import time
import warnings

import cv2
import numpy as np

from cnnfpga.bundled import resolve
from cnnfpga.caffe.writer import write_caffemodel
from cnnfpga.graph import load_graph
from cnnfpga.runtime import DeviceNet


def images_per_second(run, batch: int, seconds: float) -> float:
    """Run `run(n_batches)` (which processes n_batches batches) long enough to measure; img/s."""
    run(1)   # warm up: first-touch allocations, PoCL's kernel compilation
    n = 1
    while True:
        start = time.perf_counter()
        run(n)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds or n >= 256:
            return n * batch / elapsed
        n = max(n + 1, int(n * seconds / max(elapsed, 1e-3) * 1.1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--seconds", type=float, default=8.0, help="minimum measuring time per configuration")
    parser.add_argument("--no-fpga", action="store_true", help="skip the (slow) FPGA-variant measurement")
    args = parser.parse_args()

    prototxt = resolve("alexnet.prototxt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # filler weights: intended
        graph = load_graph(prototxt)
    folder = tempfile.mkdtemp(prefix="bench_opencl_")
    weights = os.path.join(folder, "alexnet_fillers.caffemodel")
    write_caffemodel(weights, graph.name, [(l.name, l.type, l.blobs) for l in graph.layers if l.blobs])
    opencv = cv2.dnn.readNetFromCaffe(prototxt, weights)
    opencv.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    opencv.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    rows = []
    for batch in args.batches:
        g = graph.reshape({"data": (batch, 3, 227, 227)})
        x = np.random.default_rng(batch).uniform(-100, 100, (batch, 3, 227, 227)).astype(np.float32)
        fast = DeviceNet(g, variant="fast")

        def run_fast(n):
            for _ in fast.forward_stream({"data": x} for _ in range(n)):
                pass

        def run_opencv(n):
            for _ in range(n):
                opencv.setInput(x)
                opencv.forward()

        ours = images_per_second(run_fast, batch, args.seconds)
        theirs = images_per_second(run_opencv, batch, args.seconds)
        fast.stage_seconds = dict.fromkeys(fast.stage_seconds, 0.0)
        prob = fast.forward({"data": x})["prob"]
        opencv.setInput(x)
        ref = opencv.forward().reshape(prob.shape)
        row = dict(batch=batch, ours=ours, opencv=theirs, fast=fast, fpga=None, fpga_rate=None,
                   err_fast=float(np.abs(prob - ref).max()), err_fpga=None)
        if not args.no_fpga:   # measured on its own, after the others
            fpga = DeviceNet(g, variant="fpga")
            row["fpga_rate"] = images_per_second(lambda n: [fpga.forward({"data": x}) for _ in range(n)], batch,
                                                 args.seconds / 2)
            fpga.stage_seconds = dict.fromkeys(fpga.stage_seconds, 0.0)
            row["err_fpga"] = float(np.abs(fpga.forward({"data": x})["prob"] - ref).max())
            row["fpga"] = fpga
        rows.append(row)

    print("AlexNet float32, filler weights, images/second (higher is better)")
    print(f"{'batch':>5}  {'ours (fast variant)':>19}  {'OpenCV dnn':>10}  {'ratio':>6}  {'ours (FPGA variant)':>19}")
    for r in rows:
        fpga_text = f"{r['fpga_rate']:19.2f}" if r["fpga_rate"] is not None else f"{'-':>19}"
        print(f"{r['batch']:5d}  {r['ours']:19.2f}  {r['opencv']:10.2f}  {r['ours'] / r['opencv']:5.2f}x  {fpga_text}")
    print("fast variant: NDRange GEMM convolutions for CPUs/GPUs (not an FPGA design); "
          "FPGA variant: the single work-item stages aoc compiles, channels emulated")
    for r in rows:
        fast, fpga = r["fast"], r["fpga"]
        print(f"\nbatch {r['batch']}: per-stage device time for one batch (OpenCL profiling events), ms")
        print(f"  {'stage':<8} {'fast':>8} {'fpga':>8}")
        for stage in fast.plan.stages:
            fpga_ms = f"{fpga.stage_seconds[stage.index] * 1e3:8.2f}" if fpga is not None else f"{'-':>8}"
            print(f"  {stage.name:<8} {fast.stage_seconds[stage.index] * 1e3:8.2f} {fpga_ms}")
        fc6 = fast.inner_products["fc6"].stats
        host = sum(ip.stats.seconds for ip in fast.inner_products.values()) / max(1, fc6.calls)
        print(f"  host inner products, per batch (overlapping the device): {host * 1e3:.2f} ms")
        agreement = f"max |prob - OpenCV prob|: fast {r['err_fast']:.2e}"
        if r["err_fpga"] is not None:
            agreement += f", FPGA variant {r['err_fpga']:.2e}"
        print(f"  {agreement}")


if __name__ == "__main__":
    main()

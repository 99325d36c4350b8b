"""AlexNet float32: our OpenCL path (device stages on PoCL + inner products on the host) vs OpenCV dnn.

Both run the bundled AlexNet with the same seeded filler weights (written as a caffemodel for
OpenCV).  Images/second, for each batch size:
  * ours, forward(): one batch after another, nothing overlapped; at batch 1 this is the
    single-image latency (printed in ms as well);
  * ours, streamed: DeviceNet.forward_stream over the batches -- the host inner products of batch
    k overlap the device stages of batch k+1 (the stream picks whether the device stages get all
    cores but one or share them all; printed).  At batch 1 every image is still processed on its
    own (one image through every stage and every inner product), as images arriving one at a time;
  * OpenCV dnn on the CPU (cv2.dnn.readNetFromCaffe, default backend, its default threads), one
    batch after another;
  * at batch 1 also OpenCV with two nets in two threads, one OpenCV thread each (two images in
    flight: OpenCV's own best batch-1 throughput on this machine);
  * optionally the "fpga" variant (every stage the single work-item kernel aoc would get).
Ours is the "fast" variant: float convolutions as NDRange register-tiled kernels, LRN and pooling
as NDRange kernels (CPU/GPU kernels, NOT the FPGA design).

The machine may be shared: every configuration is measured in several rounds, taking turns, each
after waiting (up to --patience seconds) for the other processes to leave the CPUs idle; the best
round counts.  The load average and the CPU share other processes took are printed.

    python benchmarks/bench_opencl.py [--batches 1 16] [--seconds 3] [--rounds 5] [--fpga]
"""
import argparse
import os
import statistics
import tempfile
import threading
import time
import warnings

import cv2
import numpy as np

from cnnfpga.bundled import resolve
from cnnfpga.caffe.writer import write_caffemodel
from cnnfpga.graph import load_graph
from cnnfpga.runtime import DeviceNet
from cnnfpga.runtime.executor import TIMED_BATCHES, WARM_UP_BATCHES


def cpu_times():
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    return sum(values), values[3] + values[4]   # all, idle + iowait


def others_busy(interval: float = 0.25) -> float:
    """Share of the CPUs that other processes used during `interval` (we sleep meanwhile)."""
    total0, idle0 = cpu_times()
    time.sleep(interval)
    total1, idle1 = cpu_times()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def wait_until_quiet(patience: float, limit: float = 0.05) -> float:
    """Wait until other processes use under `limit` of the CPUs (at most `patience` s); their share."""
    deadline = time.time() + patience
    busy = others_busy()
    while busy >= limit and time.time() < deadline:
        busy = others_busy()
    return busy


def rate_of_steps(step, images_per_step: int, seconds: float) -> float:
    """Images/second of calling step() repeatedly for at least `seconds`."""
    count, start = 0, time.perf_counter()
    while True:
        step()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count * images_per_step / elapsed


def rate_of_stream(net, inputs: dict, batch: int, seconds: float) -> float:
    """Images/second of forward_stream fed for `seconds`, including filling and draining the pipeline."""
    start = time.perf_counter()

    def arrivals():
        yield inputs
        while time.perf_counter() - start < seconds:
            yield inputs

    count = sum(1 for _ in net.forward_stream(arrivals()))
    return count * batch / (time.perf_counter() - start)


def rate_of_parallel_opencv(nets, x, seconds: float) -> float:
    """Images/second of len(nets) threads, each running its own OpenCV net on one batch at a time."""
    counts = [0] * len(nets)
    start = time.perf_counter()

    def worker(k):
        while True:
            nets[k].setInput(x)
            nets[k].forward()
            counts[k] += 1
            if time.perf_counter() - start >= seconds:
                return

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(nets))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) * x.shape[0] / (time.perf_counter() - start)


def opencv_net(prototxt, weights):
    net = cv2.dnn.readNetFromCaffe(prototxt, weights)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return net


def single_threaded_opencv(run):
    """run(seconds) with OpenCV limited to one thread (a process-wide setting), restored afterwards."""
    def wrapped(seconds):
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            return run(seconds)
        finally:
            cv2.setNumThreads(threads)
    return wrapped


def forced_sharing(net, batch: int, split: bool, run):
    """run(seconds) with the stream's way of sharing the cores set, then the stream's own choice back."""
    def wrapped(seconds):
        chosen = net.stream_split_cores.get(batch)
        net.stream_split_cores[batch] = split
        try:
            return run(seconds)
        finally:
            if chosen is None:
                del net.stream_split_cores[batch]
            else:
                net.stream_split_cores[batch] = chosen
    return wrapped


def stage_profile(net, x, repeats: int = 10) -> dict:
    """Fastest device time of each stage over `repeats` forward() calls, in seconds."""
    best = {stage.index: float("inf") for stage in net.plan.stages}
    for _ in range(repeats):
        net.stage_seconds = dict.fromkeys(net.stage_seconds, 0.0)
        net.forward({"data": x})
        for index, seconds in net.stage_seconds.items():
            best[index] = min(best[index], seconds)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per configuration and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per configuration; the best counts")
    parser.add_argument("--patience", type=float, default=30.0, help="longest wait for idle CPUs before a round")
    parser.add_argument("--fpga", action="store_true", help="also measure the (slow) FPGA variant")
    args = parser.parse_args()

    prototxt = resolve("alexnet.prototxt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # filler weights: intended
        graph = load_graph(prototxt)
    folder = tempfile.mkdtemp(prefix="bench_opencl_")
    weights = os.path.join(folder, "alexnet_fillers.caffemodel")
    write_caffemodel(weights, graph.name, [(l.name, l.type, l.blobs) for l in graph.layers if l.blobs])
    opencv = opencv_net(prototxt, weights)
    opencv_pair = [opencv_net(prototxt, weights) for _ in range(2)]
    load_before = os.getloadavg()

    results = []
    for batch in args.batches:
        g = graph.reshape({"data": (batch, 3, 227, 227)})
        x = np.random.default_rng(batch).uniform(-100, 100, (batch, 3, 227, 227)).astype(np.float32)
        ours = DeviceNet(g, variant="fast")

        def opencv_step():
            opencv.setInput(x)
            opencv.forward()

        cores = ours.device.max_compute_units
        configs = {  # label: (seconds) -> images/second
            "ours, forward()": lambda t: rate_of_steps(lambda: ours.forward({"data": x}), batch, t),
            "ours, streamed": lambda t: rate_of_stream(ours, {"data": x}, batch, t),
            f"OpenCV dnn, forward() ({cv2.getNumThreads()} threads)": lambda t: rate_of_steps(opencv_step, batch, t),
        }
        if ours.sub_device is not None:   # both ways of sharing the cores, whatever the stream picks
            configs[f"ours, streamed, device on {cores - 1} core(s) (forced)"] = forced_sharing(
                ours, batch, True, lambda t: rate_of_stream(ours, {"data": x}, batch, t))
            configs["ours, streamed, all cores shared (forced)"] = forced_sharing(
                ours, batch, False, lambda t: rate_of_stream(ours, {"data": x}, batch, t))
        if batch == 1:
            configs["OpenCV dnn, 2 nets in 2 threads, 1 thread each"] = single_threaded_opencv(
                lambda t: rate_of_parallel_opencv(opencv_pair, x, t))
        if args.fpga:
            fpga = DeviceNet(g, variant="fpga")
            configs["ours, FPGA variant, forward()"] = lambda t: rate_of_steps(lambda: fpga.forward({"data": x}),
                                                                               batch, t)
        # warm up: first-touch allocations, PoCL's kernel compilation, OpenCV's set-up, and the
        # stream's timing of device and host layers (which then decides how they share the cores)
        for run in configs.values():
            run(0.0)
        wait_until_quiet(args.patience)   # OpenCV's worker threads spin for a while after a forward
        for _ in ours.forward_stream([{"data": x}] * (WARM_UP_BATCHES + TIMED_BATCHES + 1)):
            pass
        rounds = {label: [] for label in configs}
        others = []
        for _ in range(args.rounds):
            for label, run in configs.items():
                others.append(wait_until_quiet(args.patience))
                rounds[label].append(run(args.seconds))
        wait_until_quiet(args.patience)
        profile = stage_profile(ours, x)
        for ip in ours.inner_products.values():
            ip.stats.__init__()
        got = ours.forward({"data": x})["prob"]
        host_ms = sum(ip.stats.seconds for ip in ours.inner_products.values()) * 1e3
        opencv.setInput(x)
        want = opencv.forward().reshape(got.shape)
        results.append(dict(batch=batch, rates={k: max(v) for k, v in rounds.items()}, others=others,
                            profile=profile, net=ours, host_ms=host_ms, error=float(np.abs(got - want).max())))

    print(f"AlexNet float32, filler weights, {os.cpu_count()} CPUs; images/second, best of {args.rounds} rounds "
          f"of >= {args.seconds:g} s each (higher is better)")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in load_before)}; after: "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for r in results:
        rates = r["rates"]
        print(f"\nbatch {r['batch']} (other processes' CPU share just before each round: median "
              f"{statistics.median(r['others']):.0%}, max {max(r['others']):.0%})")
        for label, rate in rates.items():
            extra = f"   = {1e3 / rate:.2f} ms per image" if r["batch"] == 1 and label == "ours, forward()" else ""
            print(f"  {label:52s} {rate:8.2f}{extra}")
        opencv_rate = next(v for k, v in rates.items() if k.startswith("OpenCV dnn, forward()"))
        for label in ("ours, forward()", "ours, streamed"):
            print(f"  {label} / OpenCV forward(): {rates[label] / opencv_rate:.2f}x")
        net, cores = r["net"], r["net"].device.max_compute_units
        print(f"  'ours, streamed' chose: device stages on " + (
            f"{cores - 1} of the {cores} cores, host layers on the last" if net.stream_split_cores.get(r["batch"])
            else f"all {cores} cores, shared with the host layers"))
        if r["batch"] in net.stream_timing:
            device_s, host_s = net.stream_timing[r["batch"]]
            print(f"  (from a batch alone, before the rounds: device stages {device_s * 1e3:.2f} ms, host layers on "
                  f"one thread {host_s * 1e3:.2f} ms)")
        if r["batch"] == 1:
            print("  (batch 1: every image goes through the whole net on its own; 'streamed' overlaps image k's "
                  "host inner products with image k+1's device stages)")
    for r in results:
        net = r["net"]
        print(f"\nbatch {r['batch']}: device time per stage, fastest of 10 forward() calls (OpenCL events), ms")
        for stage in net.plan.stages:
            print(f"  {stage.name:8s} {r['profile'][stage.index] * 1e3:7.2f}")
        print(f"  {'sum':8s} {sum(r['profile'].values()) * 1e3:7.2f}")
        live = ", ".join(f"{name} {ip.stats.live_fraction:.2f}" for name, ip in net.inner_products.items())
        print(f"  host inner products in one forward(): {r['host_ms']:.2f} ms; live input fraction {live}")
        print(f"  max |prob - OpenCV prob|: {r['error']:.2e}")


if __name__ == "__main__":
    main()

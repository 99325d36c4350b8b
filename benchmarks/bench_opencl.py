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
import threading
import time
import warnings

import cv2
import numpy as np

from cnnfpga.bench import (device_profile, opencv_nets, rate_of_steps, rate_of_stream, settle_stream, take_turns,
                           wait_until_quiet)
from cnnfpga.bundled import resolve
from cnnfpga.graph import load_graph
from cnnfpga.runtime import DeviceNet


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
    opencv, *opencv_pair = opencv_nets(prototxt, None, graph, count=3)
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
        settle_stream(ours, {"data": x})   # the stream times device and host layers, then picks how they share
        rounds, others = take_turns(configs, args.rounds, args.seconds, args.patience)
        wait_until_quiet(args.patience)
        profile = device_profile(ours, {"data": x}, runs=10)
        got = ours.forward({"data": x})["prob"]
        opencv.setInput(x)
        want = opencv.forward().reshape(got.shape)
        results.append(dict(batch=batch, rates={k: max(v) for k, v in rounds.items()}, others=others,
                            profile=profile, net=ours, error=float(np.abs(got - want).max())))

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
        print("  'ours, streamed' chose: device stages on " + (
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
        print(f"\nbatch {r['batch']}: device time per stage, fastest of 10 forward() calls (OpenCL events), ms")
        profile = r["profile"]
        for name, seconds in profile.stage_s.items():
            print(f"  {name:8s} {seconds * 1e3:7.2f}")
        print(f"  {'sum':8s} {sum(profile.stage_s.values()) * 1e3:7.2f}")
        live = ", ".join(f"{name} {fraction:.2f}" for name, fraction in profile.live_fraction.items())
        print(f"  host inner products, fastest of 10: {sum(profile.host_s.values()) * 1e3:.2f} ms; live input "
              f"fraction {live}")
        print(f"  max |prob - OpenCV prob|: {r['error']:.2e}")


if __name__ == "__main__":
    main()

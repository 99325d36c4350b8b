"""Per-layer word lengths within a top-1 budget (`cnnfpga quantize`'s search) for the three trained nets.

    python benchmarks/bench_quantize.py [--shared ../shared] [--max-drop 0.5] [--nets lenet cifar10_quick ...]

Data and calibration as bench_accuracy.py: LeNet on the first 1000 MNIST test digits, calibrated on
digits 1000-1199; CIFAR-10 quick and full on the 1000 CIFAR-10 test JPEGs, calibrated on mirrored
copies of every 10th. Candidates run on the fixed-point golden model. Prints each net's table and
precision JSON, then one summary row per net: top-1 in float, at 16, 10 and 8 bits throughout, and at
the mix found.
"""
import argparse
import json
import logging
from pathlib import Path
import time

from bench_accuracy import load_data

from cnnfpga.quantize import quantize_net


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    parser.add_argument("--max-drop", type=float, default=0.5)
    parser.add_argument("--nets", nargs="+", default=["lenet", "cifar10_quick", "cifar10_full"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = load_data(Path(args.shared))
    summary = []
    for name in args.nets:
        x, labels, calibration = data[name]
        start = time.perf_counter()
        result = quantize_net(f"{name}.prototxt", f"{name}.caffemodel", calibration, x, labels, args.max_drop)
        seconds = time.perf_counter() - start
        print(f"\n{name} ({seconds:.0f} s)\n{result.table()}\n{json.dumps(result.precision)}\n", flush=True)
        mix = ", ".join(f"{g.layer} {g.bits}" for g in result.layers if g.effect is not None)
        summary.append(f"| {name} | {result.float_accuracy:.2f} | " +
                       " | ".join(f"{result.uniform[b]:.2f}" for b in (16, 10, 8)) +
                       f" | {result.accuracy:.2f} | {mix} | {result.candidates} | {seconds:.0f} s |")
    print("| net | float | 16 bits | 10 bits | 8 bits | mix | mix bits per layer | precisions evaluated | time |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(summary))


if __name__ == "__main__":
    main()

"""Blobs passed between device segments in device memory against through the host, for a design.

    python benchmarks/bench_handoff.py --net googlenet.prototxt --design DIR [--rounds 3]

DIR is a folder `cnnfpga design ... --out DIR` wrote.  The runtime takes a blob a segment reads from
another segment from device memory (DeviceNet._hands_over: a copy, or a re-layout where the word widths
differ).  This counts how many segment inputs it takes so and how many go through the host, then times
forward() on one seeded image with that and with every such blob read back, converted and written
again by the host (the runtime before), taking turns, and checks both give the same outputs.
"""
import argparse
import time
import warnings

import numpy as np

from cnnfpga import bundled
from cnnfpga.design.store import load_design
from cnnfpga.graph import load_graph
from cnnfpga.runtime import DeviceNet


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--net", required=True, help="prototxt path, or a bundled net's name")
    parser.add_argument("--design", required=True, help="a design folder (cnnfpga design --out)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # filler weights: the times do not depend on them
        graph = load_graph(bundled.resolve(args.net))
    graph = graph.reshape({name: (1,) + tuple(shape[1:]) for name, shape in graph.inputs.items()})
    net = DeviceNet(graph, design=load_design(args.design, graph))
    x = {name: np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32) for name, shape in graph.inputs.items()}

    taken = []
    hands_over = DeviceNet._hands_over

    def counted(self, run, key, stage, port):
        taken.append(hands_over(self, run, key, stage, port))
        return taken[-1]

    modes = {"device memory": counted, "through the host": lambda self, run, key, stage, port: False}
    DeviceNet._hands_over = counted
    want = net.forward(x)
    print(f"{args.net}: {len(net.plan.segments)} segments; inputs read from other segments: {sum(taken)} from device "
          f"memory, {len(taken) - sum(taken)} through the host")
    times = {mode: [] for mode in modes}
    for _ in range(args.rounds):
        for mode, rule in modes.items():
            DeviceNet._hands_over = rule
            start = time.perf_counter()
            got = net.forward(x)
            times[mode].append(time.perf_counter() - start)
            if any(not np.array_equal(got[name], want[name]) for name in want):
                raise SystemExit(f"outputs differ {mode}")
    for mode, seconds in times.items():
        print(f"forward(), {mode}: {', '.join(f'{1e3 * s:.0f}' for s in seconds)} ms")
    print(f"best through the host / best from device memory: {min(times['through the host']) / min(times['device memory']):.2f}")


if __name__ == "__main__":
    main()

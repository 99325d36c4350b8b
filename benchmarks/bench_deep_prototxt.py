"""Loading very deep nets: a chain of N in-place ReLU layers, N = 20,000 and 100,000.

    python benchmarks/bench_deep_prototxt.py [--layers 20000 100000]

For each N: seconds for load_graph (prototxt parse, V1 checks, shapes, outputs) and, in the same run,
for protobuf's text parser alone on the same file -- the floor no reader built on protobuf goes below.
"""
import argparse
import os
import tempfile
import time
import warnings

from google.protobuf import text_format

from cnnfpga.caffe import caffe_pb2
from cnnfpga.graph import load_graph


def deep_prototxt(layers: int) -> str:
    lines = ['layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }']
    lines += [f'layer {{ name: "relu{i}" type: "ReLU" bottom: "data" top: "data" }}' for i in range(layers)]
    return "\n".join(lines) + "\n"


def seconds(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, nargs="+", default=[20000, 100000])
    args = parser.parse_args()
    warnings.simplefilter("ignore")   # "no weights given": a ReLU chain has none
    with tempfile.TemporaryDirectory() as folder:
        for layers in args.layers:
            path = os.path.join(folder, f"deep{layers}.prototxt")
            text = deep_prototxt(layers)
            with open(path, "w") as handle:
                handle.write(text)
            parse = seconds(lambda: text_format.Parse(text, caffe_pb2.NetParameter()))
            load = seconds(lambda: load_graph(path))
            print(f"{layers:7,d} layers: load_graph {load:6.2f} s, protobuf's text parser alone {parse:6.2f} s "
                  f"({load / parse:.1f}x)")


if __name__ == "__main__":
    main()

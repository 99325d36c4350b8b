"""Host fully-connected layers of AlexNet (fc6 9216 -> 4096, fc7 4096 -> 4096, fc8 4096 -> 1000).

Weights come from the bundled AlexNet prototxt's fillers; the fc6 input imitates pool5 after ReLU
(each image with --zeros of its values exactly zero, the rest half-normal).  fc7 and fc8 read the
previous layer's ReLU output.  One table: milliseconds per image for each layer and configuration,
the live input fraction the pruning saw, and how far the outputs moved from the dense result.
"threads": InnerProduct.forward's host threads (row blocks, one-thread BLAS each).

    python benchmarks/bench_host_fc.py [--zeros 0.7] [--repeats 5]
"""
import argparse
import time
import warnings

import numpy as np

from cnnfpga.bundled import resolve
from cnnfpga.graph import load_graph
from cnnfpga.host.inner_product import LIVE_CUTOFF_BATCH, LIVE_CUTOFF_SINGLE, InnerProduct, blas_threads

LAYERS = ("fc6", "fc7", "fc8")


def pool5_like(n: int, zeros: float, rng) -> np.ndarray:
    x = np.abs(rng.normal(0, 1, (n, 9216))).astype(np.float32)
    x[rng.random((n, 9216)) < zeros] = 0.0
    return x


def run_chain(layers, x, threads):
    """fc6 -> ReLU -> fc7 -> ReLU -> fc8; returns fc8 and the seconds each layer took."""
    seconds = []
    for i, layer in enumerate(layers):
        start = time.perf_counter()
        x = layer.forward(x, threads)
        seconds.append(time.perf_counter() - start)
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return x, seconds


def measure(configs, images, repeats):
    """Per configuration: the fastest of ``repeats`` passes over all images, in ms per image per layer,
    and the fc8 outputs.  Configurations take turns within each repeat, so that load from other
    processes on the machine hits them all alike; the minimum is the least disturbed pass."""
    best = [np.full(len(LAYERS), np.inf) for _ in configs]
    outputs = [None] * len(configs)
    for repeat in range(repeats + 1):                # pass 0 warms caches, pages and BLAS threads
        for c, (_, batch, threads, layers) in enumerate(configs):
            totals = np.zeros(len(LAYERS))
            outs = []
            for start in range(0, len(images), batch):
                out, seconds = run_chain(layers, images[start:start + batch], threads)
                totals += seconds
                outs.append(out)
            if repeat:
                best[c] = np.minimum(best[c], totals * 1e3 / len(images))
            outputs[c] = np.concatenate(outs)
    return best, outputs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zeros", type=float, default=0.7, help="fraction of zeros in each fc6 input (0.6-0.8)")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)            # filler weights: intended
        graph = load_graph(resolve("alexnet.prototxt"))
    fc = [graph.layer(name) for name in LAYERS]
    rng = np.random.default_rng(0)
    images = pool5_like(args.images, args.zeros, rng)

    configs = [  # label, batch, host threads, layer options
        ("dense, batch 1", 1, 1, dict(prune_threshold=None)),
        ("dense, batch 1, 2 threads", 1, 2, dict(prune_threshold=None)),
        ("dense, batch 8", 8, 1, dict(prune_threshold=None)),
        ("dense, batch 32", 32, 1, dict(prune_threshold=None)),
        ("activation pruning, batch 1", 1, 1, dict(prune_threshold=0.0)),
        ("activation pruning, batch 1, 2 threads", 1, 2, dict(prune_threshold=0.0)),
        ("activation pruning, batch 8", 8, 1, dict(prune_threshold=0.0)),
        ("act. + 50% weight pruning, batch 1", 1, 1, dict(prune_threshold=0.0, weight_prune_fraction=0.5)),
    ]
    built = [(label, batch, threads, [InnerProduct.from_layer(layer, **options) for layer in fc])
             for label, batch, threads, options in configs]
    with blas_threads(1):   # the threads are the host threads of each configuration
        best, outputs = measure(built, images, args.repeats)
    print(f"AlexNet fc6/fc7/fc8 on the host, {args.images} images, fc6 input {args.zeros:.0%} zeros, "
          f"gather below {LIVE_CUTOFF_SINGLE:.0%} live (batch 1) / {LIVE_CUTOFF_BATCH:.0%} (batches); ms per image (best of {args.repeats})")
    header = f"{'configuration':40s}" + "".join(f"{n:>9s}" for n in LAYERS) + f"{'total':>9s}{'img/s':>8s}" \
             f"{'live fc6/fc7/fc8':>20s}{'gathered':>12s}{'fc8 change':>12s}"
    print(header)
    print("-" * len(header))
    reference = outputs[0]
    for (label, _, _, layers), per_layer, out in zip(built, best, outputs):
        change = np.abs(out - reference).max() / np.abs(reference).max()
        live = "/".join(f"{layer.stats.live_fraction:.2f}" for layer in layers)
        # the share of calls that took the pruned path: below the cut-off only, else the dense product ran
        gathered = "/".join(f"{layer.stats.gathered_calls / layer.stats.calls:.1f}" for layer in layers)
        total = per_layer.sum()
        print(f"{label:40s}" + "".join(f"{t:9.2f}" for t in per_layer) + f"{total:9.2f}{1e3 / total:8.0f}"
              f"{live:>20s}{gathered:>12s}{change:12.1e}")
    print("gathered: share of calls that took the pruned path (fc6/fc7/fc8); the others ran the dense product.")
    print("fc8 change: max |out - dense| / max |dense|.  Weight pruning keeps the weights dense (BLAS gains "
          "nothing from unstructured zeros), so it changes accuracy, not speed.")


if __name__ == "__main__":
    main()

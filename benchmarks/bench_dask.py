"""One process against a two-worker Dask LocalCluster on the same classify run, side by side.

    python benchmarks/bench_dask.py [--images ../shared/data/cifar10_test_jpg] [--net cifar10_full.prototxt]
                                    [--batch 50] [--backends reference opencl]

For each backend: images/s of `classify_dataset` in this process, then through a LocalCluster of two
worker processes (one thread each; each builds its net on its first batch, which the timing includes,
as a real run's would). Dask's own cost per batch: the round trip of a task that does nothing, and one
worker against this process on the same run. The machine may be shared: read the ratios.
"""
import argparse
import os
import tempfile
import time

from distributed import Client, LocalCluster

from cnnfpga.classify import classify_dataset


def timed_run(images, net, client, **options) -> float:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        status = classify_dataset(images, net, out=os.path.join(folder, "run.jsonl"), client=client, **options)
        seconds = time.perf_counter() - start
    assert status == 0, f"classify exited {status}"
    return seconds


def task_round_trip(client, count: int = 200) -> float:
    """Seconds per task of submitting a no-op and getting its result, one after another."""
    start = time.perf_counter()
    for i in range(count):
        client.submit(abs, i, pure=False).result()
    return (time.perf_counter() - start) / count


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--images", default=os.path.join(here, "..", "..", "shared", "data", "cifar10_test_jpg"))
    parser.add_argument("--net", default="cifar10_full.prototxt")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--backends", nargs="+", default=["reference", "opencl"])
    args = parser.parse_args()
    count = sum(len(files) for _, _, files in os.walk(args.images))
    print(f"{count} images from {args.images}, {args.net}, batch {args.batch}, {os.cpu_count()} CPUs")
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            if workers == 1:
                print(f"Dask task round trip (no-op): {task_round_trip(client) * 1e3:.2f} ms per batch")
            for backend in args.backends:
                options = dict(batch=args.batch, backend=backend)
                alone = timed_run([args.images], args.net, None, **options)
                spread = timed_run([args.images], args.net, client, **options)
                print(f"{backend:9s}  one process {count / alone:7.1f} images/s   {workers} Dask worker(s) "
                      f"{count / spread:7.1f} images/s   ratio {alone / spread:.2f}")


if __name__ == "__main__":
    main()

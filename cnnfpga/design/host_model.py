"""Measured cost of the host inner products, for predicting a net's latency at a batch size.

The fully connected layers run on the host through cnnfpga.host's InnerProduct: one BLAS call per
batch.  Its cost depends on which BLAS routine numpy picks, so the model has two regimes.  Measured
through InnerProduct on fc6's shape (9216 -> 4096, 151 MB of float32 weights; numpy 2.4, OpenBLAS
0.3.31, 2-core AMD EPYC VM, one thread, fastest of 5-7 calls):

* batch 1: numpy calls a matrix-vector product (GEMV), which reads every weight once and is bound by
  memory bandwidth: 6.5 ms, 23 GB/s.
* batch > 1: numpy calls GEMM, which first copies the whole weight matrix into its blocked layout
  and then multiplies at compute speed; on one thread the two do not overlap, so their times add:
  27 ms at batch 2 (the copy, ~5.6 GB/s), 36 ms at 16, 70 at 64, 119 at 128 (~100 Gflop/s more).
  A roofline max(bytes / bandwidth, flops / rate) predicts 12 ms at batch 16, three times too little.

Against AlexNet's fc6-fc8 timed in a net's order (tests/test_host_model.py), the predictions come
within 15% at batch 1 and 16, except fc8 (16 MB) at batch 1, which takes ~1.5x its prediction: a
small matrix streams slower per byte once the layers before it have pushed it out of cache.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, fields
from datetime import date
from pathlib import Path

import numpy as np

from cnnfpga.host.inner_product import InnerProduct, blas_controller

OVERHEAD_SHAPE = (16, 16)    # (in, out): a layer with next to nothing to compute
LARGE_SHAPE = (4096, 4096)   # 64 MB of weights: more than a server's L3, so batch 1 streams from memory
GEMM_BATCHES = (2, 64)       # the time between them is the multiply; the rest of the first, the copy


@dataclass
class HostModel:
    """The measured constants of one host's inner products (the regimes: see the module docstring)."""
    stream_bandwidth: float   # bytes/s: weights read by the batch-1 matrix-vector product
    pack_bandwidth: float     # bytes/s: weights copied by a batched GEMM before it multiplies
    flops: float              # flop/s: a batched GEMM's multiply
    overhead: float           # s per call whatever the size: numpy, threadpoolctl, the host threads
    threads: int              # InnerProduct.forward's `threads` they were measured with
    cpu: str
    blas: str
    measured: str             # ISO date

    def seconds(self, in_features: int, out_features: int, batch: int) -> float:
        """Predicted seconds of one dense float32 inner product in_features -> out_features on a batch:

            batch 1:  overhead + 4·in·out / stream_bandwidth
            batch N:  overhead + 4·in·out / pack_bandwidth + 2·in·out·N / flops

        An upper bound where activation pruning skips inputs or the weights are small enough to
        stay in cache from one call to the next.
        """
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        weight_bytes = 4 * in_features * out_features
        if batch == 1:
            return self.overhead + weight_bytes / self.stream_bandwidth
        return self.overhead + weight_bytes / self.pack_bandwidth + 2 * in_features * out_features * batch / self.flops

    def layers_seconds(self, layers, batch: int) -> float:
        """Predicted seconds of a net's inner products [(in_features, out_features)] on one batch."""
        return sum(self.seconds(in_features, out_features, batch) for in_features, out_features in layers)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> HostModel:
        """The inverse of to_json; ValueError for anything that is not a complete, positive model."""
        data = json.loads(text)
        if not isinstance(data, dict) or set(data) != {field.name for field in fields(cls)}:
            raise ValueError("not a host model")
        numbers = ("stream_bandwidth", "pack_bandwidth", "flops", "overhead", "threads")
        if not all(type(data[name]) in (int, float) and 0 < data[name] < math.inf for name in numbers) \
                or not all(isinstance(data[name], str) for name in ("cpu", "blas", "measured")):
            raise ValueError("a host model with a missing or impossible value")
        return cls(**data)


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_name() -> str:
    """numpy's version and its BLAS: library, version and the kernels it chose for this CPU."""
    libraries = [" ".join(str(info[key]) for key in ("internal_api", "version", "architecture") if info.get(key))
                 for info in blas_controller().info()]
    return f"numpy {np.__version__}, {', '.join(libraries) or 'no BLAS found'}"


def measure(threads: int = 1, seconds: float = 1.5) -> HostModel:
    """Time InnerProduct.forward(x, threads) on a tiny layer (the overhead), and on LARGE_SHAPE at
    batch 1 (stream bandwidth) and at GEMM_BATCHES (the slope is the multiply rate, the rest the
    copy).  Rounds of all four for about `seconds`, at least three; the fastest time of each counts,
    since the machine is shared and other load only ever adds time.
    """
    rng = np.random.default_rng(0)
    tiny_in, tiny_out = OVERHEAD_SHAPE
    large_in, large_out = LARGE_SHAPE
    tiny = InnerProduct(rng.random((tiny_out, tiny_in), dtype=np.float32), np.zeros(tiny_out, np.float32),
                        prune_threshold=None)
    # built as W^T (in, out), which InnerProduct keeps as it is rather than copying 64 MB transposed
    large = InnerProduct(rng.random((large_in, large_out), dtype=np.float32).T, np.zeros(large_out, np.float32),
                         prune_threshold=None)
    few, many = GEMM_BATCHES
    runs = [(tiny, rng.random((1, tiny_in), dtype=np.float32))] + \
           [(large, rng.random((batch, large_in), dtype=np.float32)) for batch in (1, few, many)]
    fastest = [math.inf] * len(runs)
    deadline = time.perf_counter() + seconds
    rounds = 0
    while rounds < 3 or time.perf_counter() < deadline:
        for i, (layer, x) in enumerate(runs):
            start = time.perf_counter()
            layer.forward(x, threads)
            fastest[i] = min(fastest[i], time.perf_counter() - start)
        rounds += 1
    overhead, single, few_time, many_time = fastest
    weight_bytes = 4 * large_in * large_out
    flops = 2 * large_in * large_out * (many - few) / (many_time - few_time)
    copy_time = few_time - overhead - 2 * large_in * large_out * few / flops
    return HostModel(stream_bandwidth=weight_bytes / (single - overhead), pack_bandwidth=weight_bytes / copy_time,
                     flops=flops, overhead=overhead, threads=threads, cpu=cpu_name(), blas=blas_name(),
                     measured=date.today().isoformat())


def cache_path(threads: int, folder: Path) -> Path:
    """Where the model of this CPU, BLAS and thread count is kept in `folder`."""
    key = hashlib.sha256(f"{cpu_name()}\n{blas_name()}\n{threads}".encode()).hexdigest()[:16]
    return folder / f"host-model-{key}.json"


def load_or_measure(threads: int = 1, cache=None) -> HostModel:
    """This host's model for `threads`: read from the cache folder (default: cnnfpga's cache_dir())
    when this CPU and BLAS were measured before, else measured now and saved there.  A file that does
    not read back as a model is measured over; a cache that cannot be written only costs measuring
    again next time.
    """
    if cache is None:
        # imported here: cnnfpga.runtime loads pyopencl and the executor, and the model needs neither
        from cnnfpga.runtime.device import cache_dir
        cache = cache_dir()
    path = cache_path(threads, Path(cache))
    try:
        return HostModel.from_json(path.read_text())
    except (OSError, ValueError):   # missing, unreadable or corrupt (json's errors are ValueErrors)
        pass
    model = measure(threads)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")   # written whole, then renamed: readers never see half a file
        tmp.write_text(model.to_json())
        tmp.replace(path)
    except OSError:
        pass
    return model

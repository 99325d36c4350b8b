"""Fully-connected layers on the host CPU: one BLAS GEMM per batch, with optional pruning.

The FPGA streams the convolutions; the inner products (AlexNet's fc6-fc8: 59 M of its weights)
are memory-bound on any device, so they run here in float32, batched so that each weight is read
once per batch instead of once per image.

Two kinds of pruning:
* activation pruning (``prune_threshold``): input columns whose magnitude is <= the threshold in
  every image of the batch are skipped -- the GEMM runs on the gathered live columns only.  With the
  default threshold 0 only exact zeros (ReLU outputs) are skipped, so the result is the dense one up
  to float summation order.  Gathering costs a copy of the live weight rows, so it is used only when
  the live fraction is below a measured cut-off (``gather_pays``).
* magnitude pruning (``weight_prune_fraction``): the smallest |w| of the layer are set to zero once,
  at construction.  The weights stay dense (BLAS has no use for unstructured zeros), so this changes
  accuracy, not speed; it models what a compressed-weight FPGA or host design would store.
"""
from __future__ import annotations

import ctypes
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from cnnfpga.errors import InputError, WeightsError

# Gather-then-GEMM beats the dense product only when few input columns are live, because copying a
# live weight row costs more than streaming it once through BLAS.  Break-even live fractions measured
# on fc6's shape (9216 -> 4096, float32, OpenBLAS, 2 cores, fastest of 8 interleaved runs):
# batch 1: dense GEMV 3.6 ms; gathered 3.1 ms at 10% live, 4.1 ms at 12%  -> cut-off 0.10
# batch 2-32: dense GEMM 11-21 ms; gathered 11 ms at 30% live (batch 2-4), 12 ms (16), 11.6 ms at
#             20% (32)  -> cut-off 0.30 (a little conservative for large batches)
LIVE_CUTOFF_SINGLE = 0.10
LIVE_CUTOFF_BATCH = 0.30


# OpenBLAS's thread-count entry points under the names its builds export: plain, 64-bit integer
# (suffix 64_), and the scipy-openblas wheels numpy ships (prefix scipy_)
OPENBLAS_NAMES = [(f"{prefix}openblas_get_num_threads{suffix}", f"{prefix}openblas_set_num_threads{suffix}")
                  for prefix in ("", "scipy_") for suffix in ("", "64_", "_64_")]


@lru_cache(maxsize=1)
def openblas_controls():
    """(get, set) of the OpenBLAS numpy uses, or None (another BLAS, or no /proc to find it in)."""
    import numpy.linalg  # noqa: F401  (loads numpy's BLAS if nothing has yet)
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in OPENBLAS_NAMES:
            if hasattr(library, get_name) and hasattr(library, set_name):
                get, set_ = getattr(library, get_name), getattr(library, set_name)
                get.restype, set_.argtypes = ctypes.c_int, [ctypes.c_int]
                return get, set_
    return None


_blas_lock = threading.Lock()
_blas_limits = []        # the limits of the blocks in force
_blas_original = [None]  # the thread count before the first of them


@contextmanager
def blas_threads(limit: int):
    """Cap numpy's OpenBLAS at `limit` threads inside the block (a no-op with another BLAS).

    Wanted where the inner products overlap OpenCL work on the CPU: OpenBLAS's worker threads spin
    while they wait, and with PoCL's threads on the same cores the products ran five times slower.
    Nested and concurrent blocks are fine: the tightest limit in force applies, and the original
    count comes back when the last block ends.
    """
    controls = openblas_controls()
    if controls is None:
        yield
        return
    get, set_ = controls
    with _blas_lock:
        if not _blas_limits:
            _blas_original[0] = get()
        _blas_limits.append(limit)
        set_(min(_blas_limits))
    try:
        yield
    finally:
        with _blas_lock:
            _blas_limits.remove(limit)
            set_(min(_blas_limits) if _blas_limits else _blas_original[0])


@lru_cache(maxsize=1)
def host_pool() -> ThreadPoolExecutor:
    """The threads InnerProduct.forward splits a product over (idle ones block; they never spin)."""
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="cnnfpga-host")


def column_parts(columns: int, parts: int) -> list:
    """[(start, stop)] splitting `columns` into up to `parts` ranges of whole 64-byte lines."""
    line = 16
    step = -(-columns // (parts * line)) * line
    return [(start, min(start + step, columns)) for start in range(0, columns, step)]


def gather_pays(live: int, columns: int, batch: int) -> bool:
    """Is the gathered product faster than the dense one for this many live columns?"""
    return live < (LIVE_CUTOFF_SINGLE if batch == 1 else LIVE_CUTOFF_BATCH) * columns


@dataclass
class InnerProductStats:
    """Running counters of one layer."""
    calls: int = 0
    images: int = 0
    gathered_calls: int = 0        # calls that took the pruned (gathered) path
    live_columns: int = 0          # summed over calls
    columns: int = 0               # summed over calls: input columns offered
    seconds: float = 0.0

    @property
    def live_fraction(self) -> float:
        """Fraction of input columns live in at least one image of the batch, over all calls."""
        return self.live_columns / self.columns if self.columns else 1.0

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / self.images if self.images else 0.0


class InnerProduct:
    """y = x W^T + b for a batch x (N, K), W (O, K) float32."""

    def __init__(self, weights, bias=None, prune_threshold: float | None = 0.0,
                 weight_prune_fraction: float = 0.0, name: str = "inner product"):
        weights = np.asarray(weights, dtype=np.float32)
        if weights.ndim != 2:
            raise WeightsError(f"{name}: weights must be (outputs, inputs), got shape {list(weights.shape)}")
        outputs, inputs = weights.shape
        if bias is not None:
            bias = np.asarray(bias, dtype=np.float32).reshape(-1)
            if bias.shape != (outputs,):
                raise WeightsError(f"{name}: bias has {bias.size} values for {outputs} outputs")
        if not 0.0 <= weight_prune_fraction < 1.0:
            raise WeightsError(f"{name}: weight_prune_fraction must be in [0, 1), got {weight_prune_fraction}")
        if prune_threshold is not None and not prune_threshold >= 0:
            raise WeightsError(f"{name}: prune_threshold must be >= 0 or None, got {prune_threshold}")
        self.name = name
        self.num_output, self.num_input = outputs, inputs
        # (K, O) contiguous: a live input column is one contiguous row, so gathering is a fast row copy
        self.weights_t = np.ascontiguousarray(weights.T)
        self.bias = bias
        self.prune_threshold = prune_threshold
        self.pruned_weights = self._prune_smallest(weight_prune_fraction)
        self.weight_sparsity = 1.0 - np.count_nonzero(self.weights_t) / self.weights_t.size
        self.stats = InnerProductStats()

    @classmethod
    def from_layer(cls, layer, **options) -> "InnerProduct":
        """From a graph InnerProduct layer (Caffe's ``transpose`` stores W as (K, O))."""
        spec = layer.spec
        weights = layer.blobs[0].T if spec.transpose else layer.blobs[0]
        bias = layer.blobs[1] if spec.bias_term else None
        return cls(weights, bias, name=layer.where, **options)

    def _prune_smallest(self, fraction: float) -> int:
        """Zero exactly round(fraction * size) weights of smallest magnitude; returns that count."""
        count = int(round(fraction * self.weights_t.size))
        if count:
            flat = self.weights_t.reshape(-1)
            flat[np.argpartition(np.abs(flat), count - 1)[:count]] = 0.0
        return count

    def forward(self, x, threads: int = None) -> np.ndarray:
        """(N, K) float32 -> (N, O) float32; an (N, ...) input is flattened from axis 1, as Caffe does.

        threads: None lets BLAS thread as it likes.  A number splits the output columns over that
        many host threads, each with a one-thread BLAS: BLAS's own worker threads spin after every
        call, which hurts whatever else runs on the cores (OpenCL stages, the next image).  Each
        output stays one dot product over the same inputs, so the thread count changes results by
        float rounding at most (a BLAS kernel may order a sum by where a column range starts).
        """
        start = time.perf_counter()
        x = np.asarray(x, dtype=np.float32)
        if x.ndim < 2 or math.prod(x.shape[1:]) != self.num_input:
            raise InputError(f"{self.name}: input of shape {list(x.shape)} does not give {self.num_input} "
                             f"values per image")
        x = x.reshape(x.shape[0], self.num_input)
        live = None
        if self.prune_threshold is not None and x.shape[0]:
            live = np.flatnonzero(np.abs(x).max(axis=0) > self.prune_threshold)
        gathered = live is not None and gather_pays(len(live), self.num_input, x.shape[0])
        if gathered:
            x = x[:, live]
            self.stats.gathered_calls += 1

        def product(columns: tuple) -> np.ndarray:
            weights = self.weights_t[:, columns[0]:columns[1]]
            return x @ (weights[live] if gathered else weights)

        if threads is None:
            out = product((0, self.num_output))
        else:
            parts = column_parts(self.num_output, threads)
            with blas_threads(1):
                out = (product(parts[0]) if len(parts) == 1 else
                       np.concatenate(list(host_pool().map(product, parts)), axis=1))
        if self.bias is not None:
            out += self.bias
        self.stats.calls += 1
        self.stats.images += x.shape[0]
        self.stats.columns += self.num_input
        self.stats.live_columns += self.num_input if live is None else len(live)
        self.stats.seconds += time.perf_counter() - start
        return out

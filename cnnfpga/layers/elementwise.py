"""Element-wise activations: ReLU (leaky), Sigmoid, TanH, and Dropout (identity at test time)."""
from dataclasses import dataclass

import numpy as np

from . import LayerKind, finite, register


@dataclass(frozen=True)
class ReLUSpec:
    negative_slope: float


@dataclass(frozen=True)
class NoSpec:
    """For layers whose behaviour at inference has no parameters."""


def relu(spec: ReLUSpec, inputs, blobs) -> list:
    x = inputs[0]
    if spec.negative_slope == 0:
        return [np.maximum(x, 0, dtype=np.float32)]
    return [np.where(x > 0, x, x * np.float32(spec.negative_slope)).astype(np.float32)]


def same_shape(spec, in_shapes) -> list:
    return [in_shapes[0]]


def no_spec(param, in_shapes) -> NoSpec:
    return NoSpec()


register("ReLU", LayerKind(parse=lambda p, s: ReLUSpec(finite("negative_slope", p.relu_param.negative_slope)), shape=same_shape, reference=relu))
register("Sigmoid", LayerKind(parse=no_spec, shape=same_shape,
                              reference=lambda spec, xs, b: [(1 / (1 + np.exp(-xs[0]))).astype(np.float32)]))
register("TanH", LayerKind(parse=no_spec, shape=same_shape, reference=lambda spec, xs, b: [np.tanh(xs[0])]))
# Caffe's dropout scales at training time, so at test time it passes data through unchanged.
register("Dropout", LayerKind(parse=no_spec, shape=same_shape, reference=lambda spec, xs, b: [xs[0]]))

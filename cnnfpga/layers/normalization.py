"""BatchNorm (global statistics, with Caffe's scale-factor blob) and Scale (optionally with bias)."""
from dataclasses import dataclass
import math

import numpy as np

from . import LayerKind, bad, register


@dataclass(frozen=True)
class BatchNormSpec:
    eps: float


@dataclass(frozen=True)
class ScaleSpec:
    axis: int
    num_axes: int
    bias_term: bool


def batch_norm_statistics(blobs) -> tuple:
    """Caffe stores running sums: mean and variance are blob * (1 / scale factor). A factor of 0 multiplies
    by 0, as Caffe's batch_norm_layer.cpp and OpenCV do (an untrained layer: mean 0, variance 0)."""
    factor = float(blobs[2].reshape(-1)[0]) if len(blobs) > 2 else 1.0
    factor = 1.0 / factor if factor != 0 else 0.0
    return blobs[0] * factor, blobs[1] * factor


def batch_norm(spec: BatchNormSpec, inputs, blobs) -> list:
    x = inputs[0]
    mean, variance = batch_norm_statistics(blobs)
    view = (1, -1) + (1,) * (x.ndim - 2)
    inv_std = (1.0 / np.sqrt(variance + spec.eps)).astype(np.float32)
    return [((x - mean.reshape(view)) * inv_std.reshape(view)).astype(np.float32)]


def positive_eps(eps: float) -> float:
    """BatchNorm divides by sqrt(variance + eps): eps <= 0 can divide by zero or take a negative root."""
    if not eps > 0 or not math.isfinite(eps):
        bad(f"BatchNorm eps must be a positive number, got {eps}")
    return float(eps)


def parse_scale(param, in_shapes) -> ScaleSpec:
    p = param.scale_param
    ndim = len(in_shapes[0])
    axis = p.axis + ndim if p.axis < 0 else p.axis
    if len(in_shapes) == 2:  # factors from a second bottom: its own shape sets the axes (Caffe ignores num_axes)
        num_axes = len(in_shapes[1])
    else:
        num_axes = ndim - axis if p.num_axes == -1 else p.num_axes
    if not 0 <= axis <= ndim or axis + num_axes > ndim:
        bad(f"scale axis {p.axis} with num_axes {num_axes} does not fit a {ndim}-D input")
    if len(in_shapes) == 2 and tuple(in_shapes[1]) != tuple(in_shapes[0][axis:axis + num_axes]):
        bad(f"scale factors of shape {list(in_shapes[1])} do not match the input's dimensions from axis {axis} "
            f"({list(in_shapes[0])})")
    return ScaleSpec(axis, num_axes, p.bias_term)


def scale_shape(spec: ScaleSpec, in_shapes) -> tuple:
    return tuple(in_shapes[0][spec.axis:spec.axis + spec.num_axes])


def scale_blob_shapes(spec: ScaleSpec, in_shapes) -> list:
    if len(in_shapes) == 2:  # the factor comes from the second bottom; only a bias is learned
        return [scale_shape(spec, in_shapes)] if spec.bias_term else []
    return [scale_shape(spec, in_shapes)] * (1 + spec.bias_term)


def scale(spec: ScaleSpec, inputs, blobs) -> list:
    x = inputs[0]
    factors = inputs[1] if len(inputs) == 2 else blobs[0]
    bias = blobs[-1] if spec.bias_term else None
    view = (1,) * spec.axis + tuple(factors.shape) + (1,) * (x.ndim - spec.axis - spec.num_axes)
    out = x * factors.reshape(view)
    if bias is not None:
        out = out + bias.reshape((1,) * spec.axis + tuple(bias.shape) + (1,) * (x.ndim - spec.axis - spec.num_axes))
    return [out.astype(np.float32)]


register("BatchNorm", LayerKind(
    parse=lambda p, s: BatchNormSpec(positive_eps(p.batch_norm_param.eps)), shape=lambda spec, s: [s[0]], reference=batch_norm,
    blob_shapes=lambda spec, s: [(s[0][1],), (s[0][1],), (1,)], fillers=lambda p, spec: [None, None, None]))
register("Scale", LayerKind(
    parse=parse_scale, shape=lambda spec, s: [s[0]], reference=scale, blob_shapes=scale_blob_shapes,
    fillers=lambda p, spec: [p.scale_param.filler if p.scale_param.HasField("filler") else None,
                             p.scale_param.bias_filler if p.scale_param.HasField("bias_filler") else None],
    bottoms=(1, 2)))

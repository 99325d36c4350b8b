"""Caffe's weight fillers, for nets run without a caffemodel (random but correctly scaled weights)."""
from __future__ import annotations

import math

import numpy as np

from cnnfpga.caffe import caffe_pb2
from cnnfpga.errors import NetDefinitionError

_Norm = caffe_pb2.FillerParameter


def fill(filler: caffe_pb2.FillerParameter | None, shape, rng: np.random.Generator,
         where: str = "") -> np.ndarray:
    """A float32 array of `shape` drawn as Caffe's filler would. None is Caffe's default: constant 0.

    `where` (e.g. "lenet.prototxt:12 (layer 'conv1')") goes into error messages.
    """
    shape = tuple(int(d) for d in shape)
    if filler is None:
        return np.zeros(shape, np.float32)
    kind = filler.type
    prefix = f"{where}: " if where else ""
    if kind == "constant":
        return np.full(shape, filler.value, np.float32)
    if kind == "gaussian":
        out = _gaussian(rng, shape, filler.mean, filler.std)
        if filler.sparse >= 0:
            out *= _sparse_mask(filler.sparse, shape, rng, prefix)
        return out
    if kind == "uniform":
        return _uniform(rng, shape, filler.min, filler.max)
    if kind == "xavier":
        scale = math.sqrt(3.0 / _fan(filler, shape, prefix))
        return _uniform(rng, shape, -scale, scale)
    if kind == "msra":
        return _gaussian(rng, shape, 0.0, math.sqrt(2.0 / _fan(filler, shape, prefix)))
    if kind == "positive_unitball":
        return _positive_unitball(rng, shape)
    if kind == "bilinear":
        return _bilinear(shape, prefix)
    raise NetDefinitionError(f"{prefix}unknown filler type '{kind}' (Caffe knows constant, gaussian, "
                             f"uniform, xavier, msra, positive_unitball, bilinear)")


def _gaussian(rng, shape, mean: float, std: float) -> np.ndarray:
    out = rng.standard_normal(shape, dtype=np.float32)
    out *= np.float32(std)
    out += np.float32(mean)
    return out


def _uniform(rng, shape, low: float, high: float) -> np.ndarray:
    out = rng.random(shape, dtype=np.float32)
    out *= np.float32(high - low)
    out += np.float32(low)
    return out


def _fan(filler, shape, prefix: str) -> float:
    """Caffe's n for xavier/msra: fan_in = count/shape[0], fan_out = count/shape[1], or their mean."""
    count = math.prod(shape)
    if not shape or shape[0] == 0 or count == 0:
        raise NetDefinitionError(f"{prefix}{filler.type} filler needs a non-empty blob, got shape {shape}")
    fan_in = count // shape[0]
    fan_out = count // shape[1] if len(shape) > 1 else count
    if filler.variance_norm == _Norm.FAN_OUT:
        return fan_out
    if filler.variance_norm == _Norm.AVERAGE:
        return (fan_in + fan_out) / 2.0
    return fan_in


def _sparse_mask(sparse: int, shape, rng, prefix: str) -> np.ndarray:
    """Caffe's sparse gaussian keeps each weight with probability sparse / num_outputs."""
    if not shape or shape[0] == 0:
        raise NetDefinitionError(f"{prefix}sparse gaussian filler needs a non-empty blob, got shape {shape}")
    keep = sparse / shape[0]
    return (rng.random(shape, dtype=np.float32) < keep).astype(np.float32)


def _positive_unitball(rng, shape) -> np.ndarray:
    """Uniform in [0, 1), then each of the shape[0] rows scaled to sum to 1."""
    out = rng.random(shape, dtype=np.float32)
    if out.size:
        rows = out.reshape(shape[0], -1)
        rows /= rows.sum(axis=1, keepdims=True)
    return out


def _bilinear(shape, prefix: str) -> np.ndarray:
    """Bilinear upsampling kernel, as Caffe's BilinearFiller builds for Deconvolution."""
    if len(shape) != 4 or shape[2] != shape[3]:
        raise NetDefinitionError(f"{prefix}bilinear filler needs a 4-D blob with square kernels, got {shape}")
    size = shape[3]
    f = math.ceil(size / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    ramp = 1.0 - np.abs(np.arange(size) / f - c)
    kernel = np.outer(ramp, ramp).astype(np.float32)  # (y, x)
    return np.broadcast_to(kernel, shape).copy()

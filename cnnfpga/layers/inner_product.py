"""InnerProduct (fully connected): everything from `axis` on is flattened into one vector."""
from dataclasses import dataclass
import math

import numpy as np

from . import LayerKind, bad, positive, register


@dataclass(frozen=True)
class InnerProductSpec:
    num_output: int
    bias_term: bool
    axis: int
    transpose: bool


def parse(param, in_shapes) -> InnerProductSpec:
    p = param.inner_product_param
    ndim = len(in_shapes[0])
    axis = p.axis + ndim if p.axis < 0 else p.axis
    if not 0 <= axis < ndim:
        bad(f"axis {p.axis} is out of range for a {ndim}-D input")
    return InnerProductSpec(positive("num_output", p.num_output), p.bias_term, axis, p.transpose)


def input_size(spec: InnerProductSpec, in_shape) -> int:
    return math.prod(in_shape[spec.axis:])


def shape(spec, in_shapes) -> list:
    return [tuple(in_shapes[0][:spec.axis]) + (spec.num_output,)]


def blob_shapes(spec, in_shapes) -> list:
    k = input_size(spec, in_shapes[0])
    weights = (k, spec.num_output) if spec.transpose else (spec.num_output, k)
    return [weights, (spec.num_output,)] if spec.bias_term else [weights]


def fillers(param, spec) -> list:
    p = param.inner_product_param
    return [p.weight_filler if p.HasField("weight_filler") else None,
            p.bias_filler if p.HasField("bias_filler") else None][:1 + spec.bias_term]


def reference(spec, inputs, blobs) -> list:
    x = inputs[0]
    rows = x.reshape(math.prod(x.shape[:spec.axis]), -1)
    weights = blobs[0]
    out = rows @ weights if spec.transpose else rows @ weights.T
    if spec.bias_term:
        out += blobs[1]
    return [out.astype(np.float32, copy=False).reshape(shape(spec, [x.shape])[0])]


register("InnerProduct", LayerKind(
    parse=parse, shape=shape, reference=reference, blob_shapes=blob_shapes, fillers=fillers,
    macs=lambda spec, ins, outs: input_size(spec, ins[0]) * spec.num_output))

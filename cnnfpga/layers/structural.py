"""Layers that move data rather than compute on it: Input, Split, Concat, Eltwise, Flatten, Reshape, Softmax."""
from dataclasses import dataclass
import math

import numpy as np

from . import LayerKind, bad, register


@dataclass(frozen=True)
class AxisSpec:
    axis: int


@dataclass(frozen=True)
class EltwiseSpec:
    operation: str  # "SUM" | "PROD" | "MAX"
    coeffs: tuple


@dataclass(frozen=True)
class FlattenSpec:
    axis: int
    end_axis: int


@dataclass(frozen=True)
class ReshapeSpec:
    out_shape: tuple


@dataclass(frozen=True)
class SplitSpec:
    copies: int


@dataclass(frozen=True)
class InputSpec:
    shapes: tuple


def normalise_axis(axis: int, ndim: int, what: str) -> int:
    resolved = axis + ndim if axis < 0 else axis
    if not 0 <= resolved < ndim:
        bad(f"{what} axis {axis} is out of range for a {ndim}-D blob")
    return resolved


# --- Input: shapes are declared in the prototxt; the graph feeds the data.
def parse_input(param, in_shapes) -> InputSpec:
    shapes = tuple(tuple(int(d) for d in s.dim) for s in param.input_param.shape)
    if not shapes:
        bad("Input layer needs input_param { shape { dim: ... } }")
    if len(shapes) not in (1, len(param.top)):
        bad(f"Input layer has {len(param.top)} tops but {len(shapes)} shapes")
    for s in shapes:
        if any(d <= 0 for d in s):
            bad(f"input shape {list(s)} has a zero or negative dimension")
    return InputSpec(shapes)


def input_shapes(spec: InputSpec, in_shapes) -> list:
    return list(spec.shapes)


# --- Concat
def parse_concat(param, in_shapes) -> AxisSpec:
    p = param.concat_param
    axis = p.axis if p.HasField("axis") or not p.HasField("concat_dim") else p.concat_dim
    axis = normalise_axis(axis, len(in_shapes[0]), "concat")
    for s in in_shapes[1:]:
        if len(s) != len(in_shapes[0]) or any(a != b for i, (a, b) in enumerate(zip(s, in_shapes[0])) if i != axis):
            bad(f"cannot concatenate shapes {[list(x) for x in in_shapes]} along axis {axis}")
    return AxisSpec(axis)


def concat_shape(spec: AxisSpec, in_shapes) -> list:
    out = list(in_shapes[0])
    out[spec.axis] = sum(s[spec.axis] for s in in_shapes)
    return [tuple(out)]


# --- Eltwise
def parse_eltwise(param, in_shapes) -> EltwiseSpec:
    p = param.eltwise_param
    operation = p.EltwiseOp.Name(p.operation)
    if any(s != in_shapes[0] for s in in_shapes):
        bad(f"Eltwise inputs must have one shape, got {[list(s) for s in in_shapes]}")
    if p.coeff and (operation != "SUM" or len(p.coeff) != len(in_shapes)):
        bad("Eltwise coeff needs operation SUM and one coefficient per bottom")
    return EltwiseSpec(operation, tuple(p.coeff) or (1.0,) * len(in_shapes))


def eltwise(spec: EltwiseSpec, inputs, blobs) -> list:
    if spec.operation == "PROD":
        return [math.prod(inputs[1:], start=inputs[0]).astype(np.float32)]
    if spec.operation == "MAX":
        return [np.maximum.reduce(inputs)]
    out = inputs[0] * np.float32(spec.coeffs[0])
    for x, c in zip(inputs[1:], spec.coeffs[1:]):
        out = out + x * np.float32(c)
    return [out.astype(np.float32, copy=False)]


# --- Flatten and Reshape
def parse_flatten(param, in_shapes) -> FlattenSpec:
    ndim = len(in_shapes[0])
    p = param.flatten_param
    return FlattenSpec(normalise_axis(p.axis, ndim, "flatten"), normalise_axis(p.end_axis, ndim, "flatten end"))


def flatten_shape(spec: FlattenSpec, in_shapes) -> list:
    s = in_shapes[0]
    return [tuple(s[:spec.axis]) + (math.prod(s[spec.axis:spec.end_axis + 1]),) + tuple(s[spec.end_axis + 1:])]


def parse_reshape(param, in_shapes) -> ReshapeSpec:
    p = param.reshape_param
    s = tuple(in_shapes[0])
    ndim = len(s)
    start = normalise_axis(p.axis, ndim + 1, "reshape") if p.axis >= 0 else p.axis + ndim + 1
    end = ndim if p.num_axes == -1 else start + p.num_axes
    if not 0 <= start <= end <= ndim:
        bad(f"reshape axis {p.axis} / num_axes {p.num_axes} do not fit a {ndim}-D blob")
    middle = []
    for i, d in enumerate(p.shape.dim):
        if d == 0:  # 0 copies the matching input dimension
            if start + i >= ndim:
                bad(f"reshape dim {i} is 0 but the input has no dimension {start + i}")
            middle.append(s[start + i])
        else:
            middle.append(int(d))
    if middle.count(-1) > 1:
        bad("reshape may infer (-1) at most one dimension")
    known = math.prod(d for d in middle if d != -1)
    count = math.prod(s[start:end])
    if -1 in middle:
        if known == 0 or count % known:
            bad(f"cannot infer a dimension: {count} elements into {middle}")
        middle[middle.index(-1)] = count // known
    if math.prod(middle) != count:
        bad(f"reshape to {middle} needs {math.prod(middle)} elements, the input has {count}")
    return ReshapeSpec(s[:start] + tuple(middle) + s[end:])


# --- Softmax
def softmax(spec: AxisSpec, inputs, blobs) -> list:
    x = inputs[0]
    shifted = np.exp(x - x.max(axis=spec.axis, keepdims=True))
    return [(shifted / shifted.sum(axis=spec.axis, keepdims=True)).astype(np.float32)]


register("Input", LayerKind(parse=parse_input, shape=input_shapes, reference=lambda spec, xs, b: xs, bottoms=(0, 0)))
register("Split", LayerKind(parse=lambda p, s: SplitSpec(len(p.top)), shape=lambda spec, s: [s[0]] * spec.copies,
                            reference=lambda spec, xs, b: [xs[0]] * spec.copies))
register("Concat", LayerKind(parse=parse_concat, shape=concat_shape, bottoms=(1, None),
                             reference=lambda spec, xs, b: [np.concatenate(xs, axis=spec.axis)]))
register("Eltwise", LayerKind(parse=parse_eltwise, shape=lambda spec, s: [s[0]], reference=eltwise, bottoms=(2, None)))
register("Flatten", LayerKind(parse=parse_flatten, shape=flatten_shape,
                              reference=lambda spec, xs, b: [xs[0].reshape(flatten_shape(spec, [xs[0].shape])[0])]))
register("Reshape", LayerKind(parse=parse_reshape, shape=lambda spec, s: [spec.out_shape],
                              reference=lambda spec, xs, b: [xs[0].reshape(spec.out_shape)]))
register("Softmax", LayerKind(
    parse=lambda p, s: AxisSpec(normalise_axis(p.softmax_param.axis, len(s[0]), "softmax")),
    shape=lambda spec, s: [s[0]], reference=softmax))

"""The layer registry: one entry per Caffe layer type, as in Caffe's own layer factory.

Each entry keeps a layer type's knowledge side by side: how its typed spec is read from the
protobuf message, its shape rule, its learned blobs' shapes and default fillers, its numpy
reference (the golden model) and its multiply-accumulate count. Device stages -- kernels and
cost models -- are linked by the layer type string: DEVICE_TYPES below, cnnfpga.placement,
cnnfpga.design (one module per stage kind) and kernels/.
"""
from dataclasses import dataclass
import math
from typing import Any, Callable

from ..errors import NetDefinitionError


@dataclass(frozen=True)
class LayerKind:
    # parse(param: LayerParameter, in_shapes) -> spec (a frozen dataclass); raises NetDefinitionError
    parse: Callable[[Any, list], Any]
    # shape(spec, in_shapes) -> out_shapes (one per top)
    shape: Callable[[Any, list], list]
    # reference(spec, inputs, blobs) -> outputs (numpy float32, NCHW)
    reference: Callable[[Any, list, list], list]
    # blob_shapes(spec, in_shapes) -> shapes of the learned blobs, in Caffe's order
    blob_shapes: Callable[[Any, list], list] = lambda spec, in_shapes: []
    # default_fillers(param, spec) -> one FillerParameter (or None for "use our default") per blob
    fillers: Callable[[Any, Any], list] = lambda param, spec: []
    # macs(spec, in_shapes, out_shapes) -> multiply-accumulates for ONE image (batch index dropped)
    macs: Callable[[Any, list, list], int] = lambda spec, in_shapes, out_shapes: 0
    # number of bottoms the layer accepts: (minimum, maximum or None)
    bottoms: tuple = (1, 1)


REGISTRY: dict[str, LayerKind] = {}

# layer types that have a device stage (a kernel template and a cost model); see runs_on_device
DEVICE_TYPES = ("Convolution", "Pooling", "LRN", "ReLU", "Eltwise", "Concat")


def runs_on_device(layer) -> bool:
    """Whether a layer's type and parameters have a device stage.  An Eltwise does only as the plain
    sum of two blobs (ResNet's shortcut); a product, a maximum or weighted terms stay on the host.
    A Concat does as the concatenation of several (N, C, H, W) blobs along the channels (an inception
    or fire module's output); another axis stays on the host.  Precision, placement, the quantiser
    and the design file all ask this one question, so that a layer the device refuses stays float in
    the golden model too."""
    if layer.type == "Eltwise":
        return layer.spec.operation == "SUM" and len(layer.bottoms) == 2 and all(c == 1 for c in layer.spec.coeffs)
    if layer.type == "Concat":
        return layer.spec.axis == 1 and len(layer.bottoms) >= 2 and all(len(s) == 4 for s in layer.in_shapes)
    return layer.type in DEVICE_TYPES


def register(type_name: str, kind: LayerKind) -> None:
    REGISTRY[type_name] = kind


def bad(message: str):
    """Raise a layer configuration error; the graph adds file, line and layer name."""
    raise NetDefinitionError(message)


def positive(name: str, value: int) -> int:
    if value <= 0:
        bad(f"{name} must be positive, got {value}")
    return int(value)


def four_d(in_shapes, layer_type: str) -> None:
    """Convolution, pooling and LRN work on (N, C, H, W) blobs only (Caffe's LRN too; N-D convolution
    is not supported)."""
    if len(in_shapes[0]) != 4:
        bad(f"{layer_type} needs a 4-D bottom (N, C, H, W), got a {len(in_shapes[0])}-D one {list(in_shapes[0])}")


def finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        bad(f"{name} must be a finite number, got {value}")
    return float(value)


def spatial(values, h_value, w_value, has_h: bool, has_w: bool, default: int, name: str) -> tuple:
    """Resolve Caffe's `x: [v]` / `x: [h, w]` / `x_h, x_w` conventions into (h, w)."""
    if has_h or has_w:
        if values:
            bad(f"give either {name} or {name}_h/{name}_w, not both")
        if not (has_h and has_w):
            bad(f"{name}_h and {name}_w must be given together")
        return int(h_value), int(w_value)
    values = list(values)
    if not values:
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    bad(f"{name} has {len(values)} values; only 2-D (1 or 2 values) is supported")


from . import conv, pool, elementwise, lrn, inner_product, structural, normalization  # noqa: E402,F401  (fill REGISTRY)

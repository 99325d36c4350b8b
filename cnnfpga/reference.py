"""The golden model: the whole net in numpy float32, layer by layer, as Caffe computes it.

Every other path (OpenCL kernels, fixed point, host layers) is checked against this.
"""
import os

import numpy as np

from .errors import InputError


def checked_input(net_file: str, name: str, data, declared: tuple) -> np.ndarray:
    """An input array as float32, refused with a reason when it cannot be a batch of this input: not
    numeric, another rank, an empty dimension, or NaN/infinite values (refused on every backend: max
    pooling, fixed point and fp16 would each treat them differently)."""
    where = f"{os.path.basename(net_file)}: input '{name}'"
    try:
        array = np.asarray(data)
    except (ValueError, TypeError) as error:
        raise InputError(f"{where}: not an array of numbers ({error})") from None
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InputError(f"{where}: values of type {array.dtype}, expected numbers")
    if array.ndim != len(declared):
        raise InputError(f"{where}: {array.ndim}-D data {list(array.shape)}, the net's input is {len(declared)}-D "
                         f"{list(declared)}")
    if array.size == 0:
        raise InputError(f"{where}: data of shape {list(array.shape)} holds no values")
    array = np.ascontiguousarray(array, dtype=np.float32)
    bad = array.size - int(np.count_nonzero(np.isfinite(array)))
    if bad:
        raise InputError(f"{where}: {bad} NaN or infinite value(s); inputs must be finite numbers")
    return array


def check_inputs(graph, inputs: dict) -> dict:
    """Inputs as contiguous float32 arrays of the declared shapes; clear errors otherwise."""
    missing = [name for name in graph.inputs if name not in inputs]
    if missing:
        raise InputError(f"{graph.path}: no data given for input(s) {missing} (inputs: {list(graph.inputs)})")
    checked = {}
    for name, shape in graph.inputs.items():
        array = np.asarray(inputs[name])
        if tuple(array.shape) != tuple(shape):
            raise InputError(f"{graph.path}: input '{name}' has shape {list(array.shape)}, the net expects "
                             f"{list(shape)} (reshape the net for another batch or image size)")
        if not np.issubdtype(array.dtype, np.number):
            raise InputError(f"{graph.path}: input '{name}' has non-numeric dtype {array.dtype}")
        checked[name] = np.ascontiguousarray(array, dtype=np.float32)
    return checked


def run_layer(layer, blobs: dict) -> None:
    """Run one layer on the blobs dict in place (in-place layers overwrite their bottom's name)."""
    outputs = layer.kind.reference(layer.spec, [blobs[b] for b in layer.bottoms], layer.blobs)
    for top, value in zip(layer.tops, outputs):
        blobs[top] = value


def forward(graph, inputs: dict, until: str = None) -> dict:
    """Run the net; return every blob by name. `until` stops after the layer of that name."""
    graph.check_memory(weights=False)
    blobs = check_inputs(graph, inputs)
    for layer in graph.layers:
        if layer.type != "Input":
            run_layer(layer, blobs)
        if layer.name == until:
            break
    return blobs

"""The network graph: layers with typed specs, every blob's shape by Caffe's rules, weights attached.

prototxt (+ caffemodel) -> Graph. Nothing here knows about OpenCL or FPGAs.
"""
from dataclasses import dataclass, field
import math
import os
import warnings
import zlib

import numpy as np

from .caffe import caffe_pb2
from .caffe.fillers import fill
from .caffe.reader import read_caffemodel, read_prototxt
from .errors import NetDefinitionError, ResourceError, WeightsError
from .layers import REGISTRY

# Layers a deploy net may carry that have no meaning at inference; they are dropped with a note.
TRAINING_ONLY = {"Accuracy", "SoftmaxWithLoss", "EuclideanLoss", "HingeLoss", "SigmoidCrossEntropyLoss",
                 "InfogainLoss", "MultinomialLogisticLoss", "ContrastiveLoss", "Silence"}


@dataclass
class Layer:
    name: str
    type: str
    bottoms: list
    tops: list
    param: caffe_pb2.LayerParameter
    spec: object
    in_shapes: list
    out_shapes: list
    where: str                      # "file:line (layer 'name')", for messages
    blobs: list = field(default_factory=list)   # float32 learned blobs, Caffe's shapes and order

    @property
    def kind(self):
        return REGISTRY[self.type]

    @property
    def macs(self) -> int:
        """Multiply-accumulates for one image."""
        return self.kind.macs(self.spec, self.in_shapes, self.out_shapes)

    @property
    def params(self) -> int:
        return sum(math.prod(s) for s in self.kind.blob_shapes(self.spec, self.in_shapes))


@dataclass
class Graph:
    name: str
    path: str
    inputs: dict            # input blob name -> shape
    layers: list
    shapes: dict            # every blob name -> shape (in-place layers keep one name)
    outputs: list
    weights_path: str = None

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise NetDefinitionError(f"{self.path}: no layer named '{name}'")

    def activation_bytes(self) -> int:
        return 4 * sum(math.prod(s) for s in self.shapes.values())

    def weight_bytes(self) -> int:
        return 4 * sum(layer.params for layer in self.layers)

    def check_memory(self, weights: bool = True, activations: bool = True) -> None:
        """Refuse, before allocating anything, what cannot fit in this machine's memory."""
        needed = (self.weight_bytes() if weights else 0) + (self.activation_bytes() if activations else 0)
        available = available_memory()
        if needed > available:
            biggest = max(self.shapes, key=lambda b: math.prod(self.shapes[b]))
            heaviest = max(self.layers, key=lambda layer: layer.params)
            raise ResourceError(
                f"{os.path.basename(self.path)}: needs {needed / 2**30:.1f} GiB "
                f"({'weights ' + format(self.weight_bytes() / 2**30, '.1f') + ' GiB' if weights else ''}"
                f"{', ' if weights and activations else ''}"
                f"{'blobs ' + format(self.activation_bytes() / 2**30, '.1f') + ' GiB' if activations else ''}), "
                f"but only {available / 2**30:.1f} GiB is available; largest blob '{biggest}' {list(self.shapes[biggest])}, "
                f"most weights in {heaviest.where} ({heaviest.params:,} parameters); reduce the batch or input size")

    def reshape(self, input_shapes: dict) -> "Graph":
        """A graph with new input shapes (batch size, image size) and the same weights."""
        unknown = set(input_shapes) - set(self.inputs)
        if unknown:
            raise NetDefinitionError(f"{self.path}: {sorted(unknown)} are not inputs of the net (inputs: {list(self.inputs)})")
        inputs = {name: tuple(int(d) for d in input_shapes.get(name, shape)) for name, shape in self.inputs.items()}
        return build(self.name, self.path, inputs, [(layer.param, layer.where) for layer in self.layers],
                     blobs={layer.name: layer.blobs for layer in self.layers}, weights_path=self.weights_path,
                     input_overrides=inputs)


def load_graph(net_path: str, weights_path: str = None, seed: int = 0, input_shapes: dict = None,
               fill: bool = True) -> Graph:
    """Read a prototxt (any format) and optionally a caffemodel into a Graph.

    Without weights every learned blob comes from the prototxt's fillers (seeded, per layer), and a
    warning says that the outputs mean nothing. `fill=False` gives a shapes-only graph (no blobs), which
    is all the partitioner and the hardware model need, even for nets too big for this machine.
    """
    parsed = read_prototxt(net_path)
    net = parsed.param
    base = os.path.basename(net_path)
    inputs = legacy_inputs(net, net_path)
    entries = []
    for param, line in zip(net.layer, parsed.layer_lines):
        if param.type in TRAINING_ONLY:
            continue
        entries.append((param, f"{base}:{line} (layer '{param.name}')"))
    if not entries and not inputs:  # e.g. a file of comments only: nothing to run, say so now
        raise NetDefinitionError(f"{net_path}: the net has no layers and no inputs")
    if input_shapes:
        inputs.update({k: tuple(v) for k, v in input_shapes.items()})
    graph = build(net.name, net_path, inputs, entries, blobs=None, weights_path=weights_path, input_overrides=input_shapes)
    if weights_path is None:
        if not fill:
            return graph
        graph.check_memory(activations=False)
        fill_from_prototxt(graph, seed)
        if any(layer.blobs for layer in graph.layers):   # a net without learned parameters needs no weights
            warnings.warn(f"{base}: no weights given; parameters come from fillers (seed {seed}), so the outputs "
                          "are meaningless", UserWarning, stacklevel=2)
    else:
        attach_weights(graph, weights_path)
    return graph


def legacy_inputs(net, path) -> dict:
    """Inputs declared at the top of the net with `input` + `input_dim` or `input_shape`."""
    names = list(net.input)
    if net.input_shape:
        shapes = [tuple(int(d) for d in s.dim) for s in net.input_shape]
    else:
        dims = list(net.input_dim)
        if len(dims) != 4 * len(names):
            raise NetDefinitionError(f"{path}: {len(names)} input(s) need {4 * len(names)} input_dim values, "
                                     f"found {len(dims)}")
        shapes = [tuple(dims[4 * i:4 * i + 4]) for i in range(len(names))]
    if len(shapes) != len(names):
        raise NetDefinitionError(f"{path}: {len(names)} inputs but {len(shapes)} input shapes")
    for name, shape in zip(names, shapes):
        if any(d <= 0 for d in shape):
            raise NetDefinitionError(f"{path}: input '{name}' has a zero or negative dimension {list(shape)}")
    return dict(zip(names, shapes))


def build(name, path, inputs, entries, blobs=None, weights_path=None, input_overrides=None) -> Graph:
    shapes = dict(inputs)
    graph_inputs = dict(inputs)
    layers = []
    last_reader = {}   # blob -> index of the last layer reading it (so the outputs take one pass)
    producers = {name: "the net's inputs" for name in inputs}   # blob -> what wrote it first
    layer_at = {}                                               # layer name -> where it is defined
    for param, where in entries:
        if param.name in layer_at:
            # weights, precision and parallelism are all keyed by layer name
            raise NetDefinitionError(f"{where}: a second layer named '{param.name}' (the first is at "
                                     f"{layer_at[param.name]}); layer names must be unique")
        layer_at[param.name] = where
        if param.type not in REGISTRY:
            raise NetDefinitionError(f"{where}: unknown layer type '{param.type}'; supported types: "
                                     f"{', '.join(sorted(REGISTRY))}")
        kind = REGISTRY[param.type]
        low, high = kind.bottoms
        if len(param.bottom) < low or (high is not None and len(param.bottom) > high):
            wanted = f"{low}" if low == high else f"{low} or more" if high is None else f"{low} to {high}"
            raise NetDefinitionError(f"{where}: {param.type} takes {wanted} bottom(s), got {len(param.bottom)}")
        for bottom in param.bottom:
            if bottom not in shapes:
                raise NetDefinitionError(f"{where}: bottom '{bottom}' is not produced by any earlier layer "
                                         f"(known blobs: {', '.join(shapes) or 'none'})")
        in_shapes = [shapes[b] for b in param.bottom]
        try:
            spec = kind.parse(param, in_shapes)
            out_shapes = kind.shape(spec, in_shapes)
        except NetDefinitionError as error:
            raise NetDefinitionError(f"{where}: {error}") from None
        if param.type == "Input":
            out_shapes = out_shapes * len(param.top) if len(out_shapes) == 1 else out_shapes
            out_shapes = [tuple((input_overrides or {}).get(top, shape)) for top, shape in zip(param.top, out_shapes)]
            graph_inputs.update(zip(param.top, out_shapes))
        if len(out_shapes) != len(param.top):
            raise NetDefinitionError(f"{where}: {param.type} produces {len(out_shapes)} top(s), "
                                     f"the prototxt names {len(param.top)}")
        for top in param.top:
            # Caffe refuses a top "produced by multiple sources"; an Input layer may restate an input
            # that input_shapes= gave
            redeclared_input = param.type == "Input" and top in inputs
            if top in producers and top not in param.bottom and not redeclared_input:
                raise NetDefinitionError(f"{where}: top '{top}' is already produced by {producers[top]}; a layer "
                                         f"may write an existing blob only in place (as its own bottom)")
            producers.setdefault(top, f"layer '{param.name}'")
        last_reader.update((bottom, len(layers)) for bottom in param.bottom)
        shapes.update(zip(param.top, out_shapes))
        layer_blobs = blobs.get(param.name, []) if blobs else []
        expected = [tuple(shape) for shape in kind.blob_shapes(spec, in_shapes)] if layer_blobs else []
        if layer_blobs and [tuple(b.shape) for b in layer_blobs] != expected:
            # a reshape (another input size or channel count) the weights cannot follow
            raise WeightsError(f"{where}: with the input(s) {', '.join(f'{n} {list(v)}' for n, v in inputs.items())} "
                               f"layer '{param.name}' needs weights {', '.join(str(list(e)) for e in expected)}; it has "
                               f"{', '.join(str(list(b.shape)) for b in layer_blobs)}")
        layers.append(Layer(param.name, param.type, list(param.bottom), list(param.top), param, spec,
                            in_shapes, out_shapes, where, layer_blobs))
    # outputs: tops that no later layer reads (an in-place layer's top is read by nobody after it)
    outputs, seen = [], set()
    for i, layer in enumerate(layers):
        for top in layer.tops:
            if last_reader.get(top, -1) <= i and top not in seen and layer.type != "Input":
                outputs.append(top)
                seen.add(top)
    return Graph(name, path, graph_inputs, layers, shapes, outputs, weights_path)


def available_memory() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def layer_rng(seed: int, layer_name: str) -> np.random.Generator:
    """Each layer's fillers get their own stream, so adding a layer does not change the others' weights."""
    return np.random.default_rng([seed, zlib.crc32(layer_name.encode())])


def default_filler(layer_type: str, index: int, shape) -> caffe_pb2.FillerParameter:
    """Fillers for blobs the prototxt gives none for (deploy files rarely do).

    Caffe would use constant 0, which makes every output equal; we use values that exercise the maths:
    xavier weights, small uniform biases, and plausible BatchNorm statistics and Scale factors.
    """
    filler = caffe_pb2.FillerParameter()
    if layer_type == "BatchNorm":
        filler.type, filler.min, filler.max = ("uniform", -0.1, 0.1) if index == 0 else \
            ("uniform", 0.5, 1.5) if index == 1 else ("constant", 1.0, 1.0)
        filler.value = 1.0
    elif layer_type == "Scale":
        filler.type, filler.min, filler.max = ("uniform", 0.5, 1.5) if index == 0 else ("uniform", -0.1, 0.1)
    elif len(shape) == 1:
        filler.type, filler.min, filler.max = "uniform", -0.1, 0.1
    else:
        filler.type = "xavier"
    return filler


def fill_from_prototxt(graph: Graph, seed: int) -> None:
    for layer in graph.layers:
        shapes = layer.kind.blob_shapes(layer.spec, layer.in_shapes)
        if not shapes:
            continue
        rng = layer_rng(seed, layer.name)
        fillers = layer.kind.fillers(layer.param, layer.spec)
        layer.blobs = []
        for i, shape in enumerate(shapes):
            filler = fillers[i] if i < len(fillers) and fillers[i] is not None else default_filler(layer.type, i, shape)
            layer.blobs.append(np.ascontiguousarray(fill(filler, shape, rng, where=f"{layer.where}: blob {i}"),
                                                    dtype=np.float32))


def fits_legacy_shape(stored: tuple, expected: tuple) -> bool:
    """V1 files pad every blob to 4-D with leading ones: bias (1,1,1,O), InnerProduct (1,1,O,K)."""
    return len(stored) == 4 and len(expected) <= 4 and (1,) * (4 - len(expected)) + tuple(expected) == tuple(stored)


def attach_weights(graph: Graph, weights_path: str) -> None:
    stored = {layer.name: layer for layer in read_caffemodel(weights_path)}
    base = os.path.basename(weights_path)
    missing = []
    for layer in graph.layers:
        expected = layer.kind.blob_shapes(layer.spec, layer.in_shapes)
        if not expected:
            continue
        if layer.name not in stored:
            missing.append(layer.name)
            continue
        found = stored[layer.name].blobs
        if len(found) != len(expected):
            raise WeightsError(f"{base}: layer '{layer.name}' has {len(found)} blob(s), but {layer.where} "
                               f"needs {len(expected)} ({', '.join(str(list(s)) for s in expected)})")
        blobs = []
        for i, (blob, shape) in enumerate(zip(found, expected)):
            if tuple(blob.shape) != tuple(shape):
                if not fits_legacy_shape(blob.shape, shape):
                    raise WeightsError(f"{base}: layer '{layer.name}' blob {i} has shape {list(blob.shape)}, but "
                                       f"{layer.where} needs {list(shape)}")
                blob = blob.reshape(shape)
            blobs.append(np.ascontiguousarray(blob, dtype=np.float32))
        layer.blobs = blobs
    if missing:
        raise WeightsError(f"{base}: no weights for layer(s) {', '.join(missing)} of {os.path.basename(graph.path)}; "
                           "the caffemodel does not belong to this prototxt")

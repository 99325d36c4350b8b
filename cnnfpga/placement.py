"""Placement: which layers stream through device stages, which run on the host CPU.

A Plan is a list of steps in topological order.  A step is either a Segment -- a chain of device
stages that reads one blob from DDR, streams it stage to stage through channels and writes one
blob back -- or a HostStep, one layer run on the host (inner products through cnnfpga.host, every
other unsupported layer through the numpy float reference).

Rules:
- Convolution, Pooling, LRN, ReLU, the sum of two blobs (Eltwise SUM) and Concat along the channels
  run on the device
  (``cnnfpga.layers.runs_on_device``).  BatchNorm and Scale directly after a convolution are folded
  into its weights first (``fold_batch_norms``: the plan, its precisions and the fixed-point golden
  model all see the folded graph); a ReLU directly after a convolution or a sum is fused into that
  stage (applied before the write).
- A stage joins the segment of its producer when it is the only reader of that blob; otherwise
  the blob is written to DDR and every reader starts from there (branches, shortcuts, concats).
- A sum or a channel Concat streams one input -- the one whose segment comes last in the plan, so
  that the others are written by then -- and reads the others (its `sides` blobs) from DDR, each
  through a port of its own.
- Blobs are tracked by version, so in-place layers (Caffe's `top == bottom` ReLU) work.

How wide each stage is (parallelism, stream widths, weights on chip or from DDR) is the design's
business (cnnfpga.design), which comes next on the data path.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from .caffe import caffe_pb2
from .layers import runs_on_device
from .layers.normalization import batch_norm_statistics
from .precision import Fixed, Float, LayerPrecision, resolve_precision

STAGE_KIND = {"Convolution": "conv", "Pooling": "pool", "LRN": "lrn", "ReLU": "relu", "Eltwise": "eltwise",
              "Concat": "concat"}
FLOAT = LayerPrecision(Float(), Float(), Float())


@dataclass
class Stage:
    """One pipeline stage: a device layer plus what was fused into it."""
    index: int
    kind: str                    # "conv" | "pool" | "lrn" | "relu" | "eltwise" | "concat"
    layer: object                # the graph Layer that gives the stage its name and geometry
    in_shape: tuple              # (N, C, H, W)
    out_shape: tuple
    precision: LayerPrecision
    fused: list = field(default_factory=list)   # names of layers folded/fused into this stage
    relu_slope: float = None     # a fused ReLU's negative slope (None: no ReLU)
    weights: np.ndarray = None   # conv weights after folding BatchNorm/Scale (O, C/G, KH, KW)
    bias: np.ndarray = None      # conv bias after folding (O,)
    # conv weights reloading (reload_filters): the stage computes its O filters in `passes` passes
    # of O / passes each, out_shape being one pass's; weights and bias stay all O filters'
    passes: int = 1
    # a sum or a concat: the versioned keys of the inputs read from DDR, in the layer's order without
    # the one that streams in, which is its bottom `streamed`; precision's `inputs` is the streamed
    # input's format, `sides` the others'
    sides: tuple = ()
    streamed: int = 0

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def spec(self):
        return self.layer.spec

    @property
    def side_shapes(self) -> list:
        """The (N, C, H, W) of each input read from DDR, as `sides` lists them."""
        return [as_4d(shape) for k, shape in enumerate(self.layer.in_shapes) if k != self.streamed]


@dataclass
class Segment:
    """Stages streaming into one another; `source` is read from DDR, `sink` is written to DDR."""
    stages: list
    source: str                  # versioned blob key
    sink: str = None


@dataclass
class HostStep:
    layer: object
    inputs: list                 # versioned blob keys
    outputs: list
    reason: str                  # why the host runs it


@dataclass
class Plan:
    graph: object                # the graph as planned: BatchNorm/Scale folded (fold_batch_norms)
    steps: list
    blob_names: dict             # versioned key -> Caffe blob name
    final_keys: dict             # Caffe blob name -> key of its last version
    precisions: dict = field(default_factory=dict)   # layer name -> LayerPrecision (host layers float)

    @property
    def segments(self) -> list:
        return [s for s in self.steps if isinstance(s, Segment)]

    @property
    def stages(self) -> list:
        return [stage for segment in self.segments for stage in segment.stages]

    def stage(self, index: int) -> Stage:
        return next(stage for stage in self.stages if stage.index == index)

    def only(self, indices) -> "Plan":
        """The plan reduced to the segments that start at stages `indices` (a partition's program)."""
        indices = set(indices)
        return replace(self, steps=[s for s in self.segments if s.stages[0].index in indices])

    def written_blobs(self) -> list:
        """The Caffe blob each segment writes, where no later in-place host layer rewrites it."""
        return [self.blob_names[s.sink] for s in self.segments if self.final_keys[self.blob_names[s.sink]] == s.sink]

    def host_fed_segments(self) -> list:
        """Segments whose input a host layer wrote.  The host's float layers (an inner product's BLAS)
        sum in another order than the golden model, so such a segment may see a value on the other
        side of a rounding step: its outputs can differ from the golden model's by one step."""
        host_outputs = {key for step in self.steps if isinstance(step, HostStep) for key in step.outputs}
        return [s for s in self.segments if s.source in host_outputs]

    def describe(self, parallelism=None) -> str:
        """A table: each layer, where it runs, its precision, its output shape; with
        ``parallelism(stage) -> str`` (a design's) also how wide each stage is."""
        rows = [("layer", "type", "runs on", "precision", "parallel", "output")]
        for step in self.steps:
            if isinstance(step, HostStep):
                shape = step.layer.out_shapes[0] if step.layer.out_shapes else ()
                rows.append((step.layer.name, step.layer.type, f"host ({step.reason})", "float", "-", str(list(shape))))
                continue
            for k, stage in enumerate(step.stages):
                streams = "from DDR" if k == 0 else "streamed"
                if stage.sides:
                    streams += f", + {', '.join(self.blob_names[key] for key in stage.sides)} from DDR"
                parallel = parallelism(stage) if parallelism else "-"
                label = precision_label(stage.precision, has_weights=stage.kind == "conv")
                rows.append((stage.name, stage.layer.type, f"device stage {stage.index} ({streams})", label, parallel,
                             str(list(stage.out_shape))))
                for fused in stage.fused:
                    rows.append((fused, "", f"  fused into stage {stage.index}", "", "", ""))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * width for width in widths))
        n_dev = len(self.stages)
        n_host = sum(isinstance(s, HostStep) for s in self.steps)
        lines.append(f"{n_dev} device stage(s) in {len(self.segments)} segment(s), {n_host} host layer(s)")
        return "\n".join(lines)


def precision_label(p: LayerPrecision, has_weights: bool) -> str:
    """One format when all that matter agree, else "w .. in .. [side ..] out ..".  Weightless layers carry
    their input format in `weights` (cnnfpga.precision), which says nothing, so it is left out."""
    shown = ([("w", p.weights)] if has_weights else []) + [("in", p.inputs)] + \
        [("side", fmt) for fmt in p.sides] + [("out", p.outputs)]
    if len({fmt for _, fmt in shown}) == 1:
        return str(p.inputs)
    return " ".join(f"{label} {fmt}" for label, fmt in shown)


# ---------------------------------------------------------------------------------------- helpers

def versioned_nodes(graph):
    """Each non-Input layer with its bottoms/tops renamed to versioned keys (in-place writes get a
    new key), the key -> blob-name map, and each blob's final key."""
    version = {name: name for name in graph.inputs}
    count = {}
    names = {name: name for name in graph.inputs}
    nodes = []
    for layer in graph.layers:
        if layer.type == "Input":
            continue
        inputs = [version[b] for b in layer.bottoms]
        outputs = []
        for top in layer.tops:
            n = count.get(top, 0) + (1 if top in version else 0)
            count[top] = n
            key = top if n == 0 else f"{top}#{n}"
            version[top] = key
            names[key] = top
            outputs.append(key)
        nodes.append((layer, inputs, outputs))
    return nodes, names, version


def fold_batch_norm(weights, bias, bn_layer, scale_layer):
    """Conv followed by BatchNorm (and Scale): new weights and bias computing the same function."""
    mean, variance = batch_norm_statistics(bn_layer.blobs)
    factor = 1.0 / np.sqrt(variance.astype(np.float64) + bn_layer.spec.eps)
    shift = -mean.astype(np.float64) * factor
    if scale_layer is not None:
        gamma = scale_layer.blobs[0].astype(np.float64).reshape(-1)
        factor, shift = factor * gamma, shift * gamma
        if scale_layer.spec.bias_term:
            shift = shift + scale_layer.blobs[1].astype(np.float64).reshape(-1)
    new_weights = weights.astype(np.float64) * factor.reshape(-1, 1, 1, 1)
    new_bias = bias.astype(np.float64) * factor + shift
    return new_weights.astype(np.float32), new_bias.astype(np.float32)


def fold_batch_norms(graph):
    """The graph the device runs: each Convolution followed directly by a BatchNorm (and then a
    per-channel Scale) that only it feeds becomes one Convolution with folded weights and a bias,
    writing the last folded layer's top.  The partitioner and the fixed-point golden model both run
    this graph, so they compute with -- and size fixed-point formats from -- the same weights.

    Returns (graph, {convolution name: [names of the layers folded into it]}); ``graph`` itself
    when nothing folds.  A shapes-only graph (no blobs) folds the same way and keeps no blobs.
    """
    nodes, _, final = versioned_nodes(graph)
    readers = Counter(key for _, inputs, _ in nodes for key in inputs)
    graph_outputs = {final[name] for name in graph.outputs}

    def sole_reader(k: int, key: str, kind: str):
        """nodes[k]'s layer if it is a single-top `kind` reading only `key`, and nothing else reads `key`."""
        if k >= len(nodes):
            return None
        layer, inputs, outputs = nodes[k]
        if layer.type != kind or inputs != [key] or len(outputs) != 1 or readers[key] != 1 or key in graph_outputs:
            return None
        return layer

    replacements, folded, dropped = {}, {}, set()
    for i, (layer, _, outputs) in enumerate(nodes):
        if layer.type != "Convolution" or len(outputs) != 1:
            continue
        bn = sole_reader(i + 1, outputs[0], "BatchNorm")
        if bn is None:
            continue
        scale = sole_reader(i + 2, nodes[i + 1][2][0], "Scale")
        if scale is not None and (scale.spec.axis, scale.spec.num_axes) != (1, 1):
            scale = None                 # only a per-channel scale folds into the output channels
        chain = [bn] if scale is None else [bn, scale]
        replacements[layer.name] = folded_convolution(layer, bn, scale)
        folded[layer.name] = [l.name for l in chain]
        dropped.update(l.name for l in chain)
    if not folded:
        return graph, {}
    layers = [replacements.get(l.name, l) for l in graph.layers if l.name not in dropped]
    produced = set(graph.inputs) | {top for l in layers for top in l.tops}
    shapes = {name: shape for name, shape in graph.shapes.items() if name in produced}
    return replace(graph, layers=layers, shapes=shapes), folded


def folded_convolution(conv, bn, scale):
    """A copy of `conv` computing conv -> bn (-> scale): folded blobs, a bias, the last layer's top."""
    last = bn if scale is None else scale
    param = caffe_pb2.LayerParameter()
    param.CopyFrom(conv.param)
    param.convolution_param.bias_term = True
    del param.top[:]
    param.top.extend(last.tops)
    blobs = []
    if conv.blobs and bn.blobs and (scale is None or scale.blobs):
        bias = conv.blobs[1] if conv.spec.bias_term else np.zeros(conv.spec.num_output, np.float32)
        blobs = list(fold_batch_norm(conv.blobs[0], bias, bn, scale))
    return replace(conv, tops=list(last.tops), param=param, spec=replace(conv.spec, bias_term=True), blobs=blobs)


def device_refusal(layer, precision: LayerPrecision):
    """Why this layer cannot become a device stage (None if it can)."""
    if not runs_on_device(layer):
        return {"Eltwise": "not a sum of two blobs", "Concat": "not along the channels"}.get(layer.type, "no device kernel")
    if (layer.type not in ("Eltwise", "Concat") and len(layer.bottoms) != 1) or len(layer.tops) != 1:
        return "not a single-input layer"
    # a ReLU after an inner product runs on the device only where its rounding matters (half,
    # fixed point: the golden model stores its output in that format); in float the host does it
    # a sum of any rank runs as (N, C, rest, 1) (as_4d)
    if len(layer.in_shapes[0]) != 4 and layer.type != "Eltwise" and (layer.type != "ReLU" or precision == FLOAT):
        return "not a 4-D input"
    return None


def as_4d(shape) -> tuple:
    """An element-wise layer's blob of any rank as (N, C, rest, 1)."""
    shape = tuple(shape)
    if len(shape) == 4:
        return shape
    rest = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return (shape[0], shape[1] if len(shape) > 1 else 1, rest, 1)


def resolve_layer_precisions(graph, precision, stats: dict = None) -> dict:
    """{layer name: LayerPrecision} for every layer (host layers float).

    precision: anything cnnfpga.precision.resolve_precision takes ("float", "half", "fixed16",
    "fixed8.4", {layer: form, "*": default}, a JSON path), or its result.  stats: calibration
    statistics for fixed formats whose fractional bits are to be chosen.
    """
    if precision is None:
        precision = "float"
    if isinstance(precision, Mapping) and precision and all(isinstance(v, LayerPrecision) for v in precision.values()):
        resolved = dict(precision)
    else:
        resolved = resolve_precision(graph, precision, stats)
    return {layer.name: resolved.get(layer.name, FLOAT) for layer in graph.layers}


def can_fuse_relu(stage: Stage, relu, relu_precision: LayerPrecision) -> bool:
    """A ReLU joins the conv or sum stage before it when the stage then writes the bits the two would.

    The ReLU must keep the conv's output format (its inputs and outputs are the conv's outputs).
    The integer template (fixed-point input) applies it after converting to the output format, the
    float template before its store rounds (half) or quantises (fixed).  max(v, 0) commutes with
    any rounding that is monotonic and keeps 0, so a plain ReLU fuses in every case; a leaky one
    only where nothing rounds after it -- the float template with a float output -- since
    round(slope * v) is not slope * round(v), and the integer template has no leaky ReLU.
    """
    p = stage.precision
    if stage.kind not in ("conv", "eltwise") or stage.relu_slope is not None:
        return False
    if not relu_precision.inputs == relu_precision.outputs == p.outputs:
        return False
    if relu.spec.negative_slope == 0:
        return True
    return not isinstance(p.inputs, Fixed) and p.outputs == Float()


# ------------------------------------------------------------------------------------- placement

CUT = "@cut"    # in the key of a stream that cut_at sends through DDR


def cut_at(plan: Plan, first_stages) -> Plan:
    """`plan` with a segment starting at each device stage in `first_stages` (indices): where a
    segment streamed into such a stage, its first part now writes the stream to DDR (the key
    '<blob>@cut<index>', in the stream's format, so nothing is rounded) and the second part reads
    it back.  A reconfiguration partition or the next board of a chain starts at such a stage."""
    starts = set(first_stages)
    steps, blob_names = [], dict(plan.blob_names)
    for step in plan.steps:
        if not isinstance(step, Segment):
            steps.append(step)
            continue
        part = Segment([], step.source)
        for stage in step.stages:
            if stage.index in starts and part.stages:
                key = f"{part.stages[-1].layer.tops[0]}{CUT}{stage.index}"
                blob_names[key] = part.stages[-1].layer.tops[0]
                part.sink = key
                steps.append(part)
                part = Segment([], key)
            part.stages.append(stage)
        part.sink = step.sink
        steps.append(part)
    return replace(plan, steps=steps, blob_names=blob_names)


def reload_filters(plan: Plan, index: int, passes: int) -> Plan:
    """`plan` with conv stage `index` computing its filters in `passes` passes (fpgaConvNet's weights
    reloading, for a layer whose weights do not fit on chip): the stage holds one pass's filters, a
    segment of its own reads its input from DDR once per pass, and each pass writes its share of the
    output channels (the runtime puts them in place).  A stage already in passes gets the new count.
    Refused (ValueError) for a stage that is not an ungrouped convolution or whose outputs `passes`
    does not divide."""
    stage = plan.stage(index)
    n, outputs, h, w = stage.out_shape
    outputs *= stage.passes
    if stage.kind != "conv" or stage.spec.group != 1 or passes < 1 or outputs % passes:
        raise ValueError(f"'{stage.name}' cannot compute its filters in {passes} passes")
    if passes == stage.passes:
        return plan
    reloading = replace(stage, out_shape=(n, outputs // passes, h, w), passes=passes)
    later = [s.index for s in plan.stages if s.index > index][:1]
    plan = cut_at(plan, [index, *later])
    steps = [replace(step, stages=[reloading if s is stage else s for s in step.stages])
             if isinstance(step, Segment) else step for step in plan.steps]
    return replace(plan, steps=steps)


def filter_pass(stage: Stage, number: int) -> Stage:
    """Pass `number` of a stage reloading its weights: the stage with only that pass's filters."""
    outputs = stage.out_shape[1]
    chosen = slice(number * outputs, (number + 1) * outputs)
    return replace(stage, weights=stage.weights[chosen], bias=stage.bias[chosen])


def place(graph, precision="float", stats: dict = None, host_layers: Mapping = None) -> Plan:
    """Split `graph` into device segments and host steps.

    precision: a precision setting, resolved on the folded graph (fold_batch_norms) so that the
               folded weights size the formats; or {layer name: LayerPrecision} used as given
               (resolve it on ``fold_batch_norms(graph)[0]`` for the same effect).
    stats: calibration statistics ({blob: max |x|}) for fixed formats.
    host_layers: {layer name: why} of device layers the caller keeps on the host, in float (the fast
                 variant's concats whose inputs do not fill its words).
    """
    graph, folded = fold_batch_norms(graph)
    precisions = resolve_layer_precisions(graph, precision, stats)
    host_layers = dict(host_layers or {})
    precisions.update((name, FLOAT) for name in host_layers)
    nodes, names, final = versioned_nodes(graph)
    readers = Counter(key for _, inputs, _ in nodes for key in inputs)
    graph_outputs = {final[name] for name in graph.outputs}

    steps = []
    open_segments = {}           # key a segment currently ends with -> segment
    written_by = {}              # key -> the position in steps of the step that writes it
    stages_made = 0

    def streamable(key: str) -> bool:
        """Can the next layer read `key` straight from its producer's stream?"""
        return key in open_segments and readers[key] == 1 and key not in graph_outputs

    def streamed_input(inputs: list, lp: LayerPrecision) -> int:
        """Which input of a sum or a concat streams in: one a segment ends with, in the format the layer
        takes it in, whose segment comes after every other input's writer (which must have run by
        then); of several, the latest segment.  0 when none can: the layer then starts a segment."""
        choices = []
        for k, fmt in enumerate([lp.inputs, *lp.sides]):
            others = inputs[:k] + inputs[k + 1:]
            if streamable(inputs[k]) and open_segments[inputs[k]].stages[-1].precision.outputs == fmt:
                position = written_by[inputs[k]]
                if all(written_by.get(other, -1) < position for other in others):
                    choices.append((position, k))
        return max(choices)[1] if choices else 0

    for layer, inputs, outputs in nodes:
        lp = precisions[layer.name]
        refusal = host_layers.get(layer.name) or device_refusal(layer, lp)
        if refusal is not None:
            reason = "inner product" if layer.type == "InnerProduct" else refusal
            steps.append(HostStep(layer, inputs, outputs, reason))
            written_by.update((key, len(steps) - 1) for key in outputs)
            continue
        streamed = streamed_input(inputs, lp) if len(inputs) > 1 else 0
        sides = tuple(inputs[:streamed] + inputs[streamed + 1:])
        if streamed:             # another input than the first streams: the formats follow it
            formats = [lp.inputs, *lp.sides]
            lp = replace(lp, inputs=formats[streamed], sides=tuple(formats[:streamed] + formats[streamed + 1:]))
        source, sink = inputs[streamed], outputs[0]
        # a ReLU right after a conv stage with nothing fused yet becomes part of that stage
        if layer.type == "ReLU" and streamable(source):
            last = open_segments[source].stages[-1]
            if can_fuse_relu(last, layer, precisions[layer.name]):
                last.relu_slope = float(layer.spec.negative_slope)
                last.fused.append(layer.name)
                segment = open_segments.pop(source)
                segment.sink = sink
                open_segments[sink] = segment
                written_by[sink] = written_by[source]
                continue
        stage = Stage(stages_made, STAGE_KIND[layer.type], layer, as_4d(layer.in_shapes[streamed]),
                      as_4d(layer.out_shapes[0]), lp, sides=sides, streamed=streamed)
        if stage.kind == "conv":
            stage.fused = list(folded.get(layer.name, []))
            if layer.blobs:          # a shapes-only graph plans without weights
                stage.weights = layer.blobs[0]
                stage.bias = layer.blobs[1] if layer.spec.bias_term else np.zeros(layer.spec.num_output, np.float32)
        stages_made += 1
        if streamable(source) and open_segments[source].stages[-1].precision.outputs == lp.inputs and \
                all(written_by.get(side, -1) < written_by[source] for side in sides):
            segment = open_segments.pop(source)
            segment.stages.append(stage)
            written_by[sink] = written_by[source]
        else:
            segment = Segment([stage], source)
            steps.append(segment)
            written_by[sink] = len(steps) - 1
        segment.sink = sink
        open_segments[sink] = segment
    return Plan(graph, steps, names, final, precisions)

"""Placement: which layers stream through device stages, which run on the host CPU.

A Plan is a list of steps in topological order.  A step is either a Segment -- device stages
streaming into one another through channels, a graph: it reads blobs from DDR, a stream read by
several stages forks into a channel for each (an inception or fire module's branches, a residual
block's shortcut), streams join again in a sum or a concat, and it writes back to DDR what a host
layer, another segment or the net's outputs need -- or a HostStep, one layer run on the host (inner
products through cnnfpga.host, every other unsupported layer through the numpy float reference).

Rules:
- Convolution, Pooling, LRN, ReLU, the sum of two blobs (Eltwise SUM) and Concat along the channels
  run on the device
  (``cnnfpga.layers.runs_on_device``).  BatchNorm and Scale directly after a convolution are folded
  into its weights first (``fold_batch_norms``: the plan, its precisions and the fixed-point golden
  model all see the folded graph); a ReLU that is the only reader of a convolution's or a sum's
  output is fused into that stage (applied before the write).
- A device layer joins the latest segment writing one of its inputs or reading one from DDR, where it
  reads what that segment writes in the formats it is written in and its other inputs were written
  before that segment (they are read from DDR, each through a port of its own); else it starts a
  segment.  So a
  net's device layers form one segment between host layers, as long as the formats agree.
- A sum or a concat streams one input -- the first its segment writes -- and reads the others (its
  `sides`) through ports of their own, channels or DDR.
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
    in_shape: tuple              # (N, C, H, W) of the streamed input
    out_shape: tuple
    precision: LayerPrecision
    fused: list = field(default_factory=list)   # names of layers folded/fused into this stage
    relu_slope: float = None     # a fused ReLU's negative slope (None: no ReLU)
    weights: np.ndarray = None   # conv weights after folding BatchNorm/Scale (O, C/G, KH, KW)
    bias: np.ndarray = None      # conv bias after folding (O,)
    # conv weights reloading (reload_filters): the stage computes its O filters in `passes` passes
    # of O / passes each, out_shape being one pass's; weights and bias stay all O filters'
    passes: int = 1
    # the versioned keys of the layer's bottoms in its order, and of what the stage writes (a fused
    # ReLU's top); a sum or a concat streams its input `streamed` (precision's `inputs` is its format,
    # `sides` the others' in order) and reads the others through ports of their own
    inputs: tuple = ()
    output: str = None
    streamed: int = 0
    # per input: read from DDR (True) or streamed from the stage of its segment writing it (Segment.wire)
    from_ddr: tuple = ()

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def spec(self):
        return self.layer.spec

    @property
    def source(self) -> str:
        """The key of the streamed input."""
        return self.inputs[self.streamed]

    @property
    def sides(self) -> tuple:
        """The keys of the other inputs of a sum or a concat, in the layer's order."""
        return tuple(key for k, key in enumerate(self.inputs) if k != self.streamed)

    @property
    def sides_from_ddr(self) -> tuple:
        """Per side: read from DDR (True) or streamed from a stage of the segment."""
        return tuple(ddr for k, ddr in enumerate(self.from_ddr) if k != self.streamed)

    @property
    def side_shapes(self) -> list:
        """The (N, C, H, W) of each other input, as `sides` lists them."""
        return [as_4d(shape) for k, shape in enumerate(self.layer.in_shapes) if k != self.streamed]


@dataclass
class Segment:
    """Device stages streaming into one another, a graph in topological order: a stage reads each input
    from the stage of the segment writing it (a channel; a stream read by several stages forks into a
    channel each), or from DDR where none does; `sinks` are the keys written to DDR (read by a host
    layer or another segment, or outputs of the net)."""
    stages: list
    sinks: list = field(default_factory=list)
    cut: bool = False            # starts in the middle of another segment's streams (cut_at)

    def producer(self, key: str):
        """The stage of this segment writing `key` (None: it comes from DDR)."""
        return next((stage for stage in self.stages if stage.output == key), None)

    @property
    def sources(self) -> list:
        """The keys the segment reads from DDR, each once, in the order first read."""
        keys = [key for stage in self.stages for key, ddr in zip(stage.inputs, stage.from_ddr) if ddr]
        return list(dict.fromkeys(keys))

    def edges(self) -> list:
        """(producer, consumer, input position) of every channel of the segment, in stage order."""
        return [(self.producer(key), stage, k) for stage in self.stages
                for k, (key, ddr) in enumerate(zip(stage.inputs, stage.from_ddr)) if not ddr]

    def readers(self, stage) -> list:
        """(consumer, input position) of every channel `stage` writes."""
        return [(consumer, k) for producer, consumer, k in self.edges() if producer is stage]

    def sink_stages(self) -> list:
        return [self.producer(key) for key in self.sinks]

    def wired(self) -> "Segment":
        """The segment with every stage's `from_ddr` saying which inputs no stage of it writes (stages
        whose wiring changes are copies: plans share stages)."""
        written = {stage.output for stage in self.stages}
        stages = []
        for stage in self.stages:
            from_ddr = tuple(key not in written for key in stage.inputs)
            stages.append(stage if from_ddr == stage.from_ddr else replace(stage, from_ddr=from_ddr))
        return replace(self, stages=stages)


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
        """The Caffe blobs the segments write to DDR, where no later in-place host layer rewrites them."""
        return [self.blob_names[key] for s in self.segments for key in s.sinks
                if self.final_keys[self.blob_names[key]] == key]

    def host_fed_segments(self) -> list:
        """Segments reading a blob a host layer wrote.  The host's float layers (an inner product's BLAS)
        sum in another order than the golden model, so such a segment may see a value on the other
        side of a rounding step: its outputs can differ from the golden model's by one step."""
        host_outputs = {key for step in self.steps if isinstance(step, HostStep) for key in step.outputs}
        return [s for s in self.segments if host_outputs & set(s.sources)]

    def describe(self, parallelism=None) -> str:
        """A table: each layer, where it runs, its precision, its output shape; with
        ``parallelism(stage) -> str`` (a design's) also how wide each stage is."""
        rows = [("layer", "type", "runs on", "precision", "parallel", "output")]
        for step in self.steps:
            if isinstance(step, HostStep):
                shape = step.layer.out_shapes[0] if step.layer.out_shapes else ()
                rows.append((step.layer.name, step.layer.type, f"host ({step.reason})", "float", "-", str(list(shape))))
                continue
            for stage in step.stages:
                where = ["from DDR" if ddr else "streamed" for ddr in stage.from_ddr]
                streams = ", ".join([where[stage.streamed]] + [f"+ {self.blob_names[key]} {where[k]}"
                                                               for k, key in enumerate(stage.inputs) if k != stage.streamed])
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

def cut_at(plan: Plan, first_stages) -> Plan:
    """`plan` with a segment starting at each device stage in `first_stages` (indices): every stream
    from a stage before such a start to one after it is written to DDR by the first part (in the
    stream's format, so nothing is rounded) and read back by the later part.  A reconfiguration
    partition or the next board of a chain starts at such a stage; the later parts are marked `cut`
    (they start in the middle of the streams of the segment they were part of)."""
    starts = set(first_stages)
    steps = []
    for step in plan.steps:
        if not isinstance(step, Segment) or not starts & {stage.index for stage in step.stages[1:]}:
            steps.append(step)
            continue
        parts = [[]]
        for stage in step.stages:
            if stage.index in starts and parts[-1]:
                parts.append([])
            parts[-1].append(stage)
        part_of = {stage.output: n for n, part in enumerate(parts) for stage in part}
        crossing = {key for n, part in enumerate(parts) for stage in part for key in stage.inputs
                    if part_of.get(key, n) < n}
        for n, part in enumerate(parts):
            sinks = [stage.output for stage in part if stage.output in step.sinks or stage.output in crossing]
            steps.append(Segment(part, sinks, cut=step.cut or n > 0).wired())
    return replace(plan, steps=steps)


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
    order = [s.index for s in plan.stages]
    plan = cut_at(plan, order[order.index(index):order.index(index) + 2])
    steps = [replace(step, stages=[replace(s, out_shape=(n, outputs // passes, h, w), passes=passes)
                                   if s.index == index else s for s in step.stages])
             if isinstance(step, Segment) else step for step in plan.steps]
    return replace(plan, steps=steps)


def filter_pass(stage: Stage, number: int) -> Stage:
    """Pass `number` of a stage reloading its weights: the stage with only that pass's filters."""
    outputs = stage.out_shape[1]
    chosen = slice(number * outputs, (number + 1) * outputs)
    return replace(stage, weights=stage.weights[chosen], bias=stage.bias[chosen])


def place(graph, precision="float", stats: dict = None, host_layers: Mapping = None, keep=()) -> Plan:
    """Split `graph` into device segments and host steps.

    precision: a precision setting, resolved on the folded graph (fold_batch_norms) so that the
               folded weights size the formats; or {layer name: LayerPrecision} used as given
               (resolve it on ``fold_batch_norms(graph)[0]`` for the same effect).
    stats: calibration statistics ({blob: max |x|}) for fixed formats.
    host_layers: {layer name: why} of device layers the caller keeps on the host, in float (the fast
                 variant's concats whose inputs do not fill its words).
    keep: names of blobs the segments write to DDR (their last versions) even where they stream only
          between stages of one segment -- to read them back (DeviceNet's keep=).
    """
    graph, folded = fold_batch_norms(graph)
    unknown = [name for name in keep if name not in graph.shapes]
    if unknown:
        raise ValueError(f"{graph.path}: keep= names '{unknown[0]}', which is not a blob of the net "
                         f"(of the device's graph, BatchNorm and Scale folded into convolutions)")
    precisions = resolve_layer_precisions(graph, precision, stats)
    host_layers = dict(host_layers or {})
    precisions.update((name, FLOAT) for name in host_layers)
    nodes, names, final = versioned_nodes(graph)
    readers = Counter(key for _, inputs, _ in nodes for key in inputs)
    graph_outputs = {final[name] for name in graph.outputs}

    steps = []
    producer = {}                # key -> the device stage writing it
    segment_of = {}              # key -> the segment of that stage
    ddr_readers = {}             # key -> the segments reading it from DDR
    written_by = {}              # key -> the position in steps of the step that writes it
    stages_made = 0

    def joinable(inputs: list, formats: list):
        """The segment a device layer joins: the latest of those writing its inputs or reading them from
        DDR, where it reads every input that segment writes in the format it is written in (a channel
        carries one format) and every other input was written before that segment runs (it is in DDR
        by then); None: none can."""
        writers = [segment_of[key] for key in inputs if key in segment_of]
        writers += [segment for key in inputs for segment in ddr_readers.get(key, ())]
        if not writers:
            return None
        segment = max(writers, key=lambda s: written_by[s.stages[0].output])
        for key, fmt in zip(inputs, formats):
            if segment_of.get(key) is segment:
                if producer[key].precision.outputs != fmt:
                    return None
            elif written_by.get(key, -1) >= written_by[segment.stages[0].output]:
                return None
        return segment

    for layer, inputs, outputs in nodes:
        lp = precisions[layer.name]
        refusal = host_layers.get(layer.name) or device_refusal(layer, lp)
        if refusal is not None:
            reason = "inner product" if layer.type == "InnerProduct" else refusal
            steps.append(HostStep(layer, inputs, outputs, reason))
            written_by.update((key, len(steps) - 1) for key in outputs)
            continue
        sink = outputs[0]
        # a ReLU reading the only use of a conv or sum stage's output becomes part of that stage
        if layer.type == "ReLU" and inputs[0] in producer and readers[inputs[0]] == 1 and \
                inputs[0] not in graph_outputs and can_fuse_relu(producer[inputs[0]], layer, lp):
            stage = producer.pop(inputs[0])
            stage.relu_slope = float(layer.spec.negative_slope)
            stage.fused.append(layer.name)
            stage.output = sink
            producer[sink], segment_of[sink] = stage, segment_of.pop(inputs[0])
            written_by[sink] = written_by[inputs[0]]
            continue
        formats = [lp.inputs, *lp.sides]
        segment = joinable(inputs, formats)
        # the streamed input: the first one its segment writes (0 in a segment of its own: all from DDR)
        streamed = next((k for k, key in enumerate(inputs) if segment is not None and segment_of.get(key) is segment), 0)
        if streamed:             # another input than the first streams: the formats follow it
            lp = replace(lp, inputs=formats[streamed], sides=tuple(formats[:streamed] + formats[streamed + 1:]))
        stage = Stage(stages_made, STAGE_KIND[layer.type], layer, as_4d(layer.in_shapes[streamed]),
                      as_4d(layer.out_shapes[0]), lp, inputs=tuple(inputs), output=sink, streamed=streamed)
        if stage.kind == "conv":
            stage.fused = list(folded.get(layer.name, []))
            if layer.blobs:          # a shapes-only graph plans without weights
                stage.weights = layer.blobs[0]
                stage.bias = layer.blobs[1] if layer.spec.bias_term else np.zeros(layer.spec.num_output, np.float32)
        stages_made += 1
        if segment is None:
            segment = Segment([])
            steps.append(segment)
            written_by[sink] = len(steps) - 1
        else:
            written_by[sink] = written_by[segment.stages[0].output]
        segment.stages.append(stage)
        producer[sink], segment_of[sink] = stage, segment
        for key in inputs:
            if segment_of.get(key) is not segment:
                ddr_readers.setdefault(key, []).append(segment)
    # what a segment writes to DDR: what a host layer or another segment reads, and the net's outputs
    needed = set(graph_outputs) | {final[name] for name in keep}
    for step in steps:
        written = {stage.output for stage in step.stages} if isinstance(step, Segment) else set()
        needed |= set(step.inputs) if isinstance(step, HostStep) else \
            {key for stage in step.stages for key in stage.inputs if key not in written}
    steps = [replace(step, sinks=[stage.output for stage in step.stages
                                  if stage.output in needed or not readers[stage.output]]).wired()
             if isinstance(step, Segment) else step for step in steps]
    return Plan(graph, steps, names, final, precisions)

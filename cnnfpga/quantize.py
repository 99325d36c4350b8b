"""Choose per-layer fixed-point word lengths that keep top-1 accuracy within a budget of float.

    cnnfpga quantize --net cifar10_quick.prototxt --calibration calib/ --eval test/ [--max-drop 0.5]
                     [--bits-range 4..16] [--limit N] [--out precision.json] [--backend reference|opencl]
    python -m cnnfpga.quantize ...                                  (the same command)

--eval is a folder with a subfolder of images per class, each named as the net labels that class
(CIFAR-10's 'cat', LeNet's '3'; --labels FILE for a net that is not bundled) or by its class index,
or a text file of 'path label' lines (paths relative to the file). --limit N takes N of them, the
classes in turn. --calibration (image files, folders and globs, comma-separated, or a statistics JSON)
gives each activation's range, and with it the fractional bits at every word length: as many as the
largest value seen leaves room for (cnnfpga.precision.frac_bits_for).

A "layer" below is a Convolution or LRN with the ReLU and Pooling layers next to it: its bits are
those of its weights and of the activations it reads. ReLU and Pooling take the width of the layer
they feed, so that a ReLU stays fused into its convolution, or, after the last one, of the layer
before them. The search first finds the narrowest word length at which every layer together keeps
top-1 on the evaluation set at most --max-drop points below float; then, one layer after another,
the largest first (most multiply-accumulates: where narrow words save the most multipliers), it
lowers each further to the narrowest word length that stays within the budget, the layers before it
as chosen. Both steps bisect --bits-range (they assume more bits never cost accuracy), and a
candidate is dropped as soon as it has lost more images than the budget allows.

--out gets the mix as a precision JSON, {"conv1": "fixed8.0", "pool1": "fixed6.-1", ...} (word length
and fractional bits of each layer's input; layers not named stay float), which Net(precision=FILE),
`cnnfpga classify --precision FILE` and `cnnfpga design --precision FILE` take without calibration.
stdout gets a table (per layer: bits, fractional bits, share of values saturated, the accuracy its
choice cost) and the accuracy in float, at the mix, and at 16, 10 and 8 bits throughout.

Candidates run on the fixed-point golden model (bit-exact with the kernels; 4 to 11 s per candidate on
1000 CIFAR-10 images on two cores, by net and load; --limit for fewer), or with --backend opencl on
the OpenCL kernels (a program build per candidate). The evaluation images are held in memory.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
import json
import logging
import math
import os
import sys
import time

import numpy as np

from . import bundled
from .classify import calibration_input, image_input, make_transformer, preprocessing, read_labels
from .cli import finite_float, module_main, positive_int
from .errors import InputError, PrecisionError
from .fixed_reference import forward_fixed
from .graph import load_graph
from .io import list_images, load_image
from .layers import DEVICE_TYPES, runs_on_device
from .net import Net
from .placement import fold_batch_norms, versioned_nodes
from .precision import MAX_BITS, MIN_BITS, calibration_statistics, frac_bits_for, resolve_precision

log = logging.getLogger("cnnfpga")

DEFAULT_BITS = tuple(range(4, 17))
UNIFORM_BITS = (16, 10, 8)          # the widths the report compares the mix with
TUNED_TYPES = ("Convolution", "LRN")   # arithmetic whose operand width is the choice; ReLU and Pooling pass values on
CALIBRATION_BATCH = 100              # images per golden-model run while calibrating
BACKEND_NAMES = {"reference": "fixed-point golden model", "opencl": "OpenCL kernels"}


# ------------------------------------------------------------------------------------------- layers

@dataclass
class Group:
    """Device layers that share one word length: a Convolution or LRN (``name``) and the ReLU and
    Pooling layers that feed it or, at the end of the device layers, follow it."""
    name: str
    layers: list


def layer_groups(graph) -> list:
    """The groups of ``graph``'s device layers, in the net's order.

    Readers of one device-written blob (any input of a sum or a concat) must want one format
    (resolve_precision refuses otherwise), so they share a group; a ReLU, Pooling, sum or concat joins the
    layers that read it; one that feeds no Convolution or LRN joins the layer that feeds it. What
    is left (a ReLU between two inner products) stays float: it has no multiplier to narrow.
    """
    nodes, _, _ = versioned_nodes(graph)
    device = [k for k, (layer, _, _) in enumerate(nodes) if runs_on_device(layer)]
    writer = {key: k for k, (_, _, outputs) in enumerate(nodes) for key in outputs}
    readers = {}
    for k in device:
        for key in nodes[k][1]:      # every input of a sum or a concat
            readers.setdefault(key, []).append(k)
    parent = {k: k for k in device}

    def root(k):
        while parent[k] != k:
            k = parent[k]
        return k

    def join(a, b):
        parent[max(root(a), root(b))] = min(root(a), root(b))

    for key, ks in readers.items():
        if key in writer and writer[key] in parent:
            for other in ks[1:]:
                join(ks[0], other)
            if nodes[writer[key]][0].type not in TUNED_TYPES:
                join(writer[key], ks[0])
    for k in device:     # in order, so that a producer's group is settled before its followers join it
        members = [m for m in device if root(m) == root(k)]
        source = writer.get(nodes[members[0]][1][0])
        if not any(nodes[m][0].type in TUNED_TYPES for m in members) and source in parent:
            join(source, k)
    groups = {}
    for k in device:
        groups.setdefault(root(k), []).append(k)
    return [Group(next(nodes[m][0].name for m in ks if nodes[m][0].type in TUNED_TYPES),
                  [nodes[m][0].name for m in ks])
            for ks in groups.values() if any(nodes[m][0].type in TUNED_TYPES for m in ks)]


def tuned_groups(graph) -> list:
    """``layer_groups`` of the graph the device runs (BatchNorm folded); refused when there are none."""
    groups = layer_groups(fold_batch_norms(graph)[0])
    if not groups:
        raise PrecisionError(f"{graph.path}: no Convolution or LRN layer, so nothing here runs in fixed point "
                             f"(the device layers: {', '.join(DEVICE_TYPES)}); there is nothing to quantise")
    return groups


def precision_mapping(graph, groups: list, bits: dict, stats: dict) -> dict:
    """{layer: "fixedN.F"} for every grouped layer: its group's word length, F from the range of the
    blob the layer reads (written out, so that the file needs no calibration to be used)."""
    mapping = {}
    for group in groups:
        for name in group.layers:
            blob = graph.layer(name).bottoms[0]
            if blob not in stats:
                raise PrecisionError(f"{graph.path}: the calibration statistics have no range for blob '{blob}' "
                                     f"(read by {name})")
            mapping[name] = f"fixed{bits[group.name]}.{frac_bits_for(stats[blob], bits[group.name])}"
    return mapping


# --------------------------------------------------------------------------------------- evaluation

@dataclass
class Evaluation:
    """Top-1 of one precision on the evaluation set, or on its first ``images`` when it was dropped
    early (``complete`` False: it had already lost more images than the budget allows)."""
    correct: int
    images: int
    complete: bool
    saturation: dict = field(default_factory=dict)   # layer -> values saturated
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct / self.images


def golden_runner(graph):
    """run(mapping, images) -> (scores, saturation) on the fixed-point golden model."""
    name, output = next(iter(graph.inputs)), graph.outputs[-1]
    shaped = {}

    def run(mapping: dict, images: np.ndarray):
        if len(images) not in shaped:
            shaped[len(images)] = graph.reshape({name: images.shape})
        batch_graph = shaped[len(images)]
        result = forward_fixed(batch_graph, {name: images}, resolve_precision(batch_graph, mapping))
        return result.blobs[output], result.saturation

    return run


def device_runner(net_file: str, weights, device=None):
    """run(mapping, images) -> (scores, saturation) on the OpenCL kernels: one Net per mapping, kept
    while the next calls ask for the same one."""
    built = {}

    def run(mapping: dict, images: np.ndarray):
        key = json.dumps(mapping, sort_keys=True)
        if key not in built:
            built.clear()
            options = {"device": device} if device is not None else {}
            built[key] = Net(net_file, weights, backend="opencl", precision=mapping, **options)
        net = built[key]
        name = net.inputs[0]
        net.blobs[name].reshape(*images.shape)
        net.reshape()
        before = net.executor.saturation()
        scores = net.forward(**{name: images})[net.outputs[-1]]
        after = net.executor.saturation()
        return scores, {layer: after[layer] - before[layer] for layer in after}

    return run


@dataclass
class Evaluator:
    """Evaluations of precision mappings on one labelled set, each mapping run once."""
    run: object                  # run(mapping, images) -> (scores, saturation)
    images: np.ndarray
    labels: np.ndarray
    batch: int
    done: dict = field(default_factory=dict)    # mapping as JSON -> Evaluation
    runs: int = 0                # candidates run (float and the uniform widths included)

    def evaluate(self, mapping: dict, needed: int = 0) -> Evaluation:
        """Run ``mapping``; stop once fewer than ``needed`` images can still come out right."""
        key = json.dumps(mapping, sort_keys=True)
        known = self.done.get(key)
        if known is not None and (known.complete or known.correct + len(self.labels) - known.images < needed):
            return known
        self.runs += 1
        start = time.perf_counter()
        correct, seen, saturation = 0, 0, {}
        for begin in range(0, len(self.images), self.batch):
            scores, saturated = self.run(mapping, self.images[begin:begin + self.batch])
            chunk = self.labels[begin:begin + self.batch]
            correct += int(np.sum(scores.reshape(len(chunk), -1).argmax(axis=1) == chunk))
            seen += len(chunk)
            for layer, count in saturated.items():
                saturation[layer] = saturation.get(layer, 0) + count
            if correct + len(self.labels) - seen < needed:
                break
        evaluation = Evaluation(correct, seen, seen == len(self.labels), saturation, time.perf_counter() - start)
        self.done[key] = evaluation
        return evaluation


# ------------------------------------------------------------------------------------------- search

@dataclass
class LayerChoice:
    """One device layer of the mix, a row of the table."""
    layer: str
    type: str
    group: str
    bits: int
    frac_bits: int | None        # of the activations it reads
    weight_frac_bits: int | None
    saturated: float | None      # share of the values it writes that saturated, on the evaluation set
    effect: float | None         # accuracy points its group's lowering changed (on the group's row only)


@dataclass
class Quantization:
    """What ``quantize_net`` found."""
    net: str
    images: int
    max_drop: float
    bits: list                   # the candidate word lengths
    float_accuracy: float
    accuracy: float              # at the mix
    uniform: dict                # word length -> accuracy with every layer at it
    precision: dict              # the mix: {layer: "fixedN.F"}, what --out writes
    start: int                   # the narrowest word length within budget in every layer, where the search began
    start_accuracy: float        # top-1 with every layer at ``start``
    layers: list                 # LayerChoice per device layer
    candidates: int              # precisions evaluated, float and the uniform widths included
    seconds_per_candidate: float  # one full pass over the evaluation set
    backend: str = "reference"

    def save(self, path) -> None:
        """Write the mix as a precision JSON (Net(precision=path), --precision path)."""
        try:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(self.precision, indent=1) + "\n")
        except OSError as error:
            raise InputError(f"{path}: cannot write the precision file: {error.strerror or error}") from None

    def table(self) -> str:
        rows = [("layer", "type", "bits", "frac bits", "weight frac", "saturated", "accuracy effect")]
        for choice in self.layers:
            effect = (f"with {choice.group}" if choice.effect is None and choice.group
                      else "-" if choice.effect is None else f"{choice.effect:+.2f} points")
            rows.append((choice.layer, choice.type, str(choice.bits) if choice.bits else "float",
                         "-" if choice.frac_bits is None else str(choice.frac_bits),
                         "-" if choice.weight_frac_bits is None else str(choice.weight_frac_bits),
                         "-" if choice.saturated is None else f"{100 * choice.saturated:.3f}%", effect))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * width for width in widths))
        uniform = ", ".join(f"{bits} bits {accuracy:.2f}%" for bits, accuracy in self.uniform.items())
        lines += ["",
                  f"top-1 on {self.images} images ({BACKEND_NAMES[self.backend]}): float {self.float_accuracy:.2f}%, "
                  f"mix {self.accuracy:.2f}% ({self.accuracy - self.float_accuracy:+.2f} points; budget "
                  f"-{self.max_drop:g})" + (f"; every layer at {uniform}" if uniform else ""),
                  f"the search began with every layer at {self.start} bits ({self.start_accuracy:.2f}%), the "
                  f"narrowest within budget; the accuracy effects add up to the change from there",
                  f"{self.candidates} precisions evaluated, {self.seconds_per_candidate:.1f} s for one on all "
                  f"{self.images} images"]
        return "\n".join(lines)


def check_widths(bits) -> list:
    """Candidate word lengths, sorted, each in MIN_BITS..MAX_BITS."""
    widths = sorted(set(int(b) for b in bits if int(b) == b))
    if not widths or len(widths) != len(set(bits)) or not all(MIN_BITS <= b <= MAX_BITS for b in widths):
        raise InputError(f"word lengths must be whole numbers in {MIN_BITS}..{MAX_BITS}, got {list(bits)}")
    return widths


def check_set(graph, images: np.ndarray, labels: np.ndarray) -> tuple:
    """(images float32, labels int64), refused unless they fit the net's input and its classes."""
    name, shape = next(iter(graph.inputs.items()))
    images = np.asarray(images, dtype=np.float32)
    labels = np.asarray(labels).reshape(-1)
    if images.ndim != len(shape) or tuple(images.shape[1:]) != tuple(shape[1:]) or not len(images):
        raise InputError(f"{graph.path}: evaluation images have shape {list(images.shape)}; the net's input "
                         f"'{name}' wants N x {' x '.join(str(d) for d in shape[1:])}, N >= 1")
    classes = int(np.prod(graph.shapes[graph.outputs[-1]][1:]))
    if len(labels) != len(images) or labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= classes:
        raise InputError(f"{graph.path}: need one class index in 0..{classes - 1} per evaluation image "
                         f"({len(images)} images, {len(labels)} labels)")
    return images, labels.astype(np.int64)


def calibration_batches(graph, calibration):
    """An image array as batches of CALIBRATION_BATCH for the net's input (the golden model holds a
    batch's im2col in memory); anything else calibration_statistics takes as it is."""
    if isinstance(calibration, np.ndarray):
        if not len(calibration):
            raise InputError("no calibration images")
        name = next(iter(graph.inputs))
        return [{name: calibration[i:i + CALIBRATION_BATCH]} for i in range(0, len(calibration), CALIBRATION_BATCH)]
    return calibration


def quantize_net(net_file, weights, calibration, eval_images, eval_labels, max_drop: float = 0.5,
                 bits=DEFAULT_BITS, backend: str = "reference", device=None, batch: int = 100,
                 uniform=UNIFORM_BITS) -> Quantization:
    """The narrowest per-layer fixed-point mix within ``max_drop`` top-1 points of float.

    net_file, weights: a prototxt (or a bundled net's name) and its caffemodel.
    calibration: preprocessed images (N, C, H, W) for the net's input, or what
                 cnnfpga.precision.calibration_statistics takes (a statistics mapping or JSON file).
    eval_images, eval_labels: preprocessed images (N, C, H, W) and their class indices.
    bits: candidate word lengths; uniform: widths to report the accuracy of every layer at.
    backend: "reference" (the fixed-point golden model) or "opencl" (the kernels, on ``device``).
    """
    if not (math.isfinite(max_drop) and max_drop >= 0):
        raise InputError(f"the accuracy budget must be a number of points >= 0, got {max_drop}")
    widths = check_widths(bits)
    net_path = bundled.resolve(net_file)
    graph = fold_batch_norms(load_graph(net_path, bundled.resolve(weights) if weights else None))[0]
    if len(graph.inputs) != 1:
        raise InputError(f"{net_path}: quantize feeds one input; this net has {', '.join(graph.inputs)}")
    images, labels = check_set(graph, eval_images, eval_labels)
    groups = tuned_groups(graph)
    stats = calibration_statistics(graph, calibration_batches(graph, calibration))
    if backend not in BACKEND_NAMES:
        raise InputError(f"unknown backend {backend!r}; choose {' or '.join(BACKEND_NAMES)}")
    runner = (device_runner(net_path, bundled.resolve(weights) if weights else None, device) if backend == "opencl"
              else golden_runner(graph))
    evaluator = Evaluator(runner, images, labels, batch)
    float_run = evaluator.evaluate({})
    log.info("float: %.2f%% top-1 on %d images (%.1f s)", float_run.accuracy, len(labels), float_run.seconds)
    largest_first = sorted(groups, key=lambda group: -sum(graph.layer(name).macs for name in group.layers))
    search = Search(evaluator, lambda chosen: precision_mapping(graph, groups, chosen, stats), largest_first,
                    widths, math.ceil(float_run.correct - max_drop * len(labels) / 100 - 1e-9))
    widest = search.evaluate(search.every(widths[-1]))
    log.info("every layer at %d bits: %.2f%% (%.1f s for one precision on all images)", widths[-1],
             widest.accuracy, widest.seconds)
    if widest.correct < search.needed:
        raise PrecisionError(f"at {widths[-1]} bits in every layer top-1 is {widest.accuracy:.2f}%, more than "
                             f"{max_drop:g} points below float ({float_run.accuracy:.2f}%); allow wider words "
                             f"(--bits-range) or a larger budget (--max-drop)")
    chosen, start, effects = search.run()
    mix = search.mapping(chosen)
    found, from_start = evaluator.evaluate(mix), search.evaluate(search.every(start))
    uniform_accuracy = {b: search.evaluate(search.every(b)).accuracy for b in uniform}
    full_runs = [e.seconds for e in evaluator.done.values() if e.complete and e is not float_run]
    return Quantization(os.path.basename(net_path), len(labels), max_drop, widths, float_run.accuracy,
                        found.accuracy, uniform_accuracy, mix, start, from_start.accuracy,
                        layer_choices(graph, groups, chosen, mix, found, effects, len(labels)), evaluator.runs,
                        sum(full_runs) / len(full_runs), backend)


@dataclass
class Search:
    """The greedy search; a candidate is {group name: word length}."""
    evaluator: Evaluator
    mapping: object              # candidate -> precision mapping
    groups: list                 # in the order they are lowered
    widths: list                 # candidate word lengths, ascending
    needed: int                  # images a candidate must get right

    def evaluate(self, chosen: dict) -> Evaluation:
        return self.evaluator.evaluate(self.mapping(chosen))

    def every(self, bits: int) -> dict:
        return {group.name: bits for group in self.groups}

    def passes(self, chosen: dict, what: str) -> bool:
        result = self.evaluator.evaluate(self.mapping(chosen), self.needed)
        kept = result.complete and result.correct >= self.needed
        log.info("candidate %d: %s: %s", self.evaluator.runs, what, f"{result.accuracy:.2f}%, kept" if kept else
                 f"dropped after {result.images} images ({result.images - result.correct} wrong)")
        return kept

    def run(self) -> tuple:
        """(chosen, start, {group: accuracy points its lowering changed}); the widest width must pass.

        It starts from the narrowest width within budget in every layer, so that no layer of the mix
        is wider than that, then lowers one group at a time, the others as chosen so far."""
        start = self.narrowest(self.widths[-1], self.every, "every layer")
        chosen, effects = self.every(start), {}
        for group in self.groups:
            before = self.evaluate(chosen)
            chosen[group.name] = self.narrowest(start, lambda bits: dict(chosen, **{group.name: bits}), group.name)
            effects[group.name] = self.evaluate(chosen).accuracy - before.accuracy
        return chosen, start, effects

    def narrowest(self, high: int, candidate, what: str) -> int:
        """The narrowest width up to ``high`` whose ``candidate(width)`` passes, by bisection:
        ``high`` is known to pass, and a width that fails is taken to mean that every narrower one fails."""
        low, top = 0, self.widths.index(high)
        while low < top:
            middle = (low + top) // 2
            if self.passes(candidate(self.widths[middle]), f"{what} at {self.widths[middle]} bits"):
                top = middle
            else:
                low = middle + 1
        return self.widths[top]


def layer_choices(graph, groups: list, chosen: dict, mix: dict, run: Evaluation, effects: dict,
                  images: int) -> list:
    """A LayerChoice per device layer, in the net's order."""
    formats = resolve_precision(graph, mix)
    group_of = {name: group.name for group in groups for name in group.layers}
    rows = []
    for layer in graph.layers:
        if not runs_on_device(layer):
            continue
        group = group_of.get(layer.name)
        if group is None:
            rows.append(LayerChoice(layer.name, layer.type, "", 0, None, None, None, None))
            continue
        lp = formats[layer.name]
        written = images * int(np.prod(layer.out_shapes[0][1:]))
        saturated = run.saturation.get(layer.name)
        rows.append(LayerChoice(layer.name, layer.type, group, chosen[group], lp.inputs.frac_bits,
                                lp.weights.frac_bits if layer.type == "Convolution" else None,
                                None if saturated is None else saturated / written,
                                effects[group] if layer.name == group else None))
    return rows


# -------------------------------------------------------------------------------------- the command

def bits_range(text: str) -> list:
    """An argparse type: "4..16", "8,10,12,16" or a mix ("4..8,16") -> sorted word lengths."""
    widths = set()
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("..")
            widths.update(range(int(low), int(high or low) + 1))
    except ValueError:
        widths = set()
    if not widths or not all(MIN_BITS <= b <= MAX_BITS for b in widths):
        raise argparse.ArgumentTypeError(f"expected word lengths in {MIN_BITS}..{MAX_BITS} like 4..16 or "
                                         f"8,10,12,16, got {text!r}")
    return sorted(widths)


def budget(text: str) -> float:
    """An argparse type: accuracy points >= 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected accuracy points >= 0, got {text}")
    return value


def add_arguments(parser):
    parser.add_argument("--net", required=True, help="prototxt path, or a bundled net's name (e.g. lenet.prototxt)")
    parser.add_argument("--weights", help="caffemodel (default: the bundled weights of a bundled net, else fillers)")
    parser.add_argument("--calibration", required=True, metavar="IMAGES",
                        help="images (files, folders, globs; comma-separated) or a statistics JSON file that set "
                             "each activation's range")
    parser.add_argument("--eval", required=True, dest="eval_set", metavar="FOLDER|LIST",
                        help="a folder with a subfolder of images per class, or a file of 'path label' lines")
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help="evaluate on at most this many images, the classes in turn")
    parser.add_argument("--max-drop", type=budget, default=0.5,
                        help="top-1 points the mix may lose against float (default 0.5)")
    parser.add_argument("--bits-range", type=bits_range, default=list(DEFAULT_BITS), metavar="BITS",
                        help="candidate word lengths, e.g. 4..16 (default) or 8,10,12,16")
    parser.add_argument("--out", default="precision.json", help="the precision JSON to write (default precision.json)")
    parser.add_argument("--backend", default="reference", choices=["reference", "opencl"],
                        help="reference: the fixed-point golden model (default); opencl: the OpenCL kernels")
    parser.add_argument("--device", help="OpenCL platform/device name or P:D index (--backend opencl)")
    parser.add_argument("--batch", type=positive_int, default=100, help="images per forward pass (default 100)")
    parser.add_argument("--labels", help="text file, one class name per line (the net's own for a bundled net)")
    parser.add_argument("--mean", help="mean: a .binaryproto/.npy file or comma-separated per-channel values")
    parser.add_argument("--channel-order", type=str.upper, choices=["RGB", "BGR"], help="channel order the net expects")
    parser.add_argument("--raw-scale", type=finite_float, help="multiply [0,1] pixels by this (255 for Caffe nets)")
    parser.add_argument("--input-scale", type=finite_float, help="multiply after mean subtraction")


def class_index(name: str, class_names, classes: int, where: str) -> int:
    """A class folder's or list line's label -> class index: a name of the net's labels, or an index."""
    if class_names and name in class_names:
        return class_names.index(name)
    if name.isdigit() and int(name) < classes:
        return int(name)
    known = f"{', '.join(class_names[:12])}{', ...' if len(class_names) > 12 else ''} or " if class_names else ""
    raise InputError(f"{where}: '{name}' names no class of the net (classes: {known}0..{classes - 1})")


def class_folders(folder: str, class_names, classes: int) -> tuple:
    """(paths, labels) from a folder with a subfolder of images per class."""
    subfolders = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))
    if not subfolders:
        raise InputError(f"--eval {folder}: no class subfolders (one folder of images per class, named as the net "
                         f"labels its classes or by class index)")
    paths, labels = [], []
    for name in subfolders:
        index = class_index(name, class_names, classes, f"--eval {os.path.join(folder, name)}")
        found, _ = list_images([os.path.join(folder, name)])
        paths += found
        labels += [index] * len(found)
    return paths, labels


def list_file(path: str, class_names, classes: int) -> tuple:
    """(paths, labels) from a file of 'image-path label' lines; paths are relative to the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except UnicodeDecodeError:
        raise InputError(f"--eval {path}: not a text file of 'path label' lines") from None
    except OSError as error:
        raise InputError(f"--eval {path}: cannot read it: {error.strerror or error}") from None
    paths, labels = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise InputError(f"{path}:{number}: expected 'image-path label', got {line.strip()!r}")
        paths.append(os.path.join(os.path.dirname(path), parts[0]))
        labels.append(class_index(parts[1], class_names, classes, f"{path}:{number}"))
    return paths, labels


def evaluation_files(spec: str, class_names, classes: int, limit) -> tuple:
    """(paths, labels) of the evaluation set, the classes in turn (so that --limit keeps them all)."""
    if os.path.isdir(spec):
        paths, labels = class_folders(spec, class_names, classes)
    elif os.path.isfile(spec):
        paths, labels = list_file(spec, class_names, classes)
    else:
        raise InputError(f"--eval {spec}: no such folder or list file")
    if not paths:
        raise InputError(f"--eval {spec}: no images")
    labels = np.array(labels, dtype=np.int64)
    turn = np.zeros(len(labels), dtype=np.int64)      # each image's place within its class
    for index in np.unique(labels):
        turn[labels == index] = np.arange(np.count_nonzero(labels == index))
    order = np.lexsort((labels, turn))[:limit]
    return [paths[i] for i in order], labels[order]


def check_out(path: str) -> None:
    """Refuse an --out that cannot be written before the search, not after it."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(folder):
        raise InputError(f"--out {path}: " + ("a folder; name a file" if os.path.isdir(path)
                                              else f"no folder {folder} to write it in"))


def run(args) -> int:
    check_out(args.out)
    if args.device is not None and args.backend != "opencl":
        raise InputError("--device chooses the OpenCL device of --backend opencl")
    net_path = bundled.resolve(args.net)
    info = bundled.net_info(net_path)
    weights = args.weights or bundled.bundled_weights(net_path)
    net = Net(net_path, weights)
    name, channels = image_input(net)
    tuned_groups(net.graph)
    prep = preprocessing(args, info, os.path.basename(net_path))
    log.info("%s", prep.describe(channels))
    transformer = make_transformer(net, prep)
    classes = int(np.prod(net.blobs[net.outputs[-1]].data.shape[1:]))
    paths, labels = evaluation_files(args.eval_set, read_labels(args.labels, info), classes, args.limit)
    log.info("reading %d evaluation image(s) ...", len(paths))
    images = np.stack([transformer.preprocess(name, load_image(path, color=channels == 3)) for path in paths])
    calibration = calibration_input(args.calibration, net, transformer)
    result = quantize_net(net_path, weights, calibration, images, labels, args.max_drop, args.bits_range,
                          args.backend, args.device, args.batch)
    result.save(args.out)
    print(result.table())
    print(f"wrote {args.out}")
    return 0


def main(argv=None) -> int:
    return module_main(sys.modules[__name__], "python -m cnnfpga.quantize", argv)


if __name__ == "__main__":
    sys.exit(main())

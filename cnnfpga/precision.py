"""Number formats of the device layers: float32, half (fp16 storage) and two's-complement fixed point.

The arithmetic here is the contract with the OpenCL kernels, which must reproduce it bit for bit.
Everything is integer arithmetic with round-half-up and saturation, written so that an FPGA and
OpenCL C 1.2 (``long`` = int64, arithmetic ``>>`` on signed values) compute the same bits.

Formats
    Float()               float32 everywhere.
    Half()                values are rounded to fp16 (round to nearest even, what ``vstore_half``
                          does by default) whenever they are stored between stages; arithmetic is float32.
    Fixed(b, f)           a b-bit two's-complement integer q standing for q * 2^-f;
                          q in [-(2^(b-1)), 2^(b-1) - 1].  2 <= b <= 32, -b <= f <= 2b.
                          f may exceed b (tiny weights: 0.003 needs f ~ 15 in 8 bits) and may be
                          negative (a step coarser than 1); wider ranges are refused as typos
                          (they also push the rescaling shifts toward 64 bits).
    FixedAuto(b)          a b-bit fixed format whose fractional bits are still to be chosen
                          (from the weights or from calibration statistics); see ``resolve_precision``.

Per layer (``LayerPrecision``): the format of the weights, of the input activations (what arrives
on the channel) and of the output activations (what the layer writes to its output channel).  The
producer converts: layer i writes its output already in the input format of the layer that reads it,
so for a chain ``outputs[i] == inputs[i+1]`` always.
"""
from __future__ import annotations

import json
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Union

import numpy as np

from cnnfpga.errors import PrecisionError, refuse_special_file
from cnnfpga.layers import runs_on_device

MIN_BITS, MAX_BITS = 2, 32


@dataclass(frozen=True)
class Float:
    """float32 storage and arithmetic."""

    def __str__(self) -> str:
        return "float"


@dataclass(frozen=True)
class Half:
    """fp16 storage (round to nearest even), float32 arithmetic."""

    def __str__(self) -> str:
        return "half"


def _check_int(value, what: str) -> int:
    # bool is an int subclass but "Fixed(True, 3)" is certainly a mistake
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise PrecisionError(f"{what} must be an integer, got {value!r}")
    return int(value)


def _check_total_bits(total_bits) -> int:
    b = _check_int(total_bits, "total_bits")
    if not MIN_BITS <= b <= MAX_BITS:
        raise PrecisionError(f"total_bits must be in [{MIN_BITS}, {MAX_BITS}], got {b}")
    return b


@dataclass(frozen=True)
class Fixed:
    """Two's complement: integer q in [-(2^(b-1)), 2^(b-1)-1] stands for q * 2^-frac_bits."""
    total_bits: int
    frac_bits: int

    def __post_init__(self):
        b = _check_total_bits(self.total_bits)
        f = _check_int(self.frac_bits, "frac_bits")
        if not -b <= f <= 2 * b:
            raise PrecisionError(f"frac_bits of a {b}-bit fixed format must be in [{-b}, {2 * b}], got {f}")
        object.__setattr__(self, "total_bits", b)
        object.__setattr__(self, "frac_bits", f)

    @property
    def qmin(self) -> int:
        return -(1 << (self.total_bits - 1))

    @property
    def qmax(self) -> int:
        return (1 << (self.total_bits - 1)) - 1

    @property
    def step(self) -> float:
        return 2.0 ** -self.frac_bits

    def __str__(self) -> str:
        return f"fixed{self.total_bits}.{self.frac_bits}"


@dataclass(frozen=True)
class FixedAuto:
    """A fixed format of ``total_bits`` bits whose fractional bits are chosen later."""
    total_bits: int

    def __post_init__(self):
        object.__setattr__(self, "total_bits", _check_total_bits(self.total_bits))

    def __str__(self) -> str:
        return f"fixed{self.total_bits}"


Format = Union[Float, Half, Fixed]


@dataclass(frozen=True)
class LayerPrecision:
    """Formats of one device layer: its weights, its input activations, its output activations, and
    for a layer of several inputs (a sum, a concatenation) the others' formats in order (`sides`:
    each blob has a range of its own)."""
    weights: Format
    inputs: Format
    outputs: Format
    sides: tuple = ()

    def __str__(self) -> str:
        sides = f", other inputs {', '.join(map(str, self.sides))}" if self.sides else ""
        return f"weights {self.weights}, inputs {self.inputs}{sides}, outputs {self.outputs}"


@dataclass(frozen=True)
class LayerSetting:
    """What the user asked for one layer, before calibration: Float(), Half(), Fixed or FixedAuto.

    An explicit ``fixedN.F`` sets the activations; the weights always get N bits with fractional
    bits chosen from the weight blob (they are known in advance, so there is nothing to tune by hand).
    """
    weights: Union[Float, Half, FixedAuto]
    activations: Union[Float, Half, Fixed, FixedAuto]


def storage_bits(fmt) -> int:
    """Bits a value of ``fmt`` takes in memory and on a stream: float 32, half 16, a fixed format the
    narrowest of 8, 16 or 32 bits that holds it (OpenCL's char, short, int)."""
    if isinstance(fmt, Fixed):
        return 8 if fmt.total_bits <= 8 else 16 if fmt.total_bits <= 16 else 32
    return 16 if isinstance(fmt, Half) else 32


def storage_dtype(fmt) -> np.dtype:
    """The numpy type of stored values: float32, uint16 (the bits of an fp16), int8 / int16 / int32."""
    if isinstance(fmt, Fixed):
        return np.dtype(f"int{storage_bits(fmt)}")
    return np.dtype(np.uint16 if isinstance(fmt, Half) else np.float32)


# ----------------------------------------------------------------------------------------- parsing

VALID_FORMS = ('"float", "half", "fixedN" (N in 2..32, fractional bits chosen per layer), '
               '"fixedN.F" (F fractional bits, may be negative: "fixed16.-2"), a mapping '
               '{"layer": form, "*": default form} (or that mapping as JSON text), or the path of a JSON file '
               'holding such a mapping')

_FIXED_RE = re.compile(r"fixed(\d+)(?:\.(-?\d+))?")


def parse_format(name: str, where: str = "") -> LayerSetting:
    """One format name ("float", "half", "fixed16", "fixed16.8") -> LayerSetting."""
    at = f" ({where})" if where else ""
    if not isinstance(name, str):
        raise PrecisionError(f"precision{at} must be a string, got {name!r}; valid forms: {VALID_FORMS}")
    text = name.strip().lower()
    if text in ("float", "float32", "fp32"):
        return LayerSetting(Float(), Float())
    if text in ("half", "float16", "fp16"):
        return LayerSetting(Half(), Half())
    match = _FIXED_RE.fullmatch(text)
    if match is None:
        raise PrecisionError(f"unknown precision {name!r}{at}; valid forms: {VALID_FORMS}")
    try:
        bits = int(match.group(1))
        weights = FixedAuto(bits)
        if match.group(2) is None:
            return LayerSetting(weights, FixedAuto(bits))
        return LayerSetting(weights, Fixed(bits, int(match.group(2))))
    except PrecisionError as err:
        raise PrecisionError(f"precision {name!r}{at}: {err}") from None


def exact_format(text: str, where: str = "") -> Format:
    """A resolved format as ``str()`` writes it ("float", "half", "fixed16.12") -> Float / Half / Fixed."""
    setting = parse_format(text, where)
    if isinstance(setting.activations, FixedAuto):
        raise PrecisionError(f"{where or 'precision'}: '{text}' names no fractional bits; write fixedN.F")
    return setting.activations


def parse_precision(setting, layer_names) -> dict[str, LayerSetting]:
    """A precision setting -> {layer name: LayerSetting} for every name in ``layer_names``.

    ``setting`` is a format name applied to every layer, a mapping {layer: name} where the key "*"
    gives the default (layers matched by neither key are float), that mapping as JSON text (from a
    command line), or the path of a JSON file holding it.  Errors name the file and the key.
    """
    names = list(layer_names)
    source = ""
    if isinstance(setting, str) and setting.lstrip().startswith("{"):   # a mapping written on a command line
        source, setting = "precision", _json_mapping(setting, "precision")
    elif isinstance(setting, (str, os.PathLike)) and _looks_like_path(setting):
        source, setting = _load_json_mapping(Path(setting))
    if isinstance(setting, str):
        one = parse_format(setting)
        return {name: one for name in names}
    if not isinstance(setting, Mapping):
        raise PrecisionError(f"precision setting must be a string or a mapping, got {type(setting).__name__}; "
                             f"valid forms: {VALID_FORMS}")
    in_file = f"{source}: " if source else ""
    unknown = [key for key in setting if key != "*" and key not in names]
    if unknown:
        raise PrecisionError(f"{in_file}precision given for {unknown[0]!r}, which is not a layer of the net "
                             f"(layers: {', '.join(names)})")
    default = parse_format(setting["*"], f"{in_file}key '*'") if "*" in setting else LayerSetting(Float(), Float())
    return {name: parse_format(setting[name], f"{in_file}key {name!r}") if name in setting else default
            for name in names}


def _looks_like_path(setting) -> bool:
    if isinstance(setting, os.PathLike):
        return True
    return setting.lower().endswith(".json") or os.sep in setting or os.path.isfile(setting)


def _load_json_mapping(path: Path):
    refuse_special_file(path, PrecisionError, "a JSON file")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise PrecisionError(f"{path}: cannot read precision file: {err.strerror or err}") from None
    return str(path), _json_mapping(text, str(path))


def _json_mapping(text: str, source: str) -> dict:
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as err:
        raise PrecisionError(f"{source}:{err.lineno}: not valid JSON: {err.msg}") from None
    if not isinstance(mapping, dict):
        raise PrecisionError(f"{source}: a precision mapping must be a JSON object "
                             f'{{"layer": "fixed16", "*": "float"}}, got {type(mapping).__name__}')
    return mapping


# ------------------------------------------------------------------------------------ quantisation

def quantize(x, fmt: Fixed) -> tuple[np.ndarray, int]:
    """Float array -> (int64 array, number of saturated values).

    q = floor(x * 2^f + 0.5) (round half up), then clamped to [qmin, qmax]; every clamped value counts.
    On a device in float32 the same bits come from ``y = ldexp(x, f)`` (exact: a power-of-two
    scale) and ``fl = floor(y); q = fl + (y - fl >= 0.5f)`` -- not ``floor(y + 0.5f)``, which rounds
    wrongly once |y| >= 2^23; compare y with the limits before converting to ``long``.
    +-inf saturate; NaN is refused.
    """
    y = np.ldexp(np.asarray(x, dtype=np.float64), fmt.frac_bits)   # exact for float32 input
    if np.isnan(y).any():
        raise PrecisionError(f"cannot quantise NaN to {fmt}")
    with np.errstate(invalid="ignore"):
        fl = np.floor(y)
        q = fl + (y - fl >= 0.5)
    low, high = q < fmt.qmin, q > fmt.qmax
    saturated = int(np.count_nonzero(low) + np.count_nonzero(high))
    q = np.where(low, fmt.qmin, np.where(high, fmt.qmax, q))
    return q.astype(np.int64), saturated


def dequantize(q, fmt: Fixed) -> np.ndarray:
    """int array -> float32 values q * 2^-f (exact while the value fits float32's 24-bit mantissa)."""
    return np.ldexp(np.asarray(q, dtype=np.float64), -fmt.frac_bits).astype(np.float32)


def quantize_accumulator(x, frac_bits: int) -> np.ndarray:
    """A bias (float) -> int64 at an accumulator's fractional bits, round half up, no saturation
    (the accumulator is 64-bit).  Done on the host; the device receives the integers."""
    y = np.ldexp(np.asarray(x, dtype=np.float64), frac_bits)
    if not np.all(np.abs(y) < 2.0 ** 62):
        raise PrecisionError(f"bias does not fit a 64-bit accumulator with {frac_bits} fractional bits")
    fl = np.floor(y)
    return (fl + (y - fl >= 0.5)).astype(np.int64)


def saturate(q: np.ndarray, fmt: Fixed) -> tuple[np.ndarray, int]:
    """Clamp an int64 array to fmt's range -> (clamped, number clamped)."""
    q = np.asarray(q, dtype=np.int64)
    low, high = q < fmt.qmin, q > fmt.qmax
    count = int(np.count_nonzero(low) + np.count_nonzero(high))
    return np.clip(q, fmt.qmin, fmt.qmax), count


MAX_SHIFT = 62   # 1 << (s-1) and the rounding add must stay inside a signed 64-bit value


def requantize(acc, from_frac: int, fmt: Fixed) -> tuple[np.ndarray, int]:
    """int64 value with ``from_frac`` fractional bits -> fmt, saturated -> (int64 array, count).

    s = from_frac - fmt.frac_bits
      s > 0:  (acc + (1 << (s-1))) >> s    arithmetic shift, i.e. round half up (toward +inf)
      s <= 0: acc << -s
    then clamp to [qmin, qmax], counting.  The left shift is saturated *before* shifting
    (acc > qmax >> k  ->  qmax; acc < -((-qmin) >> k) -> qmin), which is the same result as
    shifting the exact value and never overflows 64 bits.  |s| <= 62.
    In OpenCL C with ``long acc``: s > 0: ``(acc + (1L << (s-1))) >> s`` (``>>`` on signed long
    is arithmetic on every OpenCL device).
    """
    acc = np.asarray(acc, dtype=np.int64)
    s = int(from_frac) - fmt.frac_bits
    if abs(s) > MAX_SHIFT:
        raise PrecisionError(f"rescaling from {from_frac} to {fmt.frac_bits} fractional bits needs a "
                             f"{abs(s)}-bit shift (at most {MAX_SHIFT}); choose closer formats")
    if s > 0:
        return saturate((acc + (1 << (s - 1))) >> s, fmt)
    k = -s
    high = acc > (fmt.qmax >> k)
    low = acc < -((-fmt.qmin) >> k)
    count = int(np.count_nonzero(high) + np.count_nonzero(low))
    out = np.where(high, fmt.qmax, np.where(low, fmt.qmin, acc << k))
    return out.astype(np.int64), count


def round_half(x) -> np.ndarray:
    """float -> float32 values representable in fp16 (round to nearest even via float32, the way a
    float32 kernel's ``vstore_half`` stores them; beyond 65504 they become inf)."""
    with np.errstate(over="ignore"):
        return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


def store(x, fmt) -> tuple[np.ndarray, int]:
    """A float32 result written in ``fmt``: Float -> as is, Half -> rounded, Fixed -> quantised.
    Returns (float32 array for Float/Half, int64 for Fixed; saturation / overflow count)."""
    if isinstance(fmt, Fixed):
        return quantize(x, fmt)
    x = np.asarray(x, dtype=np.float32)
    if isinstance(fmt, Half):
        rounded = round_half(x)
        return rounded, int(np.count_nonzero(np.isinf(rounded) & np.isfinite(x)))
    return x, 0


def to_float(x, fmt) -> np.ndarray:
    """Values stored in ``fmt`` -> float32 (dequantise fixed, pass float/half)."""
    return dequantize(x, fmt) if isinstance(fmt, Fixed) else np.asarray(x, dtype=np.float32)


# ------------------------------------------------------------------------ choosing fractional bits

def frac_bits_for(max_abs: float, total_bits: int) -> int:
    """The largest f with max_abs * 2^f <= 2^(b-1) - 1 (no saturation at max_abs), clamped to the
    valid range [-b, 2b] of ``Fixed``.  max_abs == 0 gives 2b."""
    b = _check_total_bits(total_bits)
    max_abs = float(max_abs)
    if not math.isfinite(max_abs) or max_abs < 0:
        raise PrecisionError(f"cannot choose fractional bits for a maximum of {max_abs}")
    qmax = (1 << (b - 1)) - 1
    if max_abs == 0.0:
        return 2 * b
    f = math.floor(math.log2(qmax / max_abs))
    # log2 may be off by one near powers of two: settle it exactly
    while f > -b and math.ldexp(max_abs, f) > qmax:
        f -= 1
    while f < 2 * b and math.ldexp(max_abs, f + 1) <= qmax:
        f += 1
    return max(-b, min(2 * b, f))


def default_activation_frac(total_bits: int) -> int:
    """Fractional bits of an activation when no calibration statistics exist: half the bits.
    16 bits -> f = 8, range +-128 in steps of 1/256; 8 bits -> f = 4, range +-8.  A guess that
    suits nets fed with [0, 1]-scaled inputs; ImageNet nets fed 0..255 pixels saturate, hence
    the warning ``resolve_precision`` returns."""
    return _check_total_bits(total_bits) // 2


def weight_format(layer, setting_weights) -> Format:
    """The format of a convolution's weights: Float/Half as given; FixedAuto(b) -> Fixed(b, f) with
    the largest f that does not saturate the weight blob's largest magnitude."""
    if not isinstance(setting_weights, FixedAuto):
        return setting_weights
    if not layer.blobs:
        raise PrecisionError(f"{layer.where}: a fixed-point weight format is sized from the weights, and this "
                             f"graph has none (a shapes-only graph); load it with weights or fillers")
    blob = layer.blobs[0]
    max_abs = float(np.max(np.abs(blob))) if np.size(blob) else 0.0
    return Fixed(setting_weights.total_bits, frac_bits_for(max_abs, setting_weights.total_bits))


# ------------------------------------------------------------------------------------ calibration

def calibrate(graph, batches, percentile: float | None = None) -> dict[str, float]:
    """Activation statistics for choosing fractional bits: {blob name: max |x|} over every version of
    every blob (an in-place ReLU's input and output share a name; the larger covers both), over all
    batches run through the float golden model.  ``batches``: one {input name: array} dict or an
    iterable of them.  ``percentile`` (e.g. 99.99): the p-th percentile of |x| instead of the max,
    so that a few outliers do not waste an 8-bit range (the largest percentile over batches is kept).
    """
    from cnnfpga.reference import check_inputs, run_layer
    if percentile is not None and not 0 < percentile <= 100:
        raise PrecisionError(f"calibration percentile must be in (0, 100], got {percentile}")
    if isinstance(batches, Mapping):
        batches = [batches]
    stats: dict[str, float] = {}

    def record(name, value):
        magnitude = np.abs(np.asarray(value, dtype=np.float32))
        if magnitude.size == 0:
            return
        level = float(magnitude.max() if percentile is None else np.percentile(magnitude, percentile))
        stats[name] = max(stats.get(name, 0.0), level)

    count = 0
    for batch in batches:
        blobs = check_inputs(graph, batch)
        for name, value in blobs.items():
            record(name, value)
        for layer in graph.layers:
            if layer.type == "Input":
                continue
            run_layer(layer, blobs)
            for top in layer.tops:
                record(top, blobs[top])
        count += 1
    if count == 0:
        raise PrecisionError(f"{graph.path}: calibration needs at least one batch of inputs")
    return stats


def save_calibration(stats: Mapping[str, float], path) -> None:
    """Write calibration statistics as JSON {blob: level}."""
    Path(path).write_text(json.dumps({k: float(v) for k, v in stats.items()}, indent=1, sort_keys=True) + "\n")


def load_calibration(path) -> dict[str, float]:
    """Read statistics written by ``save_calibration``; errors name the file and the key."""
    source, mapping = _load_json_mapping(Path(path))
    return checked_levels(mapping, source)


def checked_levels(mapping: Mapping, source: str) -> dict[str, float]:
    """{blob: level} statistics whose every level is a finite number >= 0."""
    for key, value in mapping.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not 0 <= value < math.inf:
            raise PrecisionError(f"{source}: calibration value of {key!r} must be a finite number >= 0, got {value!r}")
    return {key: float(value) for key, value in mapping.items()}


def calibration_statistics(graph, calibration):
    """None, a JSON file of statistics, a {blob: level} mapping, or input batches -> stats.

    Batches are an array for the net's first input, a {input: array} dict, or a list of such dicts;
    each runs through the golden model reshaped to its batch size, whatever the net's own batch is.
    """
    if calibration is None:
        return None
    if isinstance(calibration, (str, bytes)) or hasattr(calibration, "__fspath__"):
        return load_calibration(calibration)
    if isinstance(calibration, np.ndarray):
        calibration = {next(iter(graph.inputs)): calibration}
    if isinstance(calibration, dict) and all(np.isscalar(v) for v in calibration.values()):
        return checked_levels(calibration, "calibration=")
    batches = [calibration] if isinstance(calibration, dict) else list(calibration)
    stats = {}
    for batch in batches:
        batch = {name: calibration_array(graph, name, value) for name, value in batch.items()}
        shaped = graph.reshape({name: value.shape for name, value in batch.items()})
        for blob, level in calibrate(shaped, batch).items():
            stats[blob] = max(level, stats.get(blob, 0.0))
    return stats


def calibration_array(graph, name: str, value) -> np.ndarray:
    """A calibration batch for input `name`: what forward() would take, and not all zeros (statistics
    of nothing would choose every format from nothing)."""
    from .reference import checked_input
    if name not in graph.inputs:
        raise PrecisionError(f"{graph.path}: calibration data for '{name}', which is not an input of the net "
                             f"(inputs: {', '.join(graph.inputs)})")
    array = checked_input(graph.path, name, value, graph.inputs[name])
    if not array.any():
        raise PrecisionError(f"{graph.path}: the calibration batch for '{name}' is all zeros; fixed-point "
                             f"formats cannot be chosen from it (give real inputs)")
    return array


# ------------------------------------------------------------------------------------- resolution

PASS_THROUGH_TYPES = ("ReLU", "Pooling")   # output in the input's format: max/relu/average stay in range


def resolve_precision(graph, setting, stats: Mapping[str, float] | None = None) -> dict[str, LayerPrecision]:
    """Concrete formats for every device layer (Convolution, Pooling, LRN, ReLU, a sum, a Concat) of
    ``graph`` (``cnnfpga.layers.runs_on_device``).

    setting: anything ``parse_precision`` takes, or its result.
    stats:   ``calibrate``'s {blob: max |x|}; fixed activation formats without statistics get
             ``default_activation_frac`` and one UserWarning names those blobs.
    Weight formats are sized from the graph's own blobs: resolve on the graph the device runs,
    ``cnnfpga.placement.fold_batch_norms(graph)[0]``, where BatchNorm is folded into convolutions.

    Rules (the producer converts, so a layer's outputs are its reader's inputs):
      * a layer's weights: Float/Half as set, fixedN -> N bits, fraction from the largest |w|;
        weightless layers repeat their input format in ``weights``;
      * the format a layer wants on its input: Float/Half as set, fixedN.F as set, fixedN ->
        Fixed(N, frac_bits_for(stats[blob], N));
      * a ReLU or Pooling layer whose input is fixed writes its output in that same format when its
        readers are fixed with the same number of bits (auto fraction), so it never rescales;
      * otherwise a layer's outputs are the format its device readers want (they must agree);
        with no device reader (the host reads it) the layer's own setting, sized on its output blob;
      * the other inputs of an Eltwise or a Concat (``sides``) arrive as their writers wrote them, or
        as the host converts them, like the first: they may differ in fractional bits.
    """
    device = [layer for layer in graph.layers if runs_on_device(layer)]
    if isinstance(setting, Mapping) and setting and all(isinstance(v, LayerSetting) for v in setting.values()):
        settings = dict(setting)
    else:
        settings = parse_precision(setting, [layer.name for layer in device])
    stats = dict(stats or {})
    defaulted: dict[str, Format] = {}

    def activation(kind, blob: str) -> Format:
        if not isinstance(kind, FixedAuto):
            return kind
        if blob in stats:
            return Fixed(kind.total_bits, frac_bits_for(stats[blob], kind.total_bits))
        defaulted[blob] = Fixed(kind.total_bits, default_activation_frac(kind.total_bits))
        return defaulted[blob]

    # who reads each layer's output: in-place layers write a new version under the same name, so
    # a reader belongs to the latest writer of the name at the time it runs
    readers: dict[int, list[int]] = {}
    sources_of: dict[int, list] = {}       # layer index -> the writer of each bottom (None: an input)
    last_writer: dict[str, int] = {}
    for i, layer in enumerate(graph.layers):
        for bottom in layer.bottoms:
            if bottom in last_writer:
                readers.setdefault(last_writer[bottom], []).append(i)
        sources_of[i] = [last_writer.get(bottom) for bottom in layer.bottoms]
        for top in layer.tops:
            last_writer[top] = i

    resolved: dict[str, LayerPrecision] = {}
    written: dict[int, Format] = {}        # layer index -> format its output was written in
    index_of = {id(layer): i for i, layer in enumerate(graph.layers)}
    for layer in device:
        i = index_of[id(layer)]
        kind = settings[layer.name]

        def arriving(k: int) -> Format:
            """The format bottom k arrives in: as a device layer wrote it, else as the host converts it."""
            source = sources_of[i][k]
            return written[source] if source is not None and source in written else \
                activation(kind.activations, layer.bottoms[k])

        inputs = arriving(0)
        top = layer.tops[0]
        device_readers = [graph.layers[r] for r in readers.get(i, []) if runs_on_device(graph.layers[r])]
        passes = layer.type in PASS_THROUGH_TYPES and isinstance(inputs, Fixed)
        if device_readers:
            wanted = {}
            for reader in device_readers:
                reader_kind = settings[reader.name].activations
                if passes and isinstance(reader_kind, FixedAuto) and reader_kind.total_bits == inputs.total_bits:
                    wanted[reader.name] = inputs
                else:
                    wanted[reader.name] = activation(reader_kind, top)
            if len(set(wanted.values())) > 1:
                listing = ", ".join(f"{name} wants {fmt}" for name, fmt in wanted.items())
                raise PrecisionError(f"{layer.where}: the readers of blob '{top}' want different formats "
                                     f"({listing}); give them the same precision")
            outputs = next(iter(wanted.values()))
        elif passes and isinstance(kind.activations, FixedAuto) and kind.activations.total_bits == inputs.total_bits:
            outputs = inputs
        else:
            outputs = activation(kind.activations, top)
        if layer.type == "Convolution":
            weight_fmt = weight_format(layer, kind.weights)
        else:
            weight_fmt = inputs
        written[i] = outputs
        sides = tuple(arriving(k) for k in range(1, len(layer.bottoms)))
        resolved[layer.name] = LayerPrecision(weight_fmt, inputs, outputs, sides)
    if defaulted:
        chosen = ", ".join(f"{blob} {fmt}" for blob, fmt in defaulted.items())
        warnings.warn(f"{graph.path}: no calibration statistics for blob(s) {', '.join(defaulted)}; their fixed-point "
                      f"formats take half their bits fractional ({chosen}), which may saturate -- calibrate "
                      f"(--calibration IMAGES, or Net(calibration=...)) for accurate results", UserWarning, stacklevel=2)
    return resolved

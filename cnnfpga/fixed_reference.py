"""Fixed-point golden model of the device layers: integers in, integers out, numpy int64.

The OpenCL kernels must reproduce these functions bit for bit, so each docstring states the exact
integer arithmetic.  Activations are int64 arrays (N, C, H, W) holding values of a ``Fixed``
format; every function returns ``(output, saturation_count)``.  The output format ``out_fmt`` is
normally ``Fixed`` (output int64); ``Float``/``Half`` outputs (a fixed layer feeding a float layer)
are float32 arrays, converted as described in ``convert_accumulator``.

All sums are exact 64-bit integer sums: the functions refuse (PrecisionError) formats and data
for which an accumulator could reach 2^62 (so that requantize's rounding add cannot overflow a
``long`` either), so summation order never matters.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from cnnfpga.device_constants import (ALIGNED_BITS, FACTOR_FRAC, LEAKY_SLOPE_FRAC, leaky_slope_constant,
                                      lrn_factor_table, lrn_table_index)
from cnnfpga.errors import PrecisionError
from cnnfpga.layers import conv as conv_layer, pool as pool_layer
from cnnfpga.precision import (Fixed, Float, Half, LayerPrecision, quantize, quantize_accumulator, requantize,
                               round_half, store, to_float)
from cnnfpga.reference import check_inputs

FLOAT_LAYER = LayerPrecision(Float(), Float(), Float())

INT64_MAX = (1 << 63) - 1
ACCUMULATOR_LIMIT = 1 << 62      # |acc| below this leaves room for requantize's rounding add
EXACT_FLOAT64 = 1 << 53          # integers below this are exact in float64, so BLAS sums are exact


def convert_accumulator(acc, acc_frac: int, out_fmt) -> tuple[np.ndarray, int]:
    """An int64 value with ``acc_frac`` fractional bits -> out_fmt.

    Fixed: ``requantize`` (round half up, saturate, counted).
    Float: ``(float)acc`` (round to nearest even, OpenCL's default ``convert_float``) times
           2^-acc_frac (exact: a power of two), i.e. ``ldexp(convert_float(acc), -acc_frac)``.
    Half:  the Float result rounded to fp16 (``vstore_half``); values beyond 65504 become inf and count.
    """
    if isinstance(out_fmt, Fixed):
        return requantize(acc, acc_frac, out_fmt)
    value = np.ldexp(np.asarray(acc, dtype=np.int64).astype(np.float32), -int(acc_frac)).astype(np.float32)
    if isinstance(out_fmt, Half):
        rounded = round_half(value)
        return rounded, int(np.count_nonzero(np.isinf(rounded)))
    if isinstance(out_fmt, Float):
        return value, 0
    raise PrecisionError(f"unknown output format {out_fmt!r}")


def _as_int64(x, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise PrecisionError(f"{what} must be an integer array (quantised), got dtype {x.dtype}")
    return x.astype(np.int64, copy=False)


def _require_fixed(fmt, what: str) -> Fixed:
    if not isinstance(fmt, Fixed):
        raise PrecisionError(f"{what} must be a Fixed format, got {fmt}")
    return fmt


# -------------------------------------------------------------------------------------- convolution

def conv_fixed(x_q, in_fmt: Fixed, w_q, w_fmt: Fixed, bias_acc, out_fmt, spec) -> tuple[np.ndarray, int]:
    """Integer convolution.

    acc[n, o, y, x] = bias_acc[o] + sum_{c in o's group, i, j} w_q[o, c, i, j] * x_pad[n, c, y*sh + i*dh, x*sw + j*dw]
    with x_pad the input zero-padded by (pad_h, pad_w) (padding is the integer 0) and acc an exact
    int64 with w_fmt.frac + in_fmt.frac fractional bits.  ``bias_acc`` is the bias already at the
    accumulator's fractional bits: ``quantize_accumulator(bias, w_fmt.frac_bits + in_fmt.frac_bits)``
    (round half up, int64), or None.  Then ``convert_accumulator(acc, w.f + in.f, out_fmt)``.
    Groups: output channel o reads input channels [g*C/G, (g+1)*C/G) with g = o // (O/G).
    """
    x = _as_int64(x_q, "conv input")
    w = _as_int64(w_q, "conv weights")
    in_fmt, w_fmt = _require_fixed(in_fmt, "conv input format"), _require_fixed(w_fmt, "conv weight format")
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    groups = spec.group
    if c != cg * groups or o % groups:
        raise PrecisionError(f"conv weights {w.shape} do not fit input {x.shape} with group {groups}")
    _, _, oh, ow = conv_layer.shape(spec, [x.shape])[0]
    bias = None if bias_acc is None else _as_int64(bias_acc, "conv bias").reshape(o)

    # Exactness: |acc| <= sum|w[o]| * max|x| + |bias[o]|, for every partial sum in any order.
    max_x = int(np.max(np.abs(x))) if x.size else 0
    weight_l1 = np.abs(w.reshape(o, -1)).sum(axis=1)
    bound = int(weight_l1.max(initial=0)) * max_x
    if bound + (int(np.max(np.abs(bias))) if bias is not None and bias.size else 0) >= ACCUMULATOR_LIMIT:
        raise PrecisionError(f"conv with {w_fmt} weights and {in_fmt} inputs could overflow a 64-bit "
                             f"accumulator; use fewer bits")
    exact_in_float64 = bound < EXACT_FLOAT64

    xp = np.pad(x, ((0, 0), (0, 0), (spec.pad_h, spec.pad_h), (spec.pad_w, spec.pad_w)))
    s = xp.strides
    windows = as_strided(xp, shape=(n, c, oh, ow, kh, kw),
                         strides=(s[0], s[1], s[2] * spec.stride_h, s[3] * spec.stride_w,
                                  s[2] * spec.dilation_h, s[3] * spec.dilation_w), writeable=False)
    og = o // groups
    acc = np.empty((n, o, oh, ow), dtype=np.int64)
    for g in range(groups):
        cols = windows[:, g * cg:(g + 1) * cg].transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, cg * kh * kw)
        wg = w[g * og:(g + 1) * og].reshape(og, -1)
        if exact_in_float64:
            part = np.rint(cols.astype(np.float64) @ wg.T.astype(np.float64)).astype(np.int64)
        else:
            part = cols @ wg.T
        acc[:, g * og:(g + 1) * og] = part.reshape(n, oh, ow, og).transpose(0, 3, 1, 2)
    if bias is not None:
        acc += bias.reshape(1, o, 1, 1)
    return convert_accumulator(acc, w_fmt.frac_bits + in_fmt.frac_bits, out_fmt)


# --------------------------------------------------------------------------------------------- ReLU

def relu_fixed(x_q, fmt: Fixed, negative_slope: float = 0.0, out_fmt=None) -> tuple[np.ndarray, int]:
    """ReLU / leaky ReLU.

    negative_slope == 0 and out_fmt None (or == fmt): max(x, 0), exact, no saturation.
    Otherwise, with slope_q = ``leaky_slope_constant(negative_slope)``:
        acc = x < 0 ? x * slope_q : x << 16          (frac fmt.f + 16)
        out = convert_accumulator(acc, fmt.f + 16, out_fmt or fmt)
    For x >= 0 and out_fmt == fmt this returns x unchanged.
    """
    x = _as_int64(x_q, "ReLU input")
    fmt = _require_fixed(fmt, "ReLU format")
    if negative_slope == 0 and (out_fmt is None or out_fmt == fmt):
        return np.maximum(x, 0), 0
    slope_q = leaky_slope_constant(negative_slope)
    acc = np.where(x < 0, x * slope_q, x << LEAKY_SLOPE_FRAC)
    return convert_accumulator(acc, fmt.frac_bits + LEAKY_SLOPE_FRAC, fmt if out_fmt is None else out_fmt)


# ------------------------------------------------------------------------------------------- Eltwise

def eltwise_sum(x, x_fmt, y, y_fmt, out_fmt) -> tuple[np.ndarray, int]:
    """The sum of two blobs (an Eltwise SUM stage), each arriving in its own format.

    Fixed operands: acc = (x << (f - x.f)) + (y << (f - y.f)) with f = max(x.f, y.f), exact in
    int64, then ``convert_accumulator(acc, f, out_fmt)``; refused where an aligned operand could
    reach 2^61.  Float or half operands: x + y in float32, then stored in out_fmt (``store``).
    """
    if isinstance(x_fmt, Fixed) != isinstance(y_fmt, Fixed):
        raise PrecisionError(f"an Eltwise adds two fixed-point operands or two float ones, not {x_fmt} and {y_fmt}")
    if not isinstance(x_fmt, Fixed):
        return store(np.asarray(x, np.float32) + np.asarray(y, np.float32), out_fmt)
    frac = max(x_fmt.frac_bits, y_fmt.frac_bits)
    for fmt in (x_fmt, y_fmt):
        if fmt.total_bits + frac - fmt.frac_bits > ALIGNED_BITS:
            raise PrecisionError(f"adding {x_fmt} to {y_fmt} aligns {fmt} by {frac - fmt.frac_bits} bits, past 64-bit "
                                 f"arithmetic; choose closer formats")
    acc = (_as_int64(x, "Eltwise input") << (frac - x_fmt.frac_bits)) + \
        (_as_int64(y, "Eltwise input") << (frac - y_fmt.frac_bits))
    return convert_accumulator(acc, frac, out_fmt)


# -------------------------------------------------------------------------------------------- Concat

def concat_channels(xs: list, fmts: list, out_fmt) -> tuple[np.ndarray, int]:
    """The concatenation of (N, C_k, H, W) blobs along the channels (a Concat stage), each arriving in
    its own format and converted to out_fmt on its own: a fixed one by ``convert_accumulator`` (its
    value is an integer of f_k fractional bits: requantize, or exact to float), a float or half one
    by ``store``.  Where an input already is in out_fmt that is a copy."""
    parts, saturated = [], 0
    for x, fmt in zip(xs, fmts):
        part, count = convert_accumulator(x, fmt.frac_bits, out_fmt) if isinstance(fmt, Fixed) else store(x, out_fmt)
        parts.append(part)
        saturated += count
    return np.concatenate(parts, axis=1), saturated


# ------------------------------------------------------------------------------------------ pooling

def pool_fixed(x_q, fmt: Fixed, spec, out_fmt=None) -> tuple[np.ndarray, int]:
    """MAX or AVE pooling on integers (Caffe's geometry: ``cnnfpga.layers.pool.shape``).

    MAX: the largest input in the window; padded positions never win (they are skipped, i.e.
         treated as the most negative value).  Exact.
    AVE: sum = the integer sum of the real inputs in the window (padding counts as 0);
         d = Caffe's divisor for that output position: the window clipped to the padded input, padding
             counted, positions beyond it not (``cnnfpga.layers.pool.average_divisors``, per axis);
         out = floor((2*sum + d) / (2*d))  -- the mean rounded half up, floor division.
         C's ``/`` truncates toward zero, so a kernel must write, with ``long num = 2*sum + d,
         den = 2*d``:  ``num >= 0 ? num / den : -((-num + den - 1) / den)``.
    The result is in ``fmt``; with an out_fmt it is then ``convert_accumulator(result, fmt.f, out_fmt)``.
    """
    x = _as_int64(x_q, "pooling input")
    fmt = _require_fixed(fmt, "pooling format")
    n, c, h, w = x.shape
    _, _, oh, ow = pool_layer.shape(spec, [x.shape])[0]
    # pad far enough on the right for the last (CEIL) window
    right_h = max(0, (oh - 1) * spec.stride_h + spec.kernel_h - h - spec.pad_h)
    right_w = max(0, (ow - 1) * spec.stride_w + spec.kernel_w - w - spec.pad_w)
    is_max = spec.method == "MAX"
    if not is_max and spec.method != "AVE":
        raise PrecisionError(f"pooling method {spec.method!r} has no fixed-point model (MAX, AVE)")
    fill = np.iinfo(np.int64).min if is_max else 0
    xp = np.pad(x, ((0, 0), (0, 0), (spec.pad_h, right_h), (spec.pad_w, right_w)), constant_values=fill)
    windows = sliding_window_view(xp, (spec.kernel_h, spec.kernel_w), axis=(2, 3))
    windows = windows[:, :, ::spec.stride_h, ::spec.stride_w][:, :, :oh, :ow]
    if is_max:
        out = windows.max(axis=(4, 5))
    else:
        total = windows.sum(axis=(4, 5))
        d = np.outer(pool_layer.average_divisors(h, spec.kernel_h, spec.stride_h, spec.pad_h, oh),
                     pool_layer.average_divisors(w, spec.kernel_w, spec.stride_w, spec.pad_w, ow)).astype(np.int64)
        out = np.floor_divide(2 * total + d, 2 * d)
    if out_fmt is None or out_fmt == fmt:
        return out, 0
    return convert_accumulator(out, fmt.frac_bits, out_fmt)


# ---------------------------------------------------------------------------------------------- LRN

def _window_sum(sq: np.ndarray, spec) -> np.ndarray:
    """Sum of squares over the LRN window, zero padded: channels [c - (n-1)/2, c + n/2] across,
    or the n x n spatial window centred the same way within a channel."""
    n = spec.local_size
    before, after = (n - 1) // 2, n - 1 - (n - 1) // 2
    if spec.region == "WITHIN_CHANNEL":
        padded = np.pad(sq, ((0, 0), (0, 0), (before, after), (before, after)))
        return sliding_window_view(padded, (n, n), axis=(2, 3)).sum(axis=(4, 5))
    padded = np.pad(sq, ((0, 0), (before, after), (0, 0), (0, 0)))
    cumulative = np.concatenate([np.zeros_like(padded[:, :1]), np.cumsum(padded, axis=1)], axis=1)
    return cumulative[:, n:] - cumulative[:, :-n]


def lrn_fixed(x_q, in_fmt: Fixed, out_fmt, spec, table=None) -> tuple[np.ndarray, int]:
    """LRN with a lookup table, bit-exact on any device.

    S = sum of x_q^2 over the window (int64, 2*in.f fractional bits; see ``_window_sum``)
    t = table[lrn_table_index(S)]      (``lrn_factor_table(spec, in_fmt)``, 16 fractional bits)
    out = convert_accumulator(x_q * t, in.f + 16, out_fmt)
    """
    x = _as_int64(x_q, "LRN input")
    in_fmt = _require_fixed(in_fmt, "LRN input format")
    window = spec.local_size * spec.local_size if spec.region == "WITHIN_CHANNEL" else spec.local_size
    if window * (in_fmt.qmin * in_fmt.qmin) > INT64_MAX:
        raise PrecisionError(f"LRN sum of squares of {window} {in_fmt} values could overflow 64 bits")
    if table is None:
        table = lrn_factor_table(spec, in_fmt)
    s = _window_sum(x * x, spec)
    acc = x * np.asarray(table, dtype=np.int64)[lrn_table_index(s)]
    return convert_accumulator(acc, in_fmt.frac_bits + FACTOR_FRAC, out_fmt)


# ------------------------------------------------------------------------------------ whole net

@dataclass
class FixedRun:
    """What ``forward_fixed`` returns: every blob as float32 (fixed values dequantised) and, per
    layer, how many values saturated (including the host's conversion of that layer's input)."""
    blobs: dict
    saturation: dict


def _arriving(x, x_fmt, fmt) -> tuple:
    """An input as a layer gets it in `fmt`: the host (or a float producer) converts where they differ."""
    return store(to_float(x, x_fmt), fmt) if x_fmt != fmt else (x, 0)


def _device_layer(layer, lp: LayerPrecision, xs: list, x_fmts: list):
    """One device layer in its precision: (output, saturation count).  ``xs`` arrive in ``x_fmts``."""
    fmts = [lp.inputs, *lp.sides]
    arrived = [_arriving(x, x_fmt, fmt) for x, x_fmt, fmt in zip(xs, x_fmts, fmts)]
    x, saturated = arrived[0][0], sum(count for _, count in arrived)
    if layer.type == "Eltwise":
        out, count = eltwise_sum(x, lp.inputs, arrived[1][0], lp.sides[0], lp.outputs)
        return out, saturated + count
    if layer.type == "Concat":
        out, count = concat_channels([value for value, _ in arrived], fmts, lp.outputs)
        return out, saturated + count
    if not isinstance(lp.inputs, Fixed):    # float / half arithmetic in float32
        blobs = layer.blobs
        if isinstance(lp.weights, Half):
            blobs = [round_half(b) for b in blobs]
        out = layer.kind.reference(layer.spec, [np.asarray(x, dtype=np.float32)], blobs)[0]
        out, count = store(out, lp.outputs)
        return out, saturated + count
    spec = layer.spec
    if layer.type == "Convolution":
        w_fmt = _require_fixed(lp.weights, f"{layer.where}: weights of a fixed-point convolution")
        w_q, count = quantize(layer.blobs[0], w_fmt)
        saturated += count
        bias = quantize_accumulator(layer.blobs[1], w_fmt.frac_bits + lp.inputs.frac_bits) if spec.bias_term else None
        out, count = conv_fixed(x, lp.inputs, w_q, w_fmt, bias, lp.outputs, spec)
    elif layer.type == "ReLU":
        out, count = relu_fixed(x, lp.inputs, spec.negative_slope, lp.outputs)
    elif layer.type == "Pooling":
        out, count = pool_fixed(x, lp.inputs, spec, lp.outputs)
    elif layer.type == "LRN":
        out, count = lrn_fixed(x, lp.inputs, lp.outputs, spec)
    else:
        raise PrecisionError(f"{layer.where}: {layer.type} has no fixed-point model")
    return out, saturated + count


def forward_fixed(graph, inputs: dict, precisions: dict) -> FixedRun:
    """Run the whole net: layers named in ``precisions`` ({name: LayerPrecision}, e.g. from
    ``resolve_precision``) in their formats, every other layer in the float reference on
    dequantised inputs, layer by layer as ``graph`` has them.

    The device runs BatchNorm/Scale folded into the convolution before them.  To compute what it
    computes, run the folded graph with formats resolved on it: ``g = fold_batch_norms(graph)[0]``
    (cnnfpga.placement) and ``resolve_precision(g, setting, stats)`` -- or a device plan's own
    ``plan.graph`` and ``plan.precisions``, which are exactly those."""
    blobs = check_inputs(graph, inputs)
    formats = {name: Float() for name in blobs}
    saturation = {}
    for layer in graph.layers:
        if layer.type == "Input":
            continue
        lp = precisions.get(layer.name)
        if lp is None or lp == FLOAT_LAYER:
            values = [to_float(blobs[b], formats[b]) for b in layer.bottoms]
            outs = layer.kind.reference(layer.spec, values, layer.blobs)
            fmts = [Float()] * len(outs)
        else:
            out, saturation[layer.name] = _device_layer(layer, lp, [blobs[b] for b in layer.bottoms],
                                                        [formats[b] for b in layer.bottoms])
            outs, fmts = [out], [lp.outputs]
        for top, value, fmt in zip(layer.tops, outs, fmts):
            blobs[top], formats[top] = value, fmt
    return FixedRun({name: to_float(value, formats[name]) for name, value in blobs.items()}, saturation)

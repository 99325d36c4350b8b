"""Precision formats, quantisation and the fixed-point golden model, by hand-computed cases and
against exact integer / rational arithmetic and the float reference."""
import json
import math
from fractions import Fraction

import numpy as np
import pytest

from cnnfpga.errors import PrecisionError
from cnnfpga.device_constants import (FACTOR_FRAC, LRN_MANTISSA_BITS, LRN_TABLE_LEN, leaky_slope_constant,
                                      lrn_bucket_middles, lrn_factor, lrn_factor_table, lrn_table_index,
                                      lrn_table_length)
from cnnfpga.fixed_reference import conv_fixed, forward_fixed, lrn_fixed, pool_fixed, relu_fixed
from cnnfpga.graph import load_graph
from cnnfpga.layers import REGISTRY, pool as pool_layer
from cnnfpga.placement import fold_batch_norms
from cnnfpga.layers.conv import ConvSpec
from cnnfpga.layers.lrn import LRNSpec
from cnnfpga.layers.pool import PoolSpec
from cnnfpga.precision import (Fixed, FixedAuto, Float, Half, LayerPrecision, calibrate, dequantize, frac_bits_for,
                               load_calibration, parse_precision, quantize, quantize_accumulator, requantize,
                               resolve_precision, round_half, save_calibration)
from cnnfpga.reference import forward
from cnnfpga.runtime import DeviceNet

from conftest import assert_bit_exact, filler_graph, shared_path

RNG = np.random.default_rng(1234)


def round_half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


# ------------------------------------------------------------------------------------------ formats

@pytest.mark.parametrize("bits, frac", [(1, 0), (33, 0), (0, 0), (16, 33), (16, -17), (8, 17)])
def test_fixed_refuses_bits_out_of_range(bits, frac):
    with pytest.raises(PrecisionError, match="bits"):
        Fixed(bits, frac)


@pytest.mark.parametrize("bits, frac", [(16.0, 8), (16, 8.5), (True, 1), ("16", 8)])
def test_fixed_refuses_non_integers(bits, frac):
    with pytest.raises(PrecisionError, match="integer"):
        Fixed(bits, frac)


def test_fixed_range_edges():
    assert (Fixed(8, 0).qmin, Fixed(8, 0).qmax) == (-128, 127)
    assert (Fixed(2, -2).qmin, Fixed(2, -2).qmax) == (-2, 1)
    assert Fixed(32, 64).qmax == 2**31 - 1 and Fixed(16, -16).step == 2.0**16


# ------------------------------------------------------------------------------------------ parsing

def test_parse_names():
    names = ["conv1", "relu1"]
    assert parse_precision("float", names)["conv1"].activations == Float()
    assert parse_precision("half", names)["relu1"].weights == Half()
    fixed = parse_precision("fixed16", names)["conv1"]
    assert fixed.weights == FixedAuto(16) and fixed.activations == FixedAuto(16)
    explicit = parse_precision("FIXED16.8", names)["conv1"]
    assert explicit.activations == Fixed(16, 8) and explicit.weights == FixedAuto(16)
    assert parse_precision("fixed8.-2", names)["conv1"].activations == Fixed(8, -2)
    assert parse_precision("fixed2", names)["conv1"].activations == FixedAuto(2)


@pytest.mark.parametrize("name", ["fixed", "fixed33", "fixed1", "fixed16.40", "int8", "fixed16.8.1", ""])
def test_parse_refuses_unknown_names_listing_valid_forms(name):
    with pytest.raises(PrecisionError) as error:
        parse_precision(name, ["conv1"])
    assert "fixed" in str(error.value) and repr(name) in str(error.value)


def test_parse_mapping_with_default_and_unnamed_layers_float():
    settings = parse_precision({"conv1": "float", "*": "fixed8"}, ["conv1", "conv2"])
    assert settings["conv1"].activations == Float() and settings["conv2"].activations == FixedAuto(8)
    assert parse_precision({"conv2": "half"}, ["conv1", "conv2"])["conv1"].activations == Float()
    with pytest.raises(PrecisionError, match="'conv9'"):
        parse_precision({"conv9": "half"}, ["conv1"])
    with pytest.raises(PrecisionError, match="key 'conv1'"):
        parse_precision({"conv1": "fixed99"}, ["conv1"])


def test_parse_json_text_from_a_command_line():
    settings = parse_precision('{"conv1": "float", "*": "fixed16"}', ["conv1", "conv2"])
    assert settings["conv1"].activations == Float() and settings["conv2"].activations == FixedAuto(16)
    with pytest.raises(PrecisionError, match="precision:1: not valid JSON"):
        parse_precision('{"conv1": float}', ["conv1"])
    with pytest.raises(PrecisionError, match="precision: precision given for 'conv9'"):
        parse_precision('{"conv9": "half"}', ["conv1"])


def test_parse_json_file_errors_name_file_and_key(tmp_path):
    good = tmp_path / "p.json"
    good.write_text(json.dumps({"conv1": "fixed16.6", "*": "half"}))
    settings = parse_precision(str(good), ["conv1", "conv2"])
    assert settings["conv1"].activations == Fixed(16, 6) and settings["conv2"].activations == Half()
    bad_value = tmp_path / "bad_value.json"
    bad_value.write_text(json.dumps({"*": "fixed16", "conv2": "quarter"}))
    with pytest.raises(PrecisionError, match=r"bad_value\.json.*key 'conv2'"):
        parse_precision(str(bad_value), ["conv1", "conv2"])
    broken = tmp_path / "broken.json"
    broken.write_text('{"conv1": "float",\n "*" "half"}')
    with pytest.raises(PrecisionError, match=r"broken\.json:2"):
        parse_precision(broken, ["conv1"])
    with pytest.raises(PrecisionError, match=r"missing\.json"):
        parse_precision(str(tmp_path / "missing.json"), ["conv1"])
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    with pytest.raises(PrecisionError, match=r"list\.json.*object"):
        parse_precision(str(listing), ["conv1"])


# ------------------------------------------------------------------------------------- quantisation

def test_quantize_rounds_half_up_and_counts_saturation():
    q, saturated = quantize(np.array([0.125, -0.125, 0.375, -0.375, 31.75, -32, 31.9, -32.2, 100]), Fixed(8, 2))
    assert q.tolist() == [1, 0, 2, -1, 127, -128, 127, -128, 127]
    assert saturated == 3 and q.dtype == np.int64


def test_quantize_is_exact_beyond_float32_integer_spacing():
    # y + 0.5 would round to even in float32 here; the golden model must not
    x = np.array([2**23 + 1, -(2**23) - 1, 2**24 + 2], dtype=np.float32)
    q, saturated = quantize(x, Fixed(32, 0))
    assert q.tolist() == [2**23 + 1, -(2**23) - 1, 2**24 + 2] and saturated == 0
    q, _ = quantize(np.array([2**22 + 0.5, -(2**22) - 0.5], dtype=np.float32), Fixed(32, 0))
    assert q.tolist() == [2**22 + 1, -(2**22)]


def test_quantize_infinities_saturate_and_nan_is_refused():
    q, saturated = quantize(np.array([np.inf, -np.inf, 1.0]), Fixed(8, 0))
    assert q.tolist() == [127, -128, 1] and saturated == 2
    with pytest.raises(PrecisionError, match="NaN"):
        quantize(np.array([np.nan]), Fixed(8, 0))


def test_quantize_dequantize_round_trip_within_half_a_step():
    fmt = Fixed(12, 5)
    x = RNG.uniform(-60, 60, 1000)
    q, saturated = quantize(x, fmt)
    assert saturated == 0
    assert np.abs(dequantize(q, fmt) - x).max() <= fmt.step / 2 + 1e-6


def test_requantize_rounds_half_up_on_both_signs():
    q, saturated = requantize(np.array([5, -5, 6, -6, 7, -7, 1, -1]), 1, Fixed(8, 0))
    assert q.tolist() == [3, -2, 3, -3, 4, -3, 1, 0] and saturated == 0


def test_requantize_matches_exact_rational_rounding():
    acc = RNG.integers(-(2**40), 2**40, 2000)
    for from_frac, fmt in [(20, Fixed(16, 3)), (7, Fixed(32, 0)), (30, Fixed(8, -5))]:
        got, saturated = requantize(acc, from_frac, fmt)
        exact = [round_half_up(Fraction(int(a), 2**from_frac) * 2**fmt.frac_bits) for a in acc]
        clamped = [min(max(v, fmt.qmin), fmt.qmax) for v in exact]
        assert got.tolist() == clamped
        assert saturated == sum(v != c for v, c in zip(exact, clamped))


def test_requantize_left_shift_saturates_without_overflow():
    acc = np.array([2**62, -(2**62), 3, -3, 4095, -4096, 4096])
    q, saturated = requantize(acc, 0, Fixed(16, 3))       # shift left by 3
    assert q.tolist() == [32767, -32768, 24, -24, 32760, -32768, 32767]
    assert saturated == 3
    with pytest.raises(PrecisionError, match="shift"):
        requantize(acc, 100, Fixed(16, 3))


def test_quantize_accumulator_rounds_half_up_without_saturating():
    assert quantize_accumulator(np.array([0.25, -0.25, 1000.0]), 1).tolist() == [1, 0, 2000]


def test_round_half_is_round_to_nearest_even():
    x = np.array([1 + 2**-11, 1 + 3 * 2**-11, -(1 + 2**-11), 65504, 65520], dtype=np.float32)
    assert round_half(x).tolist() == [1.0, 1 + 2**-9, -1.0, 65504.0, np.inf]


# ------------------------------------------------------------------------------ fractional bits

def test_frac_bits_for_hand_cases():
    assert frac_bits_for(1.0, 8) == 6          # 64 <= 127 < 128
    assert frac_bits_for(127, 8) == 0
    assert frac_bits_for(127.1, 8) == -1
    assert frac_bits_for(0.0, 8) == 16         # nothing to fit: the finest allowed
    assert frac_bits_for(1e-9, 8) == 16        # clamped to 2b
    assert frac_bits_for(1e9, 8) == -8         # clamped to -b


def test_frac_bits_for_is_the_largest_without_saturation():
    for max_abs in np.exp(RNG.uniform(-8, 12, 300)):
        for bits in (8, 16):
            f = frac_bits_for(max_abs, bits)
            fmt = Fixed(bits, f)
            assert f == -bits or quantize(np.array([max_abs, -max_abs]), fmt)[1] == 0
            assert f == 2 * bits or max_abs * 2.0 ** (f + 1) > fmt.qmax    # largest, unless clamped


# ---------------------------------------------------------------------------------- convolution

def conv_spec(o, k, stride=1, pad=0, dilation=1, group=1, bias=True):
    return ConvSpec(o, k, k, stride, stride, pad, pad, dilation, dilation, group, bias)


def naive_conv(x, w, bias, spec):
    """Exact Python-int convolution, one output at a time."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh = (h + 2 * spec.pad_h - (spec.dilation_h * (kh - 1) + 1)) // spec.stride_h + 1
    ow = (wd + 2 * spec.pad_w - (spec.dilation_w * (kw - 1) + 1)) // spec.stride_w + 1
    out = np.zeros((n, o, oh, ow), dtype=object)
    per_group = o // spec.group
    for b in range(n):
        for oc in range(o):
            g = oc // per_group
            for y in range(oh):
                for xx in range(ow):
                    acc = int(bias[oc]) if bias is not None else 0
                    for ci in range(cg):
                        for i in range(kh):
                            for j in range(kw):
                                r = y * spec.stride_h + i * spec.dilation_h - spec.pad_h
                                s = xx * spec.stride_w + j * spec.dilation_w - spec.pad_w
                                if 0 <= r < h and 0 <= s < wd:
                                    acc += int(w[oc, ci, i, j]) * int(x[b, g * cg + ci, r, s])
                    out[b, oc, y, xx] = acc
    return out


def test_conv_1x1_hand_computed_with_a_tie():
    # x = (1.5, -1) at f=1, w = (0.5, 1.25) at f=2: acc = 3*2 + (-2)*5 = -4 at f=3 (-0.5);
    # bias 0.25 -> 2 at f=3: acc = -2 (-0.25); to f=1: -0.5 rounds half up to 0
    x = np.array([3, -2]).reshape(1, 2, 1, 1)
    w = np.array([2, 5]).reshape(1, 2, 1, 1)
    bias = quantize_accumulator(np.array([0.25]), 3)
    out, saturated = conv_fixed(x, Fixed(8, 1), w, Fixed(8, 2), bias, Fixed(8, 1), conv_spec(1, 1))
    assert out.ravel().tolist() == [0] and saturated == 0
    out, _ = conv_fixed(x, Fixed(8, 1), w, Fixed(8, 2), None, Fixed(8, 1), conv_spec(1, 1))
    assert out.ravel().tolist() == [-1]          # -0.5 -> -1 at f=1 exactly, no rounding
    out, saturated = conv_fixed(x * 40, Fixed(8, 1), w, Fixed(8, 2), None, Fixed(8, 1), conv_spec(1, 1))
    assert out.ravel().tolist() == [-40] and saturated == 0
    out, saturated = conv_fixed(x * 64, Fixed(8, 1), w, Fixed(8, 2), None, Fixed(8, 1), conv_spec(1, 1))
    assert out.ravel().tolist() == [-64] and saturated == 0
    out, saturated = conv_fixed(-x * 64, Fixed(8, 1), w, Fixed(8, 2), None, Fixed(8, 1), conv_spec(1, 1))
    assert out.ravel().tolist() == [64] and saturated == 0
    out, saturated = conv_fixed(-x * 64, Fixed(8, 1), w, Fixed(8, 2), None, Fixed(7, 1), conv_spec(1, 1))
    assert out.ravel().tolist() == [63] and saturated == 1


@pytest.mark.parametrize("spec, c", [(conv_spec(4, 3, stride=2, pad=1), 3),
                                     (conv_spec(6, 3, pad=2, dilation=2, group=3), 6),
                                     (conv_spec(2, 2, stride=3, group=2, bias=False), 4)])
@pytest.mark.parametrize("magnitude", [2**7, 2**28])   # the second takes the int64 path (beyond 2^53)
def test_conv_matches_exact_integer_convolution(spec, c, magnitude):
    x = RNG.integers(-magnitude, magnitude, (2, c, 7, 6))
    w = RNG.integers(-magnitude, magnitude, (spec.num_output, c // spec.group, spec.kernel_h, spec.kernel_w))
    bias = RNG.integers(-(2**20), 2**20, spec.num_output) if spec.bias_term else None
    in_fmt = w_fmt = Fixed(32, 4)
    out, _ = conv_fixed(x, in_fmt, w, w_fmt, bias, Fixed(32, 8), spec)
    exact = naive_conv(x, w, bias, spec)
    expected = np.vectorize(lambda a: min(max(round_half_up(Fraction(a, 2**0)), -(2**31)), 2**31 - 1),
                            otypes=[object])(exact)
    assert out.tolist() == expected.tolist()


def test_conv_refuses_possible_accumulator_overflow():
    x = np.full((1, 64, 3, 3), -(2**31))
    w = np.full((1, 64, 3, 3), -(2**31))
    with pytest.raises(PrecisionError, match="overflow"):
        conv_fixed(x, Fixed(32, 0), w, Fixed(32, 0), None, Fixed(32, 0), conv_spec(1, 3))


def test_fixed16_conv_close_to_float_conv():
    spec = conv_spec(16, 3, pad=1)
    x = RNG.normal(0, 2, (1, 8, 12, 12)).astype(np.float32)
    w = RNG.normal(0, 0.1, (16, 8, 3, 3)).astype(np.float32)
    b = RNG.normal(0, 0.1, 16).astype(np.float32)
    expected = REGISTRY["Convolution"].reference(spec, [x], [w, b])[0]
    in_fmt = Fixed(16, frac_bits_for(np.abs(x).max(), 16))
    w_fmt = Fixed(16, frac_bits_for(np.abs(w).max(), 16))
    out_fmt = Fixed(16, frac_bits_for(np.abs(expected).max(), 16))
    out, saturated = conv_fixed(quantize(x, in_fmt)[0], in_fmt, quantize(w, w_fmt)[0], w_fmt,
                                quantize_accumulator(b, in_fmt.frac_bits + w_fmt.frac_bits), out_fmt, spec)
    assert saturated == 0
    error = np.abs(dequantize(out, out_fmt) - expected).max() / np.abs(expected).max()
    assert error < 1e-3
    as_float, _ = conv_fixed(quantize(x, in_fmt)[0], in_fmt, quantize(w, w_fmt)[0], w_fmt, None, Float(), spec)
    assert as_float.dtype == np.float32 and np.abs(as_float + b.reshape(1, -1, 1, 1) - expected).max() < 1e-2


# ----------------------------------------------------------------------------------------- ReLU

def test_relu_plain_and_leaky():
    x = np.array([-10, -5, -1, 0, 3, 127])
    out, saturated = relu_fixed(x, Fixed(8, 0))
    assert out.tolist() == [0, 0, 0, 0, 3, 127] and saturated == 0
    slope_q = leaky_slope_constant(0.1)
    assert slope_q == 6554                       # floor(0.1 * 65536 + 0.5)
    out, _ = relu_fixed(x, Fixed(8, 0), 0.1)
    expected = [round_half_up(Fraction(int(v) * slope_q, 2**16)) if v < 0 else int(v) for v in x]
    assert out.tolist() == expected == [-1, -1, 0, 0, 3, 127]
    out, saturated = relu_fixed(x, Fixed(8, 0), 0.1, out_fmt=Fixed(8, 2))
    assert out.tolist() == [-4, -2, 0, 0, 12, 127] and saturated == 1


# -------------------------------------------------------------------------------------- pooling

def pool_spec(method, k, stride, pad=0, round_mode="CEIL"):
    return PoolSpec(method, k, k, stride, stride, pad, pad, False, round_mode)


def test_max_pool_padding_never_wins():
    x = np.full((1, 1, 3, 3), -100)
    x[0, 0, 2, 2] = -7
    out, saturated = pool_fixed(x, Fixed(8, 0), pool_spec("MAX", 2, 2, pad=1))
    assert out[0, 0].tolist() == [[-100, -100], [-100, -7]] and saturated == 0


def test_average_pool_negative_sums_round_half_up_with_floor_division():
    # 1x3 windows of one row: -2/3 -> -1 (truncating division would give 0), -1/3 -> 0, -3/3 -> -1
    spec = PoolSpec("AVE", 1, 3, 1, 3, 0, 0, False, "CEIL")
    x = np.array([-1, -1, 0, -1, 0, 0, -1, -2, 0]).reshape(1, 1, 1, 9)
    out, _ = pool_fixed(x, Fixed(8, 0), spec)
    assert out.ravel().tolist() == [-1, 0, -1]
    spec2 = PoolSpec("AVE", 1, 2, 1, 2, 0, 0, False, "CEIL")
    out, _ = pool_fixed(np.array([-1, 0, -2, -1, 1, 0]).reshape(1, 1, 1, 6), Fixed(8, 0), spec2)
    assert out.ravel().tolist() == [0, -1, 1]    # -0.5 -> 0, -1.5 -> -1, 0.5 -> 1


def test_average_pool_divisor_counts_padding_but_not_beyond():
    # 4x4, kernel 3, stride 2, pad 1: windows start at -1, 1, 3; the last ends at min(6, 5) = 5,
    # so its divisor is 2 per axis (real row 3 + one padding row), not 1 and not 3
    x = np.zeros((1, 1, 4, 4), dtype=np.int64)
    x[0, 0, 3, 3] = 6
    out, _ = pool_fixed(x, Fixed(8, 0), pool_spec("AVE", 3, 2, pad=1))
    assert out.shape == (1, 1, 3, 3) and out[0, 0, 2, 2] == 2      # 6 / 4 = 1.5 -> 2
    out, _ = pool_fixed(-x, Fixed(8, 0), pool_spec("AVE", 3, 2, pad=1))
    assert out[0, 0, 2, 2] == -1                                   # -1.5 -> -1
    assert out[0, 0, 1, 1] == -1                                   # -6 / 9 -> -1


@pytest.mark.parametrize("spec", [pool_spec("AVE", 3, 2, pad=1), pool_spec("AVE", 2, 2, round_mode="FLOOR"),
                                  pool_spec("MAX", 3, 2), pool_spec("AVE", 3, 1, pad=2)])
def test_pool_matches_exact_rounding_of_the_float_reference(spec):
    x = RNG.integers(-1000, 1000, (2, 3, 9, 8))
    out, _ = pool_fixed(x, Fixed(16, 0), spec)
    reference = REGISTRY["Pooling"].reference(spec, [x.astype(np.float32)], [])[0]
    assert out.shape == reference.shape
    if spec.method == "MAX":
        assert np.array_equal(out, reference)
        return
    # exact window sums back from the float means (small integers), then the mean rounded half up
    _, _, oh, ow = out.shape
    d = np.outer(pool_layer.average_divisors(9, spec.kernel_h, spec.stride_h, spec.pad_h, oh),
                 pool_layer.average_divisors(8, spec.kernel_w, spec.stride_w, spec.pad_w, ow)).astype(np.int64)
    sums = np.rint(reference.astype(np.float64) * d).astype(np.int64)
    expected = np.vectorize(lambda s, dd: round_half_up(Fraction(int(s), int(dd))))(sums, d)
    assert np.array_equal(out, expected)


# ------------------------------------------------------------------------------------------ LRN

def test_lrn_table_index_hand_cases():
    assert LRN_MANTISSA_BITS == 7 and LRN_TABLE_LEN == 8192
    s = np.array([0, 1, 3, 255, 256, 257, 258, 511, 512, 2**62, 2**63 - 1])
    # e = bit length, m = the 7 bits below the leading one
    e_m = [(0, 0), (1, 0), (2, 64), (8, 127), (9, 0), (9, 0), (9, 1), (9, 127), (10, 0), (63, 0), (63, 127)]
    assert lrn_table_index(s).tolist() == [e * 128 + m for e, m in e_m]


def test_lrn_table_length_keeps_only_reachable_entries():
    across, within = LRNSpec(5, 1e-4, 0.75, 1.0, "ACROSS_CHANNELS"), LRNSpec(3, 5e-5, 0.75, 1.0, "WITHIN_CHANNEL")
    # 5 * 32768^2 = 5 * 2^30 has 33 bits -> exponents 0..33, 34 << 7 entries; 9 (3x3) * 2^30 has 34 bits
    assert lrn_table_length(across, Fixed(16, 8)) == 34 * 128
    assert lrn_table_length(within, Fixed(16, 8)) == 35 * 128
    assert lrn_table_length(across, Fixed(8, 4)) == 18 * 128        # 5 * 128^2 = 81920: 17 bits
    for spec, fmt in [(across, Fixed(16, 8)), (within, Fixed(8, 2))]:
        window = 5 if spec is across else 9
        largest = np.array([window * fmt.qmin * fmt.qmin, window * fmt.qmin * fmt.qmin - 1])
        assert lrn_table_index(largest).max() < lrn_table_length(spec, fmt)


def test_lrn_bucket_middles_lie_in_their_buckets():
    s = np.unique(np.concatenate([np.arange(0, 3000), (2.0 ** RNG.uniform(0, 62.9, 20000)).astype(np.int64)]))
    middle = lrn_bucket_middles()[lrn_table_index(s)]
    small = s < 256
    assert np.array_equal(middle[small], s[small])                # one integer per bucket: exact
    assert (np.abs(middle[~small] - s[~small]) / s[~small]).max() <= 2.0**-8


ALEXNET_LRN = LRNSpec(5, 1e-4, 0.75, 1.0, "ACROSS_CHANNELS")
CIFAR_LRN = LRNSpec(3, 5e-5, 0.75, 1.0, "WITHIN_CHANNEL")


@pytest.mark.parametrize("spec", [ALEXNET_LRN, CIFAR_LRN, LRNSpec(5, 1e-4, 0.75, 2.0, "ACROSS_CHANNELS")])
@pytest.mark.parametrize("frac", [0, 4, 8])
def test_lrn_table_monotonic_and_close_to_the_formula(spec, frac):
    fmt = Fixed(16, frac)
    table = lrn_factor_table(spec, fmt)
    assert table.dtype == np.int32 and len(table) == LRN_TABLE_LEN
    k = spec.k if spec.region == "ACROSS_CHANNELS" else 1.0      # Caffe ignores k within a channel
    assert table[0] == round(k ** -spec.beta * 2**FACTOR_FRAC)
    assert np.all(np.diff(table.astype(np.int64)) <= 0)
    s = np.unique(np.concatenate([np.arange(0, 5000), (2.0 ** RNG.uniform(0, 62.9, 50000)).astype(np.int64)]))
    approx = table[lrn_table_index(s)] / 2.0**FACTOR_FRAC
    exact = lrn_factor(np.ldexp(s.astype(np.float64), -2 * frac), spec)
    relative = np.abs(approx - exact) / exact
    significant = exact > 2.0**-8     # below that the table's 16 fractional bits dominate
    # a bucket spans 1/128 of S: at most beta/256 relative in the factor, plus the entry's rounding
    assert relative[significant].max() <= spec.beta * 2.0**-8 * 1.01 + 2.0**-17 / exact[significant].min()
    assert relative[significant].max() < 0.005    # measured 0.46% (0.73% with 6 bits)
    # while alpha/n * S stays below 2k (16-bit AlexNet activations at f = 8 reach 1.6), within 0.25%
    divisor = spec.local_size if spec.region == "ACROSS_CHANNELS" else spec.local_size**2
    moderate = spec.alpha / divisor * np.ldexp(s.astype(np.float64), -2 * frac) <= 2 * k
    assert relative[moderate].max() < 0.0025      # measured 0.17% (0.34% with 6 bits)


def test_lrn_hand_case_single_value():
    spec = LRNSpec(1, 0.5, 1.0, 1.0, "ACROSS_CHANNELS")   # factor = 1 / (1 + 0.5 x^2)
    x = np.array([2, -2, 0]).reshape(1, 3, 1, 1)           # each channel its own window (n = 1)
    out, saturated = lrn_fixed(x, Fixed(8, 0), Fixed(8, 4), spec)
    # S = 4: index 3*128 + 0, one integer bucket; factor 1/3 -> 21845 / 2^16; 2 * 21845 / 2^12 = 10.67 -> 11
    assert out.ravel().tolist() == [11, -11, 0] and saturated == 0


@pytest.mark.parametrize("spec", [ALEXNET_LRN, CIFAR_LRN])
def test_lrn_fixed_close_to_float_reference(spec):
    x = RNG.normal(0, 40, (2, 12, 7, 7)).astype(np.float32)
    in_fmt = Fixed(16, frac_bits_for(np.abs(x).max(), 16))
    q, _ = quantize(x, in_fmt)
    expected = REGISTRY["LRN"].reference(spec, [dequantize(q, in_fmt)], [])[0]
    out_fmt = Fixed(16, frac_bits_for(np.abs(expected).max(), 16))
    out, saturated = lrn_fixed(q, in_fmt, out_fmt, spec)
    assert saturated == 0
    # the table's bucket error (at most beta/256 relative) plus rounding to the output step
    error = np.abs(dequantize(out, out_fmt) - expected) - out_fmt.step / 2
    assert (error / np.abs(expected)).max() < 0.003


def test_lrn_refuses_sums_that_could_overflow():
    with pytest.raises(PrecisionError, match="overflow"):
        lrn_fixed(np.zeros((1, 5, 1, 1), dtype=np.int64), Fixed(32, 0), Fixed(32, 0), ALEXNET_LRN)


# ------------------------------------------------------------------------- resolution, whole nets

SMALL_NET = """
name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" lrn_param { local_size: 5 alpha: 0.001 beta: 0.75 } }
layer { name: "conv2" type: "Convolution" bottom: "norm1" top: "conv2"
        convolution_param { num_output: 6 kernel_size: 3 group: 2 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" relu_param { negative_slope: 0.1 } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool2" top: "fc" inner_product_param { num_output: 4 } }
"""


@pytest.fixture(scope="module")
def small_net(tmp_path_factory):
    path = tmp_path_factory.mktemp("net") / "small.prototxt"
    path.write_text(SMALL_NET)
    graph = filler_graph(path)
    data = {"data": RNG.normal(0, 1, (2, 3, 12, 12)).astype(np.float32)}
    return graph, data


def test_calibrate_takes_the_largest_version_of_in_place_blobs(small_net):
    graph, data = small_net
    stats = calibrate(graph, data)
    conv1 = forward(graph, data, until="conv1")["conv1"]           # before the in-place ReLU
    blobs = forward(graph, data)
    assert stats["conv1"] == pytest.approx(np.abs(conv1).max()) and stats["conv1"] > 0
    assert stats["pool1"] == pytest.approx(np.abs(blobs["pool1"]).max())
    assert stats["data"] == pytest.approx(np.abs(data["data"]).max())
    percentile = calibrate(graph, data, percentile=50)
    assert percentile["conv1"] < stats["conv1"]


def test_calibration_file_round_trip(small_net, tmp_path):
    stats = calibrate(*small_net)
    save_calibration(stats, tmp_path / "cal.json")
    assert load_calibration(tmp_path / "cal.json") == pytest.approx(stats)
    (tmp_path / "bad.json").write_text('{"conv1": -1}')
    with pytest.raises(PrecisionError, match=r"bad\.json.*'conv1'"):
        load_calibration(tmp_path / "bad.json")


def test_resolve_chains_formats_and_passes_relu_and_pool_through(small_net):
    graph, data = small_net
    stats = calibrate(graph, data)
    formats = resolve_precision(graph, "fixed16", stats)
    order = ["conv1", "relu1", "pool1", "norm1", "conv2", "relu2", "pool2"]
    assert list(formats) == order                                    # only device layers
    for a, b in zip(order, order[1:]):
        assert formats[a].outputs == formats[b].inputs
    assert formats["relu1"].inputs == formats["relu1"].outputs == formats["pool1"].outputs
    assert formats["conv1"].inputs == Fixed(16, frac_bits_for(stats["data"], 16))
    assert formats["conv1"].outputs == Fixed(16, frac_bits_for(stats["conv1"], 16))
    assert formats["norm1"].outputs == Fixed(16, frac_bits_for(stats["norm1"], 16))
    w = graph.layer("conv2").blobs[0]
    assert formats["conv2"].weights == Fixed(16, frac_bits_for(np.abs(w).max(), 16))
    assert formats["pool2"].outputs == formats["pool2"].inputs       # read by the host


def test_resolve_mixed_precision_producer_converts(small_net):
    graph, data = small_net
    stats = calibrate(graph, data)
    formats = resolve_precision(graph, {"conv1": "float", "norm1": "half", "*": "fixed8"}, stats)
    assert formats["conv1"].inputs == Float() and formats["conv1"].weights == Float()
    assert formats["conv1"].outputs == formats["relu1"].inputs == Fixed(8, frac_bits_for(stats["conv1"], 8))
    assert formats["pool1"].outputs == formats["norm1"].inputs == Half()
    assert formats["norm1"].outputs == Fixed(8, frac_bits_for(stats["norm1"], 8))


def test_resolve_without_statistics_warns_and_uses_the_default(small_net):
    graph, _ = small_net
    with pytest.warns(UserWarning, match="data.*conv1"):
        formats = resolve_precision(graph, "fixed16", None)
    assert formats["conv1"].inputs == Fixed(16, 8)


def test_resolve_refuses_readers_that_disagree(tmp_path):
    path = tmp_path / "branch.prototxt"
    path.write_text("""
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 5 dim: 5 } } }
layer { name: "a" type: "Convolution" bottom: "data" top: "a" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "b" type: "Convolution" bottom: "a" top: "b" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "c" type: "Convolution" bottom: "a" top: "c" convolution_param { num_output: 2 kernel_size: 1 } }
""")
    graph = filler_graph(path)
    stats = {"data": 1.0, "a": 2.0, "b": 3.0, "c": 3.0}
    with pytest.raises(PrecisionError, match=r"branch\.prototxt.*blob 'a'"):
        resolve_precision(graph, {"b": "fixed16", "c": "fixed8", "*": "fixed16"}, stats)
    assert resolve_precision(graph, "fixed16", stats)["b"].inputs == Fixed(16, 13)


def test_forward_fixed_close_to_float_and_exact_where_it_should_be(small_net):
    graph, data = small_net
    stats = calibrate(graph, data)
    expected = forward(graph, data)
    run = forward_fixed(graph, data, resolve_precision(graph, "fixed16", stats))
    assert set(run.saturation) == {"conv1", "relu1", "pool1", "norm1", "conv2", "relu2", "pool2"}
    assert sum(run.saturation.values()) == 0
    for blob in ("conv1", "norm1", "conv2", "pool2", "fc"):
        scale = np.abs(expected[blob]).max()
        assert np.abs(run.blobs[blob] - expected[blob]).max() / scale < 1e-2, blob
    floats = forward_fixed(graph, data, {})
    assert all(np.array_equal(floats.blobs[b], expected[b]) for b in expected)
    eight = forward_fixed(graph, data, resolve_precision(graph, {"conv1": "half", "*": "fixed8"}, stats))
    assert np.abs(eight.blobs["fc"] - expected["fc"]).max() / np.abs(expected["fc"]).max() < 0.2


def test_forward_fixed_counts_saturation_of_a_bad_format(small_net):
    graph, data = small_net
    run = forward_fixed(graph, data, {"conv1": LayerPrecision(Fixed(16, 12), Fixed(16, 14), Fixed(16, 14))})
    assert run.saturation["conv1"] > 0


@pytest.mark.slow
def test_cifar10_fixed_point_keeps_the_float_predictions():
    from data_sets import cifar_files, cifar_rgb
    from cnnfpga.bundled import resolve
    paths, labels = cifar_files(shared_path("data", "cifar10_test_jpg"))
    chosen = np.arange(0, len(paths), 10)                  # 100 images, 10 per class
    images = cifar_rgb([paths[i] for i in chosen]).astype(np.float32).transpose(0, 3, 1, 2)
    images -= np.array([125.27, 122.93, 113.86], np.float32).reshape(1, 3, 1, 1)
    graph = load_graph(resolve("cifar10_full.prototxt"), resolve("cifar10_full.caffemodel"),
                       input_shapes={"data": images.shape})
    data = {"data": images}
    expected = forward(graph, data)[graph.outputs[0]].argmax(1)
    stats = calibrate(graph.reshape({"data": (20, 3, 32, 32)}), {"data": images[::5]})
    agree = {}
    for setting in ("fixed16", "fixed8", "half"):
        run = forward_fixed(graph, data, resolve_precision(graph, setting, stats))
        agree[setting] = (run.blobs[graph.outputs[0]].argmax(1) == expected).mean()
    assert agree["fixed16"] >= 0.99 and agree["half"] >= 0.99 and agree["fixed8"] >= 0.95, agree
    assert (expected == labels[chosen]).mean() > 0.6                # the float net itself works


# --------------------------------------------------------------- BatchNorm folded, device vs golden

BN_NET = """
name: "bn"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 10 dim: 10 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 8 kernel_size: 3 bias_term: false } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "bn" }
layer { name: "scale" type: "Scale" bottom: "bn" top: "scale"
        scale_param { bias_term: true filler { type: "constant" value: 4 } } }
layer { name: "relu" type: "ReLU" bottom: "scale" top: "scale" }
layer { name: "pool" type: "Pooling" bottom: "scale" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
"""


def test_batch_norm_folds_before_formats_are_chosen_and_the_golden_model_follows(tmp_path):
    path = tmp_path / "bn.prototxt"
    path.write_text(BN_NET)
    graph = filler_graph(path)
    data = {"data": RNG.normal(0, 1, (2, 3, 10, 10)).astype(np.float32)}
    folded, names = fold_batch_norms(graph)
    assert names == {"conv": ["bn", "scale"]}
    assert [layer.type for layer in folded.layers] == ["Input", "Convolution", "ReLU", "Pooling"]
    conv = folded.layer("conv")
    assert conv.tops == ["scale"] and conv.spec.bias_term and len(conv.blobs) == 2
    expected = forward(graph, data)
    np.testing.assert_allclose(forward(folded, data)["pool"], expected["pool"], rtol=1e-5,
                               atol=1e-5 * np.abs(expected["pool"]).max())
    stats = calibrate(graph, data)
    formats = resolve_precision(folded, "fixed16", stats)
    # the Scale of 4 makes the folded weights larger: the unfolded blob's format would saturate them
    assert formats["conv"].weights == Fixed(16, frac_bits_for(np.abs(conv.blobs[0]).max(), 16))
    unfolded = Fixed(16, frac_bits_for(np.abs(graph.layer("conv").blobs[0]).max(), 16))
    assert quantize(conv.blobs[0], unfolded)[1] > 0

    net = DeviceNet(graph, precision="fixed16", calibration=stats)
    assert all(net.plan.precisions[name] == fmt for name, fmt in formats.items())
    got = net.forward(data)
    golden = forward_fixed(folded, data, formats)
    np.testing.assert_array_equal(got["pool"], golden.blobs["pool"])
    assert net.saturation() == {name: golden.saturation[name] for name in net.saturation()}
    assert sum(golden.saturation.values()) == 0
    assert np.abs(golden.blobs["pool"] - expected["pool"]).max() < 1e-2 * np.abs(expected["pool"]).max()


@pytest.mark.slow
def test_resnet50_fixed16_on_the_device_is_bit_exact_with_the_golden_model():
    graph = filler_graph(shared_path("models", "resnet50", "deploy.prototxt"))
    data = {"data": RNG.uniform(-1, 1, graph.inputs["data"]).astype(np.float32)}
    stats = calibrate(graph, data)
    # the device layers are one segment, which writes only pool5; every block's output (its sum's) is
    # kept, written out as well, to be compared
    sums = [layer.tops[0] for layer in graph.layers if layer.type == "Eltwise"]
    net = DeviceNet(graph, precision="fixed16", calibration=stats, keep=sums)
    plan = net.plan
    resolved = resolve_precision(fold_batch_norms(graph)[0], "fixed16", stats)   # what the golden model gets
    assert all(plan.precisions[name] == fmt for name, fmt in resolved.items())
    got = net.forward(data)
    golden = forward_fixed(plan.graph, data, plan.precisions)
    assert len(plan.segments) == 1 and sorted(plan.written_blobs()) == sorted(sums + ["pool5"])
    assert sum(stage.kind == "eltwise" for stage in plan.stages) == 16
    assert_bit_exact(net, got, golden)
    np.testing.assert_allclose(got["prob"], golden.blobs["prob"], rtol=1e-4, atol=1e-7)   # host FC: BLAS order

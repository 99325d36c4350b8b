"""Layer unit tests: shape rules worked out by hand, MAC and parameter counts, and every numpy reference
against a naive loop written straight from Caffe's definitions."""
import math
import warnings

import cv2
import numpy as np
import pytest
from google.protobuf import text_format

from cnnfpga import NetDefinitionError
from cnnfpga.caffe import caffe_pb2
from cnnfpga.caffe.writer import write_caffemodel
from cnnfpga.graph import load_graph
from cnnfpga.layers import REGISTRY

from conftest import shared_path

RNG = np.random.default_rng(2024)


def make(type_name: str, params: str, in_shapes: list):
    """(kind, spec, out_shapes) for a layer of `type_name` with prototxt `params`, e.g. 'convolution_param {...}'."""
    param = caffe_pb2.LayerParameter()
    text_format.Parse(f'name: "x" type: "{type_name}" {params}', param)
    kind = REGISTRY[type_name]
    spec = kind.parse(param, in_shapes)
    return kind, spec, kind.shape(spec, in_shapes)


def run(type_name: str, params: str, inputs: list, blobs=()):
    kind, spec, out_shapes = make(type_name, params, [x.shape for x in inputs])
    outputs = kind.reference(spec, inputs, list(blobs))
    assert [o.shape for o in outputs] == [tuple(s) for s in out_shapes]
    assert all(o.dtype == np.float32 for o in outputs)
    return outputs


def random(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------- shape rules, by hand

@pytest.mark.parametrize("params, size, expected", [
    ("kernel_size: 3 stride: 2", 7, 3),               # (7 - 3) / 2 + 1 = 3 exactly
    ("kernel_size: 3 stride: 2", 8, 3),               # (8 - 3) / 2 = 2.5 rounds down -> 3
    ("kernel_size: 11 stride: 4", 227, 55),           # AlexNet conv1
    ("kernel_size: 5 pad: 2", 27, 27),                # AlexNet conv2
    ("kernel_size: 3 dilation: 2", 9, 5),             # extent 5: 9 - 5 + 1
    ("kernel_size: 3 dilation: 3 pad: 3", 10, 10),    # extent 7, padded 16: 16 - 7 + 1
    ("kernel_size: 7 stride: 2 pad: 3", 224, 112),    # ResNet conv1: (224 + 6 - 7) / 2 = 111.5 -> 112
])
def test_convolution_output_rounds_down(params, size, expected):
    _, _, out = make("Convolution", f"convolution_param {{ num_output: 4 {params} }}", [(1, 3, size, size)])
    assert out == [(1, 4, expected, expected)]


def test_convolution_separate_height_and_width():
    params = "convolution_param { num_output: 2 kernel_h: 3 kernel_w: 5 pad_h: 1 pad_w: 2 stride_h: 1 stride_w: 2 }"
    kind, spec, out = make("Convolution", params, [(2, 3, 10, 11)])
    assert (spec.kernel_h, spec.kernel_w, spec.pad_h, spec.pad_w, spec.stride_h, spec.stride_w) == (3, 5, 1, 2, 1, 2)
    assert out == [(2, 2, 10, 6)]  # H: 10 + 2 - 3 + 1; W: (11 + 4 - 5) // 2 + 1
    # two values in the repeated fields mean (h, w) as well
    _, spec2, out2 = make("Convolution", "convolution_param { num_output: 2 kernel_size: 3 kernel_size: 5 "
                                         "pad: 1 pad: 2 stride: 1 stride: 2 }", [(2, 3, 10, 11)])
    assert spec2 == spec and out2 == out


def test_convolution_groups():
    kind, spec, out = make("Convolution", "convolution_param { num_output: 256 kernel_size: 5 pad: 2 group: 2 }",
                           [(1, 96, 27, 27)])
    assert kind.blob_shapes(spec, [(1, 96, 27, 27)]) == [(256, 48, 5, 5), (256,)]
    assert kind.macs(spec, [(1, 96, 27, 27)], out) == 256 * 27 * 27 * 48 * 5 * 5
    with pytest.raises(NetDefinitionError, match="group 3"):
        make("Convolution", "convolution_param { num_output: 256 kernel_size: 5 group: 3 }", [(1, 96, 27, 27)])


@pytest.mark.parametrize("params, size, expected", [
    ("kernel_size: 3 stride: 2", 6, 3),          # (6 - 3) / 2 = 1.5 rounds UP -> 3 (a conv would give 2)
    ("kernel_size: 3 stride: 2 pad: 1", 6, 4),   # 2.5 -> 3, + 1 = 4 windows starting at -1, 1, 3, 5: all touch data
    ("kernel_size: 2 stride: 2 pad: 1", 5, 3),   # 2.5 -> 4 windows, but the 4th starts at 5 = in the padding: dropped
    ("kernel_size: 3 stride: 2", 55, 27),        # AlexNet pool1
    ("kernel_size: 3 stride: 2", 112, 56),       # GoogLeNet / ResNet pool1: 54.5 -> 55, + 1
    ("kernel_size: 3 stride: 2", 13, 6),         # exact
    ("kernel_size: 2 stride: 2 round_mode: FLOOR", 7, 3),
])
def test_pooling_output_rounds_up_and_drops_a_window_in_the_padding(params, size, expected):
    _, _, out = make("Pooling", f"pooling_param {{ pool: MAX {params} }}", [(1, 2, size, size)])
    assert out == [(1, 2, expected, expected)]


def test_pooling_separate_height_and_width():
    params = "pooling_param { pool: AVE kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0 }"
    _, spec, out = make("Pooling", params, [(1, 1, 7, 9)])
    assert (spec.kernel_h, spec.kernel_w, spec.stride_h, spec.stride_w, spec.pad_h, spec.pad_w) == (2, 3, 2, 1, 1, 0)
    assert out == [(1, 1, 4, 7)]  # H: ceil((7 + 2 - 2) / 2) + 1 = 5, 5th starts at 7 = padding -> 4; W: 9 - 3 + 1


def test_global_pooling():
    kind, spec, out = make("Pooling", "pooling_param { pool: AVE global_pooling: true }", [(2, 1000, 13, 13)])
    assert (spec.kernel_h, spec.kernel_w, spec.global_pooling) == (13, 13, True)
    assert out == [(2, 1000, 1, 1)]
    x = random(2, 5, 3, 4)
    (y,) = run("Pooling", "pooling_param { pool: AVE global_pooling: true }", [x])
    np.testing.assert_allclose(y[..., 0, 0], x.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    (y,) = run("Pooling", "pooling_param { pool: MAX global_pooling: true }", [x])
    np.testing.assert_array_equal(y[..., 0, 0], x.max(axis=(2, 3)))


@pytest.mark.parametrize("axis, shape, weights", [(1, (2, 7), (7, 60)), (2, (2, 3, 7), (7, 20)),
                                                  (-1, (2, 3, 4, 7), (7, 5)), (0, (7,), (7, 120))])
def test_inner_product_axis(axis, shape, weights):
    kind, spec, out = make("InnerProduct", f"inner_product_param {{ num_output: 7 axis: {axis} }}", [(2, 3, 4, 5)])
    assert out == [shape]
    assert kind.blob_shapes(spec, [(2, 3, 4, 5)]) == [weights, (7,)]
    x, w, b = random(2, 3, 4, 5), random(*weights), random(7)
    (y,) = kind.reference(spec, [x], [w, b])
    rows = x.reshape(-1, weights[1])
    np.testing.assert_allclose(y.reshape(-1, 7), rows @ w.T + b, rtol=1e-5, atol=1e-5)


def test_inner_product_transpose():
    kind, spec, _ = make("InnerProduct", "inner_product_param { num_output: 3 transpose: true bias_term: false }",
                         [(2, 4)])
    assert kind.blob_shapes(spec, [(2, 4)]) == [(4, 3)]
    x, w = random(2, 4), random(4, 3)
    np.testing.assert_allclose(kind.reference(spec, [x], [w])[0], x @ w, rtol=1e-5)


# ---------------------------------------------------------------- MACs and parameters

def test_alexnet_macs_and_parameters():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        graph = load_graph(str(shared_path("models", "alexnet", "deploy.prototxt")),
                           input_shapes={"data": (1, 3, 227, 227)})
    macs = {layer.name: layer.macs for layer in graph.layers if layer.macs}
    assert macs == {
        "conv1": 96 * 55 * 55 * 3 * 11 * 11,     # 105,415,200
        "conv2": 256 * 27 * 27 * 48 * 5 * 5,     # group 2: each output sees 48 of 96 channels
        "conv3": 384 * 13 * 13 * 256 * 3 * 3,
        "conv4": 384 * 13 * 13 * 192 * 3 * 3,    # group 2
        "conv5": 256 * 13 * 13 * 192 * 3 * 3,    # group 2
        "fc6": 256 * 6 * 6 * 4096, "fc7": 4096 * 4096, "fc8": 4096 * 1000,
    }
    assert macs["conv1"] == 105_415_200
    conv = sum(v for k, v in macs.items() if k.startswith("conv"))
    fc = sum(v for k, v in macs.items() if k.startswith("fc"))
    assert conv == 665_784_864 and fc == 58_621_952
    params = {layer.name: layer.params for layer in graph.layers if layer.params}
    assert params["conv1"] == 96 * 3 * 11 * 11 + 96 and params["conv2"] == 256 * 48 * 25 + 256
    assert params["fc6"] == 9216 * 4096 + 4096
    assert sum(params.values()) == 60_965_224  # the well-known AlexNet (BVLC) parameter count
    assert sum(params.values()) == sum(b.size for layer in graph.layers for b in layer.blobs)


# ---------------------------------------------------------------- references vs naive loops

def naive_conv(x, w, b, stride, pad, dilation, group):
    n, c, h, width = x.shape
    o, cg, kh, kw = w.shape
    sh, sw = stride
    ph, pw = pad
    dh, dw = dilation
    oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    ow = (width + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    out = np.zeros((n, o, oh, ow))
    og = o // group
    for i in range(n):
        for k in range(o):
            g = k // og
            for y in range(oh):
                for xo in range(ow):
                    total = b[k] if b is not None else 0.0
                    for ci in range(cg):
                        for ky in range(kh):
                            for kx in range(kw):
                                yy, xx = y * sh - ph + ky * dh, xo * sw - pw + kx * dw
                                if 0 <= yy < h and 0 <= xx < width:
                                    total += float(w[k, ci, ky, kx]) * float(x[i, g * cg + ci, yy, xx])
                    out[i, k, y, xo] = total
    return out


@pytest.mark.parametrize("params, stride, pad, dilation, group", [
    ("kernel_size: 3", (1, 1), (0, 0), (1, 1), 1),
    ("kernel_size: 3 stride: 2 pad: 1", (2, 2), (1, 1), (1, 1), 1),
    ("kernel_size: 3 group: 2 pad: 1", (1, 1), (1, 1), (1, 1), 2),
    ("kernel_size: 3 dilation: 2 pad: 2", (1, 1), (2, 2), (2, 2), 1),
    ("kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 1 pad_h: 0 pad_w: 1 group: 4", (2, 1), (0, 1), (1, 1), 4),
    ("kernel_size: 1", (1, 1), (0, 0), (1, 1), 1),
    ("kernel_size: 1 stride: 2 group: 2", (2, 2), (0, 0), (1, 1), 2),
])
@pytest.mark.parametrize("bias", [True, False])
def test_convolution_reference(params, stride, pad, dilation, group, bias):
    x = random(2, 4, 7, 6)
    kind, spec, _ = make("Convolution", f"convolution_param {{ num_output: 4 bias_term: {str(bias).lower()} {params} }}",
                         [x.shape])
    shapes = kind.blob_shapes(spec, [x.shape])
    blobs = [random(*s) for s in shapes]
    (y,) = kind.reference(spec, [x], blobs)
    expected = naive_conv(x, blobs[0], blobs[1] if bias else None, stride, pad, dilation, group)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def naive_pool(x, method, kernel, stride, pad, out_size):
    """Caffe's pooling_layer.cpp: MAX over the window clipped to the input; AVE divides by the window
    clipped to the padded input (so padding counts, the part beyond the padding does not)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = kernel, stride, pad, out_size
    out = np.zeros((n, c, oh, ow))
    for y in range(oh):
        for xo in range(ow):
            hs, ws = y * sh - ph, xo * sw - pw
            he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            window = x[:, :, hs:he, ws:we].astype(np.float64)
            out[:, :, y, xo] = window.max(axis=(2, 3)) if method == "MAX" else window.sum(axis=(2, 3)) / size
    return out


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("kernel, stride, pad, size", [
    ((3, 3), (2, 2), (0, 0), (6, 6)), ((3, 3), (2, 2), (1, 1), (6, 7)), ((2, 2), (2, 2), (1, 1), (5, 5)),
    ((3, 2), (1, 2), (1, 0), (5, 8)), ((3, 3), (3, 3), (1, 1), (10, 11)), ((5, 5), (1, 1), (2, 2), (4, 4)),
])
def test_pooling_reference(method, kernel, stride, pad, size):
    x = random(2, 3, *size)
    params = (f"pooling_param {{ pool: {method} kernel_h: {kernel[0]} kernel_w: {kernel[1]} stride_h: {stride[0]} "
              f"stride_w: {stride[1]} pad_h: {pad[0]} pad_w: {pad[1]} }}")
    (y,) = run("Pooling", params, [x])
    np.testing.assert_allclose(y, naive_pool(x, method, kernel, stride, pad, y.shape[2:]), rtol=1e-5, atol=1e-6)


def test_average_pooling_border_divisor_by_hand():
    """3x3 window, stride 2, pad 1, on a 4x4 field of ones: corner window covers 2x2 data inside a 3x3
    padded window (divisor 9 -> 4/9); the last window ends at the padding edge (divisor 3*3 as well)."""
    (y,) = run("Pooling", "pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }", [np.ones((1, 1, 4, 4), np.float32)])
    assert y.shape == (1, 1, 3, 3)  # ceil((4 + 2 - 3) / 2) + 1 = 3; the 3rd starts at 3 (data), kept
    # windows start at -1, 1, 3 and end at 2, 4, 5 (clipped to 4 + 1): sizes 3, 3, 2; data rows 2, 3, 1
    sizes, data = np.array([3, 3, 2]), np.array([2, 3, 1])
    np.testing.assert_allclose(y[0, 0], np.outer(data, data) / np.outer(sizes, sizes), rtol=1e-6)


def naive_lrn(x, size, alpha, beta, k, region):
    n, c, h, w = x.shape
    half = (size - 1) // 2
    out = np.zeros(x.shape)
    x64 = x.astype(np.float64)
    for i in range(n):
        for ch in range(c):
            for y in range(h):
                for xo in range(w):
                    if region == "ACROSS_CHANNELS":
                        total = sum(x64[i, cc, y, xo] ** 2 for cc in range(max(0, ch - half), min(c, ch + half + 1)))
                        scale = k + alpha / size * total
                    else:
                        window = x64[i, ch, max(0, y - half):y + half + 1, max(0, xo - half):xo + half + 1]
                        scale = 1.0 + alpha / (size * size) * np.sum(window ** 2)
                    out[i, ch, y, xo] = x64[i, ch, y, xo] * scale ** -beta
    return out


@pytest.mark.parametrize("region, size, alpha, beta, k", [
    ("ACROSS_CHANNELS", 5, 1e-4, 0.75, 1.0),     # AlexNet
    ("ACROSS_CHANNELS", 3, 0.5, 0.6, 2.0),       # strong, so the normalisation is visible
    ("WITHIN_CHANNEL", 3, 5e-5, 0.75, 1.0),      # CIFAR-10 full
    ("WITHIN_CHANNEL", 5, 0.9, 0.5, 1.0),
])
def test_lrn_reference(region, size, alpha, beta, k):
    x = random(2, 7, 5, 6) * 3
    params = f"lrn_param {{ local_size: {size} alpha: {alpha} beta: {beta} k: {k} norm_region: {region} }}"
    (y,) = run("LRN", params, [x])
    expected = naive_lrn(x, size, alpha, beta, k, region)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(expected, x, rtol=1e-3) or alpha < 1e-3


def test_eltwise_reference():
    a, b, c = random(2, 3, 4, 5), random(2, 3, 4, 5), random(2, 3, 4, 5)
    (y,) = run("Eltwise", "eltwise_param { operation: SUM coeff: 0.5 coeff: -2 coeff: 3 }", [a, b, c])
    np.testing.assert_allclose(y, 0.5 * a - 2 * b + 3 * c, rtol=1e-5, atol=1e-6)
    (y,) = run("Eltwise", "eltwise_param { operation: SUM }", [a, b])
    np.testing.assert_allclose(y, a + b, rtol=1e-6)
    (y,) = run("Eltwise", "eltwise_param { operation: PROD }", [a, b, c])
    np.testing.assert_allclose(y, a * b * c, rtol=1e-5)
    (y,) = run("Eltwise", "eltwise_param { operation: MAX }", [a, b, c])
    np.testing.assert_array_equal(y, np.maximum(np.maximum(a, b), c))
    with pytest.raises(NetDefinitionError, match="coeff"):
        make("Eltwise", "eltwise_param { operation: PROD coeff: 1 coeff: 2 }", [a.shape, b.shape])
    with pytest.raises(NetDefinitionError, match="one shape"):
        make("Eltwise", "", [(2, 3, 4, 5), (2, 3, 4, 6)])


@pytest.mark.parametrize("factor", [1.0, 4.0, 0.0])
def test_batch_norm_reference(factor):
    """Caffe stores running sums and a scale factor: mean = blob0 * (1 / factor), var = blob1 * (1 / factor),
    and a factor of 0 multiplies by 0 (batch_norm_layer.cpp; OpenCV agrees, see the next test)."""
    x = random(2, 4, 3, 3)
    mean_sum, var_sum = random(4), np.abs(random(4)) + 0.5
    (y,) = run("BatchNorm", "batch_norm_param { eps: 0.001 }", [x], [mean_sum, var_sum, np.array([factor], np.float32)])
    multiplier = 1.0 / factor if factor != 0 else 0.0
    for ch in range(4):
        mean, var = mean_sum[ch] * multiplier, var_sum[ch] * multiplier
        np.testing.assert_allclose(y[:, ch], (x[:, ch] - mean) / math.sqrt(var + 0.001), rtol=1e-5, atol=1e-5)


def test_batch_norm_scale_factor_zero_agrees_with_opencv(tmp_path):
    """An independent check of the factor-0 rule through OpenCV's Caffe importer (nonzero sums, factor 0:
    the statistics become 0 and the output is x / sqrt(eps))."""
    prototxt = tmp_path / "bn.prototxt"
    prototxt.write_text('name: "bn"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: 2 dim: 2 }\n'
                        'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }\n')
    blobs = [np.array([1.0, -2.0, 0.5], np.float32), np.array([4.0, 0.25, 1.0], np.float32), np.zeros(1, np.float32)]
    write_caffemodel(tmp_path / "bn.caffemodel", "bn", [("bn", "BatchNorm", blobs)])
    graph = load_graph(str(prototxt), str(tmp_path / "bn.caffemodel"))
    x = random(1, 3, 2, 2)
    ours = REGISTRY["BatchNorm"].reference(graph.layer("bn").spec, [x], graph.layer("bn").blobs)[0]
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(tmp_path / "bn.caffemodel"))
    net.setInput(x)
    np.testing.assert_allclose(ours, net.forward(), rtol=1e-5, atol=1e-5)


def test_scale_reference():
    x, gamma, beta = random(2, 4, 3, 5), random(4), random(4)
    (y,) = run("Scale", "scale_param { bias_term: true }", [x], [gamma, beta])
    np.testing.assert_allclose(y, x * gamma[None, :, None, None] + beta[None, :, None, None], rtol=1e-5, atol=1e-6)
    (y,) = run("Scale", "scale_param { bias_term: false }", [x], [gamma])
    np.testing.assert_allclose(y, x * gamma[None, :, None, None], rtol=1e-6)
    factors = random(4, 3)  # axis 1, num_axes 2: one factor per (channel, row)
    (y,) = run("Scale", "scale_param { num_axes: 2 }", [x], [factors])
    np.testing.assert_allclose(y, x * factors[None, :, :, None], rtol=1e-6)
    # factors from a second bottom: its shape says which axes they span, num_axes is ignored (as in Caffe)
    per_channel = random(4)
    kind, spec, _ = make("Scale", "scale_param { bias_term: true num_axes: 3 }", [x.shape, per_channel.shape])
    assert kind.blob_shapes(spec, [x.shape, per_channel.shape]) == [(4,)]  # only the bias is learned
    bias = random(4)
    (y,) = kind.reference(spec, [x, per_channel], [bias])
    np.testing.assert_allclose(y, x * per_channel[None, :, None, None] + bias[None, :, None, None], rtol=1e-5, atol=1e-6)
    per_sample = random(2, 4)  # axis 0: one factor per (image, channel)
    kind, spec, _ = make("Scale", "scale_param { axis: 0 bias_term: true }", [x.shape, per_sample.shape])
    assert kind.blob_shapes(spec, [x.shape, per_sample.shape]) == [(2, 4)]
    bias = random(2, 4)
    (y,) = kind.reference(spec, [x, per_sample], [bias])
    np.testing.assert_allclose(y, x * per_sample[:, :, None, None] + bias[:, :, None, None], rtol=1e-5, atol=1e-6)
    with pytest.raises(NetDefinitionError, match="do not match"):
        make("Scale", "", [x.shape, (3,)])


def test_concat_reference():
    a, b = random(2, 3, 4, 5), random(2, 1, 4, 5)
    (y,) = run("Concat", "", [a, b])
    np.testing.assert_array_equal(y[:, :3], a)
    np.testing.assert_array_equal(y[:, 3:], b)
    (y,) = run("Concat", "concat_param { axis: 0 }", [a, random(1, 3, 4, 5)])
    assert y.shape == (3, 3, 4, 5)
    (y,) = run("Concat", "concat_param { concat_dim: 3 }", [a, random(2, 3, 4, 2)])  # the legacy field
    assert y.shape == (2, 3, 4, 7)
    with pytest.raises(NetDefinitionError, match="concatenate"):
        make("Concat", "", [(2, 3, 4, 5), (2, 3, 4, 6)])


def test_flatten_reference():
    x = random(2, 3, 4, 5)
    (y,) = run("Flatten", "", [x])
    np.testing.assert_array_equal(y, x.reshape(2, 60))
    (y,) = run("Flatten", "flatten_param { axis: 2 }", [x])
    assert y.shape == (2, 3, 20)
    (y,) = run("Flatten", "flatten_param { axis: 1 end_axis: 2 }", [x])
    np.testing.assert_array_equal(y, x.reshape(2, 12, 5))


@pytest.mark.parametrize("params, expected", [
    ("reshape_param { shape { dim: 0 dim: -1 dim: 10 } }", (2, 6, 10)),      # 0 copies N, -1 is inferred
    ("reshape_param { shape { dim: 0 dim: 0 dim: -1 } }", (2, 3, 20)),
    ("reshape_param { shape { dim: -1 } }", (120,)),
    ("reshape_param { shape { dim: -1 } axis: 1 num_axes: 2 }", (2, 12, 5)),   # only axes 1..2 reshaped
    ("reshape_param { shape { dim: 1 } axis: 0 num_axes: 0 }", (1, 2, 3, 4, 5)),   # inserts an axis
    ("reshape_param { shape { dim: 1 dim: -1 } axis: 0 num_axes: 0 }", (1, 1, 2, 3, 4, 5)),  # -1 over nothing is 1
])
def test_reshape_reference(params, expected):
    x = random(2, 3, 4, 5)
    (y,) = run("Reshape", params, [x])
    assert y.shape == expected
    np.testing.assert_array_equal(y.ravel(), x.ravel())


def test_reshape_errors():
    with pytest.raises(NetDefinitionError, match="at most one"):
        make("Reshape", "reshape_param { shape { dim: -1 dim: -1 } }", [(2, 3)])
    with pytest.raises(NetDefinitionError, match="7"):
        make("Reshape", "reshape_param { shape { dim: 7 dim: -1 } }", [(2, 3)])


def test_softmax_reference():
    x = random(2, 5, 3, 4) * 10
    (y,) = run("Softmax", "", [x])
    e = np.exp(x.astype(np.float64))
    np.testing.assert_allclose(y, e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)
    (y,) = run("Softmax", "softmax_param { axis: -1 }", [x])
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-6)
    (y,) = run("Softmax", "", [np.array([[1000.0, 0.0]], np.float32)])  # large logits do not overflow
    np.testing.assert_allclose(y, [[1.0, 0.0]], atol=1e-7)


def test_activations_reference():
    x = random(3, 4, 5, 6) * 4
    (y,) = run("ReLU", "", [x])
    np.testing.assert_array_equal(y, np.where(x > 0, x, 0))
    (y,) = run("ReLU", "relu_param { negative_slope: 0.1 }", [x])
    np.testing.assert_allclose(y, np.where(x > 0, x, 0.1 * x), rtol=1e-6)
    (y,) = run("Sigmoid", "", [x])
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-x.astype(np.float64))), rtol=1e-5, atol=1e-7)
    (y,) = run("TanH", "", [x])
    np.testing.assert_allclose(y, np.tanh(x.astype(np.float64)), rtol=1e-5, atol=1e-7)
    (y,) = run("Dropout", "dropout_param { dropout_ratio: 0.5 }", [x])
    np.testing.assert_array_equal(y, x)  # identity at test time

"""Convolution: Caffe's shape rule (rounds down), groups, dilation; im2col + BLAS reference."""
from dataclasses import dataclass

import numpy as np

from . import LayerKind, bad, four_d, positive, register, spatial


@dataclass(frozen=True)
class ConvSpec:
    num_output: int
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    dilation_h: int
    dilation_w: int
    group: int
    bias_term: bool


def parse(param, in_shapes) -> ConvSpec:
    p = param.convolution_param
    four_d(in_shapes, "Convolution")
    if p.axis != 1:
        bad(f"convolution axis {p.axis} is not supported (only the channel axis 1)")
    kh, kw = spatial(p.kernel_size, p.kernel_h, p.kernel_w, p.HasField("kernel_h"), p.HasField("kernel_w"), 0, "kernel")
    sh, sw = spatial(p.stride, p.stride_h, p.stride_w, p.HasField("stride_h"), p.HasField("stride_w"), 1, "stride")
    ph, pw = spatial(p.pad, p.pad_h, p.pad_w, p.HasField("pad_h"), p.HasField("pad_w"), 0, "pad")
    dh, dw = spatial(p.dilation, 1, 1, False, False, 1, "dilation")
    spec = ConvSpec(positive("num_output", p.num_output), positive("kernel height", kh), positive("kernel width", kw),
                    positive("stride height", sh), positive("stride width", sw), ph, pw,
                    positive("dilation", dh), positive("dilation", dw), positive("group", p.group), p.bias_term)
    channels = in_shapes[0][1]
    if channels % spec.group or spec.num_output % spec.group:
        bad(f"group {spec.group} must divide the input channels ({channels}) and num_output ({spec.num_output})")
    return spec


def output_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    extent = dilation * (kernel - 1) + 1
    return (size + 2 * pad - extent) // stride + 1


def shape(spec: ConvSpec, in_shapes) -> list:
    n, c, h, w = in_shapes[0]
    oh = output_size(h, spec.kernel_h, spec.stride_h, spec.pad_h, spec.dilation_h)
    ow = output_size(w, spec.kernel_w, spec.stride_w, spec.pad_w, spec.dilation_w)
    if oh <= 0 or ow <= 0:
        bad(f"a {spec.kernel_h}x{spec.kernel_w} kernel does not fit the {h}x{w} input (pad {spec.pad_h}x{spec.pad_w})")
    return [(n, spec.num_output, oh, ow)]


def blob_shapes(spec: ConvSpec, in_shapes) -> list:
    weights = (spec.num_output, in_shapes[0][1] // spec.group, spec.kernel_h, spec.kernel_w)
    return [weights, (spec.num_output,)] if spec.bias_term else [weights]


def fillers(param, spec) -> list:
    p = param.convolution_param
    return [p.weight_filler if p.HasField("weight_filler") else None,
            p.bias_filler if p.HasField("bias_filler") else None][:1 + spec.bias_term]


def macs(spec: ConvSpec, in_shapes, out_shapes) -> int:
    _, o, oh, ow = out_shapes[0]
    return o * oh * ow * (in_shapes[0][1] // spec.group) * spec.kernel_h * spec.kernel_w


def im2col(x: np.ndarray, spec: ConvSpec, oh: int, ow: int) -> np.ndarray:
    """(N, C, H, W) -> (N, OH*OW, C*KH*KW) patches, the layout a GEMM with (O, C*KH*KW) weights wants."""
    n, c = x.shape[:2]
    padded = np.pad(x, ((0, 0), (0, 0), (spec.pad_h, spec.pad_h), (spec.pad_w, spec.pad_w)))
    extent_h = spec.dilation_h * (spec.kernel_h - 1) + 1
    extent_w = spec.dilation_w * (spec.kernel_w - 1) + 1
    windows = np.lib.stride_tricks.sliding_window_view(padded, (extent_h, extent_w), axis=(2, 3))
    windows = windows[:, :, :(oh - 1) * spec.stride_h + 1:spec.stride_h, :(ow - 1) * spec.stride_w + 1:spec.stride_w,
                      ::spec.dilation_h, ::spec.dilation_w]
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(n, oh * ow, c * spec.kernel_h * spec.kernel_w)


def reference(spec: ConvSpec, inputs, blobs) -> list:
    x = inputs[0]
    n, c, h, w = x.shape
    _, _, oh, ow = shape(spec, [x.shape])[0]
    weights = blobs[0]
    group_in, group_out = c // spec.group, spec.num_output // spec.group
    out = np.empty((n, spec.num_output, oh * ow), dtype=np.float32)
    pointwise = (spec.kernel_h == spec.kernel_w == 1 and spec.stride_h == spec.stride_w == 1
                 and spec.pad_h == spec.pad_w == 0)
    for g in range(spec.group):
        xg = x[:, g * group_in:(g + 1) * group_in]
        wg = weights[g * group_out:(g + 1) * group_out].reshape(group_out, -1)
        if pointwise:  # a 1x1 convolution is a plain matrix product, no patches needed
            out[:, g * group_out:(g + 1) * group_out] = np.matmul(wg, xg.reshape(n, group_in, h * w))
        else:
            # One GEMM over every image's patches: numpy's stacked matmul would run one smaller GEMM per
            # image, 2-3x slower for AlexNet conv1/conv2 at batch 10.
            products = im2col(xg, spec, oh, ow).reshape(n * oh * ow, -1) @ wg.T
            out[:, g * group_out:(g + 1) * group_out] = products.reshape(n, oh * ow, group_out).transpose(0, 2, 1)
    if spec.bias_term:
        out += blobs[1].reshape(1, -1, 1)
    return [out.reshape(n, spec.num_output, oh, ow)]


register("Convolution", LayerKind(parse=parse, shape=shape, reference=reference, blob_shapes=blob_shapes,
                                  fillers=fillers, macs=macs))

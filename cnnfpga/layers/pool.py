"""Pooling: Caffe's shape rule (rounds up, drops a last window starting in the padding), MAX and AVE."""
from dataclasses import dataclass
import math

import numpy as np

from . import LayerKind, bad, four_d, positive, register


@dataclass(frozen=True)
class PoolSpec:
    method: str  # "MAX" | "AVE"
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    global_pooling: bool
    round_mode: str  # "CEIL" | "FLOOR"


def parse(param, in_shapes) -> PoolSpec:
    p = param.pooling_param
    four_d(in_shapes, "Pooling")
    method = p.PoolMethod.Name(p.pool)
    if method not in ("MAX", "AVE"):
        bad(f"pooling method {method} is not supported at inference (use MAX or AVE)")
    round_mode = p.RoundMode.Name(p.round_mode)
    if p.global_pooling:
        if p.HasField("kernel_size") or p.HasField("kernel_h"):
            bad("global_pooling takes no kernel size")
        _, _, h, w = in_shapes[0]
        return PoolSpec(method, h, w, 1, 1, 0, 0, True, round_mode)
    if p.HasField("kernel_h") != p.HasField("kernel_w"):
        bad("kernel_h and kernel_w must be given together")
    if p.HasField("kernel_h") and p.HasField("kernel_size"):
        bad("give either kernel_size or kernel_h/kernel_w, not both")
    if not (p.HasField("kernel_h") or p.HasField("kernel_size")):
        bad("pooling needs kernel_size (or kernel_h and kernel_w, or global_pooling)")
    kh, kw = (p.kernel_h, p.kernel_w) if p.HasField("kernel_h") else (p.kernel_size, p.kernel_size)
    sh, sw = (p.stride_h, p.stride_w) if p.HasField("stride_h") else (p.stride, p.stride)
    ph, pw = (p.pad_h, p.pad_w) if p.HasField("pad_h") else (p.pad, p.pad)
    spec = PoolSpec(method, positive("kernel height", kh), positive("kernel width", kw),
                    positive("stride height", sh), positive("stride width", sw), ph, pw, False, round_mode)
    if ph >= kh or pw >= kw:
        bad(f"pad ({ph}x{pw}) must be smaller than the kernel ({kh}x{kw})")
    return spec


def output_size(size: int, kernel: int, stride: int, pad: int, round_mode: str = "CEIL") -> int:
    rounding = math.ceil if round_mode == "CEIL" else math.floor
    out = int(rounding((size + 2 * pad - kernel) / stride)) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1  # Caffe drops a last window that would start inside the padding
    return out


def shape(spec: PoolSpec, in_shapes) -> list:
    n, c, h, w = in_shapes[0]
    oh = output_size(h, spec.kernel_h, spec.stride_h, spec.pad_h, spec.round_mode)
    ow = output_size(w, spec.kernel_w, spec.stride_w, spec.pad_w, spec.round_mode)
    if oh <= 0 or ow <= 0:
        bad(f"a {spec.kernel_h}x{spec.kernel_w} pooling window does not fit the {h}x{w} input")
    return [(n, c, oh, ow)]


def average_divisors(size: int, kernel: int, stride: int, pad: int, out: int) -> np.ndarray:
    """Caffe's AVE divisor per output position: the window clipped to the padded input (padding counts)."""
    start = np.arange(out) * stride - pad
    end = np.minimum(start + kernel, size + pad)
    return (end - start).astype(np.float32)


def reference(spec: PoolSpec, inputs, blobs) -> list:
    x = inputs[0]
    n, c, h, w = x.shape
    _, _, oh, ow = shape(spec, [x.shape])[0]
    # pad far enough on the bottom/right for the last (rounded-up) window
    extra_h = max(0, (oh - 1) * spec.stride_h + spec.kernel_h - h - spec.pad_h)
    extra_w = max(0, (ow - 1) * spec.stride_w + spec.kernel_w - w - spec.pad_w)
    fill = -np.inf if spec.method == "MAX" else 0.0
    padded = np.pad(x, ((0, 0), (0, 0), (spec.pad_h, extra_h), (spec.pad_w, extra_w)), constant_values=fill)
    # One strided slice per kernel offset, combined element-wise: a reduction over a sliding-window view's
    # last two axes is about 20x slower (AlexNet pool1, batch 10: 77 ms against 4 ms).
    out = None
    for ky in range(spec.kernel_h):
        for kx in range(spec.kernel_w):
            part = padded[:, :, ky:ky + (oh - 1) * spec.stride_h + 1:spec.stride_h,
                          kx:kx + (ow - 1) * spec.stride_w + 1:spec.stride_w]
            if out is None:
                out = part.astype(np.float32)  # a copy, so the in-place updates below never touch x
            elif spec.method == "MAX":
                np.maximum(out, part, out=out)
            else:
                np.add(out, part, out=out)
    if spec.method == "MAX":
        return [out]
    divisor = np.outer(average_divisors(h, spec.kernel_h, spec.stride_h, spec.pad_h, oh),
                       average_divisors(w, spec.kernel_w, spec.stride_w, spec.pad_w, ow))
    return [out / divisor]


register("Pooling", LayerKind(parse=parse, shape=shape, reference=reference))

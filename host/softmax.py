"""Softmax on the host, numerically stable."""
import numpy as np


def softmax(x, axis: int = 1) -> np.ndarray:
    """exp(x - max) / sum(exp(x - max)) along ``axis`` (Caffe's default: the channel axis).

    Subtracting the maximum keeps exp() <= 1, so large logits cannot overflow to inf/inf = NaN;
    the result is float32 like the rest of the net.
    """
    x = np.asarray(x, dtype=np.float32)
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32, copy=False)

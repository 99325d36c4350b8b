"""Helpers for writing OpenCL C text: constants and function-like macros."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Function:
    """A function-like macro: `#define NAME(params) body`."""
    params: str
    body: str


def define(name: str, value) -> str:
    if isinstance(value, Function):
        return f"#define {name}({value.params}) {value.body}"
    return f"#define {name} {value}"


def c_float(value: float) -> str:
    """A float32 constant as an OpenCL C literal that reads back to the same float32."""
    text = repr(float(np.float32(value)))
    if "e" not in text and "." not in text:
        text += ".0"
    return f"({text}f)"


def inverse_power(beta: float) -> str:
    """OpenCL C for b^-beta (b >= 1 in LRN), as a macro body of (b).  Square roots and a division are
    correctly rounded on CPUs and several times faster on PoCL than pow or exp2(log2(.)), so the
    common betas get them; others take exp2(-beta * log2(b)), which keeps a few-ulp accuracy
    because |beta * log2(b)| stays small."""
    forms = {0.75: "(1.0f / (sqrt(b) * sqrt(sqrt(b))))", 0.5: "(1.0f / sqrt(b))", 1.0: "(1.0f / (b))"}
    return Function("b", forms.get(float(np.float32(beta)), "exp2(log2(b) * -LRN_BETA)"))

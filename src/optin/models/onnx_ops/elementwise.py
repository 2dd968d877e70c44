"""Elementwise operators: comparisons and logic, arithmetic (numpy-style broadcasting, integer
Div truncating, Mod by the ``fmod`` attribute), unary maths, variadic Min/Max/Sum/Mean, Clip, and
the activations, Softmax and LogSoftmax included (coerced to 2-D before opset 13).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from optin.models.onnx_ops.core import Node, OpFn, Value, axis_index, binary, scalar, unary


def _is_float(t: Tensor) -> bool:
    return t.is_floating_point()


def _div(node: Node, ins: list[Value]) -> Tensor:
    a, b = ins
    if not _is_float(a):
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


def _mod(node: Node, ins: list[Value]) -> Tensor:
    a, b = ins
    return torch.fmod(a, b) if node.attrs.get("fmod", 0) else torch.remainder(a, b)


def _pow(node: Node, ins: list[Value]) -> Tensor:
    a, b = ins
    if _is_float(a):
        return torch.pow(a, b.to(a.dtype))
    return torch.pow(a, b).to(a.dtype)


def _variadic(fn: Callable[[Tensor, Tensor], Tensor]) -> OpFn:
    return lambda node, ins: functools.reduce(fn, [x for x in ins if x is not None])


def _mean(node: Node, ins: list[Value]) -> Tensor:
    xs = [x for x in ins if x is not None]
    return functools.reduce(torch.add, xs) / len(xs)


def _clip(node: Node, ins: list[Value]) -> Tensor:
    x = ins[0]
    lo = node.attrs.get("min") if "min" in node.attrs else None
    hi = node.attrs.get("max") if "max" in node.attrs else None
    if len(ins) > 1 and ins[1] is not None:
        lo = scalar(ins[1])
    if len(ins) > 2 and ins[2] is not None:
        hi = scalar(ins[2])
    if lo is None and hi is None:
        return x
    return torch.clamp(x, min=lo, max=hi)


def _hard_sigmoid(alpha: float, beta: float, x: Tensor) -> Tensor:
    return torch.clamp(alpha * x + beta, 0.0, 1.0)


def _gelu(node: Node, ins: list[Value]) -> Tensor:
    return F.gelu(ins[0], approximate=node.attrs.get("approximate", "none"))


def _softmax_like(fn: Callable[..., Tensor]) -> OpFn:
    def run(node: Node, ins: list[Value]) -> Tensor:
        x = ins[0]
        if node.opset >= 13:
            return fn(x, dim=node.attrs.get("axis", -1))
        axis = axis_index(node.attrs.get("axis", 1), x.dim())  # coerced to 2-D before opset 13
        flat = x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))
        return fn(flat, dim=1).reshape(x.shape)

    return run


def _prelu(node: Node, ins: list[Value]) -> Tensor:
    x, slope = ins
    return torch.where(x < 0, x * slope, x)


def _elu(node: Node, ins: list[Value]) -> Tensor:
    return F.elu(ins[0], alpha=node.attrs.get("alpha", 1.0))


def _selu(node: Node, ins: list[Value]) -> Tensor:
    alpha = node.attrs.get("alpha", 1.67326319217681884765625)
    gamma = node.attrs.get("gamma", 1.05070102214813232421875)
    x = ins[0]
    return gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


ELEMENTWISE_OPS: dict[str, OpFn] = {
    "Equal": binary(torch.eq),
    "Less": binary(torch.lt),
    "Greater": binary(torch.gt),
    "LessOrEqual": binary(torch.le),
    "GreaterOrEqual": binary(torch.ge),
    "Not": unary(torch.logical_not),
    "And": binary(torch.logical_and),
    "Or": binary(torch.logical_or),
    "Xor": binary(torch.logical_xor),
    "Add": binary(torch.add),
    "Sub": binary(torch.sub),
    "Mul": binary(torch.mul),
    "Div": _div,
    "Mod": _mod,
    "Pow": _pow,
    "Neg": unary(torch.neg),
    "Abs": unary(torch.abs),
    "Sign": unary(torch.sign),
    "Sqrt": unary(torch.sqrt),
    "Exp": unary(torch.exp),
    "Log": unary(torch.log),
    "Reciprocal": unary(torch.reciprocal),
    "Sin": unary(torch.sin),
    "Cos": unary(torch.cos),
    "Floor": unary(torch.floor),
    "Ceil": unary(torch.ceil),
    "Round": unary(torch.round),
    "Erf": unary(torch.erf),
    "Min": _variadic(torch.minimum),
    "Max": _variadic(torch.maximum),
    "Sum": _variadic(torch.add),
    "Mean": _mean,
    "Clip": _clip,
    "Relu": unary(torch.relu),
    "LeakyRelu": lambda n, i: F.leaky_relu(i[0], n.attrs.get("alpha", 0.01)),
    "PRelu": _prelu,
    "Elu": _elu,
    "Selu": _selu,
    "Sigmoid": unary(torch.sigmoid),
    "HardSigmoid": lambda n, i: _hard_sigmoid(n.attrs.get("alpha", 0.2),
                                              n.attrs.get("beta", 0.5), i[0]),
    "HardSwish": lambda n, i: i[0] * _hard_sigmoid(1 / 6, 0.5, i[0]),
    "Tanh": unary(torch.tanh),
    "Softplus": unary(F.softplus),
    "Softsign": unary(F.softsign),
    "Gelu": _gelu,
    "Softmax": _softmax_like(torch.softmax),
    "LogSoftmax": _softmax_like(torch.log_softmax),
}

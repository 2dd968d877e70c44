"""Reduction operators: ReduceMean/Sum/Max/Min/Prod/L1/L2/SumSquare/LogSumExp (axes as an
attribute or an input, ``keepdims``, ``noop_with_empty_axes``), ArgMax and ArgMin.
"""

from __future__ import annotations

import torch
from torch import Tensor

from optin.models.onnx_ops.core import Node, OpFn, Value, axes_of, axis_index


def _reduce(kind: str) -> OpFn:
    def run(node: Node, ins: list[Value]) -> Tensor:
        x = ins[0]
        axes = axes_of(node, ins, 1)
        keep = bool(node.attrs.get("keepdims", 1))
        if not axes:
            if node.attrs.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        dims = tuple(axis_index(a, x.dim()) for a in axes)
        if kind == "mean":
            return x.mean(dim=dims, keepdim=keep)
        if kind == "sum":
            return x.sum(dim=dims, keepdim=keep)
        if kind == "max":
            return x.amax(dim=dims, keepdim=keep)
        if kind == "min":
            return x.amin(dim=dims, keepdim=keep)
        if kind == "l1":
            return x.abs().sum(dim=dims, keepdim=keep)
        if kind == "l2":
            return x.square().sum(dim=dims, keepdim=keep).sqrt()
        if kind == "sumsquare":
            return x.square().sum(dim=dims, keepdim=keep)
        if kind == "logsumexp":
            return torch.logsumexp(x, dim=dims, keepdim=keep)
        for d in sorted(dims, reverse=True):  # prod
            x = x.prod(dim=d, keepdim=keep)
        return x

    return run


def _arg(largest: bool) -> OpFn:
    def run(node: Node, ins: list[Value]) -> Tensor:
        x = ins[0]
        axis = axis_index(node.attrs.get("axis", 0), x.dim())
        keep = bool(node.attrs.get("keepdims", 1))
        fn = torch.argmax if largest else torch.argmin
        if node.attrs.get("select_last_index", 0):
            idx = x.shape[axis] - 1 - fn(x.flip(axis), dim=axis, keepdim=keep)
        else:
            idx = fn(x, dim=axis, keepdim=keep)
        return idx

    return run


REDUCTION_OPS: dict[str, OpFn] = {
    "ReduceMean": _reduce("mean"),
    "ReduceSum": _reduce("sum"),
    "ReduceMax": _reduce("max"),
    "ReduceMin": _reduce("min"),
    "ReduceProd": _reduce("prod"),
    "ReduceL1": _reduce("l1"),
    "ReduceL2": _reduce("l2"),
    "ReduceSumSquare": _reduce("sumsquare"),
    "ReduceLogSumExp": _reduce("logsumexp"),
    "ArgMax": _arg(True),
    "ArgMin": _arg(False),
}

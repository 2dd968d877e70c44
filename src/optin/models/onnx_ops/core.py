"""What every ONNX operator family shares: the decoded graph (:class:`Node`, :class:`Graph`),
the error, ONNX dtypes as torch dtypes, and small helpers for static attribute/input values.

An op is an :data:`OpFn`: ``(node, inputs) -> output(s)``, inputs in the node's order (``None``
for an omitted optional input).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx
import torch
from onnx import numpy_helper
from torch import Tensor

Value = Tensor | None
OpFn = Callable[["Node", list[Value]], "Tensor | Sequence[Tensor]"]

ONNX_DOMAINS = ("", "ai.onnx")
MIN_OPSET = 7


class UnsupportedOnnxModel(ValueError):
    """The ONNX model uses an op, a type or a feature outside
    :data:`optin.models.onnx_ops.SUPPORTED_OPS`."""


@dataclass
class Node:
    """One ONNX node, its attributes decoded; ``branches`` holds an If's (then, else)."""

    op_type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    opset: int
    branches: tuple[Graph, Graph] | None = None


@dataclass
class Graph:
    """A (sub)graph: nodes in topological order and the names of its outputs."""

    nodes: list[Node] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- dtypes and helpers
DTYPES: dict[int, torch.dtype] = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.BFLOAT16: torch.bfloat16,
    onnx.TensorProto.INT8: torch.int8,
    onnx.TensorProto.UINT8: torch.uint8,
    onnx.TensorProto.INT16: torch.int16,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.BOOL: torch.bool,
}


def to_tensor(proto: onnx.TensorProto) -> Tensor:
    """An ONNX tensor as a torch tensor of the matching dtype (a copy)."""
    if proto.data_type not in DTYPES:
        raise UnsupportedOnnxModel(f"tensor {proto.name!r}: unsupported dtype {proto.data_type}")
    return torch.from_numpy(numpy_helper.to_array(proto).copy()).to(DTYPES[proto.data_type])


def ints(t: Value) -> list[int]:
    """A 0-D/1-D integer tensor as python ints (static values for shapes, axes, pads)."""
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def scalar(t: Tensor) -> float | int | bool:
    """The first value of a tensor as a python number."""
    return t.reshape(-1)[0].item()


def axis_index(a: int, rank: int) -> int:
    """An ONNX axis (negative counts from the end) as an index in ``range(rank)``."""
    return a + rank if a < 0 else a


def axes_of(node: Node, ins: list[Value], pos: int) -> list[int] | None:
    """Axes from the ``axes`` attribute (old opsets) or the input at ``pos`` (new ones)."""
    if "axes" in node.attrs:
        return list(node.attrs["axes"])
    if len(ins) > pos and ins[pos] is not None:
        return ints(ins[pos])
    return None


def binary(fn: Callable[[Tensor, Tensor], Tensor]) -> OpFn:
    """An op of the node's first two inputs, ``fn(a, b)``."""
    return lambda node, ins: fn(ins[0], ins[1])


def unary(fn: Callable[[Tensor], Tensor]) -> OpFn:
    """An op of the node's first input, ``fn(x)``."""
    return lambda node, ins: fn(ins[0])

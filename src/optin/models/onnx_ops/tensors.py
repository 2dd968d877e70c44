"""Tensor and shape operators: constants, Shape/Size/Cast, indexing (Gather, Slice, Split),
reshaping (Reshape, Flatten, (Un)Squeeze, Transpose, Concat, Expand, Tile), Range, Where,
Einsum. Shapes, axes and indices given as tensors are read as static python ints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from optin.models.onnx_ops.core import (
    DTYPES,
    Node,
    OpFn,
    UnsupportedOnnxModel,
    Value,
    axes_of,
    axis_index,
    ints,
    scalar,
    unary,
)


def _constant(node: Node, ins: list[Value]) -> Tensor:
    return node.attrs["_value"]


def constant_value(node: Node) -> Tensor:
    """The tensor a Constant node holds (any of its value attributes)."""
    a = node.attrs
    if "value" in a:
        return a["value"]
    if "value_float" in a:
        return torch.tensor(a["value_float"], dtype=torch.float32)
    if "value_floats" in a:
        return torch.tensor(list(a["value_floats"]), dtype=torch.float32)
    if "value_int" in a:
        return torch.tensor(a["value_int"], dtype=torch.int64)
    if "value_ints" in a:
        return torch.tensor(list(a["value_ints"]), dtype=torch.int64)
    raise UnsupportedOnnxModel(f"Constant node {node.name!r}: unsupported value attribute")


def _constant_of_shape(node: Node, ins: list[Value]) -> Tensor:
    value = node.attrs.get("value", torch.zeros(1))
    shape = ints(ins[0])
    device = ins[0].device
    return torch.full(shape, scalar(value), dtype=value.dtype, device=device)


def _shape(node: Node, ins: list[Value]) -> Tensor:
    dims = list(ins[0].shape)
    start, end = node.attrs.get("start", 0), node.attrs.get("end", None)
    return torch.tensor(dims[start:end], dtype=torch.int64, device=ins[0].device)


def _size(node: Node, ins: list[Value]) -> Tensor:
    return torch.tensor(ins[0].numel(), dtype=torch.int64, device=ins[0].device)


def _cast(node: Node, ins: list[Value]) -> Tensor:
    to = node.attrs["to"]
    if to not in DTYPES:
        raise UnsupportedOnnxModel(f"Cast node {node.name!r}: unsupported target dtype {to}")
    return ins[0].to(DTYPES[to])


def _cast_like(node: Node, ins: list[Value]) -> Tensor:
    return ins[0].to(ins[1].dtype)


def _norm_index(idx: Tensor, n: int) -> Tensor:
    idx = idx.long()
    return torch.where(idx < 0, idx + n, idx)


def _gather(node: Node, ins: list[Value]) -> Tensor:
    data, idx = ins[0], ins[1]
    axis = axis_index(node.attrs.get("axis", 0), data.dim())
    idx = _norm_index(idx, data.shape[axis])
    out = data.index_select(axis, idx.reshape(-1))
    return out.reshape((*data.shape[:axis], *idx.shape, *data.shape[axis + 1 :]))


def _gather_elements(node: Node, ins: list[Value]) -> Tensor:
    data, idx = ins[0], ins[1]
    axis = axis_index(node.attrs.get("axis", 0), data.dim())
    return torch.gather(data, axis, _norm_index(idx, data.shape[axis]))


def _unsqueeze(node: Node, ins: list[Value]) -> Tensor:
    x = ins[0]
    axes = axes_of(node, ins, 1) or []
    rank = x.dim() + len(axes)
    for a in sorted(axis_index(a, rank) for a in axes):
        x = x.unsqueeze(a)
    return x


def _squeeze(node: Node, ins: list[Value]) -> Tensor:
    x = ins[0]
    axes = axes_of(node, ins, 1)
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(axis_index(a, x.dim()) for a in axes)) if axes else x


def _reshape(node: Node, ins: list[Value]) -> Tensor:
    x, shape = ins[0], ints(ins[1]) if len(ins) > 1 else list(node.attrs["shape"])
    if not node.attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _flatten(node: Node, ins: list[Value]) -> Tensor:
    x = ins[0]
    axis = axis_index(node.attrs.get("axis", 1), x.dim())
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def _transpose(node: Node, ins: list[Value]) -> Tensor:
    x = ins[0]
    perm = node.attrs.get("perm") or list(range(x.dim()))[::-1]
    return x.permute(*perm)


def _concat(node: Node, ins: list[Value]) -> Tensor:
    xs = [x for x in ins if x is not None]
    return torch.cat(xs, dim=node.attrs["axis"])


def _split(node: Node, ins: list[Value]) -> Sequence[Tensor]:
    x = ins[0]
    axis = axis_index(node.attrs.get("axis", 0), x.dim())
    n = x.shape[axis]
    if "split" in node.attrs:
        sizes = list(node.attrs["split"])
    elif len(ins) > 1 and ins[1] is not None:
        sizes = ints(ins[1])
    else:
        k = node.attrs.get("num_outputs", len(node.outputs))
        step = -(-n // k)
        sizes = [min(step, n - i * step) for i in range(k)]
    return torch.split(x, sizes, dim=axis)


def _slice(node: Node, ins: list[Value]) -> Tensor:
    x = ins[0]
    if "starts" in node.attrs:  # opset < 10
        starts, ends = list(node.attrs["starts"]), list(node.attrs["ends"])
        axes, steps = node.attrs.get("axes"), None
    else:
        starts, ends = ints(ins[1]), ints(ins[2])
        axes = ints(ins[3]) if len(ins) > 3 and ins[3] is not None else None
        steps = ints(ins[4]) if len(ins) > 4 and ins[4] is not None else None
    axes = list(range(len(starts))) if axes is None else list(axes)
    steps = steps or [1] * len(starts)
    for start, end, a, step in zip(starts, ends, axes, steps, strict=True):
        a = axis_index(a, x.dim())
        lo, hi, st = slice(start, end, step).indices(x.shape[a])
        if st == 1:
            x = x.narrow(a, lo, max(0, hi - lo))
        else:
            x = x.index_select(a, torch.arange(lo, hi, st, device=x.device))
    return x


def _expand(node: Node, ins: list[Value]) -> Tensor:
    x = ins[0]
    return x.expand(torch.broadcast_shapes(x.shape, tuple(ints(ins[1]))))


def _tile(node: Node, ins: list[Value]) -> Tensor:
    return ins[0].repeat(*ints(ins[1]))


def _range(node: Node, ins: list[Value]) -> Tensor:
    start, limit, delta = ins
    return torch.arange(scalar(start), scalar(limit), scalar(delta), dtype=start.dtype,
                        device=start.device)


def _where(node: Node, ins: list[Value]) -> Tensor:
    return torch.where(ins[0].bool(), ins[1], ins[2])


def _einsum(node: Node, ins: list[Value]) -> Tensor:
    return torch.einsum(node.attrs["equation"], *ins)


TENSOR_OPS: dict[str, OpFn] = {
    "Identity": unary(lambda x: x),
    "Constant": _constant,
    "ConstantOfShape": _constant_of_shape,
    "Shape": _shape,
    "Size": _size,
    "Cast": _cast,
    "CastLike": _cast_like,
    "Gather": _gather,
    "GatherElements": _gather_elements,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": _transpose,
    "Concat": _concat,
    "Split": _split,
    "Slice": _slice,
    "Expand": _expand,
    "Tile": _tile,
    "Range": _range,
    "Where": _where,
    "Einsum": _einsum,
}

"""The operators :class:`optin.models.onnx_graph.OnnxGraphModule` runs: one torch function per
ONNX op type (:data:`OPS`), each ``(node, inputs) -> output(s)``, with ONNX semantics
(broadcasting, attribute defaults by opset). The supported set and its limits are described in
:mod:`optin.models.onnx_graph`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import Tensor

Value = Tensor | None
OpFn = Callable[["Node", list[Value]], "Tensor | Sequence[Tensor]"]

ONNX_DOMAINS = ("", "ai.onnx")
MIN_OPSET = 7


class UnsupportedOnnxModel(ValueError):
    """The ONNX model uses an op, a type or a feature outside :data:`SUPPORTED_OPS`."""


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
_DTYPES: dict[int, torch.dtype] = {
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
    if proto.data_type not in _DTYPES:
        raise UnsupportedOnnxModel(f"tensor {proto.name!r}: unsupported dtype {proto.data_type}")
    return torch.from_numpy(numpy_helper.to_array(proto).copy()).to(_DTYPES[proto.data_type])


def _ints(t: Value) -> list[int]:
    """A 0-D/1-D integer tensor as python ints (static values for shapes, axes, pads)."""
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _scalar(t: Tensor) -> float | int | bool:
    return t.reshape(-1)[0].item()


def _axis(a: int, rank: int) -> int:
    return a + rank if a < 0 else a


def _axes_of(node: Node, ins: list[Value], pos: int) -> list[int] | None:
    """Axes from the ``axes`` attribute (old opsets) or the input at ``pos`` (new ones)."""
    if "axes" in node.attrs:
        return list(node.attrs["axes"])
    if len(ins) > pos and ins[pos] is not None:
        return _ints(ins[pos])
    return None


def _is_float(t: Tensor) -> bool:
    return t.is_floating_point()


# --------------------------------------------------------------------------- tensor / shape ops
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
    shape = _ints(ins[0])
    device = ins[0].device
    return torch.full(shape, _scalar(value), dtype=value.dtype, device=device)


def _shape(node: Node, ins: list[Value]) -> Tensor:
    dims = list(ins[0].shape)
    start, end = node.attrs.get("start", 0), node.attrs.get("end", None)
    return torch.tensor(dims[start:end], dtype=torch.int64, device=ins[0].device)


def _size(node: Node, ins: list[Value]) -> Tensor:
    return torch.tensor(ins[0].numel(), dtype=torch.int64, device=ins[0].device)


def _cast(node: Node, ins: list[Value]) -> Tensor:
    to = node.attrs["to"]
    if to not in _DTYPES:
        raise UnsupportedOnnxModel(f"Cast node {node.name!r}: unsupported target dtype {to}")
    return ins[0].to(_DTYPES[to])


def _cast_like(node: Node, ins: list[Value]) -> Tensor:
    return ins[0].to(ins[1].dtype)


def _norm_index(idx: Tensor, n: int) -> Tensor:
    idx = idx.long()
    return torch.where(idx < 0, idx + n, idx)


def _gather(node: Node, ins: list[Value]) -> Tensor:
    data, idx = ins[0], ins[1]
    axis = _axis(node.attrs.get("axis", 0), data.dim())
    idx = _norm_index(idx, data.shape[axis])
    out = data.index_select(axis, idx.reshape(-1))
    return out.reshape((*data.shape[:axis], *idx.shape, *data.shape[axis + 1 :]))


def _gather_elements(node: Node, ins: list[Value]) -> Tensor:
    data, idx = ins[0], ins[1]
    axis = _axis(node.attrs.get("axis", 0), data.dim())
    return torch.gather(data, axis, _norm_index(idx, data.shape[axis]))


def _unsqueeze(node: Node, ins: list[Value]) -> Tensor:
    x = ins[0]
    axes = _axes_of(node, ins, 1) or []
    rank = x.dim() + len(axes)
    for a in sorted(_axis(a, rank) for a in axes):
        x = x.unsqueeze(a)
    return x


def _squeeze(node: Node, ins: list[Value]) -> Tensor:
    x = ins[0]
    axes = _axes_of(node, ins, 1)
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(_axis(a, x.dim()) for a in axes)) if axes else x


def _reshape(node: Node, ins: list[Value]) -> Tensor:
    x, shape = ins[0], _ints(ins[1]) if len(ins) > 1 else list(node.attrs["shape"])
    if not node.attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _flatten(node: Node, ins: list[Value]) -> Tensor:
    x = ins[0]
    axis = _axis(node.attrs.get("axis", 1), x.dim())
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
    axis = _axis(node.attrs.get("axis", 0), x.dim())
    n = x.shape[axis]
    if "split" in node.attrs:
        sizes = list(node.attrs["split"])
    elif len(ins) > 1 and ins[1] is not None:
        sizes = _ints(ins[1])
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
        starts, ends = _ints(ins[1]), _ints(ins[2])
        axes = _ints(ins[3]) if len(ins) > 3 and ins[3] is not None else None
        steps = _ints(ins[4]) if len(ins) > 4 and ins[4] is not None else None
    axes = list(range(len(starts))) if axes is None else list(axes)
    steps = steps or [1] * len(starts)
    for start, end, a, step in zip(starts, ends, axes, steps, strict=True):
        a = _axis(a, x.dim())
        lo, hi, st = slice(start, end, step).indices(x.shape[a])
        if st == 1:
            x = x.narrow(a, lo, max(0, hi - lo))
        else:
            x = x.index_select(a, torch.arange(lo, hi, st, device=x.device))
    return x


def _expand(node: Node, ins: list[Value]) -> Tensor:
    x = ins[0]
    return x.expand(torch.broadcast_shapes(x.shape, tuple(_ints(ins[1]))))


def _tile(node: Node, ins: list[Value]) -> Tensor:
    return ins[0].repeat(*_ints(ins[1]))


def _range(node: Node, ins: list[Value]) -> Tensor:
    start, limit, delta = ins
    return torch.arange(_scalar(start), _scalar(limit), _scalar(delta), dtype=start.dtype,
                        device=start.device)


def _where(node: Node, ins: list[Value]) -> Tensor:
    return torch.where(ins[0].bool(), ins[1], ins[2])


def _einsum(node: Node, ins: list[Value]) -> Tensor:
    return torch.einsum(node.attrs["equation"], *ins)


# --------------------------------------------------------------------------- elementwise
def _binary(fn: Callable[[Tensor, Tensor], Tensor]) -> OpFn:
    return lambda node, ins: fn(ins[0], ins[1])


def _unary(fn: Callable[[Tensor], Tensor]) -> OpFn:
    return lambda node, ins: fn(ins[0])


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
        lo = _scalar(ins[1])
    if len(ins) > 2 and ins[2] is not None:
        hi = _scalar(ins[2])
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
        axis = _axis(node.attrs.get("axis", 1), x.dim())  # coerced to 2-D before opset 13
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


# --------------------------------------------------------------------------- linear / conv / pool
def _gemm(node: Node, ins: list[Value]) -> Tensor:
    a, b = ins[0], ins[1]
    c = ins[2] if len(ins) > 2 else None
    if node.attrs.get("transA", 0):
        a = a.t()
    if node.attrs.get("transB", 0):
        b = b.t()
    y = node.attrs.get("alpha", 1.0) * (a @ b)
    if c is not None:
        y = y + node.attrs.get("beta", 1.0) * c
    return y


def _same_pads(sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
               dilations: Sequence[int], upper: bool) -> list[int]:
    """ONNX ``pads`` (all begins, then all ends) for auto_pad SAME_UPPER / SAME_LOWER."""
    begins, ends = [], []
    for n, k, s, d in zip(sizes, kernel, strides, dilations, strict=True):
        out = -(-n // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - n)
        small, big = total // 2, total - total // 2
        begins.append(small if upper else big)
        ends.append(big if upper else small)
    return begins + ends


def _spatial_pads(node: Node, x: Tensor, kernel: Sequence[int], strides: Sequence[int],
                  dilations: Sequence[int]) -> list[int]:
    nd = len(kernel)
    auto = node.attrs.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads(x.shape[2:], kernel, strides, dilations, auto == "SAME_UPPER")
    if auto == "VALID":
        return [0] * (2 * nd)
    return list(node.attrs.get("pads", [0] * (2 * nd)))


def _torch_pad(pads: Sequence[int]) -> list[int]:
    """ONNX spatial pads ``[b1, b2, .., e1, e2, ..]`` as ``F.pad``'s (last dim first) list."""
    nd = len(pads) // 2
    out: list[int] = []
    for i in reversed(range(nd)):
        out += [pads[i], pads[nd + i]]
    return out


def _conv_fn(nd: int, transpose: bool = False) -> Callable[..., Tensor]:
    if transpose:
        return {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]
    return {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]


def _conv_geometry(node: Node, ins: list[Value]
                   ) -> tuple[Tensor, Tensor, Value, int, list[int], list[int], list[int]]:
    """x, w, bias, spatial dims, kernel, strides, dilations of a Conv or ConvTranspose."""
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    nd = w.dim() - 2
    kernel = list(node.attrs.get("kernel_shape") or w.shape[2:])
    strides = list(node.attrs.get("strides", [1] * nd))
    dilations = list(node.attrs.get("dilations", [1] * nd))
    return x, w, b, nd, kernel, strides, dilations


def _conv(node: Node, ins: list[Value]) -> Tensor:
    x, w, b, nd, kernel, strides, dilations = _conv_geometry(node, ins)
    pads = _spatial_pads(node, x, kernel, strides, dilations)
    if pads[:nd] == pads[nd:]:
        padding = pads[:nd]
    else:
        x, padding = F.pad(x, _torch_pad(pads)), [0] * nd
    return _conv_fn(nd)(x, w, b, stride=strides, padding=padding, dilation=dilations,
                        groups=node.attrs.get("group", 1))


def _conv_transpose(node: Node, ins: list[Value]) -> Tensor:
    x, w, b, nd, kernel, strides, dilations = _conv_geometry(node, ins)
    out_pad = list(node.attrs.get("output_padding", [0] * nd))
    y = _conv_fn(nd, transpose=True)(x, w, None, stride=strides, dilation=dilations,
                                     groups=node.attrs.get("group", 1))
    full = [s * (n - 1) + op + (k - 1) * d + 1 for n, s, op, k, d in
            zip(x.shape[2:], strides, out_pad, kernel, dilations, strict=True)]
    auto = node.attrs.get("auto_pad", "NOTSET")
    if "output_shape" in node.attrs or auto in ("SAME_UPPER", "SAME_LOWER"):
        target = list(node.attrs.get("output_shape") or [n * s for n, s in
                                                          zip(x.shape[2:], strides, strict=True)])
        target = target[-nd:]
        totals = [f - t for f, t in zip(full, target, strict=True)]
        if auto == "SAME_UPPER":
            pads = [t // 2 for t in totals] + [t - t // 2 for t in totals]
        else:
            pads = [t - t // 2 for t in totals] + [t // 2 for t in totals]
    elif auto == "VALID":
        pads = [0] * (2 * nd)
    else:
        pads = list(node.attrs.get("pads", [0] * (2 * nd)))
    # output_padding extends the end (no contribution but the bias); pads crop both ends
    crop = _torch_pad([-p for p in pads[:nd]] + [op - p for op, p in
                                                 zip(out_pad, pads[nd:], strict=True)])
    y = F.pad(y, crop)
    if b is not None:
        y = y + b.reshape(1, -1, *([1] * nd))
    return y


def _pool_geometry(node: Node, x: Tensor) -> tuple[list[int], list[int], list[int], list[int]]:
    kernel = list(node.attrs["kernel_shape"])
    nd = len(kernel)
    strides = list(node.attrs.get("strides", [1] * nd))
    dilations = list(node.attrs.get("dilations", [1] * nd))
    return kernel, strides, dilations, _spatial_pads(node, x, kernel, strides, dilations)


def _pool_crop(y: Tensor, sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
               dilations: Sequence[int], pads: Sequence[int], ceil: bool) -> Tensor:
    """Drop ceil-mode windows that start in the end padding (ONNX / torch rule), after pooling
    an explicitly padded input (torch sees that padding as input)."""
    if not ceil:
        return y
    nd = len(kernel)
    for i in range(nd):
        span = sizes[i] + pads[i] + pads[nd + i] - ((kernel[i] - 1) * dilations[i] + 1)
        out = -(-span // strides[i]) + 1
        if (out - 1) * strides[i] >= sizes[i] + pads[i]:
            out -= 1
        y = y.narrow(2 + i, 0, min(out, y.shape[2 + i]))
    return y


def _max_pool(node: Node, ins: list[Value]) -> Tensor | tuple[Tensor, Tensor]:
    x = ins[0]
    kernel, strides, dilations, pads = _pool_geometry(node, x)
    nd = len(kernel)
    ceil = bool(node.attrs.get("ceil_mode", 0))
    if node.attrs.get("storage_order", 0):
        raise UnsupportedOnnxModel(f"MaxPool {node.name!r}: storage_order=1")
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
    want_idx = len(node.outputs) > 1 and node.outputs[1] != ""
    if any(pads):
        if want_idx:
            raise UnsupportedOnnxModel(f"MaxPool {node.name!r}: Indices with padding")
        sizes = x.shape[2:]
        y = fn(F.pad(x, _torch_pad(pads), value=-math.inf), kernel, strides, 0, dilations,
               ceil_mode=ceil)
        return _pool_crop(y, sizes, kernel, strides, dilations, pads, ceil)
    y = fn(x, kernel, strides, 0, dilations, ceil_mode=ceil, return_indices=want_idx)
    if not want_idx:
        return y
    y, idx = y
    plane = math.prod(x.shape[2:])
    base = torch.arange(x.shape[0] * x.shape[1], device=x.device).reshape(
        x.shape[0], x.shape[1], *([1] * nd)) * plane
    return y, idx + base


def _avg_pool(node: Node, ins: list[Value]) -> Tensor:
    x = ins[0]
    kernel, strides, dilations, pads = _pool_geometry(node, x)
    nd = len(kernel)
    if any(d != 1 for d in dilations):
        raise UnsupportedOnnxModel(f"AveragePool {node.name!r}: dilations")
    ceil = bool(node.attrs.get("ceil_mode", 0))
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
    if not any(pads):
        return fn(x, kernel, strides, 0, ceil_mode=ceil)
    # sum over the window divided by the count of the positions that count (mask trick)
    tp = _torch_pad(pads)
    include = float(node.attrs.get("count_include_pad", 0))
    ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
    num = fn(F.pad(x, tp), kernel, strides, 0, ceil_mode=ceil)
    den = fn(F.pad(ones, tp, value=include), kernel, strides, 0, ceil_mode=ceil)
    return _pool_crop(num / den, x.shape[2:], kernel, strides, dilations, pads, ceil)


def _global_avg_pool(node: Node, ins: list[Value]) -> Tensor:
    x = ins[0]
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


def _global_max_pool(node: Node, ins: list[Value]) -> Tensor:
    x = ins[0]
    return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


def _pad_indices(n: int, before: int, after: int, mode: str, device: torch.device) -> Tensor:
    idx = torch.arange(-before, n + after, device=device)
    if mode == "edge":
        return idx.clamp(0, n - 1)
    if mode == "wrap":
        return idx.remainder(n)
    period = 2 * (n - 1)  # reflect, without repeating the edge
    idx = idx.abs().remainder(period) if period > 0 else torch.zeros_like(idx)
    return torch.where(idx >= n, period - idx, idx)


def _pad(node: Node, ins: list[Value]) -> Tensor:
    x = ins[0]
    mode = node.attrs.get("mode", "constant")
    if "pads" in node.attrs:  # opset < 11
        pads, value = list(node.attrs["pads"]), node.attrs.get("value", 0.0)
        axes = list(range(x.dim()))
    else:
        pads = _ints(ins[1])
        value = _scalar(ins[2]) if len(ins) > 2 and ins[2] is not None and ins[2].numel() else 0
        axes = _ints(ins[3]) if len(ins) > 3 and ins[3] is not None else list(range(x.dim()))
    axes = [_axis(a, x.dim()) for a in axes]
    k = len(axes)
    full = [0] * (2 * x.dim())
    for i, a in enumerate(axes):
        full[a], full[x.dim() + a] = pads[i], pads[k + i]
    if mode == "constant":
        return F.pad(x, _torch_pad(full), value=value)
    if mode not in ("reflect", "edge", "wrap"):
        raise UnsupportedOnnxModel(f"Pad {node.name!r}: mode {mode!r}")
    nd = x.dim()
    for a in range(nd):
        b, e = full[a], full[nd + a]
        if b or e:
            x = x.index_select(a, _pad_indices(x.shape[a], b, e, mode, x.device))
    return x


# --------------------------------------------------------------------------- reductions
def _reduce(kind: str) -> OpFn:
    def run(node: Node, ins: list[Value]) -> Tensor:
        x = ins[0]
        axes = _axes_of(node, ins, 1)
        keep = bool(node.attrs.get("keepdims", 1))
        if not axes:
            if node.attrs.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        dims = tuple(_axis(a, x.dim()) for a in axes)
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
        axis = _axis(node.attrs.get("axis", 0), x.dim())
        keep = bool(node.attrs.get("keepdims", 1))
        fn = torch.argmax if largest else torch.argmin
        if node.attrs.get("select_last_index", 0):
            idx = x.shape[axis] - 1 - fn(x.flip(axis), dim=axis, keepdim=keep)
        else:
            idx = fn(x, dim=axis, keepdim=keep)
        return idx

    return run


# --------------------------------------------------------------------------- normalisation
def _batch_norm(node: Node, ins: list[Value]) -> Tensor:
    if node.attrs.get("training_mode", 0):
        raise UnsupportedOnnxModel(f"BatchNormalization {node.name!r}: training_mode=1")
    x, scale, bias, mean, var = ins[:5]
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, node.attrs.get("epsilon", 1e-5))


def _instance_norm(node: Node, ins: list[Value]) -> Tensor:
    x, scale, bias = ins
    return F.instance_norm(x, weight=scale, bias=bias, eps=node.attrs.get("epsilon", 1e-5))


def _layer_norm(node: Node, ins: list[Value]) -> Tensor | tuple[Tensor, ...]:
    x, scale = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    axis = _axis(node.attrs.get("axis", -1), x.dim())
    dims = tuple(range(axis, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = (x - mean).square().mean(dim=dims, keepdim=True)
    inv = torch.rsqrt(var + node.attrs.get("epsilon", 1e-5))
    y = (x - mean) * inv * scale
    if bias is not None:
        y = y + bias
    return (y, mean, inv) if len(node.outputs) > 1 else y


def _dropout(node: Node, ins: list[Value]) -> Tensor | tuple[Tensor, Tensor]:
    x = ins[0]
    if len(node.outputs) > 1:
        return x, torch.ones_like(x, dtype=torch.bool)
    return x


# --------------------------------------------------------------------------- recurrent
def _rnn_inputs(node: Node, ins: list[Value], gates: int
                ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, int, bool]:
    """X as (seq, batch, input), W, R, B, and the checks shared by LSTM and GRU."""
    x, w, r = ins[0], ins[1], ins[2]
    b = ins[3] if len(ins) > 3 else None
    seq_lens = ins[4] if len(ins) > 4 else None
    layout = node.attrs.get("layout", 0)
    if layout:
        x = x.transpose(0, 1)
    if seq_lens is not None and bool((seq_lens != x.shape[0]).any()):
        raise UnsupportedOnnxModel(f"{node.op_type} {node.name!r}: ragged sequence_lens")
    hidden = r.shape[-1]
    if b is None:
        b = torch.zeros(w.shape[0], 2 * gates * hidden, dtype=x.dtype, device=x.device)
    return x, w, r, b, hidden, bool(layout)


def _directions(node: Node) -> list[bool]:
    """One flag per direction: True when it runs backwards in time."""
    d = node.attrs.get("direction", "forward")
    return {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[d]


def _initial(ins: list[Value], pos: int, layout: bool, shape: tuple[int, ...],
             like: Tensor) -> Tensor:
    h = ins[pos] if len(ins) > pos else None
    if h is None:
        return like.new_zeros(shape)
    return h.transpose(0, 1) if layout else h


def _rnn_outputs(ys: list[Tensor], finals: list[list[Tensor]], layout: bool
                 ) -> tuple[Tensor, ...]:
    """Y (seq, num_dir, batch, hidden) and the final states (num_dir, batch, hidden)."""
    y = torch.stack(ys, dim=1)
    states = [torch.stack(f, dim=0) for f in finals]
    if layout:
        y = y.permute(2, 0, 1, 3)
        states = [s.transpose(0, 1) for s in states]
    return (y, *states)


def _lstm(node: Node, ins: list[Value]) -> tuple[Tensor, ...]:
    x, w, r, b, hid, layout = _rnn_inputs(node, ins, 4)
    seq, batch = x.shape[0], x.shape[1]
    clip = node.attrs.get("clip")
    p = ins[7] if len(ins) > 7 else None
    h0 = _initial(ins, 5, layout, (w.shape[0], batch, hid), x)
    c0 = _initial(ins, 6, layout, (w.shape[0], batch, hid), x)
    ys, hs, cs = [], [], []
    for d, backwards in enumerate(_directions(node)):
        xw = x @ w[d].t() + b[d, : 4 * hid] + b[d, 4 * hid :]  # (seq, batch, 4H)
        h, c = h0[d], c0[d]
        pi, po, pf = (p[d].chunk(3) if p is not None else (None, None, None))
        out: list[Tensor] = [x.new_empty(0)] * seq
        for t in (range(seq - 1, -1, -1) if backwards else range(seq)):
            g = xw[t] + h @ r[d].t()
            if clip is not None:
                g = g.clamp(-clip, clip)
            gi, go, gf, gc = g.chunk(4, dim=-1)
            if pi is not None:
                gi, gf = gi + pi * c, gf + pf * c
            c = torch.sigmoid(gf) * c + torch.sigmoid(gi) * torch.tanh(gc)
            if po is not None:
                go = go + po * c
            h = torch.sigmoid(go) * torch.tanh(c)
            out[t] = h
        ys.append(torch.stack(out) if seq else x.new_zeros(0, batch, hid))
        hs.append(h)
        cs.append(c)
    return _rnn_outputs(ys, [hs, cs], layout)


def _gru(node: Node, ins: list[Value]) -> tuple[Tensor, ...]:
    x, w, r, b, hid, layout = _rnn_inputs(node, ins, 3)
    seq, batch = x.shape[0], x.shape[1]
    clip = node.attrs.get("clip")
    before = bool(node.attrs.get("linear_before_reset", 0))
    h0 = _initial(ins, 5, layout, (w.shape[0], batch, hid), x)
    ys, hs = [], []
    for d, backwards in enumerate(_directions(node)):
        wb, rb = b[d, : 3 * hid], b[d, 3 * hid :]
        xw = x @ w[d].t() + wb  # (seq, batch, 3H)
        rz, rr, rh = r[d].chunk(3, dim=0)
        rbz, rbr, rbh = rb.chunk(3)
        h = h0[d]
        out: list[Tensor] = [x.new_empty(0)] * seq
        for t in (range(seq - 1, -1, -1) if backwards else range(seq)):
            xz, xr, xh = xw[t].chunk(3, dim=-1)
            gz = xz + h @ rz.t() + rbz
            gr = xr + h @ rr.t() + rbr
            if clip is not None:
                gz, gr = gz.clamp(-clip, clip), gr.clamp(-clip, clip)
            z, rg = torch.sigmoid(gz), torch.sigmoid(gr)
            gh = xh + (rg * (h @ rh.t() + rbh) if before else (rg * h) @ rh.t() + rbh)
            if clip is not None:
                gh = gh.clamp(-clip, clip)
            h = (1 - z) * torch.tanh(gh) + z * h
            out[t] = h
        ys.append(torch.stack(out) if seq else x.new_zeros(0, batch, hid))
        hs.append(h)
    return _rnn_outputs(ys, [hs], layout)


# --------------------------------------------------------------------------- the op table
OPS: dict[str, OpFn] = {
    "Identity": _unary(lambda x: x),
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
    "Equal": _binary(torch.eq),
    "Less": _binary(torch.lt),
    "Greater": _binary(torch.gt),
    "LessOrEqual": _binary(torch.le),
    "GreaterOrEqual": _binary(torch.ge),
    "Not": _unary(torch.logical_not),
    "And": _binary(torch.logical_and),
    "Or": _binary(torch.logical_or),
    "Xor": _binary(torch.logical_xor),
    "Add": _binary(torch.add),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "Div": _div,
    "Mod": _mod,
    "Pow": _pow,
    "Neg": _unary(torch.neg),
    "Abs": _unary(torch.abs),
    "Sign": _unary(torch.sign),
    "Sqrt": _unary(torch.sqrt),
    "Exp": _unary(torch.exp),
    "Log": _unary(torch.log),
    "Reciprocal": _unary(torch.reciprocal),
    "Sin": _unary(torch.sin),
    "Cos": _unary(torch.cos),
    "Floor": _unary(torch.floor),
    "Ceil": _unary(torch.ceil),
    "Round": _unary(torch.round),
    "Erf": _unary(torch.erf),
    "Min": _variadic(torch.minimum),
    "Max": _variadic(torch.maximum),
    "Sum": _variadic(torch.add),
    "Mean": _mean,
    "Clip": _clip,
    "Relu": _unary(torch.relu),
    "LeakyRelu": lambda n, i: F.leaky_relu(i[0], n.attrs.get("alpha", 0.01)),
    "PRelu": _prelu,
    "Elu": _elu,
    "Selu": _selu,
    "Sigmoid": _unary(torch.sigmoid),
    "HardSigmoid": lambda n, i: _hard_sigmoid(n.attrs.get("alpha", 0.2),
                                              n.attrs.get("beta", 0.5), i[0]),
    "HardSwish": lambda n, i: i[0] * _hard_sigmoid(1 / 6, 0.5, i[0]),
    "Tanh": _unary(torch.tanh),
    "Softplus": _unary(F.softplus),
    "Softsign": _unary(F.softsign),
    "Gelu": _gelu,
    "Softmax": _softmax_like(torch.softmax),
    "LogSoftmax": _softmax_like(torch.log_softmax),
    "MatMul": _binary(torch.matmul),
    "Gemm": _gemm,
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "MaxPool": _max_pool,
    "AveragePool": _avg_pool,
    "GlobalAveragePool": _global_avg_pool,
    "GlobalMaxPool": _global_max_pool,
    "Pad": _pad,
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
    "BatchNormalization": _batch_norm,
    "InstanceNormalization": _instance_norm,
    "LayerNormalization": _layer_norm,
    "Dropout": _dropout,
    "LSTM": _lstm,
    "GRU": _gru,
}

#: The op types :class:`OnnxGraphModule` runs (default ONNX domain); If has extra conditions.
SUPPORTED_OPS: frozenset[str] = frozenset([*OPS, "If"])

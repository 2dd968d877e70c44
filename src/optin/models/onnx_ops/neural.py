"""Neural-network operators: MatMul and Gemm; Conv and ConvTranspose (1-D/2-D/3-D, groups,
strides, dilations, pads, auto_pad); MaxPool (optional Indices), AveragePool, the global pools;
Pad (constant / reflect / edge / wrap); BatchNormalization (inference), InstanceNormalization,
LayerNormalization; Dropout (identity). Tensors are (N, C, *spatial) as in ONNX.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from optin.models.onnx_ops.core import (
    Node,
    OpFn,
    UnsupportedOnnxModel,
    Value,
    axis_index,
    binary,
    ints,
    scalar,
)


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
        pads = ints(ins[1])
        value = scalar(ins[2]) if len(ins) > 2 and ins[2] is not None and ins[2].numel() else 0
        axes = ints(ins[3]) if len(ins) > 3 and ins[3] is not None else list(range(x.dim()))
    axes = [axis_index(a, x.dim()) for a in axes]
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
    axis = axis_index(node.attrs.get("axis", -1), x.dim())
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


NEURAL_OPS: dict[str, OpFn] = {
    "MatMul": binary(torch.matmul),
    "Gemm": _gemm,
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "MaxPool": _max_pool,
    "AveragePool": _avg_pool,
    "GlobalAveragePool": _global_avg_pool,
    "GlobalMaxPool": _global_max_pool,
    "Pad": _pad,
    "BatchNormalization": _batch_norm,
    "InstanceNormalization": _instance_norm,
    "LayerNormalization": _layer_norm,
    "Dropout": _dropout,
}

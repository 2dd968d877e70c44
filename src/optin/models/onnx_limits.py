"""The memory budget of :class:`optin.models.onnx_graph.OnnxGraphModule`, checked before allocating.

An ONNX file states sizes as plain numbers: an initializer's dims, a ``ConstantOfShape``'s shape
tensor, a ``Tile``'s repeats, a ``Range``'s limit. A hostile or broken file can claim
1e5 x 1e5 floats with no data behind them, or ask for a 1e6 x 1e6 tensor at run time (4 TB).
Every such tensor is measured from those numbers first and refused above
:data:`MAX_TENSOR_BYTES` (one tensor; what a whole forward may use is the probe's affair,
:mod:`optin.privacy.target_probe`). An initializer must also hold as many values as it declares.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import onnx
import torch

from optin.models.onnx_ops import Node, UnsupportedOnnxModel, Value

MAX_TENSOR_BYTES = 1 << 30  # 1 GiB: one initializer, constant or shape-driven tensor
_P = onnx.TensorProto
_ONE_PER_ENTRY = frozenset({_P.FLOAT, _P.DOUBLE, _P.FLOAT16, _P.BFLOAT16, _P.INT8, _P.UINT8,
                            _P.INT16, _P.UINT16, _P.INT32, _P.UINT32, _P.INT64, _P.UINT64,
                            _P.BOOL})  # one stored entry per value (not packed, not complex)


class TensorOverBudget(UnsupportedOnnxModel):
    """A tensor the file asks for is larger than :data:`MAX_TENSOR_BYTES`."""


def format_bytes(count: float) -> str:
    """``1073741824`` -> ``'1 GiB'``; ``4e12`` -> ``'3.6 TiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            return f"{count:.3g} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def check_size(what: str, shape: Sequence[int], itemsize: int) -> None:
    """Refuse a tensor of ``shape`` whose bytes exceed :data:`MAX_TENSOR_BYTES`."""
    size = math.prod(max(0, int(d)) for d in shape) * itemsize
    if size > MAX_TENSOR_BYTES:
        dims = " x ".join(str(int(d)) for d in shape)
        raise TensorOverBudget(f"{what} would be {dims} ({format_bytes(size)}), over the "
                               f"{format_bytes(MAX_TENSOR_BYTES)} budget per tensor")


def _held_values(proto: onnx.TensorProto, itemsize: int) -> int:
    if proto.raw_data:
        return len(proto.raw_data) // itemsize
    return max(len(proto.float_data), len(proto.int32_data), len(proto.int64_data),
               len(proto.double_data), len(proto.uint64_data))


def check_tensor(proto: onnx.TensorProto) -> onnx.TensorProto:
    """An initializer or tensor attribute, checked: within budget, as many values as dims."""
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(proto.data_type).itemsize
    except Exception:  # an unknown dtype: to_tensor names it
        return proto
    what = f"tensor {proto.name!r}" if proto.name else "a constant tensor"
    check_size(what, list(proto.dims), itemsize)
    declared, held = math.prod(proto.dims), _held_values(proto, itemsize)
    if proto.data_type in _ONE_PER_ENTRY and held != declared:
        raise UnsupportedOnnxModel(f"{what} declares {declared} values "
                                   f"({' x '.join(map(str, proto.dims)) or 'scalar'}) but holds "
                                   f"{held}")
    return proto


# --------------------------------------------------------------------------- at run time
def _ints(t: Value) -> list[int]:
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _constant_of_shape(node: Node, ins: list[Value]) -> tuple[list[int], int]:
    value = node.attrs.get("value")
    return _ints(ins[0]), 4 if value is None else value.element_size()


def _expand(node: Node, ins: list[Value]) -> tuple[list[int], int]:
    x = ins[0]
    assert x is not None
    return list(torch.broadcast_shapes(x.shape, tuple(_ints(ins[1])))), x.element_size()


def _tile(node: Node, ins: list[Value]) -> tuple[list[int], int]:
    x = ins[0]
    assert x is not None
    return [d * r for d, r in zip(x.shape, _ints(ins[1]), strict=False)], x.element_size()


def _range(node: Node, ins: list[Value]) -> tuple[list[int], int]:
    start, limit, delta = (float(t.reshape(-1)[0]) for t in ins if t is not None)
    count = math.ceil((limit - start) / delta) if delta else 0
    assert ins[0] is not None
    return [max(0, count)], ins[0].element_size()


def _pad(node: Node, ins: list[Value]) -> tuple[list[int], int]:
    x = ins[0]
    assert x is not None
    pads = list(node.attrs["pads"]) if "pads" in node.attrs else _ints(ins[1])
    axes = _ints(ins[3]) if len(ins) > 3 and ins[3] is not None else list(range(x.dim()))
    dims = list(x.shape)
    for i, a in enumerate(axes):
        dims[a] += pads[i] + pads[len(axes) + i]
    return dims, x.element_size()


_SHAPED_BY_VALUES: dict[str, Callable[[Node, list[Value]], tuple[list[int], int]]] = {
    "ConstantOfShape": _constant_of_shape, "Expand": _expand, "Tile": _tile, "Range": _range,
    "Pad": _pad}


def check_node(node: Node, ins: list[Value]) -> None:
    """Refuse a node whose output size, set by its input *values*, is over the budget.

    Only ops whose size comes from numbers (ConstantOfShape, Expand, Tile, Range, Pad) are
    measured; a malformed node is left to the op itself, which raises its own error.
    """
    predict = _SHAPED_BY_VALUES.get(node.op_type)
    if predict is None:
        return
    try:
        shape, itemsize = predict(node, ins)
    except (RuntimeError, ValueError, IndexError, KeyError, AssertionError, TypeError,
            OverflowError):
        return
    check_size(f"node {node.name!r} ({node.op_type})", shape, itemsize)


"""The operators :class:`optin.models.onnx_graph.OnnxGraphModule` runs: one torch function per
ONNX op type (:data:`OPS`), each ``(node, inputs) -> output(s)``, with ONNX semantics
(broadcasting, attribute defaults by opset). The supported set and its limits are described in
:mod:`optin.models.onnx_graph`.

One module per operator family, each with its table; :data:`OPS` joins them:

* :mod:`~optin.models.onnx_ops.core`: the decoded graph, the error, dtypes, shared helpers;
* :mod:`~optin.models.onnx_ops.tensors`: constants, shapes, casts, indexing, reshaping;
* :mod:`~optin.models.onnx_ops.elementwise`: logic, arithmetic, unary maths, activations;
* :mod:`~optin.models.onnx_ops.neural`: MatMul, Gemm, convolutions, pools, Pad, normalisation;
* :mod:`~optin.models.onnx_ops.reductions`: Reduce*, ArgMax, ArgMin;
* :mod:`~optin.models.onnx_ops.recurrent`: LSTM, GRU.

A new op goes into its family's table (a new family: a module with its table, listed in
:data:`FAMILIES`); an op type in two tables is refused on import.
"""

from __future__ import annotations

from collections.abc import Mapping

from optin.models.onnx_ops.core import (
    MIN_OPSET,
    ONNX_DOMAINS,
    Graph,
    Node,
    OpFn,
    UnsupportedOnnxModel,
    Value,
    to_tensor,
)
from optin.models.onnx_ops.elementwise import ELEMENTWISE_OPS
from optin.models.onnx_ops.neural import NEURAL_OPS
from optin.models.onnx_ops.recurrent import RECURRENT_OPS
from optin.models.onnx_ops.reductions import REDUCTION_OPS
from optin.models.onnx_ops.tensors import TENSOR_OPS, constant_value

__all__ = ["FAMILIES", "MIN_OPSET", "ONNX_DOMAINS", "OPS", "SUPPORTED_OPS", "Graph", "Node",
           "OpFn", "UnsupportedOnnxModel", "Value", "constant_value", "to_tensor"]

#: Each family's op table, by family name.
FAMILIES: dict[str, Mapping[str, OpFn]] = {
    "tensors": TENSOR_OPS,
    "elementwise": ELEMENTWISE_OPS,
    "neural": NEURAL_OPS,
    "reductions": REDUCTION_OPS,
    "recurrent": RECURRENT_OPS,
}


def _join(families: Mapping[str, Mapping[str, OpFn]]) -> dict[str, OpFn]:
    """One table from the families' tables; an op type claimed twice is a programming error."""
    table: dict[str, OpFn] = {}
    for name, ops in families.items():
        twice = sorted(table.keys() & ops.keys())
        if twice:
            raise AssertionError(f"op types in two families ({name} and another): {twice}")
        table.update(ops)
    return table


#: The op table: ONNX op type -> torch function.
OPS: dict[str, OpFn] = _join(FAMILIES)

#: The op types :class:`OnnxGraphModule` runs (default ONNX domain); If has extra conditions.
SUPPORTED_OPS: frozenset[str] = frozenset([*OPS, "If"])

"""An ONNX graph as a differentiable ``torch.nn.Module``: a small interpreter over an op subset.

Apps may bring their pretrained model as ONNX. :class:`OnnxGraphModule` runs such a graph with
torch ops only, so gradients flow from its outputs back to its *inputs* (its weights are frozen
buffers, never parameters). It takes an ``onnx.ModelProto`` (no file paths here), walks the nodes
in their (topological) order with a dict of values, and calls one torch function per op type.

Supported operators (default domain ``""`` / ``"ai.onnx"``, opset >= 7; the exact set is
:data:`SUPPORTED_OPS`):

* tensors and shapes: Identity, Constant, ConstantOfShape, Shape, Size, Cast, CastLike, Gather,
  GatherElements, Unsqueeze, Squeeze, Reshape, Flatten, Transpose, Concat, Split, Slice, Expand,
  Tile, Range, Where, Einsum;
* logic: Equal, Less, Greater, LessOrEqual, GreaterOrEqual, Not, And, Or, Xor;
* elementwise maths: Add, Sub, Mul, Div, Mod, Pow, Neg, Abs, Sign, Sqrt, Exp, Log, Reciprocal,
  Sin, Cos, Floor, Ceil, Round, Min, Max, Sum, Mean, Clip, Erf;
* activations: Relu, LeakyRelu, PRelu, Elu, Selu, Sigmoid, HardSigmoid, HardSwish, Tanh,
  Softplus, Softsign, Gelu, Softmax, LogSoftmax;
* linear and convolutional: MatMul, Gemm, Conv and ConvTranspose (1-D/2-D/3-D, groups, strides,
  dilations, pads, auto_pad), MaxPool (1-D/2-D/3-D, optional Indices output), AveragePool
  (count_include_pad, no dilations), GlobalAveragePool, GlobalMaxPool, Pad (constant / reflect
  / edge / wrap, optional axes);
* reductions: ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2,
  ReduceSumSquare, ReduceLogSumExp (axes as attribute or input, keepdims,
  noop_with_empty_axes), ArgMax, ArgMin;
* normalisation: BatchNormalization (inference only), InstanceNormalization,
  LayerNormalization; Dropout (identity, inference);
* recurrent: LSTM (gates iofc, optional peepholes, clip) and GRU (gates zrh,
  linear_before_reset), directions forward / reverse / bidirectional, layouts 0 and 1,
  optional initial states, explicit per-timestep loops (exact and differentiable);
* control flow: If, only when its condition is *static*: a constant (the chosen branch is then
  inlined at construction), or a value computed only from constants, tensor shapes and
  integer/bool graph inputs (e.g. ``sr == 16000``, ``x.shape[-1] == 1``): the branch is then
  picked at run time, in eager mode, and the gradient flows through the branch taken.

Memory: every initializer and constant, and every tensor whose size the file's numbers set
(ConstantOfShape, Expand, Tile, Range, Pad), is measured before it is made and refused over
:data:`optin.models.onnx_limits.MAX_TENSOR_BYTES` (1 GiB), with :class:`TensorOverBudget`.

Limits: no dynamic (data-dependent) control flow, no Loop / Scan, no sequence / map / optional /
sparse types; LSTM/GRU with their default activations only, no ``input_forget``, and
``sequence_lens`` only when every length equals the full sequence; BatchNormalization with
``training_mode=0``; AveragePool without dilations; Softmax family follows the opset (coerced
2-D before opset 13). Anything else raises :class:`UnsupportedOnnxModel` at construction.

Silero VAD: all six ONNX files of the ``silero_vad`` wheel (6.2) convert and match
onnxruntime: ``silero_vad.onnx`` (opset 16), ``silero_vad_16k_op15.onnx`` and
``silero_vad_op18_ifless.onnx`` (streamed chunk by chunk, speech probabilities within 1e-6),
``silero_vad_half.onnx``, ``silero_vad_16k_sequence.onnx`` and ``silero_vad_openvino_16k.onnx``
(one call each). Their If nodes branch on ``sr`` or on a tensor shape: static conditions.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import MutableMapping, Sequence
from typing import Any

import onnx
import torch
from torch import Tensor

from optin.models.onnx_limits import TensorOverBudget, check_node, check_tensor
from optin.models.onnx_ops import (
    MIN_OPSET,
    ONNX_DOMAINS,
    OPS,
    SUPPORTED_OPS,
    Graph,
    Node,
    UnsupportedOnnxModel,
    Value,
    constant_value,
    to_tensor,
)

__all__ = ["SUPPORTED_OPS", "OnnxGraphModule", "TensorOverBudget", "UnsupportedOnnxModel"]

_RNN_DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}
_STATIC_SOURCES = frozenset({"Shape", "Size", "Constant"})


# --------------------------------------------------------------------------- the module
class OnnxGraphModule(torch.nn.Module):
    """An ONNX graph run with torch ops, differentiable w.r.t. its inputs.

    ``forward(*inputs)`` takes the graph inputs in graph order (initializers excluded) and
    returns the single output, or a tuple of outputs in graph order. The graph's weights are
    buffers (frozen; they follow ``.to(device)``).

    Raises:
        UnsupportedOnnxModel: an op outside :data:`SUPPORTED_OPS`, a non-ONNX domain, opset < 7,
            no inputs, or an If whose condition depends on float tensor values.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        self.opset = self._opset(model)
        graph = model.graph
        self._value_buffers: dict[str, str] = {}
        init_names = {t.name for t in graph.initializer}
        self.input_names: list[str] = [i.name for i in graph.input if i.name not in init_names]
        self.output_names: list[str] = [o.name for o in graph.output]
        if not self.input_names:
            raise UnsupportedOnnxModel("the ONNX graph has no inputs")
        unsupported: dict[str, str] = {}
        self._collect_unsupported(graph, unsupported)
        if unsupported:
            listed = ", ".join(f"{op} (first at node {name!r})" for op, name in
                               unsupported.items())
            raise UnsupportedOnnxModel(
                f"unsupported ONNX op(s): {listed}; the supported set is "
                "optin.models.onnx_graph.SUPPORTED_OPS")
        static = {i.name for i in graph.input if i.name not in init_names
                  and i.type.tensor_type.elem_type not in _FLOAT_TYPES}
        self._graph = self._build(graph, static)

    # ------------------------------------------------------------------ construction
    @staticmethod
    def _opset(model: onnx.ModelProto) -> int:
        versions = [o.version for o in model.opset_import if o.domain in ONNX_DOMAINS]
        if not versions:
            raise UnsupportedOnnxModel("the model imports no default ONNX opset")
        if max(versions) < MIN_OPSET:
            raise UnsupportedOnnxModel(f"opset {max(versions)} < {MIN_OPSET} is not supported")
        return max(versions)

    def _collect_unsupported(self, graph: onnx.GraphProto, found: dict[str, str]) -> None:
        for n in graph.node:
            label = n.op_type if n.domain in ONNX_DOMAINS else f"{n.domain}::{n.op_type}"
            if n.domain not in ONNX_DOMAINS or n.op_type not in SUPPORTED_OPS:
                found.setdefault(label, n.name)
            elif n.op_type in _RNN_DEFAULT_ACTS:
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
                acts = [a.decode() if isinstance(a, bytes) else a
                        for a in attrs.get("activations", [])]
                ndir = 2 if attrs.get("direction", b"forward") == b"bidirectional" else 1
                if (acts and acts != _RNN_DEFAULT_ACTS[n.op_type] * ndir) or attrs.get(
                        "input_forget", 0):
                    found.setdefault(f"{n.op_type} (non-default activations/input_forget)",
                                     n.name)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    self._collect_unsupported(a.g, found)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for g in a.graphs:
                        self._collect_unsupported(g, found)

    def _register(self, name: str, t: Tensor) -> None:
        key = f"_v{len(self._value_buffers)}"
        self.register_buffer(key, t)
        self._value_buffers[name] = key

    def _build(self, graph: onnx.GraphProto, static: set[str]) -> Graph:
        """Decode a (sub)graph; fold Constants into buffers, inline constant-condition Ifs."""
        for t in graph.initializer:
            self._register(t.name, to_tensor(check_tensor(t)))
            static.add(t.name)
        out = Graph(outputs=[o.name for o in graph.output])
        for proto in graph.node:
            attrs: dict[str, Any] = {}
            for a in proto.attribute:
                if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                    continue
                v = onnx.helper.get_attribute_value(a)
                if a.type == onnx.AttributeProto.TENSOR:
                    v = to_tensor(check_tensor(v))
                elif isinstance(v, bytes):
                    v = v.decode()
                elif a.type == onnx.AttributeProto.STRINGS:
                    v = [s.decode() for s in v]
                attrs[a.name] = v
            node = Node(proto.op_type, proto.name, list(proto.input), list(proto.output),
                         attrs, self.opset)
            if node.op_type == "Constant":
                self._register(node.outputs[0], constant_value(node))
                static.add(node.outputs[0])
                continue
            if node.op_type == "If":
                out.nodes += self._build_if(node, proto, static)
                continue
            out.nodes.append(node)
            ins = [i for i in node.inputs if i]
            if node.op_type in _STATIC_SOURCES or all(i in static for i in ins):
                static.update(o for o in node.outputs if o)
        return out

    def _build_if(self, node: Node, proto: onnx.NodeProto, static: set[str]) -> list[Node]:
        cond = node.inputs[0]
        if cond not in static:
            raise UnsupportedOnnxModel(
                f"If node {node.name!r}: its condition depends on tensor values (dynamic "
                "control flow); the supported set is optin.models.onnx_graph.SUPPORTED_OPS")
        graphs = {a.name: a.g for a in proto.attribute}
        if cond in self._value_buffers:  # a constant: inline the chosen branch
            chosen = graphs["then_branch" if bool(self._buffer(cond).any()) else "else_branch"]
            sub = self._build(chosen, static)
            links = [Node("Identity", f"{node.name}/out{k}", [src], [dst], {}, self.opset)
                     for k, (src, dst) in enumerate(zip(sub.outputs, node.outputs, strict=True))
                     if dst]
            static.update(dst for src, dst in zip(sub.outputs, node.outputs, strict=True)
                          if src in static and dst)
            return [*sub.nodes, *links]
        then_static, else_static = set(static), set(static)
        then_g = self._build(graphs["then_branch"], then_static)
        else_g = self._build(graphs["else_branch"], else_static)
        node.branches = (then_g, else_g)
        static.update(o for k, o in enumerate(node.outputs) if o
                      and then_g.outputs[k] in then_static and else_g.outputs[k] in else_static)
        return [node]

    def _buffer(self, name: str) -> Tensor:
        return self._buffers[self._value_buffers[name]]

    @property
    def value_names(self) -> dict[str, str]:
        """Buffer name -> the ONNX name of the initializer or constant it holds."""
        return {key: name for name, key in self._value_buffers.items()}

    # ------------------------------------------------------------------ run
    def forward(self, *inputs: Tensor) -> Tensor | tuple[Tensor, ...]:
        """Run the graph on its inputs (graph order); one output -> tensor, several -> tuple."""
        if len(inputs) != len(self.input_names):
            raise TypeError(f"expected {len(self.input_names)} inputs {self.input_names}, "
                            f"got {len(inputs)}")
        env: dict[str, Tensor] = {n: self._buffers[k] for n, k in self._value_buffers.items()}
        env.update(zip(self.input_names, inputs, strict=True))
        outs = _run(self._graph, env)
        return outs[0] if len(outs) == 1 else tuple(outs)


_FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                          onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16})


def _run(graph: Graph, env: MutableMapping[str, Tensor]) -> list[Tensor]:
    """Evaluate a graph's nodes in order over ``env`` (written in place); return its outputs."""
    for node in graph.nodes:
        ins: list[Value] = [env[i] if i else None for i in node.inputs]
        if node.branches is not None:  # a static If: pick the branch now (eager mode)
            branch = node.branches[0 if bool(ins[0].any()) else 1]
            result: Tensor | Sequence[Tensor] = _run(branch, ChainMap({}, env))
        else:
            check_node(node, ins)  # sizes set by values: within the budget, before allocating
            result = OPS[node.op_type](node, ins)
        if isinstance(result, Tensor):
            result = (result,)
        for name, value in zip(node.outputs, result, strict=False):
            if name:
                env[name] = value
    return [env[o] for o in graph.outputs]

"""OnnxGraphModule: ONNX graphs run as torch modules, equal to onnxruntime and to torch, with
input gradients equal to the original torch model's."""

from __future__ import annotations

import importlib.resources
import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from optin.models.onnx_graph import SUPPORTED_OPS, OnnxGraphModule, UnsupportedOnnxModel


# ---------------------------------------------------------------------- helpers
def export(model: nn.Module, args: tuple[torch.Tensor, ...], inputs: list[str],
           outputs: list[str], dynamic_axes: dict[str, dict[int, str]]) -> bytes:
    """The model as ONNX bytes (legacy TorchScript exporter, opset 17), in memory."""
    buf = io.BytesIO()
    torch.onnx.export(model, args, buf, dynamo=False, opset_version=17, input_names=inputs,
                      output_names=outputs, dynamic_axes=dynamic_axes)
    return buf.getvalue()


def session(data: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def as_tuple(y: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return y if isinstance(y, tuple) else (y,)


def input_grad(fn, *args: torch.Tensor, weighted: bool = False) -> torch.Tensor:
    """d(sum of all outputs)/d(first input); ``weighted``: each element weighted 1..2."""
    x = args[0].detach().clone().requires_grad_(True)
    outs = as_tuple(fn(x, *args[1:]))
    if weighted:  # a softmax sums to 1: its plain sum has no gradient
        outs = tuple(o * torch.linspace(1, 2, o.numel()).reshape(o.shape) for o in outs)
    sum(o.sum() for o in outs).backward()
    return x.grad


def check_against(model: nn.Module, data: bytes, *args: torch.Tensor,
                  weighted: bool = False) -> None:
    """OnnxGraphModule == onnxruntime == torch (1e-4 abs); input gradients agree (1e-3 rel)."""
    graph = OnnxGraphModule(onnx.load_from_string(data))
    sess = session(data)
    feeds = {n: a.numpy() for n, a in zip(graph.input_names, args, strict=True)}
    ref_ort = sess.run(graph.output_names, feeds)
    with torch.no_grad():
        ours, ref_torch = as_tuple(graph(*args)), as_tuple(model(*args))
    assert len(ours) == len(ref_ort)
    for o, r, t in zip(ours, ref_ort, ref_torch, strict=False):
        np.testing.assert_allclose(o.numpy(), r, atol=1e-4, rtol=0)
        torch.testing.assert_close(o, t, atol=1e-4, rtol=0)
    g = input_grad(graph, *args, weighted=weighted)
    g_ref = input_grad(model, *args, weighted=weighted)
    assert torch.isfinite(g).all() and g.abs().max() > 0
    torch.testing.assert_close(g, g_ref, rtol=1e-3, atol=1e-3 * float(g_ref.abs().max()))


# ---------------------------------------------------------------------- tiny torch models
class WaveClassifier(nn.Module):
    """(B, T) waveform -> Conv1d(stride) + BatchNorm + ReLU + GRU + mean over time + Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 8, kernel_size=16, stride=4, padding=2)
        self.bn = nn.BatchNorm1d(8)
        self.gru = nn.GRU(8, 12, batch_first=True)
        self.head = nn.Linear(12, 3)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(wav.unsqueeze(1))))  # (B, 8, T')
        y, _ = self.gru(h.transpose(1, 2))
        return self.head(y.mean(dim=1))


class FrameModel(nn.Module):
    """(B, T, F) features -> bidirectional LSTM + LayerNorm + Linear + LogSoftmax, per frame."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(10, 8, batch_first=True, bidirectional=True)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 5)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(feats)
        return torch.log_softmax(self.head(self.norm(y)), dim=-1)


class Mlp(nn.Module):
    """(B, 6) -> Linear + GELU + Linear + Softmax (Gemm, Gelu/Erf, Softmax)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc2(F.gelu(self.fc1(x))), dim=-1)


class Conv2dModel(nn.Module):
    """(B, 1, 12, 12) -> conv / pools / reflect pad, flattened with a Shape-computed Reshape."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 6, 3, stride=2, padding=(1, 2), groups=2)
        self.pool = nn.AvgPool2d(2, padding=1, count_include_pad=False)
        self.head = nn.Linear(6 * 3 * 3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(torch.relu(self.c1(x)), 2)  # (B, 4, 6, 6)
        h = F.pad(h, (1, 0, 0, 1), mode="reflect")  # (B, 4, 7, 7)
        h = self.pool(torch.tanh(self.c2(h)))  # (B, 6, 4, 5) -> (B, 6, 3, 3)
        return self.head(h.reshape(h.shape[0], -1))


def randomize_bn(bn: nn.BatchNorm1d) -> None:
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)


# ---------------------------------------------------------------------- exported models
def test_waveform_classifier_any_length() -> None:
    torch.manual_seed(0)
    model = WaveClassifier().eval()
    randomize_bn(model.bn)
    data = export(model, (torch.randn(2, 400),), ["wav"], ["logits"],
                  {"wav": {0: "batch", 1: "time"}, "logits": {0: "batch"}})
    check_against(model, data, torch.randn(2, 400))
    check_against(model, data, torch.randn(3, 640))  # dynamic batch and length


def test_frame_model_bidirectional_lstm() -> None:
    torch.manual_seed(1)
    model = FrameModel().eval()
    data = export(model, (torch.randn(2, 7, 10),), ["feats"], ["logp"],
                  {"feats": {0: "batch", 1: "time"}, "logp": {0: "batch", 1: "time"}})
    check_against(model, data, torch.randn(2, 7, 10))
    check_against(model, data, torch.randn(1, 11, 10))


def test_mlp_gemm_gelu_softmax() -> None:
    torch.manual_seed(2)
    model = Mlp().eval()
    data = export(model, (torch.randn(3, 6),), ["x"], ["p"], {"x": {0: "batch"}})
    ops = {n.op_type for n in onnx.load_from_string(data).graph.node}
    assert {"Gemm", "Softmax"} <= ops
    check_against(model, data, torch.randn(5, 6), weighted=True)


def test_conv2d_model_with_shape_reshape() -> None:
    torch.manual_seed(3)
    model = Conv2dModel().eval()
    data = export(model, (torch.randn(2, 1, 12, 12),), ["img"], ["y"],
                  {"img": {0: "batch"}, "y": {0: "batch"}})
    ops = {n.op_type for n in onnx.load_from_string(data).graph.node}
    assert {"Shape", "Reshape", "MaxPool", "AveragePool", "Pad"} <= ops
    check_against(model, data, torch.randn(4, 1, 12, 12))


# ---------------------------------------------------------------------- single-op graphs
def single_op(op: str, floats: dict[str, np.ndarray], consts: dict[str, np.ndarray],
              order: list[str], n_out: int = 1, opset: int = 17, **attrs) -> bytes:
    """A one-node model: float arrays are graph inputs, the others initializers."""
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, order, outs, name=f"the_{op}", **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape) for k, v in
         floats.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
        initializer=[numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return model.SerializeToString()


def check_single(data: bytes, floats: dict[str, np.ndarray]) -> None:
    graph = OnnxGraphModule(onnx.load_from_string(data))
    ref = session(data).run(None, floats)
    args = [torch.from_numpy(floats[n]).requires_grad_(True) for n in graph.input_names]
    ours = as_tuple(graph(*args))
    for o, r in zip(ours, ref, strict=True):
        assert tuple(o.shape) == r.shape
        np.testing.assert_allclose(o.detach().numpy(), r, atol=1e-4, rtol=1e-5)
    sum(o.float().sum() for o in ours if o.requires_grad).backward()
    assert all(torch.isfinite(a.grad).all() for a in args)


rng = np.random.default_rng(0)
X34 = rng.standard_normal((3, 4, 5)).astype(np.float32)
X1D = rng.standard_normal((2, 3, 11)).astype(np.float32)
X2D = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
I64 = np.int64

CASES = {
    "slice_neg_step": ("Slice", {"x": X34},
                       {"s": np.array([-1, 4], I64), "e": np.array([-10**18, 0], I64),
                        "a": np.array([2, 1], I64), "st": np.array([-2, -1], I64)},
                       ["x", "s", "e", "a", "st"], 1, 17, {}),
    "slice_huge_end": ("Slice", {"x": X34},
                       {"s": np.array([1], I64), "e": np.array([2**62], I64)},
                       ["x", "s", "e"], 1, 17, {}),
    "gather_negative": ("Gather", {"x": X34}, {"i": np.array([[-1, 0], [2, -3]], I64)},
                        ["x", "i"], 1, 17, {"axis": 1}),
    "split_num_outputs": ("Split", {"x": X34}, {}, ["x"], 3, 18,
                          {"axis": 1, "num_outputs": 3}),
    "split_input": ("Split", {"x": X34}, {"s": np.array([2, 3], I64)}, ["x", "s"], 2, 17,
                    {"axis": -1}),
    "split_attr_old": ("Split", {"x": X34}, {}, ["x"], 2, 11, {"axis": 2, "split": [1, 4]}),
    "softmax_old_flatten": ("Softmax", {"x": X34}, {}, ["x"], 1, 11, {}),
    "logsoftmax_axis0": ("LogSoftmax", {"x": X34}, {}, ["x"], 1, 17, {"axis": 0}),
    "gemm_trans_alpha_beta": ("Gemm", {"a": X34[0].T.copy(),
                                       "b": rng.standard_normal((6, 5)).astype(np.float32)},
                              {"c": rng.standard_normal((1, 6)).astype(np.float32)},
                              ["a", "b", "c"], 1, 17,
                              {"transA": 1, "transB": 1, "alpha": 0.7, "beta": -1.3}),
    "conv1d_same_upper": ("Conv", {"x": X1D},
                          {"w": rng.standard_normal((4, 3, 4)).astype(np.float32)},
                          ["x", "w"], 1, 17, {"auto_pad": "SAME_UPPER", "strides": [2]}),
    "conv2d_same_lower_dil": ("Conv", {"x": X2D},
                              {"w": rng.standard_normal((6, 2, 2, 3)).astype(np.float32),
                               "b": rng.standard_normal(6).astype(np.float32)},
                              ["x", "w", "b"], 1, 17,
                              {"auto_pad": "SAME_LOWER", "group": 2, "strides": [2, 3]}),
    "conv2d_asym_pads": ("Conv", {"x": X2D},
                         {"w": rng.standard_normal((3, 4, 3, 3)).astype(np.float32)},
                         ["x", "w"], 1, 17, {"pads": [0, 1, 2, 0], "strides": [1, 2],
                                                  "dilations": [2, 1]}),
    "convtranspose1d": ("ConvTranspose", {"x": X1D},
                        {"w": rng.standard_normal((3, 2, 4)).astype(np.float32),
                         "b": rng.standard_normal(2).astype(np.float32)},
                        ["x", "w", "b"], 1, 17,
                        {"strides": [3], "pads": [1, 2], "output_padding": [1]}),
    "convtranspose2d_groups": ("ConvTranspose", {"x": X2D},
                               {"w": rng.standard_normal((4, 1, 3, 2)).astype(np.float32)},
                               ["x", "w"], 1, 17,
                               {"strides": [2, 2], "group": 2, "pads": [1, 0, 0, 1]}),
    "maxpool_ceil_pads": ("MaxPool", {"x": X2D}, {}, ["x"], 1, 17,
                          {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1],
                           "ceil_mode": 1}),
    "avgpool1d_include_pad": ("AveragePool", {"x": X1D}, {}, ["x"], 1, 17,
                              {"kernel_shape": [3], "strides": [2], "pads": [1, 2],
                               "count_include_pad": 1}),
    "avgpool2d_exclude_pad": ("AveragePool", {"x": X2D}, {}, ["x"], 1, 17,
                              {"kernel_shape": [3, 3], "strides": [2, 2],
                               "pads": [1, 1, 0, 1], "ceil_mode": 1}),
    "pad_edge": ("Pad", {"x": X2D}, {"p": np.array([0, 0, 2, 1, 0, 1, 1, 3], I64)},
                 ["x", "p"], 1, 17, {"mode": "edge"}),
    "pad_reflect": ("Pad", {"x": X1D}, {"p": np.array([0, 1, 3, 0, 0, 2], I64)},
                    ["x", "p"], 1, 17, {"mode": "reflect"}),
    "pad_constant_axes": ("Pad", {"x": X2D},
                          {"p": np.array([1, 2, 0, 1], I64), "v": np.array(0.5, np.float32),
                           "a": np.array([-1, 1], I64)},
                          ["x", "p", "v", "a"], 1, 18, {"mode": "constant"}),
    "reducemean_axes_attr": ("ReduceMean", {"x": X34}, {}, ["x"], 1, 11,
                             {"axes": [0, -1], "keepdims": 0}),
    "reducel2_axes_input": ("ReduceL2", {"x": X34}, {"a": np.array([1], I64)}, ["x", "a"],
                            1, 18, {}),
    "reducesum_noop": ("ReduceSum", {"x": X34}, {"a": np.array([], I64)}, ["x", "a"], 1, 17,
                       {"noop_with_empty_axes": 1}),
    "reducemax_all": ("ReduceMax", {"x": X34}, {}, ["x"], 1, 17, {"keepdims": 0}),
    "instance_norm": ("InstanceNormalization", {"x": X1D},
                      {"s": np.array([1.0, 2.0, 0.5], np.float32),
                       "b": np.array([0.1, 0.0, -0.3], np.float32)},
                      ["x", "s", "b"], 1, 17, {"epsilon": 1e-3}),
    "gru_reverse_lbr0": ("GRU", {"x": X34},
                         {"w": rng.standard_normal((1, 18, 5)).astype(np.float32) * 0.5,
                          "r": rng.standard_normal((1, 18, 6)).astype(np.float32) * 0.5,
                          "b": rng.standard_normal((1, 36)).astype(np.float32)},
                         ["x", "w", "r", "b"], 2, 17,
                         {"hidden_size": 6, "direction": "reverse", "linear_before_reset": 0}),
    "lstm_bidir_init_clip": ("LSTM", {"x": X34, "h0": rng.standard_normal((2, 4, 3)).astype(
        np.float32), "c0": rng.standard_normal((2, 4, 3)).astype(np.float32)},
                             {"w": rng.standard_normal((2, 12, 5)).astype(np.float32),
                              "r": rng.standard_normal((2, 12, 3)).astype(np.float32),
                              "b": rng.standard_normal((2, 24)).astype(np.float32)},
                             ["x", "w", "r", "b", "", "h0", "c0"], 3, 17,
                             {"hidden_size": 3, "direction": "bidirectional", "clip": 2.0}),
    "hardswish": ("HardSwish", {"x": X34 * 4}, {}, ["x"], 1, 17, {}),
    "prelu": ("PRelu", {"x": X34}, {"s": np.array([[0.1], [0.2], [0.3], [0.4]], np.float32)},
              ["x", "s"], 1, 17, {}),
    "clip_old_attrs": ("Clip", {"x": X34}, {}, ["x"], 1, 9, {"min": -0.5, "max": 0.3}),
    "selu": ("Selu", {"x": X34}, {}, ["x"], 1, 17, {}),
}


@pytest.mark.parametrize("case", CASES)
def test_single_op_matches_onnxruntime(case: str) -> None:
    op, floats, consts, order, n_out, opset, attrs = CASES[case]
    check_single(single_op(op, floats, consts, order, n_out, opset, **attrs), floats)


def test_shape_subgraph_and_constant_if_inline() -> None:
    """Shape -> Gather -> Concat -> Reshape on int64, and an If on a constant condition."""
    branch = {
        b: helper.make_graph([helper.make_node(op, ["x"], [f"o_{b}"])], b, [],
                             [helper.make_tensor_value_info(f"o_{b}", TensorProto.FLOAT, None)])
        for b, op in (("then", "Sigmoid"), ("else", "Tanh"))}
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Concat", ["n", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(
            np.array(False))),
        helper.make_node("If", ["cond"], ["act"], then_branch=branch["then"],
                         else_branch=branch["else"]),
        helper.make_node("ReduceSum", ["act", "ax"], ["r"], keepdims=0),
        helper.make_node("Add", ["flat", "r2"], ["y"]),
        helper.make_node("Unsqueeze", ["r", "ax"], ["r1"]),
        helper.make_node("Unsqueeze", ["r1", "ax"], ["r2"]),
    ]
    order = [0, 1, 2, 3, 4, 5, 6, 8, 9, 7]
    graph = helper.make_graph(
        [nodes[i] for i in order], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("act", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.array([0], I64), "zero"),
                     numpy_helper.from_array(np.array([-1], I64), "minus1"),
                     numpy_helper.from_array(np.array([1, 2], I64), "ax")])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    module = OnnxGraphModule(data)
    assert not any(n.op_type == "If" for n in module._graph.nodes)  # inlined
    check_single(data.SerializeToString(), {"x": X34})


# ---------------------------------------------------------------------- refusals
def test_unsupported_ops_are_named_at_construction() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="ok"),
             helper.make_node("NonMaxSuppression", ["a", "a"], ["b"], name="nms_1"),
             helper.make_node("FancyOp", ["b"], ["y"], name="fancy", domain="com.example")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    with pytest.raises(UnsupportedOnnxModel) as err:
        OnnxGraphModule(model)
    msg = str(err.value)
    assert "NonMaxSuppression" in msg and "nms_1" in msg
    assert "com.example::FancyOp" in msg and "fancy" in msg
    assert "optin.models.onnx_graph.SUPPORTED_OPS" in msg
    assert "NonMaxSuppression" not in SUPPORTED_OPS and "LSTM" in SUPPORTED_OPS


def test_dynamic_if_old_opset_and_no_inputs_are_refused() -> None:
    sub = {b: helper.make_graph([helper.make_node("Identity", ["x"], [f"o{b}"])], b, [],
                                [helper.make_tensor_value_info(f"o{b}", TensorProto.FLOAT,
                                                               None)]) for b in "te"}
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["y"], name="data_if", then_branch=sub["t"],
                              else_branch=sub["e"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    with pytest.raises(UnsupportedOnnxModel, match="data_if"):
        OnnxGraphModule(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(UnsupportedOnnxModel, match="opset 6"):
        OnnxGraphModule(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)]))
    empty = helper.make_graph(
        [helper.make_node("Identity", ["zero"], ["y"])], "g", [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    with pytest.raises(UnsupportedOnnxModel, match="no inputs"):
        OnnxGraphModule(helper.make_model(empty, opset_imports=[helper.make_opsetid("", 17)]))


# ---------------------------------------------------------------------- Silero VAD
SILERO = ["silero_vad_16k_op15.onnx", "silero_vad_op18_ifless.onnx", "silero_vad.onnx"]


def speechy_audio(n_chunks: int, sr: int = 16000, chunk: int = 512) -> torch.Tensor:
    """(1, n_chunks * chunk) sine bursts (harmonics, vibrato) over low noise."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(n_chunks * chunk) / sr
    f0 = 140 + 20 * torch.sin(2 * torch.pi * 3 * t)
    phase = 2 * torch.pi * torch.cumsum(f0, 0) / sr
    voiced = sum(torch.sin(k * phase) / k for k in range(1, 6))
    gate = (torch.sin(2 * torch.pi * 2.5 * t) > -0.2).float()
    return (0.3 * voiced * gate + 0.01 * torch.randn(t.shape, generator=g)).unsqueeze(0)


@pytest.mark.parametrize("name", SILERO)
def test_silero_vad_streaming_matches_onnxruntime(name: str) -> None:
    data = (importlib.resources.files("silero_vad.data") / name).read_bytes()
    graph = OnnxGraphModule(onnx.load_from_string(data))
    sess = session(data)
    sr, chunk, ctx_len = 16000, 512, 64
    audio = speechy_audio(10).requires_grad_(True)
    state, context = torch.zeros(2, 1, 128), torch.zeros(1, ctx_len)
    ort_state, probs, ort_probs = state.numpy(), [], []
    for i in range(10):
        x = torch.cat([context, audio[:, i * chunk:(i + 1) * chunk]], dim=1)  # (1, 576)
        feeds = {"input": x, "state": state, "sr": torch.tensor(sr)}
        prob, state = graph(*(feeds[n] for n in graph.input_names))
        out, ort_state = sess.run(None, {"input": x.detach().numpy(), "state": ort_state,
                                         "sr": np.array(sr, dtype=np.int64)})
        np.testing.assert_allclose(state.detach().numpy(), ort_state, atol=1e-4, rtol=0)
        probs.append(prob)
        ort_probs.append(out)
        context = x[:, -ctx_len:]
    p = torch.cat(probs, dim=1)
    diff = np.abs(p.detach().numpy() - np.concatenate(ort_probs, axis=1)).max()
    assert diff < 1e-4
    assert p.max() > 0.5 > p.min()  # the signal carries "speech" and pauses
    p.sum().backward()
    assert torch.isfinite(audio.grad).all() and audio.grad.abs().max() > 0


def test_shape_condition_if_picks_its_branch_at_run_time() -> None:
    """An If on a shape (not on values) is static: each call takes the branch its shape picks."""
    sub = {b: helper.make_graph([helper.make_node(op, ["x"], [f"o{b}"])], b, [],
                                [helper.make_tensor_value_info(f"o{b}", TensorProto.FLOAT,
                                                               None)])
           for b, op in (("t", "Exp"), ("e", "Neg"))}
    nodes = [helper.make_node("Size", ["x"], ["n"]),
             helper.make_node("Equal", ["n", "three"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=sub["t"], else_branch=sub["e"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.array(3, I64), "three")])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for n in (3, 4):
        check_single(data.SerializeToString(), {"x": rng.standard_normal(n).astype(np.float32)})
    module = OnnxGraphModule(data)
    torch.testing.assert_close(module(torch.zeros(3)), torch.ones(3))
    torch.testing.assert_close(module(torch.ones(4)), -torch.ones(4))


@pytest.mark.parametrize("name", ["silero_vad_half.onnx", "silero_vad_16k_sequence.onnx",
                                  "silero_vad_openvino_16k.onnx"])
def test_other_silero_files_match_onnxruntime_once(name: str) -> None:
    data = (importlib.resources.files("silero_vad.data") / name).read_bytes()
    proto = onnx.load_from_string(data)
    g = torch.Generator().manual_seed(0)
    feeds = {}
    for i in proto.graph.input:
        dims = [d.dim_value or {"sequence": 576, "sequence_length": 3}.get(d.dim_param, 1)
                for d in i.type.tensor_type.shape.dim]
        feeds[i.name] = (0.1 * torch.randn(dims, generator=g)).numpy()
    graph = OnnxGraphModule(proto)
    ref = session(data).run(graph.output_names, feeds)
    x = torch.from_numpy(feeds["input"]).requires_grad_(True)
    args = [x if n == "input" else torch.from_numpy(feeds[n]) for n in graph.input_names]
    outs = as_tuple(graph(*args))
    for o, r in zip(outs, ref, strict=True):
        np.testing.assert_allclose(o.detach().float().numpy(), r.astype(np.float32), atol=1e-4)
    outs[0].float().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().max() > 0

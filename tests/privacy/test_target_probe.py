"""Hostile and broken target files, each refused at load in one line naming it (issue 24).

Every model here is a real file: TorchScript from ``torch.jit.script``, ONNX from ``onnx.helper``,
loaded through :func:`load_pretrained_target` (what training, experiments and the CLI call).
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import Tensor, nn

from optin.cli import main
from optin.errors import OptinError
from optin.models.onnx_limits import MAX_TENSOR_BYTES
from optin.privacy.pretrained import TargetModelError, TargetSpec, load_pretrained_target
from optin.privacy.target_probe import memory_budget
from optin.training.permitted import TargetChoice, load_tasks


def _script(module: nn.Module, path: Path) -> str:
    torch.jit.script(module).save(str(path))
    return str(path)


def _onnx(path: Path, nodes: list, inputs: list, outputs: list, inits: list | None = None) -> str:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return str(path)


def _wave_in(name: str = "x") -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["B", "S"])


def _out(name: str = "y") -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)


def _refused(source: str, pattern: str, spec: TargetSpec | None = None) -> str:
    """Load ``source`` and return the one-line message, which names the file and matches."""
    with pytest.raises(TargetModelError, match=pattern) as err:
        load_pretrained_target(spec or TargetSpec(source))
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{source}: "), line
    return line


# --------------------------------------------------------------------------- models
class Energy(nn.Module):
    """(B, S) -> (B, 2) logits: a fine waveform target."""

    def forward(self, x: Tensor) -> Tensor:
        e = x.square().mean(1, keepdim=True)
        return torch.cat([e, -e], dim=1)


class InPlace(nn.Module):
    """Scales its input in place, as some front-ends do: fine on a non-leaf input."""

    def forward(self, x: Tensor) -> Tensor:
        x.mul_(2.0)
        return torch.stack([x.square().mean(1), x.abs().mean(1)], dim=1)


class TwoInputs(nn.Module):
    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return x + y


class NanOut(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x[:, :2] * float("nan")


class Linear2(nn.Module):
    def __init__(self, nan: bool) -> None:
        super().__init__()
        self.head = nn.Linear(4, 2)
        if nan:
            with torch.no_grad():
                self.head.weight[0, 0] = float("nan")

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x[:, :4])


class WantsChannel(nn.Module):
    """Reads (B, 1, S): a Conv1d with one input channel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 2, 400, stride=160)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x).mean(-1)


class WaveConv(nn.Module):
    """Reads (B, S) and adds the channel itself (a waveform model)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 2, 400, stride=160)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x.unsqueeze(1)).mean(-1)


class FixedLength(nn.Module):
    """Reads exactly 8000 samples: no layout of a 1 s probe at 16 kHz fits."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8000, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x)


class DictOut(nn.Module):
    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"logits": x[:, :2]}


class IntOut(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([(x > 0).sum(1), (x < 0).sum(1)], dim=1)


class Detached(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        x = x.detach()
        return torch.stack([x.mean(1), x.std(1)], dim=1)


class Thresholded(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        hard = (x > 0).float()
        return torch.stack([hard.mean(1), 1 - hard.mean(1)], dim=1)


class FrameScores(nn.Module):
    """(B, S) -> (B, N) per-frame *logits* (not probabilities)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.unfold(1, 160, 160).mean(-1) * 1000


class HugeEmpty(nn.Module):
    """Asks for ``size`` floats (never touched) on every call."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        scratch = torch.empty(self.size)
        return x[:, :2] + 0 * scratch[:1]


class Batchless(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mean().reshape(1, 1).expand(1, 2)


class OneClass(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mean(1, keepdim=True)


# --------------------------------------------------------------------------- the cases
def test_working_targets_pass_the_probe(tmp_path):
    for model, name in ((Energy(), "energy.pt"), (InPlace(), "inplace.pt"),
                        (Linear2(nan=False), "linear.pt")):
        target = load_pretrained_target(_script(model, tmp_path / name))
        assert target(torch.randn(3, 4000)).shape == (3, 2)



def test_an_initializer_claiming_1e5_by_1e5_with_no_data(tmp_path):
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[100000, 100000])
    path = _onnx(tmp_path / "huge_init.onnx", [helper.make_node("MatMul", ["x", "w"], ["y"])],
                 [_wave_in()], [_out()], [w])
    line = _refused(path, r"tensor 'w' would be 100000 x 100000 \(37\.3 GiB\), over the 1 GiB")
    assert "budget per tensor" in line
    small = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[10, 10])
    path = _onnx(tmp_path / "empty_init.onnx", [helper.make_node("MatMul", ["x", "w"], ["y"])],
                 [_wave_in()], [_out()], [small])
    _refused(path, r"tensor 'w' declares 100 values \(10 x 10\) but holds 0")


def test_a_model_with_two_inputs_is_refused_before_out_is_touched(tmp_path, capsys):
    path = _onnx(tmp_path / "two.onnx", [helper.make_node("Add", ["a", "b"], ["y"])],
                 [_wave_in("a"), _wave_in("b")], [_out()])
    _refused(path, r"takes 2 inputs \(a, b\); a target reads one, the \(B, S\) waveform")
    _refused(_script(TwoInputs(), tmp_path / "two.pt"), r"takes 2 inputs \(x, y\)")
    out = tmp_path / "run"
    code = main(["train", "obfuscator", "--manifest", str(tmp_path / "m.csv"), "--target", path,
                 "--out", str(out), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists()
    assert err.count("\n") == 0 and err.startswith(f"error: {path}: the model takes 2 inputs")


def test_nan_outputs_and_nan_weights(tmp_path):
    line = _refused(_script(NanOut(), tmp_path / "nan_out.pt"), r"outputs NaN \(4 of 4 values\)")
    assert "lr" not in line and "no training setting can fix it" in line
    _refused(_script(Linear2(nan=True), tmp_path / "nan_w.pt"),
             r"weight 'head\.weight' holds NaN \(1 of 8 values\)")
    w = helper.make_tensor("w", TensorProto.FLOAT, [2], [float("nan"), 1.0])
    gather = helper.make_tensor("i", TensorProto.INT64, [2], [0, 1])
    nodes = [helper.make_node("Gather", ["x", "i"], ["xs"], axis=1),
             helper.make_node("Mul", ["xs", "w"], ["y"])]
    _refused(_onnx(tmp_path / "nan_w.onnx", nodes, [_wave_in()], [_out()], [w, gather]),
             r"weight 'w' holds NaN")


def test_a_forward_that_rejects_b_s_audio_or_wants_b_1_s(tmp_path):
    line = _refused(_script(WantsChannel(), tmp_path / "b1s.pt"),
                    r"fails on a \(2, 16000\) waveform, \(B, S\) at 16000 Hz: ")
    assert line.endswith("it reads (B, 1, S) audio: optin gives (B, S); export it to take (B, S) "
                         "(add the unsqueeze(1) inside)")
    line = _refused(_script(FixedLength(), tmp_path / "fixed.pt"), r"fails on a \(2, 16000\)")
    assert "mat1 and mat2" in line and "it reads" not in line


def test_a_dict_output(tmp_path):
    _refused(_script(DictOut(), tmp_path / "dict.pt"),
             r"returns a dict \(keys: logits\); a target must return its scores as a tensor")


def test_a_waveform_model_given_target_input_spectrogram(tmp_path):
    path = _script(WaveConv(), tmp_path / "wave.pt")
    line = _refused(path, r"fails on a \(2, 161, 101\) spectrogram, \(B, F, T\): ",
                    TargetSpec(path, "spectrogram", "logits"))
    assert line.endswith("it reads (B, S) audio: use --target-input waveform")
    assert load_pretrained_target(TargetSpec(path, "waveform", "logits")).level == "utterance"


def test_constant_of_shape_1e6_by_1e6_is_refused_before_allocating(tmp_path):
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1000000, 1000000])
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["c"], name="zeros"),
             helper.make_node("ReduceSum", ["c"], ["s"], keepdims=0),
             helper.make_node("Add", ["x", "s"], ["y"])]
    path = _onnx(tmp_path / "cos.onnx", nodes, [_wave_in()], [_out()], [shape])
    _refused(path, r"node 'zeros' \(ConstantOfShape\) would be 1000000 x 1000000 \(3\.64 TiB\), "
                   r"over the 1 GiB budget per tensor")
    repeats = helper.make_tensor("r", TensorProto.INT64, [2], [1, 100000])
    tile = [helper.make_node("Tile", ["x", "r"], ["y"], name="tile")]
    _refused(_onnx(tmp_path / "tile.onnx", tile, [_wave_in()], [_out()], [repeats]),
             r"node 'tile' \(Tile\) would be 2 x 1600000000")
    wide = helper.make_tensor("wide", TensorProto.INT64, [3], [100000, 2, 16000])
    expand = [helper.make_node("Expand", ["x", "wide"], ["y"], name="expand")]
    _refused(_onnx(tmp_path / "expand.onnx", expand, [_wave_in()], [_out()], [wide]),
             r"node 'expand' \(Expand\) would be 100000 x 2 x 16000 \(11\.9 GiB\)")
    bounds = [helper.make_tensor(n, TensorProto.INT64, [], [v])
              for n, v in (("lo", 0), ("hi", 10 ** 12), ("step", 1))]
    count = [helper.make_node("Range", ["lo", "hi", "step"], ["r"], name="range"),
             helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["rf"], ["s"], keepdims=0),
             helper.make_node("Add", ["x", "s"], ["y"])]
    _refused(_onnx(tmp_path / "range.onnx", count, [_wave_in()], [_out()], bounds),
             r"node 'range' \(Range\) would be 1000000000000 \(7\.28 TiB\)")


@pytest.mark.skipif(not Path("/proc/self/statm").is_file(), reason="the cap is Linux-only")
def test_an_allocation_over_the_probe_budget_fails_in_one_line(tmp_path):
    floats = (memory_budget() + (2 << 30)) // 4  # asked for, never touched
    line = _refused(_script(HugeEmpty(floats), tmp_path / "greedy.pt"),
                    r"it tries to allocate .* over the probe's memory budget")
    assert "1 s input" in line
    assert MAX_TENSOR_BYTES == 1 << 30


# --------------------------------------------------------------------------- the borderline ones
def test_an_integer_output_is_refused(tmp_path):
    _refused(_script(IntOut(), tmp_path / "int.pt"),
             r"outputs torch\.int64 values \(2, 2\): no gradient can flow")


def test_no_gradient_to_the_input_is_refused(tmp_path):
    for model, name in ((Detached(), "detached.pt"), (Thresholded(), "step.pt")):
        _refused(_script(model, tmp_path / name), r"no gradient reaches the input")


def test_frame_probability_on_logits_points_to_the_logits_adapters(tmp_path):
    path = _script(FrameScores(), tmp_path / "frames.pt")
    line = _refused(path, r"adapter 'frame-probability' reads probabilities in \[0, 1\], the "
                          r"model gave values in \[-\d",
                    TargetSpec(path, "waveform", "frame-probability"))
    assert "--target-adapter frame-logits" in line


def test_outputs_that_lose_the_batch_or_have_one_class(tmp_path):
    _refused(_script(Batchless(), tmp_path / "batchless.pt"), r"does not keep the batch: 2 in")
    _refused(_script(OneClass(), tmp_path / "one.pt"), r"reads K >= 2 class scores")


def test_a_graph_that_reads_a_value_nobody_makes(tmp_path):
    dangling = [helper.make_node("Add", ["x", "ghost"], ["y"])]
    _refused(_onnx(tmp_path / "ghost.onnx", dangling, [_wave_in()], [_out()]),
             r"fails on a \(2, 16000\) waveform, \(B, S\) at 16000 Hz: KeyError: 'ghost'$")


# --------------------------------------------------------------------------- every entry point
def test_training_and_experiments_probe_through_the_same_loader(tmp_path):
    bad = _script(DictOut(), tmp_path / "dict.pt")
    with pytest.raises(TargetModelError, match="dict"):
        load_tasks(TargetChoice(bad))
    good = _script(Energy(), tmp_path / "energy.pt")
    assert load_tasks(TargetChoice(good)).names == ["energy.pt"]

    from optin.evaluation.experiment import run_experiment
    from optin.evaluation.experiment_config import ExperimentConfig

    config = tmp_path / "exp.yaml"
    config.write_text(f"name: probe\ndata: {{manifest: m.csv}}\npermitted: vad\n"
                      f"attacked: [speaker]\nsystems: [opt-in]\ntargets: [{{model: {bad}}}]\n")
    out = tmp_path / "runs"
    with pytest.raises(OptinError, match=r"exp\.yaml: targets\[0\]: .*dict\.pt: the model "
                                         r"returns a dict"):
        run_experiment(ExperimentConfig.read(config), out, progress=False)
    assert not out.exists()


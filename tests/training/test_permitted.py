"""Several permitted tasks: L_t is their weighted sum, gradients reach the obfuscator's output
through each; choices from the CLI and the experiment config; errors by name."""

from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

from optin.audio.features import FeatureConfig, SpectrogramFrontEnd
from optin.cli import target_choices_of
from optin.errors import ConfigError
from optin.evaluation.experiment_config import ExperimentConfig, ExperimentError
from optin.training.permitted import TargetChoice, TaskSet, load_tasks


class Tilt(nn.Module):
    """(B, F, T) features -> (B, 3) logits from the mean of three bands."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, :50].mean((1, 2)), x[:, 50:100].mean((1, 2)),
                            x[:, 100:].mean((1, 2))], dim=1) * 3


class Loud(nn.Module):
    """(B, S) -> (B, N, 2) per 512 samples: log energy above -6?"""

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        frames = wave.unfold(1, 512, 512)
        s = torch.log((frames ** 2).mean(-1) + 1e-8) + 6
        return torch.stack([-s, s], dim=-1)


@pytest.fixture
def two_targets(tmp_path):
    tilt, loud = tmp_path / "tilt.pt", tmp_path / "loud.pt"
    torch.jit.script(Tilt()).save(str(tilt))
    torch.jit.script(Loud()).save(str(loud))
    return str(tilt), str(loud)


def _batch():
    torch.manual_seed(0)
    wave = 0.1 * torch.randn(2, 8000) * torch.linspace(0, 1, 8000)
    front = SpectrogramFrontEnd(FeatureConfig())
    x, mean, std, _ = front(wave)
    phase = torch.angle(front.stft(wave))
    return x, torch.full((2,), x.shape[-1]), phase, torch.stack([mean, std], dim=1)


def test_l_t_is_the_weighted_sum_and_both_tasks_pull(two_targets):
    tilt, loud = two_targets
    x, lengths, phase, stats = _batch()
    x_obf = (x + 0.5 * torch.randn_like(x)).requires_grad_()
    both = load_tasks([TargetChoice(tilt, 0.5, "spectrogram", "logits"),
                       TargetChoice(loud, 2.0, "waveform", "frame-logits")])
    assert [t.level for t in both.tasks] == ["utterance", "frame"] and both.needs_phase
    total, agree, _ = both.losses(x, x_obf, lengths, phase, stats)
    parts = []
    for task in both.tasks:
        alone = TaskSet([task], both.features)
        task_weight, task.weight = task.weight, 1.0
        parts.append(task_weight * alone.losses(x, x_obf, lengths, phase, stats)[0])
        task.weight = task_weight
    assert total.item() == pytest.approx((parts[0] + parts[1]).item(), rel=1e-5)
    assert set(agree) == {"tilt.pt", "loud.pt"}
    for part in parts:  # each task alone moves the obfuscated features
        (grad,) = torch.autograd.grad(part, x_obf, retain_graph=True)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    same, _, _ = both.losses(x, x.clone(), lengths, phase, stats)
    assert same.item() < total.item()


def test_task_errors_name_the_problem(two_targets, tmp_path):
    tilt, loud = two_targets
    with pytest.raises(ConfigError, match="no permitted task"):
        load_tasks([])
    with pytest.raises(ConfigError, match="named twice"):
        load_tasks([TargetChoice(tilt, 1.0, "spectrogram"), TargetChoice(tilt, 2.0,
                                                                         "spectrogram")])
    with pytest.raises(ConfigError, match="weight must be >= 0"):
        TargetChoice(tilt, -1.0)
    x, lengths, _, _ = _batch()
    with pytest.raises(ConfigError, match=r"tilt\.pt: .*it reads \(B, F, T\) features: use "
                                          "--target-input spectrogram"):
        load_tasks(TargetChoice(tilt, 1.0, "waveform", "logits"))
    waves = load_tasks(TargetChoice(loud, 1.0, "waveform", "frame-logits"))
    with pytest.raises(ValueError, match="phase"):
        waves.losses(x, x, lengths)


def test_cli_options_give_one_choice_per_target(tmp_path):
    folder = tmp_path / "ds2"
    folder.mkdir()
    args = argparse.Namespace(target=[str(folder), "a.onnx", "silero-vad"],
                              target_weight=[1.0, 0.5, 2.0], target_input=["spectrogram",
                                                                            "waveform"],
                              target_adapter=["logits", "silero-vad"])
    choices = target_choices_of(args)
    assert [(c.source, c.weight) for c in choices] == [
        (str(folder), 1.0), ("a.onnx", 0.5), ("silero-vad", 2.0)]
    assert (choices[1].input, choices[1].adapter) == ("spectrogram", "logits")
    assert choices[2].spec().adapter == "silero-vad"
    args.target_weight = [1.0, 2.0]
    with pytest.raises(ConfigError, match=r"--target-weight.*once per target"):
        target_choices_of(args)


def test_experiment_config_checks_targets():
    base = {"name": "x", "data": {"manifest": "m.csv"}, "permitted": "voice-activity",
            "attacked": ["speaker", "gender", "emotion"]}
    config = ExperimentConfig.from_dict({**base, "targets": [
        {"model": "silero-vad"}, {"attribute": "emotion", "weight": 0.5}],
        "attacked": ["speaker", "gender"]})
    assert config.targets[1] == {"attribute": "emotion", "weight": 0.5}
    for bad, message in (({"model": "a.onnx", "attribute": "x"}, "exactly one"),
                         ({"model": "a.onnx", "adapter": "nope"}, "adapter 'nope'"),
                         ({"attribute": "gender", "adapter": "logits"}, "apply to a model"),
                         ({"model": "a.onnx", "speed": 1}, "speed: unknown key"),
                         ({"model": "a.onnx", "weight": -1}, "must be >= 0"),
                         ("silero-vad", "mapping")):
        with pytest.raises(ExperimentError, match=message):
            ExperimentConfig.from_dict({**base, "targets": [bad]})


def test_a_pretrained_target_runs_in_float32_under_autocast():
    """Mixed precision (bfloat16 on AMX CPUs) never reaches an app's own model."""
    from optin.training.permitted import PermittedTask

    seen = []

    def model(x):
        seen.append((x.dtype, torch.is_autocast_enabled("cpu")))
        return x.mean(dim=-1, keepdim=True).repeat(1, 2)

    task = PermittedTask("t", 1.0, "utterance", "waveform", {}, pretrained=model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = task.scores(torch.randn(2, 160).bfloat16(), torch.tensor([160, 160]))
    assert seen == [(torch.float32, False)] and out.dtype == torch.float32

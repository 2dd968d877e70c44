"""Rendering answers: joint indices, block quantisation, cross-fades, and a protector whose
output is a function of its deciders' answers alone, for frame answers and several tasks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optin.models.decision_template import (
    AnswerTask,
    DecisionTemplateConfig,
    DecisionTemplateProtector,
)
from optin.models.template_render import (
    crossfade_weights,
    joint_strides,
    quantise_blocks,
    render_track,
    split_joint,
    tile,
)


def test_joint_index_round_trips():
    counts = [3, 4, 2]
    assert joint_strides(counts) == [8, 2, 1]
    index = torch.arange(24)
    parts = split_joint(index, counts)
    rebuilt = sum(p * s for p, s in zip(parts, joint_strides(counts), strict=True))
    assert torch.equal(rebuilt, index)
    assert [int(p[13]) for p in parts] == [1, 2, 1]


def test_blocks_take_their_majority_and_boundaries_fall_on_the_step():
    d = torch.tensor([[0, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0]])
    q = quantise_blocks(d, 3, 2)
    assert q.tolist() == [[1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0]]
    changes = (q[0, 1:] != q[0, :-1]).nonzero().flatten() + 1
    assert all(int(c) % 3 == 0 for c in changes)
    assert torch.equal(quantise_blocks(d, 1, 2), d)
    assert quantise_blocks(torch.tensor([[0, 1]]), 2, 2).tolist() == [[0, 0]]  # tie: lowest


def test_crossfades_sum_to_one_and_render_is_tiling_where_the_answer_is_constant():
    track = torch.tensor([[0] * 50 + [2] * 50])
    used, weights = crossfade_weights(track, 3, 9)
    assert used.tolist() == [0, 2]
    assert torch.allclose(weights.sum(dim=1), torch.ones(1, 100))
    assert weights[0, 0, 40] == 1 and weights[0, 1, 60] == 1  # only near the change
    assert 0 < weights[0, 0, 50] < 1
    templates = torch.randn(3, 7)
    flat = render_track(templates, torch.full((2, 30), 1), 9)
    assert torch.equal(flat, tile(templates[[1, 1]], 30))
    mixed = render_track(templates, track, 1)  # hard switch: exactly each template
    assert torch.equal(mixed[0, :50], tile(templates[[0]], 50)[0])
    assert torch.equal(mixed[0, 50:], tile(templates[[2]], 100)[0, 50:])


class Fixed(nn.Module):
    """A frame decider that answers a fixed pattern, whatever the audio: (B, S) -> (B, N, 2)."""

    def __init__(self, pattern: list[int]) -> None:
        super().__init__()
        self.pattern = torch.tensor(pattern)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        n = wave.shape[1] // 160
        p = self.pattern[torch.arange(n) % len(self.pattern)]
        logits = torch.stack([-(p.float() - 0.5), p.float() - 0.5], dim=-1)
        return logits[None].expand(wave.shape[0], -1, -1)


def frame_protector(pattern: list[int], step: int = 1) -> DecisionTemplateProtector:
    task = AnswerTask("vad", "frame", 2, "waveform", "pretrained", {}, 160)
    config = DecisionTemplateConfig(tasks=[task.to_dict()], domain="waveform", period=10,
                                    length_quantum=0, boundary_step=step, crossfade=0.5)
    protector = DecisionTemplateProtector(config, {0: Fixed(pattern)})
    with torch.no_grad():
        protector.templates.normal_()
    return protector


def test_a_frame_protector_hears_nothing_but_its_decisions():
    protector = frame_protector([1, 1, 1, 0, 0, 1, 1, 0])
    a, b = torch.randn(1, 16000), 5 * torch.randn(1, 16000) + 1
    out_a, out_b = protector.protect(wave=a), protector.protect(wave=b)
    assert out_a.shape == (1, 16000)
    assert torch.equal(out_a, out_b)  # two inputs, the same decisions: the same output
    protector.attach(0, Fixed([1, 0]))  # other decisions, the same templates: other audio
    assert not torch.allclose(protector.protect(wave=a), out_a)
    protector.attach(0, Fixed([1, 1, 1, 0, 0, 1, 1, 0]))
    # the rendered audio equals the template of the class decided, away from the changes
    plain = protector.render(protector.decide(wave=a), 100, 16000)
    assert torch.allclose(plain[0, 20:400], tile(protector.templates[[1]], 16000)[0, 20:400])


def test_boundaries_follow_the_stated_step():
    protector = frame_protector([1, 0, 0, 1, 1, 1, 0], step=4)
    (decided,) = protector.decide(wave=torch.randn(1, 160 * 28))
    changes = (decided[0, 1:] != decided[0, :-1]).nonzero().flatten() + 1
    assert len(changes) and all(int(c) % 4 == 0 for c in changes)


def test_several_tasks_render_their_joint_answer():
    tasks = [AnswerTask("a", "utterance", 3, "spectrogram", "pretrained", {}).to_dict(),
             AnswerTask("b", "utterance", 2, "spectrogram", "pretrained", {}).to_dict()]
    config = DecisionTemplateConfig(tasks=tasks, period=20, length_quantum=50)
    first = nn.Sequential(nn.Flatten(), nn.LazyLinear(3))
    second = nn.Sequential(nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(4, 161, 50)
    first(x), second(x)
    protector = DecisionTemplateProtector(config, {0: first, 1: second})
    assert protector.templates.shape == (6, 161, 20)
    with torch.no_grad():
        protector.templates.normal_()
    out = protector(x)
    answers = protector.decide(x)
    for i in range(4):
        j = int(answers[0][i]) * 2 + int(answers[1][i])
        assert torch.equal(out[i], tile(protector.templates[[j]], 50)[0])


def test_a_deepspeech2_decider_reads_spectrograms_only():
    with pytest.raises(ValueError, match="DeepSpeech2"):
        DecisionTemplateConfig(tasks=[AnswerTask("vad", "frame", 2, "waveform").to_dict()],
                               domain="waveform")
    with pytest.raises(ValueError, match="waveform domain"):
        DecisionTemplateConfig(tasks=[AnswerTask("x", "utterance", 2, "waveform",
                                                 "pretrained").to_dict()])

"""The decision-template protector: an output that depends on the input only through T's answer.

The opt-in limit (issue 22): whatever an attacker learns from the protected signal, it can learn
from the permitted answer itself, because the protected signal *is* a function of that answer.
The protector runs a copy of the permitted model T (the *decider*) on the input, takes T's
utterance decision ``k`` (segments and vote as T makes them), and emits template ``k``: a
learned spectrogram that T classifies as ``k``, repeated to a length that depends on the input
only through its length rounded up to a multiple of ``length_quantum`` frames (timing is a side
channel too; ``length_quantum`` = 0 keeps the exact length).

An informed attacker (trained on protected speech) therefore sees at most T's decision and the
quantised length: its accuracy sits at the output-only floor, which anchors the privacy-utility
frontier of every learned obfuscator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from optin.audio.segments import SegmentConfig, segment_batch
from optin.models.deepspeech2 import DeepSpeech2Classifier, DeepSpeech2Config, vote
from optin.settings import OneOf, Rule, StrictConfig, at_least, check_fields


@dataclass(frozen=True)
class DecisionTemplateConfig(StrictConfig):
    """Constructor arguments of :class:`DecisionTemplateProtector`; stored in checkpoints.

    Attributes:
        decider: the :class:`DeepSpeech2Config` fields of T's copy (n_classes, n_freq included).
        period: frames P of each template; the output repeats it (circularly).
        length_quantum: the output has the input's frame count rounded up to a multiple of
            this (0: exactly the input's length, which lets the length through).
        segment_length, segment_hop: T's segmentation (frames) for its utterance decision.
        vote_method: T's vote over segments ("majority" or "mean").
        level_mean, level_std: the normalisation statistics given to every output, so that the
            input's loudness does not leave the device with the audio.
    """

    decider: dict[str, Any] = field(default_factory=dict)
    period: int = 100
    length_quantum: int = 100
    segment_length: int = 100
    segment_hop: int = 50
    vote_method: str = "majority"
    level_mean: float = 0.0
    level_std: float = 1.0

    RANGES: ClassVar[dict[str, Rule]] = {
        "period": at_least(1), "length_quantum": at_least(0), "segment_length": at_least(1),
        "segment_hop": at_least(1), "vote_method": OneOf(("majority", "mean")),
    }

    def __post_init__(self) -> None:
        check_fields(self)

    def decider_config(self) -> DeepSpeech2Config:
        return DeepSpeech2Config.from_dict(self.decider)

    @property
    def n_classes(self) -> int:
        return self.decider_config().n_classes

    @property
    def n_freq(self) -> int:
        return self.decider_config().n_freq


class DecisionTemplateProtector(nn.Module):
    """(B, F, T) normalised features -> (B, F, T') templates of T's decisions.

    ``templates`` is (K, F, P); the decider is a frozen :class:`DeepSpeech2Classifier`.
    """

    def __init__(self, config: DecisionTemplateConfig | None = None) -> None:
        super().__init__()
        self.config = config or DecisionTemplateConfig()
        arch = self.config.decider_config()
        self.decider = DeepSpeech2Classifier(arch)
        self.decider.requires_grad_(False)
        self.templates = nn.Parameter(torch.zeros(arch.n_classes, arch.n_freq,
                                                  self.config.period))
        self.segments = SegmentConfig(self.config.segment_length, self.config.segment_hop)

    def output_frames(self, frames: int) -> int:
        """T' for an input of ``frames`` frames: rounded up to the quantum (at least one)."""
        q = self.config.length_quantum
        return frames if q == 0 else q * max(1, math.ceil(frames / q))

    @torch.no_grad()
    def decide(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """T's utterance decisions: (B, F, T) features (valid ``lengths`` (B,)) -> (B,) long."""
        assert x.ndim == 3, f"expected (B, F, T), got {tuple(x.shape)}"
        self.decider.eval()
        valid = [x.shape[2]] * x.shape[0] if lengths is None else lengths.tolist()
        segs, lens, index = segment_batch([x[b, :, : int(n)] for b, n in enumerate(valid)],
                                          self.segments)  # (S, F, L), (S,), (S,)
        logits = self.decider(segs, lens.to(x.device))  # (S, K)
        return vote(logits, index.to(x.device), x.shape[0],
                    method=self.config.vote_method)  # type: ignore[arg-type]

    def render(self, decisions: Tensor, frames: int) -> Tensor:
        """Templates of ``decisions`` (B,) repeated to ``frames`` frames -> (B, F, frames)."""
        period = self.templates.shape[2]
        index = torch.arange(frames, device=self.templates.device) % period
        return self.templates[decisions][:, :, index]

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, F, T) -> (B, F, T') with T' = :meth:`output_frames` of T."""
        decisions = self.decide(x, lengths)
        return self.render(decisions, self.output_frames(x.shape[2])).to(x.dtype)

"""The permitted tasks an obfuscator must keep: one or several frozen targets T_i, each weighted.

A task is either a DeepSpeech2 checkpoint made by ``optin train target`` (normalised features in,
one class per utterance, segmented and voted as when it was trained) or the app's own pretrained
model from a file (:mod:`optin.privacy.pretrained`: TorchScript or ONNX, waveform or features in,
per-utterance or per-frame classes). With several tasks L_t = sum_i w_i L_t,i. Frame-level tasks
(e.g. voice activity) score L_t and the agreement over valid frames: L_t,i is the cross-entropy
of T_i(X~) against T_i(X)'s posterior (or label) per frame, averaged.

A waveform target hears the obfuscator's output as audio: the obfuscated magnitude with the
input's phase, through a differentiable inverse STFT
(:func:`optin.audio.features.features_to_wave`), so L_t's gradient flows through the app's own
front-end.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from optin.audio.features import FeatureConfig, features_to_wave
from optin.checkpoint import read_config
from optin.errors import ConfigError
from optin.metrics.classification import f1_score
from optin.privacy.losses import agreement, frame_agreement, frame_target_loss, target_loss
from optin.privacy.pretrained import (
    BUILTIN_TARGETS,
    PretrainedTarget,
    TargetSpec,
    load_pretrained_target,
)
from optin.training.classifier import Classifier

DITHER_LEVEL = 1e-5  # about -100 dBFS


def fixed_dither(samples: int, device: torch.device) -> Tensor:
    """(samples,) seeded noise at -100 dBFS added to what a waveform target hears in training.

    A target's own front-end often takes a magnitude (sqrt(re^2 + im^2)), whose gradient is NaN
    where the audio is exactly zero (digital silence, padding); the dither keeps it finite
    without touching the answers. Seeded: no global random state is used.
    """
    gen = torch.Generator().manual_seed(0)
    return (DITHER_LEVEL * torch.randn(samples, generator=gen)).to(device)


@dataclass(frozen=True)
class TargetChoice:
    """One permitted task as the user names it.

    ``source``: a DeepSpeech2 checkpoint folder (``optin train target``), a TorchScript or ONNX
    file, or a built-in name (``silero-vad``). ``input`` and ``adapter`` apply to files only
    (see :mod:`optin.privacy.pretrained`); ``weight`` is w_i in L_t. ``task``: the manifest
    attribute a file model's answer is (e.g. speaker), when it is one: evaluation then trains
    other models of it to check that the protection serves them too.
    """

    source: str
    weight: float = 1.0
    input: str = "waveform"
    adapter: str = "logits"
    task: str | None = None

    def __post_init__(self) -> None:
        if not self.weight >= 0:
            raise ConfigError(f"target '{self.source}': weight must be >= 0, got {self.weight}")

    @property
    def is_classifier(self) -> bool:
        return Path(self.source).is_dir()

    def spec(self) -> TargetSpec:
        if self.source in BUILTIN_TARGETS:
            return TargetSpec.builtin(self.source)
        return TargetSpec(self.source, self.input, self.adapter)  # type: ignore[arg-type]


def target_choices(targets: str | os.PathLike | TargetChoice | Sequence[Any]
                   ) -> list[TargetChoice]:
    """A list of choices from a folder or file, a choice, or a sequence of those."""
    if isinstance(targets, str | os.PathLike | TargetChoice):
        targets = [targets]
    out = [t if isinstance(t, TargetChoice) else TargetChoice(str(t)) for t in targets]
    if not out:
        raise ConfigError("no permitted task: give at least one target")
    return out


@dataclass
class PermittedTask:
    """One frozen target with its weight: ``scores(x, lengths)`` -> logits.

    ``x``: (B, F, L) features for a spectrogram target, (B, S) audio for a waveform target;
    logits (B, K) per utterance or (B, N, K) per frame (``level``).
    """

    name: str
    weight: float
    level: str  # "utterance" or "frame"
    input: str  # "spectrogram" or "waveform"
    fingerprint: dict[str, Any]
    classifier: Classifier | None = None
    pretrained: PretrainedTarget | None = None
    model: Callable[[Tensor, Tensor], Tensor] | None = None  # (x, lengths) -> logits
    attribute: str | None = None  # the manifest attribute its answer is, when known

    @property
    def voice_activity(self) -> bool:
        """Whether its answer is speech / no speech per frame (a VAD)."""
        return self.pretrained is not None and self.pretrained.spec.adapter in (
            "frame-probability", "silero-vad")

    def scores(self, x: Tensor, lengths: Tensor) -> Tensor:
        """The task's logits on ``x`` (B, F, L) features or (B, S) audio. A pretrained model
        always runs in float32, whatever autocast is on: its numerics under bfloat16 or float16
        are nobody's promise (Silero VAD gives NaN under CPU bfloat16)."""
        if self.model is not None:
            return self.model(x, lengths)
        assert self.pretrained is not None
        with torch.autocast(x.device.type, enabled=False):
            return self.pretrained(x.float())

    @classmethod
    def of_model(cls, model: Callable[[Tensor, Tensor], Tensor], name: str = "target"
                 ) -> PermittedTask:
        """A per-utterance spectrogram task from a bare model ``(x, lengths) -> (B, K)``."""
        return cls(name, 1.0, "utterance", "spectrogram", {"attribute": name}, model=model)

    def frame_mask(self, logits: Tensor, valid_samples: Tensor | None) -> Tensor:
        """(B, N) True for frames inside the valid audio (all frames when unknown)."""
        batch, frames = logits.shape[:2]
        mask = torch.ones(batch, frames, dtype=torch.bool, device=logits.device)
        step = self.pretrained.frame_samples if self.pretrained is not None else None
        if step is None or valid_samples is None:
            return mask
        valid = (valid_samples.to(logits.device) // step).clamp(min=1)
        return torch.arange(frames, device=logits.device)[None] < valid[:, None]


@dataclass
class TaskSet:
    """The permitted tasks of one obfuscator and the features they share."""

    tasks: list[PermittedTask]
    features: FeatureConfig
    names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.names = [t.name for t in self.tasks]
        if len(set(self.names)) != len(self.names):
            raise ConfigError(f"the same target is named twice: {self.names}")

    @property
    def needs_phase(self) -> bool:
        return any(t.input == "waveform" for t in self.tasks)

    @property
    def utterance_task(self) -> PermittedTask | None:
        """The first per-utterance task (its classes drive L_c's class templates)."""
        return next((t for t in self.tasks if t.level == "utterance"), None)

    def fingerprints(self) -> list[dict[str, Any]]:
        """What identifies each task (a DeepSpeech2 target of weight 1: as before issue 16)."""
        return [t.fingerprint if t.classifier is not None and t.weight == 1.0 else
                {**t.fingerprint, "weight": t.weight, "level": t.level, "input": t.input}
                for t in self.tasks]

    def describe(self) -> str:
        return " + ".join(f"{t.weight:g} x '{t.name}' ({t.level})" for t in self.tasks)

    def losses(self, x: Tensor, x_obf: Tensor, lengths: Tensor, phase: Tensor | None = None,
               stats: Tensor | None = None, hard: bool = False
               ) -> tuple[Tensor, dict[str, float], Tensor | None]:
        """L_t = sum_i w_i L_t,i on a batch of crops.

        Args:
            x, x_obf: (B, F, L) original and obfuscated features; lengths (B,) valid frames.
            phase: (B, F, L) the input's phase; stats: (B, 2) mean and std (waveform targets).

        Returns:
            L_t (scalar, differentiable in ``x_obf``), each task's agreement, and the first
            per-utterance task's logits on the original (for L_c) or None.
        """
        total: Tensor | None = None
        agree: dict[str, float] = {}
        classes_logits = None
        waves = None
        for task in self.tasks:
            if task.input == "waveform":
                if waves is None:  # the inverse front-end in float32, as the target
                    with torch.autocast(x.device.type, enabled=False):
                        waves = self._waves(x.float(), x_obf.float(), lengths, phase, stats)
                inputs, valid = waves[:2], waves[2]
            else:
                inputs, valid = (x, x_obf), None
            with torch.no_grad():
                t_orig = task.scores(inputs[0], lengths)
            t_obf = task.scores(inputs[1], lengths)
            if task.level == "frame":
                mask = task.frame_mask(t_obf, valid)
                loss = frame_target_loss(t_obf.float(), t_orig.float(), mask, hard=hard)
                agree[task.name] = float(frame_agreement(t_obf.detach(), t_orig, mask))
            else:
                loss = target_loss(t_obf.float(), t_orig.float(), hard=hard)
                agree[task.name] = float(agreement(t_obf.detach(), t_orig))
                if classes_logits is None:
                    classes_logits = t_orig
            weighted = task.weight * loss  # x 1.0 is exact: one task gives L_t itself
            total = weighted if total is None else total + weighted
        assert total is not None
        return total, agree, classes_logits

    def _waves(self, x: Tensor, x_obf: Tensor, lengths: Tensor, phase: Tensor | None,
               stats: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        if phase is None or stats is None:
            raise ValueError("a waveform target needs the input's phase and statistics")
        mean, std = stats[:, 0], stats[:, 1]
        hop = self.features.hop_length
        wave = features_to_wave(x, mean, std, phase, self.features)
        wave_obf = features_to_wave(x_obf.float(), mean, std, phase, self.features)
        dither = fixed_dither(wave.shape[-1], wave.device)
        return wave + dither, wave_obf + dither, (lengths - 1).clamp(min=1) * hop

    @torch.no_grad()
    def utterance_scores(self, task: PermittedTask, features: Tensor,
                         wave: Tensor | None) -> Tensor:
        """A pretrained task's answer on one whole utterance: (K,) logits or (N, K) per frame.

        ``features`` (F, T) for a spectrogram target; ``wave`` (S,) for a waveform target.
        (DeepSpeech2 tasks are segmented and voted: :meth:`Classifier.predict`.)
        """
        assert task.pretrained is not None, "DeepSpeech2 targets are segmented and voted"
        x = wave[None] if task.input == "waveform" else features[None]
        return task.pretrained(x)[0].float()


def load_tasks(targets: str | os.PathLike | TargetChoice | Sequence[Any],
               device: torch.device | str = "cpu") -> TaskSet:
    """Load every permitted task; DeepSpeech2 targets must share their feature settings."""
    choices = target_choices(targets)
    tasks: list[PermittedTask | None] = [None] * len(choices)
    features: FeatureConfig | None = None
    for i, choice in enumerate(choices):  # DeepSpeech2 targets first: they fix the features
        if choice.is_classifier:
            clf = Classifier.load(choice.source, features=features, device=device)
            features = clf.features
            config = read_config(choice.source)
            labels = config.get("labels", {})
            tasks[i] = PermittedTask(
                str(labels.get("attribute")), choice.weight, "utterance", "spectrogram",
                {"path": str(Path(choice.source)), "weights_sha256": config.get("weights_sha256"),
                 "attribute": labels.get("attribute"), "classes": labels.get("classes")},
                classifier=clf, model=clf.model, attribute=str(labels.get("attribute")))
    features = features or FeatureConfig()
    for i, choice in enumerate(choices):
        if not choice.is_classifier:
            target = load_pretrained_target(choice.spec(), features=features).to(device)
            tasks[i] = PermittedTask(
                target.name, choice.weight, target.level, target.spec.input,
                {"path": choice.source, "weights_sha256": target.sha256,
                 "attribute": target.name, "adapter": target.spec.adapter, "classes": None},
                pretrained=target, attribute=choice.task)
    return TaskSet([t for t in tasks if t is not None], features)


def compare_answers(pairs: Sequence[tuple[Tensor, Tensor]]) -> dict[str, float]:
    """How a task's answers on protected audio match its answers on the original.

    ``pairs``: per utterance, logits on the original and on the protected version, (N, K) per
    frame (truncated to the shorter N) or (K,). Returns ``agreement`` (share of frames, or
    utterances, decided alike), ``f1`` (of the protected decisions against the original ones:
    class 1 for two classes, e.g. speech; macro above), ``positive_share`` (share of class-1
    decisions on the original) and ``frames``.
    """
    truth, guess = [], []
    for original, protected in pairs:
        o, q = original.reshape(-1, original.shape[-1]), protected.reshape(-1, original.shape[-1])
        n = min(len(o), len(q))
        truth.append(o[:n].argmax(dim=-1))
        guess.append(q[:n].argmax(dim=-1))
    if not truth:
        raise ValueError("no utterance to compare")
    t, g = torch.cat(truth).cpu(), torch.cat(guess).cpu()
    classes = int(pairs[0][0].shape[-1])
    return {"agreement": float((t == g).float().mean()), "f1": f1_score(t, g, classes),
            "positive_share": float((t == 1).float().mean()), "frames": int(t.numel())}

"""The decision-template protector: an output that depends on the input only through T's answers.

The opt-in limit (issues 22 and 29): whatever an attacker learns from the protected signal, it
can learn from the permitted answers themselves, because the protected signal *is* a function
of those answers. The protector runs the permitted models (the *deciders*: a copy of T, the
app's own model, or a student of either) on the input, takes their answers and renders them:

* an **utterance** answer k (T's class for the whole utterance, segmented and voted as T does
  for a DeepSpeech2 T, or the app model's output on the whole input) selects template k,
  repeated to a length that depends on the input only through its length rounded up to a
  multiple of ``length_quantum`` frames;
* a **frame** answer (one class per frame of the decider's own grid, e.g. Silero VAD's
  speech decision every 32 ms) is quantised to blocks of ``boundary_step`` decisions, and the
  output at each moment is the template of the class decided there, cross-faded over
  ``crossfade`` frames where the class changes: timing at the stated step is all that leaves;
* **several tasks** answer jointly: one template per answer tuple (a_1, ..., a_n), rendered
  per moment as above.

Templates live in the output's domain: normalised spectrogram frames (``domain`` =
"spectrogram", (J, F, P)) when every decider reads features, or audio samples ("waveform",
(J, P * hop)) when one reads audio, so that the app hears exactly what the templates were
learned on. Every template is read at the output position modulo its period, so consecutive
moments of one class are continuous.

Deciders of the ``deepspeech2`` family are built from their config and their weights are in
this module's state; any other decider (the app's own TorchScript or ONNX model, a student
family) is given to the constructor or :meth:`DecisionTemplateProtector.attach` by whoever
loads it: this module knows nothing about files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from optin.audio.levels import rms_normalise
from optin.audio.segments import SegmentConfig, segment_batch
from optin.models.deepspeech2 import DeepSpeech2Classifier, DeepSpeech2Config, vote
from optin.models.template_render import (
    frame_positions,
    joint_count,
    joint_strides,
    quantise_blocks,
    render_track,
    tile,
)
from optin.settings import OneOf, Rule, StrictConfig, at_least, check_fields

DEEPSPEECH2 = "deepspeech2"
LEVELS = ("utterance", "frame")
INPUTS = ("spectrogram", "waveform")
DOMAINS = ("spectrogram", "waveform")


@dataclass(frozen=True)
class AnswerTask(StrictConfig):
    """One permitted task whose answer the protector renders.

    Attributes:
        name: the task (T's attribute, or the app model's name).
        level: "utterance" (one class per input) or "frame" (one class per decider frame).
        n_classes: K.
        input: what its decider reads: "spectrogram" (B, F, T) normalised features or
            "waveform" (B, S) audio at the feature rate.
        family: "deepspeech2" (a copy built from ``arch``, weights in the protector's state,
            segmented and voted with ``segment_length``/``segment_hop``/``vote_method``), or
            the name of a decider the loader attaches (e.g. "pretrained", a student family).
        arch: the decider's constructor settings (DeepSpeech2Config fields).
        frame_samples: samples per decision of a waveform frame decider (0: the input's
            samples divided by its number of decisions).
    """

    name: str = "target"
    level: str = "utterance"
    n_classes: int = 2
    input: str = "spectrogram"
    family: str = DEEPSPEECH2
    arch: dict[str, Any] = field(default_factory=dict)
    frame_samples: int = 0
    segment_length: int = 100
    segment_hop: int = 50
    vote_method: str = "majority"

    RANGES: ClassVar[dict[str, Rule]] = {
        "level": OneOf(LEVELS), "n_classes": at_least(2), "input": OneOf(INPUTS),
        "frame_samples": at_least(0), "segment_length": at_least(1),
        "segment_hop": at_least(1), "vote_method": OneOf(("majority", "mean")),
    }

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def segments(self) -> SegmentConfig:
        return SegmentConfig(self.segment_length, self.segment_hop)


@dataclass(frozen=True)
class DecisionTemplateConfig(StrictConfig):
    """Constructor arguments of :class:`DecisionTemplateProtector`; stored in checkpoints.

    Attributes:
        decider: the :class:`DeepSpeech2Config` fields of T's copy, for one DeepSpeech2 task
            (the form of issue 22's checkpoints; ``tasks`` empty).
        tasks: the permitted tasks (:class:`AnswerTask` fields), when not the one above.
        domain: "spectrogram" (templates (J, F, P)) or "waveform" (templates (J, P * hop)).
        period: frames P of each template; the output repeats it (circularly).
        hop_length: samples per frame (the waveform domain's frame).
        length_quantum: the output has the input's frame count rounded up to a multiple of
            this (0: exactly the input's length, which lets the length through).
        boundary_step: decisions per block of a frame task (its boundaries' step).
        crossfade: frames over which the template changes where a frame answer does.
        segment_length, segment_hop, vote_method: T's segmentation and vote (``decider``).
        level_mean, level_std: the normalisation statistics given to every spectrogram
            output, so that the input's loudness does not leave the device with the audio.
        sample_rate, target_dbfs: the waveform domain's audio rate and the loudness every
            output is brought to (the volume normalisation of ``load_audio``).
    """

    decider: dict[str, Any] = field(default_factory=dict)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    domain: str = "spectrogram"
    period: int = 100
    hop_length: int = 160
    length_quantum: int = 100
    boundary_step: int = 1
    crossfade: float = 1.0
    segment_length: int = 100
    segment_hop: int = 50
    vote_method: str = "majority"
    level_mean: float = 0.0
    level_std: float = 1.0
    sample_rate: int = 16000
    target_dbfs: float = -25.0

    RANGES: ClassVar[dict[str, Rule]] = {
        "sample_rate": at_least(1), "domain": OneOf(DOMAINS), "period": at_least(1),
        "hop_length": at_least(1),
        "length_quantum": at_least(0), "boundary_step": at_least(1), "crossfade": at_least(0.0),
        "segment_length": at_least(1), "segment_hop": at_least(1),
        "vote_method": OneOf(("majority", "mean")),
    }

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.tasks and not self.decider:
            object.__setattr__(self, "decider", DeepSpeech2Config().to_dict())
        for task in self.answer_tasks():
            if task.family == DEEPSPEECH2 and (task.level, task.input) != ("utterance",
                                                                           "spectrogram"):
                raise ValueError(f"task '{task.name}': a DeepSpeech2 decider answers per "
                                 "utterance on spectrograms")
        if self.domain == "spectrogram" and any(t.input == "waveform"
                                                for t in self.answer_tasks()):
            raise ValueError("a task reads audio: its templates must be in the waveform domain")

    def answer_tasks(self) -> list[AnswerTask]:
        """The tasks, the single-DeepSpeech2 form included."""
        if self.tasks:
            return [AnswerTask.from_dict(t) for t in self.tasks]
        arch = DeepSpeech2Config.from_dict(self.decider)
        return [AnswerTask("target", "utterance", arch.n_classes, "spectrogram", DEEPSPEECH2,
                           dict(self.decider), 0, self.segment_length, self.segment_hop,
                           self.vote_method)]

    def decider_config(self) -> DeepSpeech2Config:
        """The first task's DeepSpeech2 settings."""
        return DeepSpeech2Config.from_dict(self.answer_tasks()[0].arch)

    @property
    def n_classes(self) -> int:
        """Classes of the first task (the only one in the single-task form)."""
        return self.answer_tasks()[0].n_classes

    @property
    def class_counts(self) -> list[int]:
        return [t.n_classes for t in self.answer_tasks()]

    @property
    def n_joint(self) -> int:
        return joint_count(self.class_counts)

    @property
    def n_freq(self) -> int:
        for task in self.answer_tasks():
            if task.family == DEEPSPEECH2:
                return DeepSpeech2Config.from_dict(task.arch).n_freq
        return int(self.tasks[0].get("arch", {}).get("n_freq", 161)) if self.tasks else 161


Decider = Callable[[Tensor], Tensor]  # (B, F, T) or (B, S) -> (B, K) or (B, N, K) logits


def _decider_name(index: int) -> str:
    return "decider" if index == 0 else f"decider_{index}"


class DecisionTemplateProtector(nn.Module):
    """Input -> a rendering of the permitted tasks' answers.

    ``templates`` is (J, F, P) in the spectrogram domain or (J, P * hop) in the waveform domain,
    J the number of joint answers. ``forward`` maps (B, F, T) features to (B, F, T')
    (spectrogram domain, spectrogram deciders); :meth:`protect` serves every form.
    """

    def __init__(self, config: DecisionTemplateConfig | None = None,
                 attached: dict[int, Decider] | None = None) -> None:
        super().__init__()
        self.config = config or DecisionTemplateConfig()
        self.tasks = self.config.answer_tasks()
        self._attached: dict[int, Decider] = {}
        for i, task in enumerate(self.tasks):
            if task.family == DEEPSPEECH2:
                model = DeepSpeech2Classifier(DeepSpeech2Config.from_dict(task.arch))
                model.requires_grad_(False)
                setattr(self, _decider_name(i), model)
        for i, module in (attached or {}).items():
            self.attach(i, module)
        length = self.config.period * (self.config.hop_length
                                       if self.config.domain == "waveform" else 1)
        shape = ((self.config.n_joint, length) if self.config.domain == "waveform"
                 else (self.config.n_joint, self.config.n_freq, length))
        self.templates = nn.Parameter(torch.zeros(shape))
        self.segments = SegmentConfig(self.config.segment_length, self.config.segment_hop)

    # deciders -------------------------------------------------------------------------------
    def attach(self, index: int, decider: Decider) -> None:
        """Give task ``index`` (not a DeepSpeech2 copy) its decider: ``decider(x)`` -> logits.
        A module given here is not part of this module's state (its loader stores it)."""
        if self.tasks[index].family == DEEPSPEECH2:
            raise ValueError(f"task {index} is a DeepSpeech2 copy held in the state")
        self._attached[index] = decider

    def decider_of(self, index: int) -> Decider:
        if self.tasks[index].family == DEEPSPEECH2:
            return getattr(self, _decider_name(index))
        if index not in self._attached:
            raise RuntimeError(f"task '{self.tasks[index].name}' ({self.tasks[index].family}) "
                               "has no decider attached")
        return self._attached[index]

    @property
    def needs_wave(self) -> bool:
        return any(t.input == "waveform" for t in self.tasks)

    @property
    def has_frames(self) -> bool:
        return any(t.level == "frame" for t in self.tasks)

    # sizes ----------------------------------------------------------------------------------
    def output_frames(self, frames: int) -> int:
        """T' for an input of ``frames`` frames: rounded up to the quantum (at least one)."""
        q = self.config.length_quantum
        return frames if q == 0 else q * max(1, math.ceil(frames / q))

    # deciding -------------------------------------------------------------------------------
    @torch.no_grad()
    def decide(self, x: Tensor | None = None, lengths: Tensor | None = None,
               wave: Tensor | None = None) -> Any:
        """The tasks' answers. ``x`` (B, F, T) features (valid ``lengths`` (B,)), ``wave``
        (B, S) audio (for waveform deciders; equal lengths). One task of the single-task
        form: (B,) long; otherwise a list with (B,) per utterance task and (B, N) per frame
        task (quantised to ``boundary_step``)."""
        answers = [self._decide_task(i, x, lengths, wave) for i in range(len(self.tasks))]
        return answers[0] if not self.config.tasks else answers

    def _decide_task(self, i: int, x: Tensor | None, lengths: Tensor | None,
                     wave: Tensor | None) -> Tensor:
        task = self.tasks[i]
        source = wave if task.input == "waveform" else x
        if source is None:
            raise ValueError(f"task '{task.name}' reads {task.input}: none given")
        if task.family == DEEPSPEECH2:
            return self._vote(i, source, lengths)
        decider = self.decider_of(i)
        if isinstance(decider, nn.Module):
            decider.eval()
        logits = decider(source)  # (B, K) or (B, N, K)
        if task.level == "utterance":
            return logits.reshape(source.shape[0], -1).argmax(dim=1)
        return quantise_blocks(logits.argmax(dim=-1), self.config.boundary_step, task.n_classes)

    def _vote(self, i: int, x: Tensor, lengths: Tensor | None) -> Tensor:
        assert x.ndim == 3, f"expected (B, F, T), got {tuple(x.shape)}"
        task, model = self.tasks[i], self.decider_of(i)
        model.eval()  # type: ignore[union-attr]
        valid = [x.shape[2]] * x.shape[0] if lengths is None else lengths.tolist()
        segs, lens, index = segment_batch([x[b, :, : int(n)] for b, n in enumerate(valid)],
                                          task.segments)  # (S, F, L), (S,), (S,)
        logits = model(segs, lens.to(x.device))  # (S, K)
        return vote(logits, index.to(x.device), x.shape[0],
                    method=task.vote_method)  # type: ignore[arg-type]

    # rendering ------------------------------------------------------------------------------
    def track(self, answers: Tensor | Sequence[Tensor], length: int,
              input_length: int | None = None) -> Tensor:
        """(B, L) joint answer at every output position (frames, or samples in the waveform
        domain) of an output of ``length`` positions; ``input_length``: the input's length in
        the same unit (default ``length``), which a frame task's decisions span."""
        answers = [answers] if isinstance(answers, Tensor) else list(answers)
        strides = joint_strides(self.config.class_counts)
        track: Tensor | None = None
        for task, answer, stride in zip(self.tasks, answers, strides, strict=True):
            if task.level == "utterance":
                part = answer[:, None].expand(-1, length)
            else:
                per = self._positions_per_decision(task, answer.shape[1],
                                                   input_length or length)
                part = answer[:, frame_positions(length, answer.shape[1], per).to(answer.device)]
            part = part * stride
            track = part if track is None else track + part
        assert track is not None
        return track

    def _positions_per_decision(self, task: AnswerTask, decisions: int, input_length: int
                                ) -> float:
        if self.config.domain == "waveform" and task.frame_samples:
            return float(task.frame_samples)
        return input_length / decisions

    def render(self, answers: Tensor | Sequence[Tensor], frames: int,
               input_length: int | None = None) -> Tensor:
        """The templates of ``answers`` over ``frames`` output frames -> (B, F, frames), or
        (B, frames * hop) audio in the waveform domain (``input_length`` in samples there)."""
        scale = self.config.hop_length if self.config.domain == "waveform" else 1
        if isinstance(answers, Tensor) and not self.config.tasks:  # one utterance task
            return tile(self.templates[answers], frames * scale)
        fade = max(1, round(self.config.crossfade * scale))
        return render_track(self.templates, self.track(answers, frames * scale, input_length),
                            fade)

    def loudness(self, rendered: Tensor) -> Tensor:
        """Rendered audio (B, S) at the fixed loudness every waveform output has (what an
        app's ``load_audio`` would make of it, so the fit hears what the app hears)."""
        return rms_normalise(rendered, self.config.sample_rate, self.config.target_dbfs)

    def protect(self, x: Tensor | None = None, lengths: Tensor | None = None,
                wave: Tensor | None = None) -> Tensor:
        """Decide on ``x`` (B, F, T) features and/or ``wave`` (B, S) audio, render -> (B, F, T')
        or (B, T' * hop) audio at the fixed loudness, with T' = :meth:`output_frames` of the
        input's frames."""
        frames = x.shape[2] if x is not None else None
        if frames is None:
            assert wave is not None
            frames = max(1, wave.shape[1] // self.config.hop_length)
        answers = self.decide(x, lengths, wave)
        input_length = (wave.shape[1] if self.config.domain == "waveform" and wave is not None
                        else frames if self.config.domain == "spectrogram" else
                        frames * self.config.hop_length)
        out = self.render(answers, self.output_frames(frames), input_length)
        return self.loudness(out) if self.config.domain == "waveform" else out

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, F, T) -> (B, F, T') with T' = :meth:`output_frames` of T (spectrogram domain,
        deciders that read features)."""
        if self.config.domain != "spectrogram" or self.needs_wave:
            raise ValueError("this protector's deciders read audio: use protect(wave=...)")
        return self.protect(x, lengths).to(x.dtype)

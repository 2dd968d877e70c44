"""Where the decision templates start, before T's gradient shapes them (label-free).

* ``mean``: per joint answer, the mean spectrum of the utterances the tasks answered so (a
  stationary, voice-less start): in the spectrogram domain the mean normalised frame, in the
  waveform domain seeded noise shaped by the mean magnitude spectrum (exactly periodic).
* ``natural``: the tasks' most confident real training utterance of each answer (a crop of
  one period from its middle; the waveform's wrap cross-faded so that it loops without a click).
  A template then *is* a piece of one training recording: it transfers to other models of the
  task better, and it ships that recording inside the protector.
* For a binary frame task read as speech / no speech (``frame-probability``, ``silero-vad``),
  "no speech" starts silent (zeros, kept at zero by the fit) and "speech" starts as a
  stand-in voice: eSpeak NG reading a fixed sentence (no user's or training speaker's voice;
  synthesized offline), unless utterance tasks give the speech its class's start.

Shapes: J joint answers, F bins, P period frames, S = P * hop samples.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from optin.audio.features import FeatureConfig
from optin.audio.io import normalize_volume, resample
from optin.corpora.espeak import ESpeak
from optin.models.decision_template import AnswerTask
from optin.models.template_render import joint_count, joint_strides, split_joint
from optin.training.template_answers import SplitAnswers

STAND_IN_TEXT = ("many men and women were walking along the road in the morning sun, "
                 "while a long line of cars moved slowly over the bridge")
STAND_IN_VOICE = "en-us"
WRAP_FADE = 0.02  # seconds of cross-fade where a waveform template wraps around


SPEECH_ADAPTERS = ("frame-probability", "silero-vad")


def is_speech_task(task: AnswerTask) -> bool:
    """A frame task read as speech / no speech (a voice-activity detector's adapter)."""
    return task.level == "frame" and task.arch.get("adapter") in SPEECH_ADAPTERS


def utterance_joint(answers: SplitAnswers, tasks: list[AnswerTask]) -> Tensor:
    """(U,) joint index of each utterance over the utterance tasks (frame tasks' part 0)."""
    return answers.joint([t.n_classes for t in tasks],
                         [i for i, t in enumerate(tasks) if t.level == "utterance"])


def _best_utterance(answers: SplitAnswers, joint: Tensor, j: int, tasks: list[AnswerTask]
                    ) -> int | None:
    """The utterance answered ``j`` (utterance part) with the highest product of the
    utterance tasks' confidences, or None."""
    rows = (joint == j).nonzero().flatten().tolist()
    if not rows:
        return None
    utt = [i for i, t in enumerate(tasks) if t.level == "utterance"]

    def score(u: int) -> float:
        p = 1.0
        for i in utt:
            p *= answers.confidence[i][u]
        return p

    return max(rows, key=score)


def _centre_crop(x: Tensor, length: int) -> Tensor:
    """(..., L) -> (..., length) from the middle, tiled when shorter."""
    total = x.shape[-1]
    if total < length:
        return x[..., torch.arange(length) % total]
    start = (total - length) // 2
    return x[..., start:start + length]


def looped(wave: Tensor, sample_rate: int) -> Tensor:
    """(S,) audio made periodic: its last ``WRAP_FADE`` s cross-faded into its start."""
    n = min(int(WRAP_FADE * sample_rate), wave.shape[0] // 4)
    if n < 2:
        return wave
    ramp = torch.linspace(0.0, 1.0, n, dtype=wave.dtype)
    out = wave[: wave.shape[0]].clone()
    head, tail = out[:n].clone(), out[-n:]
    out[:n] = head * ramp + tail * (1 - ramp)
    return out


def shaped_noise(magnitude: Tensor, samples: int, config: FeatureConfig,
                 generator: torch.Generator) -> Tensor:
    """(F,) mean STFT magnitude -> (samples,) seeded noise with that spectral envelope,
    exactly periodic in ``samples`` (a circular filter)."""
    noise = torch.randn(samples, generator=generator)
    bins = samples // 2 + 1
    source = torch.linspace(0, 1, magnitude.shape[0])
    target = torch.linspace(0, 1, bins)
    envelope = torch.from_numpy(np.interp(target.numpy(), source.numpy(),
                                          magnitude.numpy())).float()
    return torch.fft.irfft(torch.fft.rfft(noise) * envelope, n=samples)


def stand_in_voice(samples: int, config: FeatureConfig) -> Tensor:
    """(samples,) eSpeak NG speaking :data:`STAND_IN_TEXT`, at the feature rate and the
    features' loudness, looped to ``samples``."""
    synth = ESpeak()
    pcm, rate = synth.synthesize(STAND_IN_TEXT, voice=STAND_IN_VOICE)
    wave = resample(pcm.astype("float32") / 32768.0, rate, config.sample_rate)
    wave = normalize_volume(wave, config.sample_rate, "rms", config.target_dbfs)
    return looped(_centre_crop(torch.from_numpy(wave), samples), config.sample_rate)


def starts(answers: SplitAnswers, tasks: list[AnswerTask], domain: str, period: int,
           config: FeatureConfig, kind: str, noise: float, generator: torch.Generator) -> Tensor:
    """The templates' starts: (J, F, P) in the spectrogram domain, (J, P * hop) in the
    waveform domain. ``kind`` "mean" or "natural"; ``noise``: std of seeded noise added in
    the spectrogram domain (breaks the stationarity)."""
    counts = [t.n_classes for t in tasks]
    n_joint = joint_count(counts)
    joint = utterance_joint(answers, tasks)
    parts = split_joint(torch.arange(n_joint), counts)
    strides = joint_strides(counts)
    length = period if domain == "spectrogram" else period * config.hop_length
    out = []
    voice: Tensor | None = None
    for j in range(n_joint):
        silent = any(is_speech_task(t) and int(parts[i][j]) == 0 for i, t in enumerate(tasks))
        utt_part = sum(int(parts[i][j]) * strides[i]
                       for i, t in enumerate(tasks) if t.level == "utterance")
        has_utterance = any(t.level == "utterance" for t in tasks)
        if domain == "waveform" and silent:
            out.append(torch.zeros(length))
            continue
        if domain == "waveform" and not has_utterance and any(is_speech_task(t) for t in tasks):
            voice = voice if voice is not None else stand_in_voice(length, config)
            out.append(voice.clone())
            continue
        if not has_utterance:
            out.append(_frame_start(answers, tasks, [int(p[j]) for p in parts], domain,
                                    length, config, kind, generator))
            continue
        out.append(_class_start(answers, joint, utt_part, tasks, domain, length, config, kind,
                                generator))
    start = torch.stack(out)
    if domain == "spectrogram" and noise > 0:
        start = start + noise * torch.randn(start.shape, generator=generator)
    return start


def _frame_pieces(answers: SplitAnswers, tasks: list[AnswerTask], want: list[int],
                  domain: str, config: FeatureConfig, length: int) -> list[Tensor]:
    """The stretches of training input (audio samples, or feature frames) where every frame
    task answered its part of ``want``, in order, until ``length`` positions are found."""
    pieces, found = [], 0
    frame_tasks = [i for i, t in enumerate(tasks) if t.level == "frame"]
    for u in range(len(answers)):
        source = answers.features[u] if domain == "spectrogram" else answers.waves[u]
        assert source is not None
        total = source.shape[-1]
        decisions = [answers.answers[i][u] for i in frame_tasks]
        n = min(len(d) for d in decisions)
        hit = torch.ones(n, dtype=torch.bool)
        for i, d in zip(frame_tasks, decisions, strict=True):
            hit &= d[:n] == want[i]
        per = (tasks[frame_tasks[0]].frame_samples if domain == "waveform"
               and tasks[frame_tasks[0]].frame_samples else total / max(n, 1))
        for k in hit.nonzero().flatten().tolist():
            piece = source[..., int(k * per):int((k + 1) * per)]
            if piece.shape[-1]:
                pieces.append(piece)
                found += piece.shape[-1]
        if found >= length:
            break
    return pieces


def _frame_start(answers: SplitAnswers, tasks: list[AnswerTask], want: list[int], domain: str,
                 length: int, config: FeatureConfig, kind: str, generator: torch.Generator
                 ) -> Tensor:
    """A frame answer's start: what the training input sounds like where the tasks answered
    so (its pieces joined and looped: ``natural``; their mean spectrum: ``mean``)."""
    pieces = _frame_pieces(answers, tasks, want, domain, config, length)
    if not pieces:  # an answer never given: the mean of everything
        pieces = [answers.features[u] if domain == "spectrogram" else answers.waves[u]
                  for u in range(len(answers))]  # type: ignore[misc]
    joined = torch.cat(pieces, dim=-1)
    if domain == "spectrogram":
        if kind == "natural":
            return _centre_crop(joined, length)
        return joined.mean(dim=1)[:, None].expand(-1, length).clone()
    if kind == "natural":
        return looped(_centre_crop(joined, length), config.sample_rate)
    return _noise_like([joined], length, config, generator)


def _noise_like(waves: list[Tensor], length: int, config: FeatureConfig,
                generator: torch.Generator) -> Tensor:
    """Seeded periodic noise with the mean magnitude spectrum and the RMS of ``waves``."""
    window = torch.hamming_window(config.win_length, periodic=True)
    spectra = [torch.stft(w, config.n_fft, config.hop_length, config.win_length, window,
                          return_complex=True).abs().mean(dim=1)
               for w in waves if w.shape[-1] > config.n_fft // 2]
    wave = shaped_noise(torch.stack(spectra).mean(dim=0), length, config, generator)
    level = torch.stack([w.pow(2).mean() for w in waves]).mean().sqrt()
    return wave * (level / wave.pow(2).mean().sqrt().clamp(min=1e-12))


def _class_start(answers: SplitAnswers, joint: Tensor, j: int, tasks: list[AnswerTask],
                 domain: str, length: int, config: FeatureConfig, kind: str,
                 generator: torch.Generator) -> Tensor:
    rows = (joint == j).nonzero().flatten().tolist() or list(range(len(answers)))
    if kind == "natural":
        best = _best_utterance(answers, joint, j, tasks)
        if best is not None:
            if domain == "spectrogram":
                return _centre_crop(answers.features[best], length)
            assert answers.waves is not None
            return looped(_centre_crop(answers.waves[best], length), config.sample_rate)
    if domain == "spectrogram":  # the mean normalised frame, repeated
        mean = torch.stack([answers.features[u].mean(dim=1) for u in rows]).mean(dim=0)
        return mean[:, None].expand(-1, length).clone()
    assert answers.waves is not None
    return _noise_like([answers.waves[u] for u in rows], length, config, generator)

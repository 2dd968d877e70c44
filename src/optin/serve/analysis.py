"""One utterance through every system of a served run: what the page shows, as data.

For the original and each protection system: the audio (to play) and the features the models
hear (for the spectrogram), the target model T's prediction and probabilities and whether it
agrees with T on the original, every attacker's guess for every attacked attribute (ignorant:
trained on original data; informed: trained on this system's protected data), and the
speaker-verification score of the protected audio against the original (cosine of x-vectors,
where the run has an extractor). ADR works on x-vectors and makes no audio: it gets only the
verification score of its protected x-vector (its vector classifiers are trained in memory by
the experiment and not stored).

Protection mirrors the experiment harness: opt-in obfuscates the features (audio by
Griffin-Lim); McAdams transforms the waveform, which is then volume-normalised as
``load_audio`` does (for the run's own utterances, its stored anonymized copy is used).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from optin.audio.features import Spectrogram, spectrogram
from optin.audio.io import load_audio, prepare_wave
from optin.audio.segments import segment
from optin.baselines.mcadams import mcadams
from optin.errors import OptinError
from optin.models.deepspeech2 import utterance_posteriors, vote
from optin.serve.run_folder import Attacker, ServedRun, ServedSystem
from optin.training.classifier import Classifier
from optin.training.xvector_extractor import XVectorExtractor

ORIGINAL = "original"


class UtteranceError(OptinError, ValueError):
    """An utterance the run does not have; the message names it."""


@dataclass
class Prediction:
    """A classifier's answer for one utterance: the predicted class and every probability."""

    label: str
    probabilities: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "probabilities": self.probabilities}


@dataclass
class Guess:
    """One attacker family's guesses on a system's audio for one attribute."""

    family: str
    ignorant: Prediction | None
    informed: Prediction | None

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family,
                "ignorant": self.ignorant.to_dict() if self.ignorant else None,
                "informed": self.informed.to_dict() if self.informed else None}


@dataclass
class SystemResult:
    """What one system (or the original) gives for the utterance.

    ``audio`` is (N,) float32 at the feature rate and ``features`` (F, T) normalised, both None
    for a system that makes no audio (ADR).
    """

    key: str
    label: str
    audio: np.ndarray | None = None
    features: Tensor | None = None
    target: Prediction | None = None
    agrees: bool | None = None
    attacks: dict[str, list[Guess]] = field(default_factory=dict)
    verification: float | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "makes_audio": self.audio is not None,
                "target": self.target.to_dict() if self.target else None,
                "agrees": self.agrees, "verification": self.verification, "note": self.note,
                "attacks": {a: [g.to_dict() for g in guesses]
                            for a, guesses in self.attacks.items()}}


@dataclass
class Analysis:
    """Every system's result for one utterance; ``truth`` holds its corpus labels (empty for
    an upload), ``seconds`` its duration, ``elapsed`` the time the analysis took."""

    source: str
    seconds: float
    truth: dict[str, str]
    results: list[SystemResult]
    elapsed: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "seconds": round(self.seconds, 3), "truth": self.truth,
                "elapsed": round(self.elapsed, 3),
                "systems": [r.to_dict() for r in self.results]}

    def result(self, key: str) -> SystemResult:
        return next(r for r in self.results if r.key == key)


@torch.no_grad()
def predict(model: Classifier | XVectorExtractor, features: Tensor) -> Prediction:
    """A classifier's prediction for one utterance's features (F, T).

    DeepSpeech2: the checkpoint's vote over the utterance's segments, with the mean segment
    posteriors (as ``Classifier.predict``); x-vector TDNN: the softmax of its head.
    """
    assert features.ndim == 2, f"expected (F, T), got {tuple(features.shape)}"
    if isinstance(model, Classifier):
        model.model.eval()
        segs, lengths = segment(features, model.segments)  # (S, F, L), (S,)
        logits = model.model(segs.to(model.device), lengths.to(model.device)).float().cpu()
        index = torch.zeros(logits.shape[0], dtype=torch.long)
        chosen = int(vote(logits, index, 1, method=model.vote_method)[0])
        probs = utterance_posteriors(logits, index, 1)[0]  # (K,)
        classes = model.encoder.classes
    else:
        probs = torch.softmax(model.classify(model.embed(features)[None]), dim=1)[0]
        chosen = int(probs.argmax())
        classes = model.speakers
    return Prediction(str(classes[chosen]),
                      {str(c): round(float(p), 4) for c, p in zip(classes, probs, strict=True)})


def _cosine(a: Tensor, b: Tensor) -> float:
    return round(float(torch.nn.functional.cosine_similarity(a, b, dim=0)), 4)


def _guesses(ignorant: list[Attacker], informed: list[Attacker], features: Tensor
             ) -> list[Guess]:
    by_family = {a.family: a for a in informed}
    guesses = [Guess(a.family, predict(a.model, features),
                     predict(by_family[a.family].model, features)
                     if a.family in by_family else None) for a in ignorant]
    known = {a.family for a in ignorant}
    guesses += [Guess(a.family, None, predict(a.model, features))
                for a in informed if a.family not in known]
    return guesses


def _features(run: ServedRun, wave: np.ndarray) -> Spectrogram:
    return spectrogram(wave, run.features)


def _protect(run: ServedRun, system: ServedSystem, wave: np.ndarray, spec: Spectrogram,
             row: dict[str, str] | None) -> tuple[np.ndarray, Tensor]:
    """(audio (N,), features (F, T)) of a spectrogram-world system's protected version."""
    cfg = run.features
    if system.obfuscator is not None and system.obfuscator.whole_utterance:
        obf, audio = system.obfuscator.protect(wave)  # a protector may read the audio itself
        return (audio if audio is not None else system.obfuscator.to_waveform(obf),
                obf.features)
    if system.obfuscator is not None:
        obf = system.obfuscator(spec)
        return system.obfuscator.to_waveform(obf), obf.features
    assert system.mcadams is not None
    stored = None
    if row is not None and system.mcadams_manifest is not None:
        stored = next((r for r in system.mcadams_manifest.rows if r["id"] == row["id"]), None)
    if stored is not None and system.mcadams_manifest is not None:
        audio = load_audio(system.mcadams_manifest.audio_path(stored), cfg.sample_rate,
                           normalize="none")
    else:
        speaker = row["speaker"] if row else "upload"
        alpha = system.mcadams.alpha_for(speaker, row["id"] if row else "upload")
        audio = mcadams(wave, cfg.sample_rate, alpha=alpha, lpc_order=system.mcadams.lpc_order,
                        name="the uploaded audio")
    heard = prepare_wave(audio, cfg.sample_rate, sample_rate=cfg.sample_rate,
                         normalize=cfg.volume, target_dbfs=cfg.target_dbfs,
                         allow_silence=True, name="the McAdams audio")
    return audio.astype(np.float32), _features(run, heard).features


def analyse_wave(run: ServedRun, wave: np.ndarray, source: str = "upload",
                 row: dict[str, str] | None = None) -> Analysis:
    """Every system's result for a waveform (N,) at the run's rate, volume-normalised as
    ``load_audio`` does; ``row`` is its manifest row when it comes from the corpus."""
    start = time.perf_counter()
    spec = _features(run, wave)
    x = spec.features  # (F, T)
    embed = run.extractor.embed if run.extractor is not None else None
    x_vector = embed(x) if embed is not None else None  # (E,)
    t_original = predict(run.target, x)
    original = SystemResult(ORIGINAL, "original", audio=wave, features=x, target=t_original,
                            attacks={a: _guesses(run.ignorant.get(a, []), [], x)
                                     for a in run.attacked})
    results = [original]
    for system in run.systems.values():
        if system.adr is not None:
            result = SystemResult(system.key, system.label,
                                  note="ADR protects x-vectors, not audio: there is nothing to "
                                       "play, and its vector classifiers are not stored")
            if x_vector is not None:
                protected = system.adr.transform(x_vector[None])[0]
                result.verification = _cosine(x_vector, protected)
            results.append(result)
            continue
        audio, feats = _protect(run, system, wave, spec, row)
        target = predict(run.target, feats)
        results.append(SystemResult(
            system.key, system.label, audio=audio, features=feats, target=target,
            agrees=target.label == t_original.label,
            attacks={a: _guesses(run.ignorant.get(a, []), system.informed.get(a, []), feats)
                     for a in run.attacked},
            verification=_cosine(x_vector, embed(feats)) if embed and x_vector is not None
            else None))
    truth = {c: row[c] for c in (run.permitted, *run.attacked) if row and row.get(c)}
    return Analysis(source, len(wave) / run.features.sample_rate, truth, results,
                    time.perf_counter() - start)


def analyse_utterance(run: ServedRun, utterance_id: str) -> Analysis:
    """Analyse one of the run's test utterances, with its true labels."""
    row = next((r for r in run.test_rows() if r["id"] == utterance_id), None)
    if row is None or run.manifest is None:
        raise UtteranceError(f"utterance {utterance_id!r} is not in the run's test split")
    cfg = run.features
    wave = load_audio(run.manifest.audio_path(row), cfg.sample_rate, normalize=cfg.volume,
                      target_dbfs=cfg.target_dbfs)
    return analyse_wave(run, wave, source=utterance_id, row=row)

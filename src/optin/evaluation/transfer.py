"""Transfer: does the protected output still serve a model of the permitted task that the
protection never saw? (Issue 29: a template optimised through T's gradient could be an
adversarial example of T alone; the app may update its model, or a second app may do the same
task with its own.)

* A task with labels in the manifest (a DeepSpeech2 T of attribute A, or a model from a file
  whose ``task`` names A): every attacker family trains a classifier of A on the original
  training data with another seed (:data:`TRANSFER_SEED` added) — another seed of T's own
  family and, where it exists, another family (the x-vector TDNN). Each is scored by its
  agreement with its own answers on the original test audio, and by its accuracy there.
* A voice-activity task (two classes per frame): the WebRTC VAD (Google's GMM detector, the
  ``webrtcvad-wheels`` package), a different family from any neural VAD, scored by the share
  of its 30 ms decisions on the protected audio that equal its decisions on the original.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from optin.audio.features import FeatureConfig
from optin.audio.io import load_audio
from optin.corpora.feature_cache import FeatureCache
from optin.corpora.manifest import Manifest
from optin.evaluation.attacker_families import AttackerSettings, LoadedAttacker, train_attacker
from optin.evaluation.families import family
from optin.training.data import FeatureStore
from optin.training.wave_data import PhaseStore, heard_waves

TRANSFER_SEED = 1000  # added to the seed: a model of the permitted task training never saw
WEBRTC_FRAME = 480  # samples (30 ms at 16 kHz)
WEBRTC_MODE = 2  # 0 (least) .. 3 (most aggressive)
Transform = Callable[[Tensor], Tensor] | None


def second_models(manifest: Manifest, attribute: str, models: Path, preset: str, seed: int,
                  overrides: Callable[[str], dict[str, Any]], settings: AttackerSettings,
                  progress: bool) -> dict[str, LoadedAttacker]:
    """A classifier of the permitted ``attribute`` per attacker family that can give its
    predictions, trained on the original training data with seed ``seed + TRANSFER_SEED``
    (found when already there)."""
    return {name: LoadedAttacker(name, train_attacker(
        name, manifest, attribute, models, preset, seed + TRANSFER_SEED, overrides(name),
        settings, progress)) for name in settings.families if family(name).predict is not None}


def answers_of(model: LoadedAttacker, manifest: Manifest, transform: Transform
               ) -> dict[str, str]:
    predict = model.spec.predict
    if predict is None:
        raise ValueError(f"attacker family '{model.family}' cannot give its predictions")
    return predict(model.model, model.model_dir, manifest, "test", transform)


def classifier_transfer(model: LoadedAttacker, manifest: Manifest, data: Manifest,
                        transform: Transform, attribute: str) -> dict[str, float]:
    """{"agreement", "accuracy"} of a second model on protected test data (``data`` with
    ``transform``): agreement with its own answers on the original, and with the labels."""
    original = answers_of(model, manifest, None)
    protected = answers_of(model, data, transform)
    labels = {r["id"]: r[attribute] for r in manifest.split("test").rows}
    ids = [i for i in original if i in protected]
    if not ids:
        raise ValueError("the protected test split holds none of the original test ids")
    return {"agreement": sum(original[i] == protected[i] for i in ids) / len(ids),
            "accuracy": sum(protected[i] == labels[i] for i in ids) / len(ids)}


def webrtc_decisions(wave: np.ndarray, sample_rate: int = 16000,
                     mode: int = WEBRTC_MODE) -> np.ndarray:
    """(N,) float audio at 16 kHz -> (N // 480,) bool: WebRTC VAD's speech decision per 30 ms."""
    import webrtcvad

    if sample_rate != 16000:
        raise ValueError("the WebRTC VAD check runs at 16 kHz")
    vad = webrtcvad.Vad(mode)
    pcm = (np.clip(wave, -1.0, 1.0) * 32767).astype(np.int16)
    frames = len(pcm) // WEBRTC_FRAME
    return np.array([vad.is_speech(pcm[i * WEBRTC_FRAME:(i + 1) * WEBRTC_FRAME].tobytes(),
                                   sample_rate) for i in range(frames)], dtype=bool)


def vad_agreement(originals: Sequence[np.ndarray], protected: Sequence[np.ndarray]
                  ) -> dict[str, float]:
    """{"agreement", "speech_share"} of WebRTC VAD's decisions on protected audio against its
    decisions on the original (each pair truncated to the shorter)."""
    same, total, speech = 0, 0, 0
    for o, p in zip(originals, protected, strict=True):
        a, b = webrtc_decisions(o), webrtc_decisions(p)
        n = min(len(a), len(b))
        same += int((a[:n] == b[:n]).sum())
        speech += int(a[:n].sum())
        total += n
    return {"agreement": same / max(total, 1), "speech_share": speech / max(total, 1)}


def protected_audio(manifest: Manifest, data: Manifest, transform: Transform,
                    features: FeatureConfig, griffin_lim_iters: int = 32
                    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The test split's original audio and what an app hears of its protected version (the
    protected copy's audio, or the transformed features through Griffin-Lim), by id."""
    test = manifest.split("test")
    rows = {r["id"]: r for r in data.split("test").rows}

    def load(m: Manifest, row: dict[str, str]) -> np.ndarray:
        return load_audio(m.audio_path(row), features.sample_rate, features.volume,
                          features.target_dbfs, allow_silence=True)

    originals = [load(manifest, r) for r in test.rows]
    if transform is None:
        return originals, [load(data, rows[r["id"]]) for r in test.rows]
    store = FeatureStore(test, FeatureCache.for_manifest(manifest, features), progress=False)
    phases = PhaseStore(store, features)
    heard = []
    for i in range(len(store)):
        with torch.no_grad():
            obf = transform(store.features(i))
        heard.append(heard_waves(obf, phases.utterance(i), features,
                                 griffin_lim_iters)["griffin_lim"].numpy())
    return originals, heard


def transfer_numbers(permitted: Sequence[tuple[str, str | None, bool]], manifest: Manifest,
                     data: Manifest, transform: Transform, features: FeatureConfig,
                     seconds: Callable[[str], dict[str, LoadedAttacker]]) -> dict[str, float]:
    """The transfer numbers of one protected test split, flat for the results' ``target``.

    ``permitted``: per task (name, labelled attribute or None, whether it is a voice-activity
    task); ``seconds(attribute)`` gives the second models of an attribute. Keys:
    ``transfer_<family>_agreement`` / ``_accuracy`` (``transfer_webrtc_vad_agreement``), with
    ``_<task>`` appended when there are several tasks."""
    out: dict[str, float] = {}
    several = len(permitted) > 1
    audio: tuple[list[np.ndarray], list[np.ndarray]] | None = None
    for name, attribute, vad in permitted:
        suffix = f"_{name}" if several else ""
        if attribute is not None:
            for fam, model in seconds(attribute).items():
                got = classifier_transfer(model, manifest, data, transform, attribute)
                out[f"transfer_{fam}_agreement{suffix}"] = got["agreement"]
                out[f"transfer_{fam}_accuracy{suffix}"] = got["accuracy"]
        if vad:
            audio = audio or protected_audio(manifest, data, transform, features)
            out[f"transfer_webrtc_vad_agreement{suffix}"] = vad_agreement(*audio)["agreement"]
    return out

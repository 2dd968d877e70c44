"""The ``deepspeech2`` attacker family: the paper's attacker, the target model's architecture
(DeepSpeech2 classifier on 1 s segments, utterance vote)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from optin.corpora.manifest import Manifest
from optin.evaluation.families.base import AttackerFamily, Transform
from optin.training import classifier as ds2


def _configure(attribute: str, preset: str, seed: int, overrides: dict[str, Any],
               training: dict[str, int]) -> ds2.ClassifierTrainConfig:
    return ds2.preset_config(attribute, preset, role="attacker", seed=seed,
                             **{**overrides, **training})


def _fit(data: Manifest, config: Any, out: Path, transform: Transform, progress: bool,
         note: dict[str, Any] | None) -> None:
    ds2.train_classifier(data, config, out, progress=progress, transform=transform,
                         data_note=note)


def _score(model: Any, model_dir: Path, manifest: Manifest, split: str,
           transform: Transform) -> float:
    result = ds2.evaluate_classifier(model_dir, manifest, split, progress=False,
                                     classifier=model, transform=transform)
    return float(result["utterance_accuracy"])


def _predict(model: Any, model_dir: Path, manifest: Manifest, split: str,
             transform: Transform) -> dict[str, str]:
    result = ds2.evaluate_classifier(model_dir, manifest, split, progress=False,
                                     classifier=model, transform=transform,
                                     return_predictions=True)
    return dict(zip(result["ids"], result["predictions"], strict=True))


FAMILY = AttackerFamily(name="deepspeech2", label="DeepSpeech2", prefix="attacker",
                        section="classifier", configure=_configure, fit=_fit,
                        load=ds2.Classifier.load, score=_score,
                        predict=_predict)

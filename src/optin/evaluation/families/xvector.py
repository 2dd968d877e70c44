"""The ``xvector`` attacker family: the x-vector TDNN (Snyder et al. 2018) on mel filterbanks
of the same spectrogram, statistics pooling over the whole utterance and a softmax head over
the attribute's classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from optin.corpora.manifest import Manifest
from optin.evaluation.families.base import AttackerFamily, Transform
from optin.training import xvector as xv
from optin.training.xvector_extractor import XVectorExtractor, evaluate_xvector_classifier


def _configure(attribute: str, preset: str, seed: int, overrides: dict[str, Any],
               training: dict[str, int]) -> xv.XVectorTrainConfig:
    options = {k: v for k, v in overrides.items() if k not in ("attribute", "selection")}
    return xv.preset_config(preset, seed=seed, attribute=attribute, selection="accuracy",
                            **{**options, **training})


def _fit(data: Manifest, config: Any, out: Path, transform: Transform, progress: bool,
         note: dict[str, Any] | None) -> None:
    xv.train_xvector(data, config, out, transform=transform, progress=progress, data_note=note)


def _score(model: Any, model_dir: Path, manifest: Manifest, split: str,
           transform: Transform) -> float:
    result = evaluate_xvector_classifier(model_dir, manifest, split, transform=transform,
                                         extractor=model)
    return float(result["utterance_accuracy"])


def _predict(model: Any, model_dir: Path, manifest: Manifest, split: str,
             transform: Transform) -> dict[str, str]:
    result = evaluate_xvector_classifier(model_dir, manifest, split, transform=transform,
                                         extractor=model)
    return dict(zip(result["ids"], result["predictions"], strict=True))


FAMILY = AttackerFamily(name="xvector", label="x-vector TDNN", prefix="xvattacker",
                        section="xvector", configure=_configure, fit=_fit,
                        load=XVectorExtractor.load, score=_score,
                        predict=_predict)

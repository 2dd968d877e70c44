"""Attacker families: two different classifiers per attacked attribute, each trained to its best.

A privacy number is only as good as the attacker behind it (weak attackers overstate privacy:
Panariello et al. 2025). For every attacked attribute the harness therefore trains attackers of
two families and reports the strongest:

* ``deepspeech2``: the paper's attacker, the target model's architecture (DeepSpeech2
  classifier on 1 s segments, utterance vote);
* ``xvector``: the x-vector TDNN (Snyder et al. 2018) on mel filterbanks of the same
  spectrogram, statistics pooling over the whole utterance and a softmax head over the
  attribute's classes: a different inductive bias (utterance-level statistics instead of
  segment votes).

Both are *trained to their best*: a generous epoch cap and early stopping when validation
utterance accuracy has not improved for ``patience`` epochs (:data:`ATTACKER_TRAINING`); the
checkpoint kept is the best validation epoch. The same settings train the original
classifiers (which are also the ignorant attackers) and the informed attackers (on protected
training data with the true labels).

**Strength check**: on original test data each family must reach the best family's accuracy
within ``strength_margin`` (2 points); a family that does not is marked ``undertrained`` in the
results and the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor

from optin.corpora.manifest import Manifest
from optin.errors import ConfigError
from optin.evaluation.keys import key_of
from optin.settings import OneOf, Rule, at_least, between, check_fields
from optin.training import classifier as ds2
from optin.training import xvector as xv
from optin.training.xvector_extractor import XVectorExtractor, evaluate_xvector_classifier

ATTACKER_FAMILIES: tuple[str, ...] = ("deepspeech2", "xvector")
FAMILY_LABELS = {"deepspeech2": "DeepSpeech2", "xvector": "x-vector TDNN"}

# Epoch cap and early-stopping patience of every attacker, per preset: the cap is generous, the
# patience decides (the quick presets of the models themselves stop after 12 / 8 epochs).
ATTACKER_TRAINING: dict[str, dict[str, int]] = {
    "quick": {"epochs": 30, "patience": 5},
    "paper": {"epochs": 100, "patience": 10},
}


@dataclass(frozen=True)
class AttackerSettings:
    """The experiment config's ``attackers:`` section.

    Attributes:
        families: which families attack every attribute (at least one).
        epochs, patience: override :data:`ATTACKER_TRAINING` of the preset.
        strength_margin: a family whose original-data accuracy is more than this below the best
            family's is marked undertrained.
    """

    families: tuple[str, ...] = ATTACKER_FAMILIES
    epochs: int | None = None
    patience: int | None = None
    strength_margin: float = 0.02

    RANGES: ClassVar[dict[str, Rule]] = {
        "families": OneOf(ATTACKER_FAMILIES), "epochs": at_least(1), "patience": at_least(1),
        "strength_margin": between(0, 1, high_open=True)}

    def __post_init__(self) -> None:
        object.__setattr__(self, "families", tuple(self.families))
        check_fields(self)
        if not self.families:
            raise ConfigError("AttackerSettings.families: expected at least one of "
                              f"{', '.join(ATTACKER_FAMILIES)}, got none")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttackerSettings:
        return cls(**{**data, "families": tuple(data.get("families", ATTACKER_FAMILIES))})

    def training(self, preset: str) -> dict[str, int]:
        """{"epochs", "patience"} for attackers under ``preset``."""
        base = dict(ATTACKER_TRAINING.get(preset, ATTACKER_TRAINING["quick"]))
        base.update({k: v for k, v in (("epochs", self.epochs), ("patience", self.patience))
                     if v is not None})
        return base


@dataclass(frozen=True)
class ProtectedData:
    """What an informed attacker trains on: a manifest (the experiment's, or a protected audio
    copy with the same ids), a feature transform (None: as they are), and the fingerprint that
    names the protection (models trained on it are keyed on it)."""

    manifest: Manifest
    transform: Callable[[Tensor], Tensor] | None
    fingerprint: str
    model_dir: Path


def train_attacker(family: str, manifest: Manifest, attribute: str, models_dir: Path,
                   preset: str, seed: int, overrides: dict[str, Any],
                   settings: AttackerSettings, progress: bool,
                   protected: ProtectedData | None = None) -> Path:
    """Train (or find) one attacker of ``family`` for ``attribute``; returns its folder.

    On original data without ``protected`` (the original classifier, also the ignorant
    attacker), or on ``protected`` data with the true labels (the informed attacker).
    ``overrides`` are the config section of the family's model (``classifier:`` or
    ``xvector:``); the epoch cap and patience come from ``settings``.
    """
    training = settings.training(preset)
    data = protected.manifest if protected else manifest
    depends = [protected.fingerprint] if protected else []
    note = {"protected_by": str(protected.model_dir)} if protected else None
    transform = protected.transform if protected else None
    suffix = "-protected" if protected else ""
    if family == "deepspeech2":
        config = ds2.preset_config(attribute, preset, role="attacker", seed=seed,
                                   **{**overrides, **training})
        key = key_of(config.run_settings(), data, *depends)
        out = models_dir / f"attacker-{attribute}{suffix}-{key}"
        ds2.train_classifier(data, config, out, progress=progress, transform=transform,
                             data_note=note)
        return out
    if family == "xvector":
        options = {k: v for k, v in overrides.items() if k not in ("attribute", "selection")}
        config = xv.preset_config(preset, seed=seed, attribute=attribute, selection="accuracy",
                                  **{**options, **training})
        key = key_of(config.run_settings(), data, *depends)
        out = models_dir / f"xvattacker-{attribute}{suffix}-{key}"
        xv.train_xvector(data, config, out, transform=transform, progress=progress,
                         data_note=note)
        return out
    raise ValueError(f"unknown attacker family '{family}'; choose from "
                     f"{', '.join(ATTACKER_FAMILIES)}")


class LoadedAttacker:
    """A trained attacker of either family, scored on whole test utterances."""

    def __init__(self, family: str, model_dir: Path) -> None:
        self.family = family
        self.model_dir = model_dir
        self.model: Any = (ds2.Classifier.load(model_dir) if family == "deepspeech2"
                           else XVectorExtractor.load(model_dir))

    def accuracy(self, manifest: Manifest, transform: Callable[[Tensor], Tensor] | None = None,
                 split: str = "test") -> float:
        """Utterance accuracy on ``split`` of ``manifest`` (optionally transformed input)."""
        if self.family == "deepspeech2":
            result = ds2.evaluate_classifier(self.model_dir, manifest, split, progress=False,
                                             classifier=self.model, transform=transform)
        else:
            result = evaluate_xvector_classifier(self.model_dir, manifest, split,
                                                    transform=transform, extractor=self.model)
        return float(result["utterance_accuracy"])

    @property
    def training(self) -> dict[str, Any]:
        """How its training ended: {"epochs_run", "best_epoch", "stopped"}."""
        info = self.model.config.get("training") or {}
        return {k: info.get(k) for k in ("epochs_run", "best_epoch", "stopped")}


def strongest(per_family: dict[str, dict[str, Any]], margin: float) -> dict[str, Any]:
    """Combine one attribute's per-family scores into the reported attack.

    ``per_family`` maps a family to {"original", "ignorant", "informed", ...}. Returns the
    strongest family's number for each attacker kind (the maximum accuracy), which family gave
    the informed number, and the strength check: each family's original accuracy against the
    best one (``undertrained`` when more than ``margin`` below).
    """
    best_original = max(f["original"] for f in per_family.values())
    families = {name: {**scores, "undertrained": scores["original"] < best_original - margin}
                for name, scores in per_family.items()}
    informed_by = max(per_family, key=lambda name: per_family[name]["informed"])
    return {
        "original": best_original,
        "ignorant": max(f["ignorant"] for f in per_family.values()),
        "informed": per_family[informed_by]["informed"],
        "strongest_informed": informed_by,
        "families": families,
    }

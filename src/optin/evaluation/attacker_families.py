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
from optin.evaluation.families import ATTACKER_FAMILIES, FAMILIES, ProtectedData, family
from optin.settings import OneOf, Rule, at_least, between, check_fields

FAMILY_LABELS = {name: f.label for name, f in FAMILIES.items()}  # the built-in families

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
        "families": OneOf(FAMILIES.keys()), "epochs": at_least(1), "patience": at_least(1),
        "strength_margin": between(0, 1, high_open=True)}

    def __post_init__(self) -> None:
        object.__setattr__(self, "families", tuple(self.families))
        check_fields(self)
        if not self.families:
            raise ConfigError("AttackerSettings.families: expected at least one of "
                              f"{', '.join(FAMILIES)}, got none")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttackerSettings:
        return cls(**{**data, "families": tuple(data.get("families", ATTACKER_FAMILIES))})

    def training(self, preset: str) -> dict[str, int]:
        """{"epochs", "patience"} for attackers under ``preset``."""
        base = dict(ATTACKER_TRAINING.get(preset, ATTACKER_TRAINING["quick"]))
        base.update({k: v for k, v in (("epochs", self.epochs), ("patience", self.patience))
                     if v is not None})
        return base


def train_attacker(family_name: str, manifest: Manifest, attribute: str, models_dir: Path,
                   preset: str, seed: int, overrides: dict[str, Any],
                   settings: AttackerSettings, progress: bool,
                   protected: ProtectedData | None = None) -> Path:
    """Train (or find) one attacker of a registered family for ``attribute``; returns its folder.

    On original data without ``protected`` (the original classifier, also the ignorant
    attacker), or on ``protected`` data with the true labels (the informed attacker).
    ``overrides`` are the config section of the family's model (its ``section``, e.g.
    ``classifier:`` or ``xvector:``); the epoch cap and patience come from ``settings``.
    """
    return family(family_name).train(manifest, attribute, models_dir, preset, seed, overrides,
                                     settings.training(preset), progress, protected)


class LoadedAttacker:
    """A trained attacker of a registered family, scored on whole test utterances."""

    def __init__(self, family_name: str, model_dir: Path) -> None:
        self.family = family_name
        self.model_dir = model_dir
        self.spec = family(family_name)
        self.model: Any = self.spec.load(model_dir)

    def accuracy(self, manifest: Manifest, transform: Callable[[Tensor], Tensor] | None = None,
                 split: str = "test") -> float:
        """Utterance accuracy on ``split`` of ``manifest`` (optionally transformed input)."""
        return self.spec.accuracy(self.model, self.model_dir, manifest, transform, split)

    @property
    def training(self) -> dict[str, Any]:
        """How its training ended: {"epochs_run", "best_epoch", "stopped"}."""
        info = (getattr(self.model, "config", None) or {}).get("training") or {}
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

"""What an attacker family is: how to configure, train, load and score one of its attackers.

A family module builds one :class:`AttackerFamily`; :mod:`optin.evaluation.families` registers
it by name. Everything that dispatches on a family (the harness, the run folders served) looks
it up there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from optin.corpora.manifest import Manifest
from optin.evaluation.keys import key_of

Transform = Callable[[Tensor], Tensor] | None


@dataclass(frozen=True)
class ProtectedData:
    """What an informed attacker trains on: a manifest (the experiment's, or a protected audio
    copy with the same ids), a feature transform (None: as they are), and the fingerprint that
    names the protection (models trained on it are keyed on it)."""

    manifest: Manifest
    transform: Transform
    fingerprint: str
    model_dir: Path


@dataclass(frozen=True)
class AttackerFamily:
    """One attacker family.

    Attributes:
        name: its key in the experiment config (``attackers: families:``) and results.
        label: how reports name it.
        prefix: its model folders are ``<prefix>-<attribute>[-protected]-<key>``.
        section: the experiment-config section its model overrides come from.
        configure: (attribute, preset, seed, overrides, training) -> a config with
            ``run_settings()`` (what its folder key is made of); ``training`` holds the
            epoch cap and patience.
        fit: (data, config, out, transform, progress, data_note) -> None: train into ``out``
            (or find it there).
        load: model folder -> the loaded model.
        score: (model, model_dir, manifest, split, transform) -> utterance accuracy.
        predict: (model, model_dir, manifest, split, transform) -> {id: predicted class name}
            (None: the family cannot say, e.g. a test's trivial family).
    """

    name: str
    label: str
    prefix: str
    section: str
    configure: Callable[[str, str, int, dict[str, Any], dict[str, int]], Any]
    fit: Callable[[Manifest, Any, Path, Transform, bool, dict[str, Any] | None], None]
    load: Callable[[Path], Any]
    score: Callable[[Any, Path, Manifest, str, Transform], float]
    predict: Callable[[Any, Path, Manifest, str, Transform], dict[str, str]] | None = None

    def train(self, manifest: Manifest, attribute: str, models_dir: Path, preset: str,
              seed: int, overrides: dict[str, Any], training: dict[str, int], progress: bool,
              protected: ProtectedData | None = None) -> Path:
        """Train (or find) one attacker for ``attribute``; returns its folder.

        On ``manifest`` without ``protected`` (the original classifier, also the ignorant
        attacker), or on ``protected`` data with the true labels (the informed attacker).
        """
        data = protected.manifest if protected else manifest
        depends = [protected.fingerprint] if protected else []
        note = {"protected_by": str(protected.model_dir)} if protected else None
        transform = protected.transform if protected else None
        suffix = "-protected" if protected else ""
        config = self.configure(attribute, preset, seed, overrides, training)
        key = key_of(config.run_settings(), data, *depends)
        out = models_dir / f"{self.prefix}-{attribute}{suffix}-{key}"
        self.fit(data, config, out, transform, progress, note)
        return out

    def accuracy(self, model: Any, model_dir: Path, manifest: Manifest,
                 transform: Transform = None, split: str = "test") -> float:
        """Utterance accuracy of a loaded attacker on ``split`` of ``manifest``."""
        return float(self.score(model, model_dir, manifest, split, transform))

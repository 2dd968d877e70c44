"""Attacker families and protection systems are registries: a new one is one module plus its
test. Shown here with a trivial family (the training labels' majority class) and a trivial
system (identity: no protection), registered for the test only and run through the harness."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tests.evaluation.test_experiment import TINY_CLASSIFIER

from optin.corpora.manifest import Manifest
from optin.corpora.synth import synthesize_corpus
from optin.errors import ConfigError, OptinError
from optin.evaluation.attacker_families import AttackerSettings, LoadedAttacker, train_attacker
from optin.evaluation.experiment import ExperimentConfig, run_experiment
from optin.evaluation.families import FAMILIES, AttackerFamily, register_family
from optin.evaluation.figures import system_colour
from optin.evaluation.systems import SYSTEMS, FittedSystem, System, SystemContext, register_system


def _configure(attribute: str, preset: str, seed: int, overrides: dict[str, Any],
               training: dict[str, int]) -> Any:
    settings = {"family": "majority", "attribute": attribute, "seed": seed}
    return SimpleNamespace(attribute=attribute, run_settings=lambda: settings)


def _fit(data: Manifest, config: Any, out: Path, transform: Any, progress: bool,
         note: dict[str, Any] | None) -> None:
    labels = data.split("train").column(config.attribute)
    out.mkdir(parents=True, exist_ok=True)
    (out / "majority.json").write_text(json.dumps({
        "attribute": config.attribute, "label": Counter(labels).most_common(1)[0][0],
        "training": {"epochs_run": 0, "best_epoch": 0, "stopped": "nothing to train"},
        "data": note}))


def _load(folder: Path) -> Any:
    state = json.loads((folder / "majority.json").read_text())
    return SimpleNamespace(config=state, **state)


def _score(model: Any, model_dir: Path, manifest: Manifest, split: str, transform: Any) -> float:
    truth = manifest.split(split).column(model.attribute)
    return sum(t == model.label for t in truth) / len(truth)


MAJORITY = AttackerFamily(name="majority", label="majority class", prefix="majattacker",
                          section="classifier", configure=_configure, fit=_fit, load=_load,
                          score=_score)


def _fit_identity(ctx: SystemContext) -> FittedSystem:
    out = ctx.models_dir / "identity"
    out.mkdir(parents=True, exist_ok=True)
    return FittedSystem(None, out, "identity", {"converged": None, "model_dir": str(out)})


IDENTITY = System("identity (no protection)", "spectrogram", "obfuscator", _fit_identity)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Manifest:
    out = tmp_path_factory.mktemp("corpus")
    return synthesize_corpus(out, speakers=4, sentences=3, quick=True, progress=False).manifest


def test_a_registered_family_trains_loads_and_scores_through_the_registry(manifest, tmp_path):
    with register_family(MAJORITY):
        settings = AttackerSettings.from_dict({"families": ["majority"], "epochs": 2})
        folder = train_attacker("majority", manifest, "gender", tmp_path, "quick", 0, {},
                                settings, progress=False)
        assert folder.name.startswith("majattacker-gender-")
        attacker = LoadedAttacker("majority", folder)
        expected = Counter(manifest.split("train").column("gender")).most_common(1)[0][0]
        assert attacker.model.label == expected
        assert 0.0 < attacker.accuracy(manifest) <= 1.0
        assert attacker.training["stopped"] == "nothing to train"
        with pytest.raises(ValueError, match="already registered"):
            register_family(MAJORITY).__enter__()
    assert "majority" not in FAMILIES  # undone
    with pytest.raises(ConfigError):
        AttackerSettings.from_dict({"families": ["majority"]})
    with pytest.raises(ValueError, match="unknown attacker family 'majority'"):
        LoadedAttacker("majority", folder)


def test_a_registered_system_and_family_run_through_the_harness(tmp_path, one_thread):
    data = {"name": "tiny-registry", "corpus": "builtin",
            "data": {"synth": {"quick": True, "speakers": 4, "sentences": 3}},
            "protocol": "manifest", "permitted": "speaker", "attacked": ["gender"],
            "systems": ["identity"], "preset": "quick", "seeds": [0], "verification": False,
            "classifier": TINY_CLASSIFIER, "attackers": {"families": ["majority"]}}
    with register_family(MAJORITY), register_system("identity", IDENTITY):
        run_experiment(ExperimentConfig.from_dict(data), tmp_path, progress=False)
        assert system_colour("identity").startswith("tab:")  # no colour given: a default one
    assert "identity" not in SYSTEMS and "majority" not in FAMILIES
    with pytest.raises(OptinError, match="identity"):
        ExperimentConfig.from_dict(data)
    (stored,) = json.loads((tmp_path / "results.json").read_text())["experiments"]
    system = stored["systems"]["identity"]
    assert system["label"] == "identity (no protection)" and system["world"] == "spectrogram"
    assert system["target"]["agreement"]["mean"] == 1.0  # T hears the original
    attack = system["attacks"]["gender"]
    assert "majority" in json.dumps(attack)  # the family's numbers are reported
    # the majority class scores the same on original and "protected" (identical) data
    assert attack["original"]["mean"] == attack["ignorant"]["mean"] == attack["informed"]["mean"]
    assert list((tmp_path / "models").glob("majattacker-gender-protected-*"))


def test_figure_colours_come_from_the_spec():
    assert system_colour("opt-in") == "tab:blue" and system_colour("adr") == "tab:orange"
    with register_system("coloured", System("c", "spectrogram", "obfuscator",
                                            _fit_identity, colour="tab:olive")):
        assert system_colour("coloured") == "tab:olive"
    assert "coloured" not in SYSTEMS

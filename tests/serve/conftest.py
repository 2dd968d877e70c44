"""A tiny trained run for the serve tests, built once per test session (per xdist worker).

The experiment harness itself trains it, with the smallest settings that still give every
kind of model the page shows: the target, DeepSpeech2 attackers (ignorant and informed), the
opt-in obfuscator, McAdams, the x-vector extractor and ADR.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.evaluation.test_experiment import (
    TINY_ADR,
    TINY_CLASSIFIER,
    TINY_OBFUSCATOR,
    TINY_XVECTOR,
)

from optin.evaluation.experiment import ExperimentConfig, run_experiment


def tiny_serve_config() -> ExperimentConfig:
    """Permit speaker, attack gender; opt-in, McAdams and ADR; one epoch per model."""
    return ExperimentConfig.from_dict({
        "name": "serve-tiny", "title": "tiny run for optin serve", "figure": "3a",
        "corpus": "builtin", "data": {"synth": {"quick": True, "speakers": 4, "sentences": 3}},
        "protocol": "manifest", "permitted": "speaker", "attacked": ["gender"],
        "systems": ["opt-in", "mcadams", "adr"], "preset": "quick", "seeds": [0],
        "verification": False,
        "classifier": {**TINY_CLASSIFIER, "epochs": 1, "draws_per_epoch": 32},
        "obfuscator": {**TINY_OBFUSCATOR, "draws_per_epoch": 16},
        "xvector": {**TINY_XVECTOR, "epochs": 1},
        "adr": {**TINY_ADR, "epochs": 2, "classifier_epochs": 2},
        "mcadams": {"alpha": 0.8},
        "attackers": {"families": ["deepspeech2"], "epochs": 1, "patience": 1},
    })


def make_served_run(out: Path) -> Path:
    """Train the tiny run into ``out``; returns ``out``."""
    run_experiment(tiny_serve_config(), out, progress=False)
    return out


@pytest.fixture(scope="session")
def served_run_dir(tmp_path_factory) -> Path:
    return make_served_run(tmp_path_factory.mktemp("served_run"))

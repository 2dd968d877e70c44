"""A tiny trained run for the serve tests, built once per test session (shared by xdist workers).

The experiment harness itself trains it, with the smallest settings that still give the
models the page shows: the target, DeepSpeech2 attackers (ignorant and informed), the opt-in
obfuscator and McAdams; then the seed's x-vector extractor is trained the way the harness
trains it for speaker verification (``SeedVectors``), without the verification trials. ADR is
left out here (its vector world costs about two minutes on CPU-2): the slow test
``tests/test_demo.py`` serves a whole tiny demo run, ADR included.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest
from tests.evaluation.test_experiment import (
    TINY_CLASSIFIER,
    TINY_OBFUSCATOR,
    TINY_XVECTOR,
)

from optin.corpora.manifest import Manifest
from optin.evaluation.experiment import ExperimentConfig, run_experiment
from optin.evaluation.seed_vectors import SeedVectors


def tiny_serve_config() -> ExperimentConfig:
    """Permit speaker, attack gender; opt-in and McAdams; one epoch per model."""
    return ExperimentConfig.from_dict({
        "name": "serve-tiny", "title": "tiny run for optin serve", "figure": "3a",
        "corpus": "builtin", "data": {"synth": {"quick": True, "speakers": 2, "sentences": 3}},
        "protocol": "manifest", "permitted": "speaker", "attacked": ["gender"],
        "systems": ["opt-in", "mcadams"], "preset": "quick", "seeds": [0],
        "verification": False,
        "classifier": {**TINY_CLASSIFIER, "epochs": 1, "draws_per_epoch": 32},
        "obfuscator": {**TINY_OBFUSCATOR, "draws_per_epoch": 16},
        "xvector": {**TINY_XVECTOR, "epochs": 1},
        "mcadams": {"alpha": 0.8},
        "attackers": {"families": ["deepspeech2"], "epochs": 1, "patience": 1},
    })


def make_served_run(out: Path) -> Path:
    """Train the tiny run into ``out`` (reusing what is there); returns ``out``."""
    config = tiny_serve_config()
    experiment = run_experiment(config, out, progress=False)
    manifest = Manifest.read(experiment["manifest"])
    SeedVectors(manifest, out / "models", config.preset, 0, config.xvector, False,
                lambda _: None).train(manifest)
    return out


@pytest.fixture(scope="session")
def served_run_dir(tmp_path_factory) -> Path:
    """The tiny run; ``OPTIN_TEST_SERVED_RUN=DIR`` trains it into DIR, or reuses it there
    (the harness skips finished models), to iterate on the serve tests without retraining.

    Under pytest-xdist the workers share one run (the first trains it, under a file lock,
    while the others wait), so that each test file of this folder may use it."""
    reuse = os.environ.get("OPTIN_TEST_SERVED_RUN")
    if reuse:
        return make_served_run(Path(reuse))
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return make_served_run(tmp_path_factory.mktemp("served_run"))
    shared = tmp_path_factory.getbasetemp().parent / "served_run"  # every worker's parent
    with (shared.parent / "served_run.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "trained").is_file():
            make_served_run(shared)
            (shared / "trained").touch()
    return shared

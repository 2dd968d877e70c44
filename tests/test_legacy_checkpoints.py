"""Checkpoints written before the redesign of issue 13 (by the code of main at 3de2927,
``tests/data/checkpoints``) load with today's code and compute the same outputs."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from optin.baselines.adr import load_adr
from optin.checkpoint import MODEL_KINDS, load_model
from optin.privacy.obfuscator import Obfuscator
from optin.training.classifier import Classifier
from optin.training.xvector_extractor import XVectorExtractor

DATA = Path(__file__).parent / "data" / "checkpoints"


def _input() -> torch.Tensor:
    return torch.randn(1, 161, 24, generator=torch.Generator().manual_seed(1))


def test_old_checkpoints_load_with_their_labels_and_features() -> None:
    classifier = Classifier.load(DATA / "classifier")
    assert classifier.encoder.classes == ("f", "m") and classifier.features.n_freq == 161
    extractor = XVectorExtractor.load(DATA / "xvector")
    assert extractor.speakers == ("a", "b", "c")
    adr = load_adr(DATA / "adr")
    assert adr.attribute == "gender"
    for name in ("classifier", "obfuscator", "xvector"):
        kind = json.loads((DATA / name / "config.json").read_text())["kind"]
        assert load_model(DATA / name, kind).module is not None
        assert kind in MODEL_KINDS


def test_old_checkpoints_compute_what_they_computed() -> None:
    expected = json.loads((DATA / "outputs.json").read_text())
    x = _input()
    classifier = Classifier.load(DATA / "classifier")
    with torch.no_grad():
        logits = classifier.model(x, torch.tensor([24]))
        obfuscated = Obfuscator.load(DATA / "obfuscator").network(x)
    assert torch.allclose(logits, torch.tensor(expected["classifier"]), atol=1e-5)
    assert torch.allclose(obfuscated[0, :3, :3], torch.tensor(expected["obfuscator"]), atol=1e-5)

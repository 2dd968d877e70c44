"""Attacker families: settings, the strongest-family rule and the strength check; an x-vector
attacker of a non-speaker attribute learns."""

from __future__ import annotations

import pytest

from optin.evaluation.attacker_families import (
    ATTACKER_TRAINING,
    AttackerSettings,
    LoadedAttacker,
    strongest,
    train_attacker,
)


def test_settings_defaults_overrides_and_refusals():
    settings = AttackerSettings()
    assert settings.families == ("deepspeech2", "xvector")
    assert settings.training("quick") == ATTACKER_TRAINING["quick"]
    assert AttackerSettings(epochs=3).training("paper") == {
        "epochs": 3, "patience": ATTACKER_TRAINING["paper"]["patience"]}
    assert AttackerSettings.from_dict({"families": ["xvector"]}).families == ("xvector",)
    for bad in ({"families": []}, {"families": ["mlp"]}, {"epochs": 0}, {"patience": "5"},
                {"strength_margin": 1.5}):
        with pytest.raises(ValueError):
            AttackerSettings.from_dict(bad)


def test_strongest_family_and_strength_check():
    per_family = {
        "deepspeech2": {"original": 0.90, "ignorant": 0.30, "informed": 0.55},
        "xvector": {"original": 0.87, "ignorant": 0.40, "informed": 0.61},
    }
    best = strongest(per_family, margin=0.02)
    assert best["original"] == 0.90 and best["ignorant"] == 0.40 and best["informed"] == 0.61
    assert best["strongest_informed"] == "xvector"
    assert best["families"]["xvector"]["undertrained"]  # 3 points below the best original
    assert not best["families"]["deepspeech2"]["undertrained"]
    assert not strongest(per_family, margin=0.05)["families"]["xvector"]["undertrained"]


@pytest.mark.slow
def test_xvector_family_learns_gender_and_is_scored(quick_corpus, tmp_path):
    from optin.corpora import Manifest

    manifest = Manifest.read(quick_corpus)
    settings = AttackerSettings(families=("xvector",), epochs=4, patience=2)
    folder = train_attacker("xvector", manifest, "gender", tmp_path, "quick", 0,
                            {"frame_channels": 32, "pool_channels": 64, "embed_dim": 32,
                             "segment_dim": 32, "segment_length": 100}, settings,
                            progress=False)
    attacker = LoadedAttacker("xvector", folder)
    assert attacker.model.attribute == "gender"
    assert attacker.training["epochs_run"] <= 4
    # chance is 0.5 on the balanced test split; the TDNN head learns gender from the spectrum
    assert attacker.accuracy(manifest) >= 0.8
    # a protection that wipes the spectrum leaves it at chance level or near
    import torch

    assert attacker.accuracy(manifest, transform=torch.zeros_like) <= 0.7

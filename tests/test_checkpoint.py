"""Tests for checkpoint folders (optin.checkpoint): what loading refuses, atomic saves."""

from __future__ import annotations

import math

import pytest
import torch
from tests.conftest import save_tiny_obfuscator

from optin.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_state,
    save_checkpoint,
    save_state,
)
from optin.privacy.obfuscator import Obfuscator


@pytest.mark.parametrize("fill", [math.nan, math.inf, -math.inf])
def test_non_finite_weights_with_a_matching_hash_are_refused(tmp_path, fill):
    """A model saved broken (its SHA-256 in config.json matches) still does not load."""
    folder = save_tiny_obfuscator(tmp_path / "broken", fill=fill)
    with pytest.raises(CheckpointError) as info:
        Obfuscator.load(folder)
    message = str(info.value)
    assert message.startswith(f"{folder / 'model.safetensors'}: tensor '")
    assert "NaN or infinite value(s)" in message and "the model is broken" in message


def test_one_bad_value_is_named_with_its_tensor(tmp_path):
    state = {"a.weight": torch.ones(3, 4), "b.bias": torch.ones(5), "steps": torch.tensor(7)}
    state["b.bias"][2] = math.nan
    save_checkpoint(tmp_path, state, {"kind": "test", "architecture": {}})
    with pytest.raises(CheckpointError, match=r"tensor 'b\.bias' holds 1 NaN or infinite "
                                              r"value\(s\) of 5"):
        load_checkpoint(tmp_path)
    state["b.bias"][2] = 0.0
    save_checkpoint(tmp_path, state, {"kind": "test", "architecture": {}})
    config, loaded = load_checkpoint(tmp_path)
    assert torch.equal(loaded["steps"], torch.tensor(7)) and config["kind"] == "test"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_save_state_failure_leaves_the_old_state_and_no_temporary(tmp_path, monkeypatch):
    state_dir = tmp_path / "train_state"
    save_state(state_dir, {"step": 1, "w": torch.zeros(2)})

    def broken(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("optin.checkpoint.write_json", broken)
    with pytest.raises(KeyboardInterrupt):
        save_state(state_dir, {"step": 2, "w": torch.ones(2)})
    assert load_state(state_dir)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_state"]

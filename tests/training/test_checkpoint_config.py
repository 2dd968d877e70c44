"""config.json of a checkpoint: sealed field by field (config_sha256), refused when edited or
not an object, and checked for what can be checked in older checkpoints without the seal."""

from __future__ import annotations

import json

import pytest
import torch

from optin.audio.features import FeatureConfig
from optin.checkpoint import (
    CONFIG_HASHES,
    CheckpointError,
    load_checkpoint,
    read_config,
    save_checkpoint,
)


@pytest.fixture
def folder(tmp_path):
    save_checkpoint(tmp_path / "ck", {"w": torch.zeros(2)},
                    {"kind": "test", "architecture": {"n": 2},
                     "features": FeatureConfig().to_dict(), "metrics": {"lr": 1e-3}})
    return tmp_path / "ck"


def edit(folder, change) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


def test_a_saved_config_is_sealed_and_loads(folder):
    config, state = load_checkpoint(folder, kind="test")
    assert set(config[CONFIG_HASHES]) == set(config) - {CONFIG_HASHES}
    assert config["metrics"] == {"lr": 1e-3} and torch.equal(state["w"], torch.zeros(2))


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c["features"].update(sample_rate=8000), "field 'features' was changed"),
    (lambda c: c["architecture"].update(n=3), "field 'architecture' was changed"),
    (lambda c: c.update(extra=1), "field 'extra' was added"),
    (lambda c: c.pop("metrics"), "field 'metrics' was removed"),
])
def test_an_edited_sealed_config_is_refused_naming_the_field(folder, change, message):
    edit(folder, change)
    with pytest.raises(CheckpointError, match=rf"ck/config\.json: {message} after the "
                                              "checkpoint was written"):
        load_checkpoint(folder)


@pytest.mark.parametrize(("text", "message"), [
    ("[1, 2, 3]", r"expected a JSON object, got list"),
    ('"x"', r"expected a JSON object, got str"),
    ("\xff\xfe", r"not valid JSON"),
])
def test_a_config_that_is_not_an_object_is_refused(folder, text, message):
    (folder / "config.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(CheckpointError, match=rf"ck/config\.json: {message}"):
        read_config(folder)


def test_an_unsealed_older_config_loads_but_what_can_be_checked_is(folder):
    edit(folder, lambda c: c.pop(CONFIG_HASHES))
    config, _ = load_checkpoint(folder, kind="test")  # written before the seal: still loads
    assert CONFIG_HASHES not in config
    edit(folder, lambda c: c["features"].update(sample_rate=-5))
    with pytest.raises(CheckpointError, match=r"field 'features': FeatureConfig\.sample_rate: "
                                              r"expected an integer >= 1, got -5"):
        load_checkpoint(folder)
    edit(folder, lambda c: c.update(features=[1], kind=3))
    with pytest.raises(CheckpointError, match=r"field 'kind': expected a JSON string, got 3"):
        load_checkpoint(folder)

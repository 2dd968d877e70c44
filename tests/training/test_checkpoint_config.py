"""config.json of a checkpoint: sealed field by field (config_sha256), refused when edited or
not an object, and checked for what can be checked in older checkpoints without the seal; which
checkpoints are older is said by their ``format``, not by a missing seal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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

LEGACY = Path(__file__).parents[1] / "data" / "checkpoints" / "obfuscator"


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


def test_a_format_1_config_loads_without_the_seal_but_what_can_be_checked_is(tmp_path):
    folder = shutil.copytree(LEGACY, tmp_path / "ck")  # format 1, as written before the seal
    edit(folder, lambda c: c.pop(CONFIG_HASHES))
    config, _ = load_checkpoint(folder)
    assert config["format"] == 1 and CONFIG_HASHES not in config
    edit(folder, lambda c: c["features"].update(sample_rate=-5))
    with pytest.raises(CheckpointError, match=r"field 'features': FeatureConfig\.sample_rate: "
                                              r"expected an integer in \[4000, 384000\], got -5"):
        load_checkpoint(folder)
    edit(folder, lambda c: c.update(features=[1], kind=3))
    with pytest.raises(CheckpointError, match=r"field 'kind': expected a JSON string, got 3"):
        load_checkpoint(folder)


def test_a_removed_seal_is_refused_unless_the_format_predates_it(folder):
    """A current checkpoint without its seal is not an old one: ``format`` says which it is."""
    edit(folder, lambda c: c.pop(CONFIG_HASHES))
    with pytest.raises(CheckpointError, match=rf"ck/config\.json: field '{CONFIG_HASHES}' is "
                                              r"missing, but format 2 checkpoints are sealed"):
        load_checkpoint(folder)
    edit(folder, lambda c: c.update(format=1))  # relabelled as old: the weights say otherwise
    with pytest.raises(CheckpointError, match=r"ck/config\.json: field 'format' says 1, but "
                                              r"model\.safetensors was written as format 2"):
        load_checkpoint(folder)


@pytest.mark.parametrize(("value", "message"), [
    (None, r"field 'format': expected a checkpoint format version \(an integer from 1 to 2\), "
           r"got None"),
    ("2", r"field 'format': expected .* got '2'"),
    (True, r"field 'format': expected .* got True"),
    (0, r"field 'format': expected .* got 0"),
    (3, r"format 3 was written by a newer optin \(this one reads formats 1 to 2\)"),
])
def test_the_format_must_be_a_version_this_optin_reads(folder, value, message):
    edit(folder, lambda c: c.pop("format") if value is None else c.update(format=value))
    with pytest.raises(CheckpointError, match=rf"ck/config\.json: {message}"):
        read_config(folder)

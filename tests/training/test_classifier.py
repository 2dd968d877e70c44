"""Training, checkpoints, resume and evaluation of the DeepSpeech2 attribute classifier."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from tests.conftest import kill_and_resume

from optin.audio.features import FeatureConfig
from optin.checkpoint import CheckpointError, write_config
from optin.corpora import Manifest, ManifestError
from optin.training.classifier import (
    Classifier,
    ClassifierTrainConfig,
    evaluate_classifier,
    train_classifier,
)

TINY = {"conv_channels": 8, "hidden_size": 32, "rnn_layers": 1, "batch_size": 16,
        "lr": 3e-3, "patience": 10}


def tiny(attribute: str, **kw) -> ClassifierTrainConfig:
    return ClassifierTrainConfig(attribute=attribute, **{**TINY, **kw})


@pytest.fixture(scope="module")
def gender_run(quick_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("gender")
    cfg = tiny("gender", epochs=4, draws_per_epoch=160)
    final = train_classifier(quick_corpus, cfg, out, progress=False)
    return out, final


def test_gender_classifier_beats_chance_on_test(gender_run, quick_corpus):
    out, final = gender_run
    result = evaluate_classifier(out, quick_corpus, split="test", progress=False)
    assert result["chance"] == pytest.approx(0.5)
    # learned: far above the 0.5 chance level (a broken loop stays near 0.5)
    assert result["utterance_accuracy"] >= 0.85, result
    assert result["balanced_accuracy"] >= 0.85
    assert sum(map(sum, result["confusion"])) == result["utterances"]
    assert (out / "metrics.csv").read_text().count("\n") == 1 + final["training"]["epochs_run"]


def test_speaker_classifier_beats_chance_on_test(quick_corpus, tmp_path):
    cfg = tiny("speaker", epochs=6, draws_per_epoch=320, hidden_size=48, lr=4e-3)
    train_classifier(quick_corpus, cfg, tmp_path / "spk", progress=False)
    result = evaluate_classifier(tmp_path / "spk", quick_corpus, progress=False)
    assert result["chance"] == pytest.approx(1 / 8)
    assert result["utterance_accuracy"] >= 0.5, result  # 4x chance


def test_checkpoint_round_trips_bit_for_bit(gender_run, tmp_path):
    out, _ = gender_run
    clf = Classifier.load(out)
    state = load_file(str(out / "model.safetensors"))
    for key, value in clf.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    # saving the loaded model again gives identical tensors
    from optin.checkpoint import save_checkpoint

    config = json.loads((out / "config.json").read_text())
    save_checkpoint(tmp_path / "copy", clf.model.state_dict(), config)
    again = load_file(str(tmp_path / "copy" / "model.safetensors"))
    assert state.keys() == again.keys()
    assert all(torch.equal(state[k], again[k]) for k in state)


def test_tampered_checkpoint_is_refused(gender_run, tmp_path):
    out, _ = gender_run
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    data = bytearray((bad / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (bad / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"does not match config\.json's weights_sha256"):
        Classifier.load(bad)


def test_mismatched_features_are_refused(gender_run):
    out, _ = gender_run
    with pytest.raises(CheckpointError, match="hop_length: checkpoint 160, asked 80"):
        Classifier.load(out, features=FeatureConfig(hop_length=80))
    Classifier.load(out, features=FeatureConfig())  # the same settings load


def test_mismatched_architecture_is_refused(gender_run, tmp_path):
    out, _ = gender_run
    bad = tmp_path / "arch"
    shutil.copytree(out, bad)
    config = json.loads((bad / "config.json").read_text())
    config["architecture"]["hidden_size"] = 64
    write_config(bad, config)  # sealed: the shape check must refuse it
    with pytest.raises(CheckpointError, match="shape mismatch"):
        Classifier.load(bad)
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        Classifier.load(tmp_path)


def test_finished_run_is_not_retrained_and_other_settings_refused(gender_run, quick_corpus):
    out, final = gender_run
    stamp = (out / "config.json").stat().st_mtime_ns
    again = train_classifier(quick_corpus, tiny("gender", epochs=4, draws_per_epoch=160), out,
                             progress=False)
    assert again["weights_sha256"] == final["weights_sha256"]
    assert (out / "config.json").stat().st_mtime_ns == stamp  # not even rewritten
    with pytest.raises(ManifestError, match="holds a run with other settings"):
        train_classifier(quick_corpus, tiny("gender", epochs=5, draws_per_epoch=160), out,
                         progress=False)


def test_json_eval_output(gender_run, quick_corpus):
    out, _ = gender_run
    proc = subprocess.run(
        [sys.executable, "-m", "optin.cli", "eval", "--model", str(out), "--manifest",
         str(quick_corpus), "--json"], capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout)
    assert set(result) >= {"segment_accuracy", "utterance_accuracy", "balanced_accuracy",
                           "confusion", "classes", "chance"}
    assert result["classes"] == ["female", "male"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(quick_corpus, tmp_path):
    """Kill a training process mid-epoch; rerunning continues and ends where an unbroken run
    ends, bit for bit."""
    command = [sys.executable, "-m", "optin.cli", "train", "target", "--manifest",
               str(quick_corpus), "--attribute", "gender", "--epochs", "2", "--conv-channels",
               "8", "--hidden-size", "32", "--rnn-layers", "1", "--batch-size", "8", "--seed",
               "3", "--checkpoint-every", "4", "-q"]
    full, broken, saved, stderr = kill_and_resume(command, tmp_path)
    progress = saved["progress"]
    assert progress["epoch"] == 0 and progress["step"] > 0  # killed inside the first epoch
    assert "resuming at epoch" in stderr
    a = load_file(str(full / "model.safetensors"))
    b = load_file(str(broken / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_inputs_are_named(quick_corpus, tmp_path):
    with pytest.raises(ManifestError, match="no column 'shoe_size'"):
        train_classifier(quick_corpus, tiny("shoe_size"), tmp_path / "a", progress=False)
    manifest = Manifest.read(quick_corpus)
    one = manifest.with_column("gender", ["female"] * len(manifest))
    with pytest.raises(ManifestError, match="single class"):
        train_classifier(one, tiny("gender"), tmp_path / "b", progress=False)
    no_train = manifest.with_column("split", ["test"] * len(manifest))
    with pytest.raises(ManifestError, match="no rows in split 'train'"):
        train_classifier(no_train, tiny("gender"), tmp_path / "c", progress=False)
    rows = [dict(r) for r in manifest.rows]
    rows[0]["path"] = "missing/nothing.wav"
    broken = manifest.replace_rows(rows)
    with pytest.raises(ManifestError, match=f"id '{rows[0]['id']}'.*nothing.wav"):
        train_classifier(broken, tiny("gender"), tmp_path / "d", progress=False)


def test_presets_and_their_errors():
    from optin.training.classifier import preset_config
    from optin.training.obfuscator_config import obfuscator_preset

    config = preset_config("gender", "paper", lr=None, epochs=3)
    assert (config.rnn_layers, config.epochs, config.lr) == (3, 3, 1e-3)  # None keeps preset
    assert obfuscator_preset("paper").deobfuscator_width == 64
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        preset_config("gender", "huge")
    with pytest.raises(ValueError, match=r"unknown ObfuscatorTrainConfig option\(s\): bogus"):
        obfuscator_preset("quick", bogus=1)

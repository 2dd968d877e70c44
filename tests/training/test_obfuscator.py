"""Adversarial obfuscator training: the step, the frozen target, the run, resume, torchrun."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from tests.conftest import kill_and_resume

from optin.checkpoint import load_state, write_config
from optin.corpora import Manifest
from optin.models.cyclegan_vc2 import Generator, GeneratorConfig
from optin.privacy.adversary import Deobfuscator
from optin.training.classifier import Classifier, ClassifierTrainConfig, train_classifier
from optin.training.obfuscator import convergence, train_obfuscator
from optin.training.obfuscator_config import ObfuscatorTrainConfig
from optin.training.obfuscator_step import adversarial_step, freeze_target

TINY_OBF = {"obfuscator_width": 8, "obfuscator_blocks": 2, "deobfuscator_width": 4,
            "deobfuscator_blocks": 1, "segment_length": 64, "batch_size": 8,
            "draws_per_epoch": 128, "epochs": 3, "privacy_layer": 3}


@pytest.fixture(scope="module")
def gender_target(quick_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("target")
    cfg = ClassifierTrainConfig(attribute="gender", conv_channels=8, hidden_size=32,
                                rnn_layers=1, batch_size=16, lr=3e-3, epochs=3,
                                draws_per_epoch=160)
    train_classifier(quick_corpus, cfg, out, progress=False)
    return out


def test_step_updates_both_networks_and_never_the_target(gender_target, quick_corpus):
    target = Classifier.load(gender_target)
    freeze_target(target.model)
    before = {k: v.clone() for k, v in target.model.state_dict().items()}
    obf = Generator(GeneratorConfig(base_width=4, residual_blocks=1))
    deobf = Generator(GeneratorConfig(base_width=4, residual_blocks=1))
    obf0 = {k: v.clone() for k, v in obf.state_dict().items()}
    deobf0 = {k: v.clone() for k, v in deobf.state_dict().items()}
    config = ObfuscatorTrainConfig(**TINY_OBF)
    opt = torch.optim.SGD(obf.parameters(), lr=1e-2, momentum=0.9)
    adversary = Deobfuscator(deobf, torch.optim.SGD(deobf.parameters(), lr=1e-2, momentum=0.9),
                             privacy_layer=3)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    x = torch.randn(4, 161, 32)
    lengths = torch.full((4,), 32)
    for _ in range(3):
        metrics = adversarial_step(x, lengths, obf, opt, scaler, adversary, target.model, config)
    assert set(metrics) == {"L_a", "L_t", "L_p", "L_c", "agreement", "objective"}
    assert metrics["objective"] == pytest.approx(metrics["L_t"] - metrics["L_p"], rel=1e-4)
    after = target.model.state_dict()
    for key, value in before.items():  # parameters and batch-norm running statistics
        assert torch.equal(value, after[key]), key
    assert all(p.grad is None for p in target.model.parameters())
    assert any(not torch.equal(v, obf.state_dict()[k]) for k, v in obf0.items())
    assert any(not torch.equal(v, deobf.state_dict()[k]) for k, v in deobf0.items())


def test_freeze_target_keeps_batch_norm_in_eval(gender_target):
    model = freeze_target(Classifier.load(gender_target).model)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and not any(m.training for m in norms)
    assert not any(p.requires_grad for p in model.parameters())


@pytest.fixture(scope="module")
def tiny_run(gender_target, quick_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("obf")
    final = train_obfuscator(quick_corpus, gender_target, out, ObfuscatorTrainConfig(**TINY_OBF),
                             progress=False)
    return out, final


def test_run_writes_checkpoints_metrics_and_honest_numbers(tiny_run, gender_target):
    out, final = tiny_run
    assert final["kind"] == "cyclegan-vc2-obfuscator"
    target_config = json.loads((gender_target / "config.json").read_text())
    assert final["target"]["weights_sha256"] == target_config["weights_sha256"]
    assert final["training"]["epochs_run"] == 3 and "converged" in final["training"]
    evaluation = final["evaluation"]
    # the guard: T still answers the same on obfuscated test data (measured 0.95 here)
    assert evaluation["agreement"] >= 0.85, evaluation
    assert evaluation["target_obfuscated"]["utterance_accuracy"] >= 0.85
    assert evaluation["deobfuscator_mse"] > 0
    assert evaluation["target_original"]["utterances"] == 40
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    for column in ("train_L_a", "train_L_t", "train_L_p", "valid_L_a", "valid_L_t", "valid_L_p",
                   "valid_segment_agreement", "valid_utterance_agreement"):
        assert column in header
    deobf = json.loads((out / "deobfuscator" / "config.json").read_text())
    assert deobf["kind"] == "cyclegan-vc2-deobfuscator"


def test_finished_run_returns_without_training(tiny_run, gender_target, quick_corpus):
    out, final = tiny_run
    again = train_obfuscator(quick_corpus, gender_target, out, ObfuscatorTrainConfig(**TINY_OBF),
                             progress=False)
    assert again["weights_sha256"] == final["weights_sha256"]


def test_selection_rule():
    from optin.training.obfuscator import _select

    history = [{"valid_utterance_agreement": a} for a in (0.90, 0.97, 0.99, 0.93)]
    assert _select(history, 0.95) == (2, True)  # the latest epoch meeting the target
    assert _select(history, 0.995) == (2, False)  # none does: the highest agreement


def test_privacy_ramp_is_linear_then_flat():
    from optin.training.obfuscator_config import privacy_ramp

    config = ObfuscatorTrainConfig(epochs=4, lambda_p=2.0, privacy_warmup=2)
    assert [privacy_ramp(config, t) for t in (0, 1, 2, 3)] == [0.0, 1.0, 2.0, 2.0]
    assert privacy_ramp(ObfuscatorTrainConfig(lambda_p=0.5), 0) == 0.5


@pytest.mark.slow
def test_residual_run_with_contraction_keeps_the_task(gender_target, quick_corpus, tmp_path):
    config = ObfuscatorTrainConfig(**{**TINY_OBF, "privacy_warmup": 2, "optimizer": "adam",
                                      "lr": 1e-3, "obfuscator_residual": True,
                                      "contraction": 1.0})
    final = train_obfuscator(quick_corpus, gender_target, tmp_path, config, progress=False)
    with open(tmp_path / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [round(float(r["lambda_p"]), 3) for r in rows] == [0.5, 1.0, 1.0]
    assert all(float(r["train_L_c"]) > 0 for r in rows)
    assert final["architecture"]["residual"]
    # the obfuscator keeps the permitted task on held-out test data
    assert final["evaluation"]["agreement"] >= 0.85, final["evaluation"]
    # and the contraction templates travel with the resumable state
    assert "templates" in load_state(tmp_path / "train_state")


def test_convergence_rule():
    flat = [{"valid_L_a": 1.0, "valid_L_p": 0.1, "valid_L_t": 0.02}] * 3
    assert convergence(flat, 3, 0.1, True)["converged"]
    assert not convergence(flat, 3, 0.1, False)["converged"]
    moving = [{"valid_L_a": v, "valid_L_p": 0.1, "valid_L_t": 0.02} for v in (1.0, 0.5, 0.2)]
    assert not convergence(moving, 3, 0.1, True)["converged"]
    learning = [{"valid_L_a": 1.0, "valid_L_p": 0.1, "valid_L_t": v} for v in (0.6, 0.5, 0.3)]
    assert not convergence(learning, 3, 0.1, True)["converged"]
    assert not convergence(flat[:2], 3, 0.1, True)["converged"]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_agree(gender_target, quick_corpus, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "optin.cli", "train", "obfuscator", "--manifest", str(quick_corpus),
           "--target", str(gender_target), "--out", str(out), "--epochs", "1",
           "--batch-size", "4", "--draws-per-epoch", "16", "--segment-length", "32",
           "--obfuscator-width", "4", "--obfuscator-blocks", "1", "--deobfuscator-width", "4",
           "--deobfuscator-blocks", "1", "--device", "cpu", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = json.loads((out / "obfuscator" / "config.json").read_text())
    training = final["training"]
    assert training["world_size"] == 2
    assert len(training["rank_checksums"]) == 2
    assert training["rank_checksums"][0] == training["rank_checksums"][1]


def test_obfuscator_api_and_eval_transform(tiny_run, quick_corpus):
    from optin.privacy.obfuscator import Obfuscator

    out, _ = tiny_run
    obfuscator = Obfuscator.load(out)
    manifest = Manifest.read(quick_corpus)
    row = manifest.rows[0]
    from optin.audio.io import load_audio

    wave = load_audio(manifest.audio_path(row))
    spec = obfuscator(wave)
    assert spec.features.shape == (161, 1 + len(wave) // 160)
    again = obfuscator(obfuscator.spectrogram(wave))
    assert torch.equal(spec.features, again.features)
    audio = obfuscator.to_waveform(spec, n_iter=4)
    assert audio.shape == wave.shape


def test_obfuscate_files_and_a_manifest_resumably(tiny_run, quick_corpus, tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    from optin.cli import main

    out, _ = tiny_run
    manifest = Manifest.read(quick_corpus)
    small = manifest.replace_rows(manifest.rows[:4])
    small_csv = small.write(tmp_path / "small.csv")
    first = manifest.audio_path(manifest.rows[0])
    assert main(["obfuscate", "--model", str(out), str(first), "--out-dir",
                 str(tmp_path / "files"), "--griffin-lim-iters", "4", "-q"]) == 0
    npy = np.load(tmp_path / "files" / f"{first.stem}.npy", allow_pickle=False)
    audio, rate = sf.read(tmp_path / "files" / f"{first.stem}.wav")
    assert npy.shape[0] == 161 and rate == 16000 and len(audio) > 0

    args = ["obfuscate", "--model", str(out), str(small_csv), "--out-dir",
            str(tmp_path / "corpus"), "--griffin-lim-iters", "4", "-q"]
    assert main(args) == 0
    assert "obfuscated 4, already done 0" in capsys.readouterr().out
    copy = Manifest.read(tmp_path / "corpus" / "manifest.csv")
    assert copy.column("id") == small.column("id")
    assert copy.column("gender") == small.column("gender")
    assert copy.column("split") == small.column("split")
    assert all(p.endswith(".wav") for p in copy.column("path"))
    assert main(args) == 0  # resumes: nothing left to do
    assert "obfuscated 0, already done 4" in capsys.readouterr().out


def test_eval_with_obfuscator_refuses_other_features(tiny_run, gender_target, tmp_path, capsys):
    import shutil

    from optin.cli import main

    out, _ = tiny_run
    other = tmp_path / "target"
    shutil.copytree(gender_target, other)
    config = json.loads((other / "config.json").read_text())
    config["features"]["hop_length"] = 80
    write_config(other, config)  # a checkpoint made with other settings, sealed as such
    assert main(["eval", "--model", str(other), "--manifest", "x.csv", "--obfuscator",
                 str(out)]) == 2
    assert "hop_length: checkpoint 80, asked 160" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_obfuscator_run_resumes_to_the_same_weights(gender_target, quick_corpus,
                                                           tmp_path):
    """Kill the training process inside the first epoch; rerunning continues and ends where an
    unbroken run ends, bit for bit."""
    from safetensors.torch import load_file

    command = [sys.executable, "-m", "optin.cli", "train", "obfuscator", "--manifest",
               str(quick_corpus), "--target", str(gender_target), "--epochs", "2",
               "--batch-size", "4", "--draws-per-epoch", "48", "--segment-length", "32",
               "--obfuscator-width", "4", "--obfuscator-blocks", "1", "--deobfuscator-width",
               "4", "--deobfuscator-blocks", "1", "--checkpoint-every", "2", "--device", "cpu",
               "-q"]
    full, broken, saved, stderr = kill_and_resume(command, tmp_path)
    assert saved["progress"]["epoch"] == 0 and saved["progress"]["step"] > 0
    assert "resuming at epoch 1" in stderr
    for part in ("obfuscator", "deobfuscator"):
        a = load_file(str(full / part / "model.safetensors"))
        b = load_file(str(broken / part / "model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), part


def test_causal_obfuscator_learns_the_task_from_scratch(gender_target, quick_corpus, tmp_path):
    """The streaming-native architecture trains in the same loop: from a random start (not
    the identity) it reaches the permitted task on held-out test data."""
    from optin.privacy.obfuscator import Obfuscator

    config = ObfuscatorTrainConfig(**{**TINY_OBF, "obfuscator_arch": "causal",
                                      "causal_hidden": 32, "causal_blocks": 2})
    final = train_obfuscator(quick_corpus, gender_target, tmp_path, config, progress=False)
    assert final["kind"] == "causal-obfuscator"
    assert final["architecture"]["lookahead"] == 2 and not final["architecture"]["residual"]
    # measured 0.975 (3 tiny epochs, 2026-12-02); the untrained network is not the identity
    assert final["evaluation"]["agreement"] >= 0.85, final["evaluation"]
    assert Obfuscator.load(tmp_path).streaming_native

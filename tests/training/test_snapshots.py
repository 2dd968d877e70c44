"""Snapshots by time as well as by steps: a training run saves its state mid-epoch once
``snapshot_seconds`` have passed, even when an epoch is shorter than ``checkpoint_every``
steps, and a run killed right after such a snapshot resumes from it to the same weights."""

from __future__ import annotations

import sys

import pytest
import torch
from safetensors.torch import load_file
from tests.conftest import kill_and_resume

from optin.checkpoint import load_state
from optin.corpora.feature_cache import FeatureCache
from optin.corpora.ravdess import prepare_ravdess
from optin.testing.dummies import make_ravdess_tree
from optin.training import runs
from optin.training.classifier import ClassifierTrainConfig, train_classifier
from optin.training.runs import SnapshotTimer
from optin.training.xvector import XVectorTrainConfig, train_xvector


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_timer_fires_on_steps_or_time_but_never_on_the_last_step():
    clock = Clock()
    timer = SnapshotTimer(every_steps=50, every_seconds=60, clock=clock)
    assert not timer.due(1, 28) and not timer.due(26, 28)
    clock.now = 61
    assert not timer.due(28, 28)  # the epoch end saves
    assert timer.due(27, 28)  # a 28-step epoch: by time, though 50 steps never come
    assert not timer.due(1, 28)  # the clock restarted
    assert timer.due(50, 100)  # by steps
    clock.now = 200
    timer.saved()
    assert not timer.due(3, 28)
    assert SnapshotTimer(None, 0.0, clock=clock).due(1, 2)  # 0 s: after every step


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("snap")
    tree = make_ravdess_tree(root / "rav", actors=(1, 2, 3, 4), emotions=("01", "02"),
                             extras=False, seconds=0.3)
    manifest = prepare_ravdess(tree.src, out=root / "m.csv", progress=False).manifest
    FeatureCache.for_manifest(manifest).fill(manifest, workers=1, progress=False)  # no pool
    return manifest.source


def killed_after_first_mid_epoch_snapshot(monkeypatch):
    """Make Optimisation.save raise (a kill) right after it wrote a mid-epoch state."""
    real = runs.Optimisation.save

    def save(self, state_dir, progress):
        real(self, state_dir, progress)
        if progress["epoch"] == 0 and progress["step"] > 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(runs.Optimisation, "save", save)
    return real


TRAINERS = {
    "classifier": (lambda m, c, o: train_classifier(m, c, o, progress=False),
                   lambda **kw: ClassifierTrainConfig(
                       attribute="gender", epochs=1, batch_size=4, draws_per_epoch=12,
                       conv_channels=2, hidden_size=4, rnn_layers=1, segment_length=20,
                       segment_hop=10, device="cpu", **kw)),
    "xvector": (lambda m, c, o: train_xvector(m, c, o, progress=False),
                lambda **kw: XVectorTrainConfig(
                    epochs=1, batch_size=4, draws_per_epoch=12, segment_length=20, n_mels=8,
                    frame_channels=4, pool_channels=8, embed_dim=4, segment_dim=4,
                    device="cpu", **kw)),
}


@pytest.mark.parametrize("kind", list(TRAINERS))
def test_a_short_epoch_snapshots_by_time_and_resumes_to_the_same_weights(
        kind, manifest, tmp_path, monkeypatch):
    train, config = TRAINERS[kind]
    full = tmp_path / "full"
    train(manifest, config(), full)
    broken = tmp_path / "broken"
    # 3 steps an epoch, a snapshot every 1000 steps: only the clock (0 s) can fire mid-epoch
    sliced = config(checkpoint_every=1000, snapshot_seconds=0.0)
    real = killed_after_first_mid_epoch_snapshot(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(manifest, sliced, broken)
    saved = load_state(broken / "train_state")["progress"]
    assert saved["epoch"] == 0 and saved["step"] == 1
    monkeypatch.setattr(runs.Optimisation, "save", real)
    train(manifest, sliced, broken)  # same run settings: the interval is not one of them
    a, b = load_file(str(full / "model.safetensors")), load_file(str(broken / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_adr_resumes_from_a_snapshot_to_the_same_model(tmp_path, monkeypatch):
    from optin.baselines import adr_training
    from optin.baselines.adr import ADRConfig

    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 2
    x = torch.randn(40, 16, generator=gen) + labels[:, None].float()
    config = ADRConfig(input_dim=16, latent_dim=4, adversary_hidden=4, epochs=4, batch_size=8,
                       classifier_epochs=2, classifier_batch_size=8, lr=0.05)
    full, _ = adr_training.train_adr(x, labels, config)
    real = adr_training.save_state

    def save_then_die(directory, state):
        real(directory, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(adr_training, "save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        adr_training.train_adr(x, labels, config, state_dir=tmp_path / "st", snapshot_seconds=0)
    assert load_state(tmp_path / "st")["rows"][-1]["epoch"] == 1
    monkeypatch.setattr(adr_training, "save_state", real)
    resumed, history = adr_training.train_adr(x, labels, config, state_dir=tmp_path / "st",
                                              snapshot_seconds=0)
    assert [r["epoch"] for r in history["epochs"]] == [0, 1, 2, 3, 4]
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_killed_process_loses_at_most_the_interval_on_a_short_epoch(manifest, tmp_path):
    """kill -9 as soon as a state is saved: with 3 steps an epoch and checkpoint_every 1000,
    only --snapshot-seconds 0 saves before the epoch ends; the rerun resumes mid-epoch and
    ends bit for bit where an unbroken run ends."""
    command = [sys.executable, "-m", "optin.cli", "train", "target", "--manifest",
               str(manifest), "--attribute", "gender", "--epochs", "2", "--batch-size", "4",
               "--conv-channels", "2", "--hidden-size", "4", "--rnn-layers", "1",
               "--segment-length", "20", "--segment-hop", "10", "--device", "cpu",
               "--checkpoint-every", "1000", "--snapshot-seconds", "0", "-q"]
    full, broken, saved, stderr = kill_and_resume(command, tmp_path)
    assert saved["progress"]["epoch"] == 0 and saved["progress"]["step"] > 0
    assert "resuming at epoch 1, step" in stderr
    a, b = load_file(str(full / "model.safetensors")), load_file(str(broken / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)

"""An obfuscator learns to keep the task of an app's own model given as a file: a tiny
voice-activity detector that hears the waveform and answers per 32 ms frame, saved as
TorchScript and as ONNX (run through optin's converter). Each run must beat an untrained
obfuscator by a margin."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optin.audio.features import FeatureConfig, features_to_wave
from optin.corpora import Manifest
from optin.corpora.feature_cache import FeatureCache
from optin.privacy.obfuscator import Obfuscator
from optin.training.data import FeatureStore
from optin.training.obfuscator import obfuscator_network, train_obfuscator
from optin.training.obfuscator_config import ObfuscatorTrainConfig
from optin.training.permitted import TargetChoice, compare_answers, load_tasks
from optin.training.wave_data import PhaseStore

TINY = {"obfuscator_width": 8, "obfuscator_blocks": 1, "deobfuscator_width": 4,
        "deobfuscator_blocks": 1, "segment_length": 64, "batch_size": 8, "draws_per_epoch": 160,
        "epochs": 3, "optimizer": "adam", "lr": 3e-3, "lambda_p": 0.0}


class LoudFrames(nn.Module):
    """A tiny voice-activity detector: is the log energy of each 32 ms frame above a threshold?
    (B, S) -> (B, N, 2) logits."""

    def __init__(self, threshold: float = 0.0) -> None:
        super().__init__()
        self.window = nn.Conv1d(1, 1, 512, stride=512, bias=False)
        self.window.weight.data = torch.hann_window(512, periodic=True)[None, None] ** 2 / 512
        self.threshold = threshold

    def energies(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.log(self.window(wave[:, None] ** 2) + 1e-8)[:, 0]  # (B, N)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        s = self.energies(wave) - self.threshold
        return torch.stack([-s, s], dim=-1)


def _stores(manifest_path):
    manifest = Manifest.read(manifest_path)
    cache = FeatureCache.for_manifest(manifest, FeatureConfig())
    return {s: FeatureStore(manifest.split(s), cache, progress=False) for s in ("train", "test")}


def _agreement(choice: TargetChoice, network: nn.Module, store: FeatureStore) -> float:
    """The target's agreement on obfuscated test audio (input phase) with its answers on the
    original, as the run's own evaluation computes it."""
    tasks = load_tasks(choice)
    task, phases = tasks.tasks[0], PhaseStore(store, tasks.features)
    pairs = []
    with torch.no_grad():
        for i in range(len(store)):
            utt, x = phases.utterance(i), store.features(i)
            obf = network(x[None])[0]
            wave = None
            if task.input == "waveform":
                wave = features_to_wave(obf[None], torch.tensor([utt.mean]),
                                        torch.tensor([utt.std]), utt.phase[None],
                                        length=len(utt.wave))[0]
            pairs.append((tasks.utterance_scores(task, x, utt.wave),
                          tasks.utterance_scores(task, obf, wave)))
    return compare_answers(pairs)["agreement"]


def _check_learns(manifest_path, choice: TargetChoice, out, one_thread) -> None:
    stores = _stores(manifest_path)
    torch.manual_seed(0)
    untrained = obfuscator_network(ObfuscatorTrainConfig(**TINY), 161).eval()
    before = _agreement(choice, untrained, stores["test"])
    final = train_obfuscator(manifest_path, choice, out, ObfuscatorTrainConfig(**TINY),
                             progress=False)
    after = _agreement(choice, Obfuscator.load(out).network.eval(), stores["test"])
    task = final["evaluation"]["tasks"][load_tasks(choice).names[0]]
    assert task["agreement"] == pytest.approx(after, abs=1e-6)  # the run's own evaluation
    print(f"agreement untrained {before:.3f}, trained {after:.3f}")
    assert after >= before + 0.15 and after >= 0.75, (before, after)
    assert final["targets"][0]["weights_sha256"]


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_obfuscator_learns_a_pretrained_frame_target_from_a_file(kind, quick_corpus, tmp_path,
                                                                one_thread):
    stores = _stores(quick_corpus)
    model = LoudFrames()
    phases = PhaseStore(stores["train"], FeatureConfig())
    with torch.no_grad():  # a threshold that splits the corpus' frames about evenly
        e = torch.cat([model.energies(phases.wave(i)[None])[0] for i in range(20)])
        model = LoudFrames(float(e.median()))
    if kind == "torchscript":
        path = tmp_path / "loud_frames.pt"
        torch.jit.script(model).save(str(path))
    else:
        path = tmp_path / "loud_frames.onnx"
        torch.onnx.export(model, (torch.randn(1, 16000),), str(path), dynamo=False,
                          input_names=["wave"], output_names=["logits"],
                          dynamic_axes={"wave": {0: "batch", 1: "samples"}})
    _check_learns(quick_corpus, TargetChoice(str(path), 1.0, "waveform", "frame-logits"),
                  tmp_path / "run", one_thread)

"""Training, checkpoints and evaluation of the x-vector extractor."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from optin.audio.features import FeatureConfig
from optin.checkpoint import CheckpointError, write_config
from optin.corpora import Manifest, ManifestError
from optin.metrics.verification import asv_pairings
from optin.models.xvector import XVector, XVectorConfig
from optin.training.xvector import PRESETS, preset_config, train_xvector
from optin.training.xvector_extractor import (
    XVectorExtractor,
    embed_split,
    evaluate_xvector,
    score_embeddings,
)


def tiny_extractor(n_speakers: int = 3) -> XVectorExtractor:
    torch.manual_seed(0)
    cfg = XVectorConfig(n_speakers=n_speakers, frame_channels=16, pool_channels=24,
                        segment_dim=32)
    model = XVector(cfg).eval()
    return XVectorExtractor(model, tuple(f"spk{k}" for k in range(n_speakers)), FeatureConfig())


# ---------------------------------------------------------------------- fast
def test_presets():
    quick = preset_config("quick")
    assert quick.embed_dim == 512 and quick.segment_dim == 512
    paper = preset_config("paper")
    assert (paper.frame_channels, paper.pool_channels, paper.embed_dim, paper.n_mels) == (
        512, 1500, 512, 30)
    assert preset_config("quick", epochs=3, lr=None).epochs == 3
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("huge")
    with pytest.raises(ValueError, match="width"):
        preset_config("quick", width=3)
    settings = quick.run_settings()
    assert "device" not in settings and "workers" not in settings
    assert set(PRESETS) == {"quick", "paper"}


def test_checkpoint_round_trip(tmp_path):
    ext = tiny_extractor()
    ext.save(tmp_path / "xv", extra={"metrics": {"note": 1}})
    loaded = XVectorExtractor.load(tmp_path / "xv", features=FeatureConfig())
    assert loaded.speakers == ext.speakers
    assert loaded.model.config == ext.model.config
    state = load_file(str(tmp_path / "xv" / "model.safetensors"))
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    feats = [torch.randn(161, n) for n in (30, 55, 41)]
    one_by_one = torch.stack([loaded.embed(f) for f in feats])
    assert one_by_one.shape == (3, 512)
    assert torch.allclose(loaded.embed_batch(feats), one_by_one, atol=1e-5)
    assert torch.allclose(ext.embed_batch(feats), one_by_one, atol=1e-5)
    assert loaded.classify(one_by_one).shape == (3, 3)


def test_mismatched_checkpoints_are_refused(tmp_path):
    ext = tiny_extractor()
    ext.save(tmp_path / "xv")
    config = json.loads((tmp_path / "xv" / "config.json").read_text())

    def variant(name: str, **changes) -> str:
        folder = tmp_path / name
        ext.save(folder)
        write_config(folder, {**config, **changes})  # sealed: the deeper checks must refuse
        return str(folder)

    wider = variant("wider", architecture={**config["architecture"], "frame_channels": 32})
    with pytest.raises(CheckpointError, match="shape mismatch"):
        XVectorExtractor.load(wider)
    names = variant("names", labels={"attribute": "speaker", "classes": ["a", "b"]})
    with pytest.raises(CheckpointError, match="3 outputs but 2 speaker names"):
        XVectorExtractor.load(names)
    kind = variant("kind", kind="deepspeech2-classifier")
    with pytest.raises(CheckpointError, match="expected 'xvector'"):
        XVectorExtractor.load(kind)
    with pytest.raises(CheckpointError, match="hop_length"):
        XVectorExtractor.load(tmp_path / "xv", features=FeatureConfig(hop_length=80))
    with pytest.raises(CheckpointError, match="does not exist"):
        XVectorExtractor.load(tmp_path / "nothing")


def test_scores_closed_and_open_set_speakers():
    ext = tiny_extractor()
    emb = torch.randn(6, 512)
    closed = score_embeddings(ext, emb, ["spk0", "spk0", "spk1", "spk1", "spk2", "spk2"])
    assert closed["trials"] == 15 and closed["target_trials"] == 3
    assert 0.0 <= closed["speaker_accuracy"] <= 1.0 and closed["loss"] > 0
    open_set = score_embeddings(ext, emb, ["x", "x", "y", "y", "z", "z"])
    assert open_set["speaker_accuracy"] is None and open_set["loss"] is None
    assert open_set["eer"] == closed["eer"]


# ---------------------------------------------------------------------- trained on the corpus
@pytest.fixture(scope="module")
def xvector_run(quick_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("xvector")
    cfg = preset_config("quick", epochs=4)
    final = train_xvector(quick_corpus, cfg, out, progress=False)
    return out, cfg, final


def test_learns_speakers(xvector_run, quick_corpus):
    out, _, final = xvector_run
    result = evaluate_xvector(out, quick_corpus, split="test", progress=False)
    # chance is 1/8 and an untrained network scores about 0.1 accuracy and 30 % EER here
    assert result["speaker_accuracy"] >= 0.6, result
    assert result["eer"] <= 0.15, result
    assert result["trials"] == result["utterances"] * (result["utterances"] - 1) // 2
    with open(out / "metrics.csv") as fh:
        history = list(csv.DictReader(fh))
    assert len(history) == final["training"]["epochs_run"]
    best = min(range(len(history)), key=lambda i: float(history[i]["valid_eer"]))
    assert final["training"]["best_epoch"] == int(history[best]["epoch"])
    assert final["metrics"]["valid"]["eer"] == pytest.approx(float(history[best]["valid_eer"]),
                                                             rel=1e-4)
    assert float(history[0]["train_loss"]) > float(history[-1]["train_loss"])


def test_rerun_reuses_the_finished_model_and_refuses_other_settings(xvector_run, quick_corpus):
    out, cfg, final = xvector_run
    weights = (out / "model.safetensors").stat().st_mtime_ns
    assert train_xvector(quick_corpus, cfg, out, progress=False) == final
    assert (out / "model.safetensors").stat().st_mtime_ns == weights
    with pytest.raises(ManifestError, match="other settings"):
        train_xvector(quick_corpus, preset_config("quick", epochs=5), out, progress=False)


def test_protected_embeddings_and_pairings(xvector_run, quick_corpus):
    out, _, _ = xvector_run
    ext = XVectorExtractor.load(out)
    original, speakers, ids = embed_split(ext, quick_corpus, "test", progress=False)
    manifest = Manifest.read(quick_corpus)
    assert ids == manifest.split("test").column("id")
    assert original.shape == (len(ids), 512)
    # a "protection" that wipes the spectrum's detail leaves no speaker information
    flat, _, _ = embed_split(ext, quick_corpus, "test", transform=torch.zeros_like,
                             progress=False)
    assert not torch.allclose(flat, original)
    result = asv_pairings(original, flat, speakers, max_trials=None)
    assert result["original/original"]["eer"] <= 0.15
    assert result["protected/protected"]["eer"] >= 0.4

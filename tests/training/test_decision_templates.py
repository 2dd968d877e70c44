"""The decision-template protector (the opt-in limit): fitting, selection, loading, and that its
output depends on the input only through T's answer and the quantised length."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tests.conftest import voiced, write_tiny_corpus

from optin.audio.features import FeatureConfig
from optin.checkpoint import save_checkpoint
from optin.corpora.feature_cache import FeatureCache
from optin.corpora.manifest import Manifest
from optin.models.decision_template import DecisionTemplateConfig, DecisionTemplateProtector
from optin.models.deepspeech2 import DeepSpeech2Classifier, DeepSpeech2Config
from optin.privacy.obfuscator import Obfuscator
from optin.training.classifier import Classifier
from optin.training.data import FeatureStore
from optin.training.decision_templates import (
    TemplateTrainConfig,
    fit_decision_templates,
    grid_agreement,
    optimise_templates,
)


def small_protector(n_classes: int = 4, period: int = 40) -> DecisionTemplateProtector:
    torch.manual_seed(0)
    decider = DeepSpeech2Config(n_classes=n_classes, conv_channels=4, hidden_size=16,
                                rnn_layers=1).to_dict()
    return DecisionTemplateProtector(DecisionTemplateConfig(
        decider=decider, period=period, length_quantum=50, segment_length=30, segment_hop=15))


def test_optimisation_teaches_the_decider_every_class(one_thread):
    """From one shared start T gives every template the same answer (1 class in K right);
    the optimisation must make T answer each template's own class at every offset."""
    protector = small_protector()
    start = torch.zeros(4, 161, 40)
    with torch.no_grad():
        protector.templates.copy_(start)
    before = grid_agreement(protector)
    assert before <= 0.5  # the same answer for all 4 classes: about 1/4
    checks: list[dict] = []
    cfg = TemplateTrainConfig(period=40, steps=60, batch_size=16, lr=0.1, check_every=20)
    best = optimise_templates(protector, start, cfg, checks.append)
    assert [c["step"] for c in checks] == [20, 40, 60]
    assert best["grid_agreement"] >= 0.95, checks
    assert grid_agreement(protector) == best["grid_agreement"]  # the selected templates kept


def test_output_depends_only_on_the_decision_and_quantised_length(one_thread):
    protector = small_protector(n_classes=2).eval()
    with torch.no_grad():
        protector.templates.normal_()
    x = torch.randn(3, 161, 37)
    out = protector(x)
    assert out.shape == (3, 161, 50)  # 37 frames rounded up to the 50-frame quantum
    decisions = protector.decide(x)
    for b in range(3):
        assert torch.equal(out[b], protector.render(decisions[b:b + 1], 50)[0])
    assert protector(torch.randn(1, 161, 51)).shape[-1] == 100
    assert protector.output_frames(1) == 50
    exact = DecisionTemplateProtector(
        DecisionTemplateConfig(decider=protector.config.decider, length_quantum=0))
    assert exact.output_frames(37) == 37


@pytest.fixture(scope="module")
def tiny_target(tmp_path_factory):
    """A tiny corpus and an (untrained, seeded) DeepSpeech2 speaker model T: its answers are
    what the protector must keep, whatever they are."""
    root = tmp_path_factory.mktemp("limit")
    manifest = write_tiny_corpus(root)
    torch.manual_seed(3)
    arch = DeepSpeech2Config(n_classes=2, conv_channels=4, hidden_size=16, rnn_layers=1)
    save_checkpoint(root / "T", DeepSpeech2Classifier(arch).state_dict(), {
        "kind": "deepspeech2-classifier", "architecture": arch.to_dict(),
        "features": FeatureConfig().to_dict(), "segments": {"length": 30, "hop": 15},
        "vote": "majority", "labels": {"attribute": "speaker", "classes": ["spk0", "spk1"]}})
    return manifest, root / "T"


def test_fit_writes_a_loadable_protector_that_keeps_t(tiny_target, tmp_path, one_thread):
    manifest, target = tiny_target
    cfg = TemplateTrainConfig(period=50, length_quantum=50, steps=40, check_every=20)
    final = fit_decision_templates(manifest, target, tmp_path / "limit", cfg, progress=False)
    assert final["training"]["grid_agreement"] >= 0.95
    assert final["training"]["converged"] == (final["training"]["grid_agreement"] >= 1.0)
    assert (tmp_path / "limit" / "metrics.csv").read_text().count("\n") == 3  # header + 2
    # a finished run is found, not redone
    again = fit_decision_templates(manifest, target, tmp_path / "limit", cfg, progress=False)
    assert again == json.loads((tmp_path / "limit" / "final.json").read_text()) == final

    protector = Obfuscator.load(tmp_path / "limit")
    t = Classifier.load(target)
    m = Manifest.read(manifest)
    store = FeatureStore(m, FeatureCache.for_manifest(m), progress=False)
    original = t.predict(store)["utterance_pred"]
    protected = t.predict(store, transform=protector.obfuscate_features)["utterance_pred"]
    assert torch.equal(original, protected)  # T's answer survives on every utterance
    # audio through the protector: the fixed level, its own length, no input phase
    spec = protector(voiced(seconds=0.3, seed=1))
    assert spec.features.shape == (161, 50) and spec.phase is None
    assert spec.mean == pytest.approx(protector.network.config.level_mean)
    wave = protector.to_waveform(spec, n_iter=4)
    assert np.isfinite(wave).all() and wave.size == 49 * 160


def test_fit_refuses_another_run_in_the_same_folder(tiny_target, tmp_path, one_thread):
    from optin.corpora.manifest import ManifestError

    manifest, target = tiny_target
    fit_decision_templates(manifest, target, tmp_path / "limit",
                           TemplateTrainConfig(steps=2, check_every=1), progress=False)
    with pytest.raises(ManifestError, match="other settings"):
        fit_decision_templates(manifest, target, tmp_path / "limit",
                               TemplateTrainConfig(steps=3, check_every=1), progress=False)


def test_the_limit_protects_files_and_refuses_streams(tiny_target, tmp_path, one_thread):
    import soundfile as sf

    from optin.cli import main
    from optin.deploy.causal_stream import open_stream
    from optin.deploy.export import export_onnx
    from optin.errors import ConfigError

    manifest, target = tiny_target
    fit_decision_templates(manifest, target, tmp_path / "limit",
                           TemplateTrainConfig(period=50, length_quantum=50, steps=4,
                                               check_every=2), progress=False)
    assert main(["obfuscate", "--quiet", "--model", str(tmp_path / "limit"), str(manifest),
                 "--out-dir", str(tmp_path / "protected"), "--griffin-lim-iters", "2"]) == 0
    written = sorted((tmp_path / "protected").rglob("*.wav"))
    assert len(written) == 4
    for path in written:  # 0.3 s in, one 0.5 s quantum out (49 hops), at the fixed level
        wave, rate = sf.read(path)
        assert rate == 16000 and len(wave) == 49 * 160
    protector = Obfuscator.load(tmp_path / "limit")
    with pytest.raises(ConfigError, match="streaming: this is a decision-template"):
        open_stream(protector)
    with pytest.raises(ConfigError, match="ONNX export: this is a decision-template"):
        export_onnx(protector, tmp_path / "limit.onnx")


def test_cli_fits_a_student_and_checks_its_settings(tiny_target, tmp_path, capsys, one_thread):
    from optin.cli import main

    manifest, target = tiny_target
    common = ["train", "templates", "--quiet", "--manifest", str(manifest),
              "--target", str(target)]
    assert main([*common, "--out", str(tmp_path / "bad"), "--length-quantum", "-1"]) == 2
    assert "length_quantum" in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "student"), "--period", "50",
                 "--length-quantum", "50", "--steps", "4", "--check-every", "2",
                 "--decider", "student", "--student-steps", "6", "--student-channels", "2",
                 "--student-hidden", "8", "--student-layers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "decider student" in printed and "agreement with T on held-out audio" in printed
    final = json.loads((tmp_path / "student" / "final.json").read_text())
    assert final["decider"]["parameters"] < final["decider"]["target_parameters"]
    protector = Obfuscator.load(tmp_path / "student")
    assert protector.network.config.decider_config().conv_channels == 2

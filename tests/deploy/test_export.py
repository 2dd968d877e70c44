"""ONNX export: parity with PyTorch at several batch sizes and lengths, int8, metadata, CLI."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import soundfile as sf
import torch
from torch import nn

from optin.audio.features import FeatureConfig, SpectrogramFrontEnd
from optin.checkpoint import save_checkpoint
from optin.deploy.agreement import int8_agreement
from optin.deploy.export import export_onnx, probe_input, read_metadata
from optin.deploy.graphs import DftSpectrogram, FeatureGraph, FoldedConv2d
from optin.deploy.quantize import calibration_inputs, manifest_calibration, spatial_convs
from optin.deploy.runtime import OnnxModelError, OnnxObfuscator
from optin.models.cyclegan_vc2 import Generator, GeneratorConfig
from optin.privacy.obfuscator import OBFUSCATOR_KIND, Obfuscator
from optin.testing.dummies import tone

# int8 against float32, relative RMS of the output. Measured on the untrained (random) paper-size
# obfuscator used here: 0.26 on speech-like tones (0.32 with every conv quantized); broken
# scales give >= 1. A trained obfuscator is far easier: 0.020 on the demo corpus.
INT8_REL_RMS_BOUND = 0.6


def rel_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def save_obfuscator(directory, manifest=None, seed: int = 0):
    """An untrained paper-size obfuscator saved as training does (``<run>/obfuscator/``)."""
    torch.manual_seed(seed)
    net = Generator(GeneratorConfig.obfuscator())
    save_checkpoint(directory / "obfuscator", net.state_dict(), {
        "kind": OBFUSCATOR_KIND, "architecture": net.config.to_dict(),
        "features": FeatureConfig().to_dict(),
        "provenance": {"manifest": str(manifest) if manifest else None},
    })
    return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_obfuscator(tmp_path_factory.mktemp("obf"))


@pytest.fixture(scope="module")
def exported(model_dir, tmp_path_factory):
    """The three exports the tests share (the exporter takes seconds per graph)."""
    out = tmp_path_factory.mktemp("onnx")
    calib = [probe_input("features", FeatureConfig(), 1, 150, seed=s) for s in range(6)]
    return {
        "features": export_onnx(model_dir, out / "f.onnx", include_frontend=False),
        "wave": export_onnx(model_dir, out / "w.onnx"),
        "int8": export_onnx(model_dir, out / "q.onnx", include_frontend=False, int8=True,
                            calibration=calib),
    }


def test_dft_frontend_matches_torch_stft():
    for config in (FeatureConfig(), FeatureConfig(win_length=256, window="hann")):
        wave = torch.from_numpy(tone(0.7, 16000, np.random.default_rng(1)))[None]
        expected = SpectrogramFrontEnd(config)(wave)
        actual = DftSpectrogram(config)(wave)
        assert actual[0].shape == expected[0].shape == (1, 161, 1 + wave.shape[1] // 160)
        assert torch.allclose(actual[0], expected[0], atol=2e-5)
        assert torch.allclose(actual[1], expected[1], rtol=1e-6)
        assert torch.allclose(actual[2], expected[2], rtol=1e-5)


def test_feature_graph_equals_the_generator():
    torch.manual_seed(0)
    net = Generator(GeneratorConfig(base_width=4, residual_blocks=1)).eval()
    graph = FeatureGraph(net)
    assert isinstance(graph.generator.output, FoldedConv2d) and isinstance(net.output, nn.Conv2d)
    with torch.no_grad():
        for frames in (8, 37, 40):  # (T < 8 is ill-conditioned in float32 itself)
            x = torch.randn(2, 161, frames)
            assert rel_error(graph(x).numpy(), net(x).numpy()) < 1e-5


def test_folded_conv_is_the_conv():
    torch.manual_seed(0)
    for kernel, padding, bias in (((5, 15), (2, 7), True), ((3, 3), (1, 1), False)):
        conv = nn.Conv2d(6, 1, kernel, padding=padding, bias=bias)
        x = torch.randn(2, 6, 9, 23)
        with torch.no_grad():
            assert torch.allclose(FoldedConv2d(conv)(x), conv(x), atol=1e-5)
    with pytest.raises(ValueError, match="FoldedConv2d needs"):
        FoldedConv2d(nn.Conv2d(6, 2, 3, padding=1))


@pytest.mark.slow
def test_features_graph_matches_pytorch_at_other_batch_sizes_and_lengths(model_dir, exported):
    report = exported["features"]
    assert report.inputs == {"features": ["batch", 161, "frames"]}
    assert report.parity["max_rel_error"] < 1e-4
    runner = OnnxObfuscator.load(report.path)
    obfuscator = Obfuscator.load(model_dir)
    for batch, frames in ((1, 24), (4, 131)):  # neither is the traced (2, 101)
        x = torch.from_numpy(probe_input("features", FeatureConfig(), batch, frames, seed=3))
        actual = runner.obfuscate_features(x)
        assert actual.shape == (batch, 161, frames)
        assert rel_error(actual.numpy(), obfuscator.obfuscate_features(x).numpy()) < 1e-4
    single = runner.obfuscate_features(x[0])  # (F, T) works too
    assert single.shape == (161, 131)


@pytest.mark.slow
def test_wave_graph_includes_the_frontend(model_dir, exported):
    report = exported["wave"]
    assert list(report.inputs) == ["wave"] and list(report.outputs) == ["obfuscated", "mean",
                                                                         "std"]
    runner = OnnxObfuscator.load(report.path)
    obfuscator = Obfuscator.load(model_dir)
    for batch, samples in ((1, 5000), (3, 17123)):
        wave = probe_input("wave", FeatureConfig(), batch, 1 + samples // 160)
        obf, mean, std = runner.run_arrays(wave)
        with torch.no_grad():  # the real front-end (torch.stft), then the network
            feats, t_mean, t_std, _ = obfuscator.frontend(torch.from_numpy(wave))
        assert obf.shape == (batch, 161, 1 + wave.shape[1] // 160)
        assert rel_error(obf, obfuscator.obfuscate_features(feats).numpy()) < 1e-4
        assert np.allclose(mean, t_mean.numpy(), rtol=1e-5)
        assert np.allclose(std, t_std.numpy(), rtol=1e-5)


@pytest.mark.slow
def test_metadata_says_what_the_graph_expects(model_dir, exported):
    meta = read_metadata(exported["features"].path)
    assert meta["graph"] == "features" and meta["kind"] == OBFUSCATOR_KIND
    assert json.loads(meta["features"]) == FeatureConfig().to_dict()
    assert meta["feature_fingerprint"] == FeatureConfig().fingerprint()
    assert json.loads(meta["architecture"]) == GeneratorConfig.obfuscator().to_dict()
    config = json.loads((model_dir / "obfuscator" / "config.json").read_text())
    assert meta["weights_sha256"] == config["weights_sha256"]
    assert "SpectrogramFrontEnd" in meta["input"] and meta["quantization"].startswith("none")
    assert read_metadata(exported["wave"].path)["graph"] == "wave"
    assert "1 + samples // 160" in read_metadata(exported["wave"].path)["outputs"]


@pytest.mark.slow
def test_int8_runs_close_to_float32(exported):
    report = exported["int8"]
    assert report.int8 and "static" in report.quantization
    assert report.inputs == exported["features"].inputs  # axis names kept
    assert report.outputs == exported["features"].outputs
    nodes = onnx.load(str(report.path)).graph.node
    dequantized = {o for n in nodes if n.op_type == "DequantizeLinear" for o in n.output}
    int8_convs = [n for n in nodes if n.op_type == "Conv" and n.input[1] in dequantized]
    assert len(int8_convs) == 6  # "spatial": down1, down2 (conv and gate), up1, up2
    assert len(int8_convs) < sum(n.op_type == "Conv" for n in nodes)
    assert report.bytes < 0.7 * exported["features"].bytes
    fp32, int8 = (OnnxObfuscator.load(exported[k].path) for k in ("features", "int8"))
    x = probe_input("features", FeatureConfig(), 2, 180, seed=7)
    ref, out = fp32.run_arrays(x)[0], int8.run_arrays(x)[0]
    rel_rms = np.sqrt(((out - ref) ** 2).mean() / (ref**2).mean())
    print(f"int8 relative RMS error (untrained): {rel_rms:.3f}")
    assert 0 < rel_rms < INT8_REL_RMS_BOUND


def test_spatial_convs_are_the_heavy_2d_layers():
    model = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Conv", ["x", name], [f"y{i}"], name=f"conv{i}")
         for i, name in enumerate(["w_in", "w_mid", "w_1d", "w_out"])],
        "g", [], [],
        initializer=[onnx.numpy_helper.from_array(np.zeros(shape, np.float32), name)
                     for name, shape in (("w_in", (4, 1, 5, 15)), ("w_mid", (8, 4, 5, 5)),
                                         ("w_1d", (8, 8, 3)), ("w_out", (1, 4, 5, 15)))]))
    assert spatial_convs(model) == ["conv1"]


def test_int8_without_calibration_is_a_clear_error(model_dir, tmp_path):
    with pytest.raises(ValueError, match="--calibration"):
        export_onnx(model_dir, tmp_path / "q.onnx", int8=True)
    obfuscator = Obfuscator.load(model_dir)
    with pytest.raises(ValueError, match=r"calibration array 0: expected \(1, 161, T\)"):
        calibration_inputs([np.zeros((161, 20), np.float32)], obfuscator)


def test_bad_files_and_inputs_are_named(tmp_path, model_dir):
    with pytest.raises(ValueError, match=r"should end in \.onnx"):
        export_onnx(model_dir, tmp_path / "x.bin")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(OnnxModelError, match=r"junk\.onnx"):
        OnnxObfuscator.load(junk)
    with pytest.raises(OnnxModelError, match=r"missing\.onnx"):
        OnnxObfuscator.load(tmp_path / "missing.onnx")


@pytest.mark.slow
def test_runner_refuses_the_wrong_input(exported):
    wave_runner = OnnxObfuscator.load(exported["wave"].path)
    with pytest.raises(ValueError, match="wave graph"):
        wave_runner.obfuscate_features(torch.zeros(161, 30))
    with pytest.raises(ValueError, match="2-D input"):
        wave_runner.run_arrays(np.zeros((1, 161, 30), np.float32))


def write_corpus(root, speakers=("a", "b"), per_split=(3, 2)):
    """WAV files and a manifest with train/test rows: returns the manifest path."""
    rng = np.random.default_rng(0)
    rows = ["id,path,speaker,split"]
    for spk in speakers:
        for split, count in zip(("train", "test"), per_split, strict=True):
            for i in range(count):
                name = f"{spk}_{split}{i}"
                sf.write(root / f"{name}.wav", tone(rng.uniform(1.2, 2.0), 16000, rng), 16000)
                rows.append(f"{name},{name}.wav,{spk},{split}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


def test_manifest_calibration_uses_train_rows(tmp_path):
    manifest = write_corpus(tmp_path)
    arrays = manifest_calibration(manifest, FeatureConfig(), utterances=4, max_frames=120)
    assert len(arrays) == 4
    for x in arrays:
        assert x.dtype == np.float32 and x.shape[:2] == (1, 161) and 100 < x.shape[2] <= 120


def save_target(directory, classes=("a", "b")):
    """An untrained DeepSpeech2 speaker classifier checkpoint."""
    from optin.models.deepspeech2 import DeepSpeech2Classifier, DeepSpeech2Config
    from optin.training.classifier import KIND

    torch.manual_seed(0)
    arch = DeepSpeech2Config(n_classes=len(classes), conv_channels=4, hidden_size=8,
                             rnn_layers=1)
    model = DeepSpeech2Classifier(arch)
    save_checkpoint(directory, model.state_dict(), {
        "kind": KIND, "architecture": arch.to_dict(), "features": FeatureConfig().to_dict(),
        "segments": {"length": 100, "hop": 50}, "vote": "majority",
        "labels": {"attribute": "speaker", "classes": list(classes)},
    })
    return directory


@pytest.mark.slow
def test_int8_agreement_runs_the_target_on_both(tmp_path, model_dir):
    manifest = write_corpus(tmp_path)
    target = save_target(tmp_path / "target")
    result = int8_agreement(model_dir, target, manifest, cache_root=tmp_path / "cache",
                            calibration_utterances=4)
    assert result["utterances"] == 4 and result["attribute"] == "speaker"
    assert result["agreement_onnx_vs_torch"] == 1.0
    assert 0.0 <= result["agreement_int8_vs_float32"] <= 1.0
    assert 0 < result["int8_rel_rms_error"] < INT8_REL_RMS_BOUND
    assert "4 utterances of" in result["calibration"]


@pytest.mark.slow
def test_cli_export_json_and_errors(model_dir, tmp_path, capsys):
    from optin.cli import main

    out = tmp_path / "obf.onnx"
    assert main(["export", "--model", str(model_dir), "--out", str(out), "--features-only",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)  # exactly one JSON object
    assert result["export"]["graph"] == "features" and out.is_file()
    assert main(["export", "--model", str(model_dir), "--out", str(out), "--int8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--calibration" in err and len(err.splitlines()) == 1

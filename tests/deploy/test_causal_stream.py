"""Streaming the causal obfuscator: equal to offline obfuscation, any chunking; the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from tests.conftest import voiced

from optin.audio.features import FeatureConfig
from optin.checkpoint import save_checkpoint
from optin.cli import main
from optin.deploy.causal_stream import CausalStreamingObfuscator, open_stream
from optin.errors import ConfigError
from optin.models.causal_obfuscator import CausalObfuscator, CausalObfuscatorConfig
from optin.privacy.obfuscator import CAUSAL_OBFUSCATOR_KIND, Obfuscator

RATE = 16000


def causal_obfuscator(lookahead: int = 2, seed: int = 0) -> Obfuscator:
    torch.manual_seed(seed)
    cfg = CausalObfuscatorConfig(hidden=24, blocks=3, lookahead=lookahead, residual=False)
    return Obfuscator(CausalObfuscator(cfg), FeatureConfig())


def normalised_error(streamed: np.ndarray, obfuscator: Obfuscator, wave: np.ndarray) -> float:
    """Max |stream - offline| in the offline path's normalised features."""
    offline = obfuscator(wave)
    ours = (torch.from_numpy(streamed) - offline.mean) / offline.std
    return float((ours - offline.features).abs().max())


@pytest.mark.parametrize("lookahead", [0, 2, 4])
def test_stream_equals_offline_obfuscation_for_any_chunking(lookahead):
    obfuscator = causal_obfuscator(lookahead)
    rng = np.random.default_rng(lookahead)
    for trial in range(3):
        wave = voiced(float(rng.uniform(0.3, 2.5)), f0=float(rng.uniform(90, 250)),
                      seed=trial) * float(rng.uniform(0.05, 1.0))
        chunk_ms = float(rng.choice([10, 20, 30, 100]))
        stream = open_stream(obfuscator, chunk_ms=chunk_ms)
        assert isinstance(stream, CausalStreamingObfuscator)
        piece = int(rng.integers(1, 2500))  # pieces need not match frames or chunks
        out = stream.process(wave, piece=piece)
        assert out.features.shape == (161, FeatureConfig().frames(len(wave)))
        assert normalised_error(out.features, obfuscator, wave) < 1e-5
        reference = stream.reference(wave)
        assert len(out.audio) == len(wave)
        np.testing.assert_allclose(out.audio, reference.audio, atol=1e-5)


def test_one_hop_pieces_and_the_latency_budget():
    obfuscator = causal_obfuscator(2)
    stream = open_stream(obfuscator, chunk_ms=10)
    # chunk + look-ahead + one hop, minus a sample: 39.9 ms at 16 kHz
    assert stream.latency_samples == 4 * 160 - 1 and stream.latency_ms < 40
    wave = voiced(1.0, seed=3)
    stream.reset()
    got, emitted = [], 0
    for i in range(0, len(wave), 160):
        out = stream.push(wave[i:i + 160])
        got.append(out)
        emitted += len(out.audio)
        # every sample older than the latency is out
        assert emitted >= i + 160 - stream.latency_samples
    got.append(stream.flush())
    features = np.concatenate([g.features for g in got], axis=1)
    assert normalised_error(features, obfuscator, wave) < 1e-5


def test_griffin_lim_phase_streams_too():
    obfuscator = causal_obfuscator(2)
    wave = voiced(0.8, seed=5)
    out = open_stream(obfuscator, chunk_ms=50, phase="griffin-lim").process(wave)
    assert len(out.audio) == len(wave) and np.isfinite(out.audio).all()
    assert normalised_error(out.features, obfuscator, wave) < 1e-5


def test_windowed_settings_are_refused_for_a_causal_model():
    obfuscator = causal_obfuscator()
    with pytest.raises(ConfigError, match="window_ms"):
        open_stream(obfuscator, window_ms=500.0)
    with pytest.raises(ConfigError, match="calibration"):
        open_stream(obfuscator).calibrate(voiced(0.5, seed=1))


def test_cli_streams_a_causal_checkpoint(tmp_path, capsys):
    obfuscator = causal_obfuscator()
    net = obfuscator.network
    save_checkpoint(tmp_path / "run" / "obfuscator", net.state_dict(), {
        "kind": CAUSAL_OBFUSCATOR_KIND, "architecture": net.config.to_dict(),
        "features": FeatureConfig().to_dict(), "target": {"attribute": "speaker"}})
    loaded = Obfuscator.load(tmp_path / "run")
    assert loaded.streaming_native
    x = voiced(1.1, seed=8)
    sf.write(tmp_path / "in.wav", x, RATE, subtype="PCM_16")
    out = tmp_path / "obf.wav"
    assert main(["stream", "--model", str(tmp_path / "run"), "--input", str(tmp_path / "in.wav"),
                 "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "causal obfuscator: chunk 10 ms" in err and "39.9 ms algorithmic" in err
    audio, _ = sf.read(out, dtype="float32")
    from optin.audio.io import load_audio

    # speaker identity is permitted: the default phase is the input's
    expected = open_stream(loaded, phase="input").process(load_audio(tmp_path / "in.wav"))
    np.testing.assert_allclose(audio, np.clip(expected.audio, -1, 1), atol=2 / 32768)


# --- ONNX step graph --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A causal obfuscator and its step graph, float32 and int8 (calibrated on tones)."""
    from optin.deploy.stream_graph import export_streaming

    tmp = tmp_path_factory.mktemp("step")
    obfuscator = causal_obfuscator(2, seed=3)
    calibration = [obfuscator.spectrogram(voiced(1.5, f0=f0, seed=i)).features[None].numpy()
                   for i, f0 in enumerate((110.0, 180.0, 240.0))]
    export_streaming(obfuscator, tmp / "f32.onnx")
    export_streaming(obfuscator, tmp / "int8.onnx", int8=True, calibration=calibration)
    return obfuscator, tmp


def test_onnx_step_graph_streams_like_pytorch_chunk_by_chunk(exported):
    from optin.deploy.export import read_metadata
    from optin.deploy.stream_graph import OnnxStepper

    obfuscator, tmp = exported
    meta = read_metadata(tmp / "f32.onnx")
    assert meta["graph"] == "stream-step" and meta["lookahead"] == "2"
    wave = voiced(1.7, f0=150.0, seed=9)
    for chunk_ms, piece in ((10, 160), (30, 997)):
        torch_out = open_stream(obfuscator, chunk_ms=chunk_ms).process(wave, piece=piece)
        onnx_stream = CausalStreamingObfuscator(obfuscator, chunk_ms,
                                                stepper=OnnxStepper.load(tmp / "f32.onnx", 1))
        onnx_out = onnx_stream.process(wave, piece=piece)
        np.testing.assert_allclose(onnx_out.features, torch_out.features, atol=1e-4)
        np.testing.assert_allclose(onnx_out.audio, torch_out.audio, atol=1e-4)
    int8 = CausalStreamingObfuscator(obfuscator, 10,
                                     stepper=OnnxStepper.load(tmp / "int8.onnx", 1))
    int8_out = int8.process(wave, piece=160)
    reference = open_stream(obfuscator).process(wave, piece=160).features
    error = np.sqrt(np.mean((int8_out.features - reference) ** 2) / np.mean(reference**2))
    assert read_metadata(tmp / "int8.onnx")["quantization"].startswith("int8")
    assert error < 0.2, error  # quantized, not broken


def test_onnx_stepper_refuses_other_graphs(tmp_path, exported):
    from optin.deploy.runtime import OnnxModelError
    from optin.deploy.stream_graph import OnnxStepper

    with pytest.raises(OnnxModelError, match="no such ONNX file"):
        OnnxStepper.load(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(OnnxModelError, match="cannot load"):
        OnnxStepper.load(tmp_path / "junk.onnx")


def test_cli_exports_and_benches_the_stream(tmp_path, capsys):
    obfuscator = causal_obfuscator()
    net = obfuscator.network
    save_checkpoint(tmp_path / "run" / "obfuscator", net.state_dict(), {
        "kind": CAUSAL_OBFUSCATOR_KIND, "architecture": net.config.to_dict(),
        "features": FeatureConfig().to_dict()})
    run = str(tmp_path / "run")
    assert main(["export", "--model", run, "--out", str(tmp_path / "s.onnx"),
                 "--streaming"]) == 0
    assert "stream-step graph" in capsys.readouterr().out
    # the offline graphs are for the paper's network: a clear refusal
    assert main(["export", "--model", run, "--out", str(tmp_path / "o.onnx")]) == 2
    assert "--streaming" in capsys.readouterr().err
    # (the ONNX steppers are timed the same way; exporting them costs ~15 s each)
    assert main(["bench", "--model", run, "--streaming", "--seconds", "0.5", "--repeats", "1",
                 "--backend", "torch", "--json"]) == 0
    import json

    result = json.loads(capsys.readouterr().out)
    assert set(result["backends"]) == {"torch"} and result["streaming_native"]
    for numbers in result["backends"].values():
        assert numbers["ms_per_audio_second"] > 0
        assert numbers["algorithmic_latency_ms"] == pytest.approx(39.9375)


def test_bad_input_is_refused_by_name():
    from optin.deploy.streaming import StreamError

    stream = open_stream(causal_obfuscator())
    with pytest.raises(StreamError, match="NaN"):
        stream.push(np.array([0.1, np.nan], np.float32))
    with pytest.raises(StreamError, match="mono"):
        stream.push(np.zeros((2, 160), np.float32))
    stream.reset()
    stream.push(np.zeros(100, np.float32))
    with pytest.raises(StreamError, match="needs more than 160"):
        stream.flush()
    stream.reset()
    stream.push(voiced(0.2, seed=2))
    stream.flush()
    with pytest.raises(StreamError, match="flushed"):
        stream.push(np.zeros(10, np.float32))

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
        chunk_ms = float(rng.choice([10, 20, 37, 100]))
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

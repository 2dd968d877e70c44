"""Tests for streaming obfuscation (optin.deploy.streaming, optin.deploy.receptive_field)."""

from __future__ import annotations

import io
import itertools
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from tests.conftest import save_tiny_obfuscator, voiced

from optin.audio.features import FeatureConfig, features_to_magnitude, spectrogram
from optin.audio.io import AudioError
from optin.checkpoint import save_checkpoint
from optin.cli import main
from optin.deploy.receptive_field import measure_receptive_field, receptive_field
from optin.deploy.stream_io import default_phase, float_to_pcm16, pcm16_to_float, run_stream
from optin.deploy.streaming import StreamError, StreamingObfuscator
from optin.models.cyclegan_vc2 import Generator, GeneratorConfig
from optin.privacy.obfuscator import OBFUSCATOR_KIND, Obfuscator

RATE = 16000
HOP = 160
TINY = {"base_width": 4, "residual_blocks": 1}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_obfuscator(seed: int = 0) -> Obfuscator:
    torch.manual_seed(seed)
    return Obfuscator(Generator(GeneratorConfig(**TINY)), FeatureConfig())


@pytest.fixture(scope="module")
def obfuscator() -> Obfuscator:
    return tiny_obfuscator()


@pytest.fixture(scope="module")
def wave() -> np.ndarray:
    return voiced(2.0, f0=130.0, seed=1)


@pytest.fixture
def model_dir(tmp_path, obfuscator):
    """An untrained obfuscator saved as training saves it (``<run>/obfuscator/``)."""
    net = obfuscator.network
    save_checkpoint(tmp_path / "run" / "obfuscator", net.state_dict(), {
        "kind": OBFUSCATOR_KIND, "architecture": net.config.to_dict(),
        "features": FeatureConfig().to_dict()})
    return tmp_path / "run"


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# --- receptive field ------------------------------------------------------------------------


@pytest.mark.parametrize(("config", "expected"), [
    # By hand for the paper's obfuscator: back from output frame t through output conv (+-7),
    # up2 (/2, +-2), up1 (/2, +-2), 3 residual blocks (2 convs k3 each: +-6 at 1/4 rate),
    # down2 and down1 (x2 -2 / x2 +2 each), input conv (+-7); worst phases t = 4m+2 (left)
    # and t = 4m+1 (right).
    (GeneratorConfig.obfuscator(), (59, 56)),
    # each residual block adds one k3 conv pair at 1/4 rate: 2 * 2 * 4 = 16 frames a side
    (GeneratorConfig(**TINY), (43, 40)),
])
def test_receptive_field_from_layers_matches_impulse_measurement(config, expected) -> None:
    torch.manual_seed(0)
    net = Generator(config)
    derived = receptive_field(net)
    assert (derived.left, derived.right, derived.period) == (*expected, 4)
    measured = measure_receptive_field(net, n_frames=200)
    assert measured == derived


def test_deobfuscator_receptive_field_is_wider() -> None:
    rf = receptive_field(Generator(GeneratorConfig.deobfuscator()))
    assert (rf.left, rf.right) == (59 + 3 * 8, 56 + 3 * 8)


# --- geometry and latency -------------------------------------------------------------------


def test_geometry_covers_the_receptive_field(obfuscator) -> None:
    s = StreamingObfuscator(obfuscator, chunk_ms=120)
    rf = s.receptive_field
    assert (s.chunk_frames, s.lookahead_frames) == (12, 40)  # 120 ms; 40 frames
    assert s.window_frames == 44 + 12 + 40 and s.left_context_frames == 44
    assert s.latency_samples == (12 + 40 + 1) * HOP - 1
    assert s.latency_ms == pytest.approx(530 - 1000 / RATE)
    n = RATE * 3 + 77
    total = 1 + n // HOP
    blocks = s.plan(n)
    assert blocks[0].start == 0 and blocks[-1].stop == total
    for before, after in itertools.pairwise(blocks):
        assert before.stop == after.start
    for b in blocks:
        assert b.window_start % 4 == 0 and b.window_frames <= s.window_frames
        assert b.window_start == 0 or b.start - b.window_start >= rf.left
        assert b.window_stop == total or b.window_stop - b.stop >= rf.right
    assert max(b.window_frames for b in blocks) == s.window_frames
    longer = StreamingObfuscator(obfuscator, window_ms=2000)
    assert longer.window_frames == 200 and longer.left_context_frames == 200 - 52


def test_latency_is_as_stated(obfuscator) -> None:
    """Sample by sample: output sample n is final exactly latency_samples after input n at
    worst, and the best case is the lookahead plus one hop."""
    s = StreamingObfuscator(obfuscator, chunk_ms=40)
    x = voiced(1.2, seed=3)
    emitted_at = []  # for each output sample, the index of the input sample that released it
    for i in range(len(x)):
        emitted_at.extend([i] * len(s.push(x[i:i + 1]).audio))
        assert len(emitted_at) <= i + 1
    lag = np.asarray(emitted_at) - np.arange(len(emitted_at))
    assert len(lag) > 4 * s.chunk_frames * HOP  # several chunks were released before the end
    assert lag.max() == s.latency_samples == (4 + 40 + 1) * HOP - 1
    assert lag.min() == (s.lookahead_frames + 1) * HOP
    assert len(emitted_at) + len(s.flush().audio) == len(x)


@pytest.mark.parametrize("n", [161, 320, 1000, RATE + 37])
def test_audio_length_and_frames_are_preserved(obfuscator, n) -> None:
    x = voiced(n / RATE + 0.01, seed=2)[:n]
    out = StreamingObfuscator(obfuscator).process(x, piece=97)
    assert out.audio.shape == (n,) and out.audio.dtype == np.float32
    assert out.features.shape == (161, 1 + n // HOP)
    assert out.mean.shape == out.std.shape == (1 + n // HOP,)
    assert np.isfinite(out.audio).all()


# --- equality with offline obfuscation ------------------------------------------------------


@pytest.mark.parametrize("stats", [None, (1.2, 0.6)])
def test_stream_equals_offline_obfuscation_of_the_same_windows(obfuscator, wave, stats) -> None:
    mean, std = stats or (None, None)
    s = StreamingObfuscator(obfuscator, mean=mean, std=std)
    out = s.process(wave, piece=1234)
    ref = s.reference(wave)
    np.testing.assert_allclose(out.features, ref.features, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out.mean, ref.mean, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out.audio, ref.audio, atol=1e-5, rtol=0)
    if stats is not None:
        assert (out.mean == 1.2).all() and (out.std == 0.6).all()
    else:  # running statistics converge to the utterance's
        full = spectrogram(wave)
        assert out.mean[-1] == pytest.approx(full.mean, abs=1e-5)
        assert out.std[-1] == pytest.approx(full.std, abs=1e-5)
        assert out.mean[0] != pytest.approx(full.mean, abs=1e-3)


@pytest.mark.parametrize("chunk_ms", [120, 40])
def test_window_covering_the_file_equals_offline_obfuscation(obfuscator, wave, chunk_ms) -> None:
    """Window and lookahead longer than the file: every frame is computed at flush from the
    whole utterance, so the stream is the offline obfuscator, features and audio."""
    s = StreamingObfuscator(obfuscator, chunk_ms=chunk_ms, lookahead_ms=2500)
    out = s.process(wave, piece=int(0.037 * RATE))
    offline = spectrogram(wave, return_phase=True)
    offline.features = obfuscator.obfuscate_features(offline.features)
    np.testing.assert_allclose(out.features, offline.features.numpy(), atol=1e-5, rtol=0)
    assert out.mean == pytest.approx(offline.mean, abs=1e-6)
    assert out.std == pytest.approx(offline.std, abs=1e-6)
    audio = obfuscator.to_waveform(offline, with_phase=True)
    np.testing.assert_allclose(out.audio, audio, atol=1e-5, rtol=0)


def test_push_sizes_do_not_change_the_output(obfuscator, wave) -> None:
    s = StreamingObfuscator(obfuscator)
    a = s.process(wave, piece=int(0.100 * RATE))
    b = s.process(wave, piece=int(0.037 * RATE))
    rng = np.random.default_rng(0)
    s.reset()
    cuts = np.sort(rng.choice(len(wave), 40, replace=False))
    parts = [s.push(p) for p in np.split(wave, cuts)]
    c = s.flush()
    audio = np.concatenate([p.audio for p in parts] + [c.audio])
    features = np.concatenate([p.features for p in parts] + [c.features], axis=1)
    np.testing.assert_allclose(features, a.features, atol=1e-6, rtol=0)
    np.testing.assert_allclose(b.features, a.features, atol=1e-6, rtol=0)
    np.testing.assert_allclose(b.audio, a.audio, atol=1e-6, rtol=0)
    np.testing.assert_allclose(audio, a.audio, atol=1e-6, rtol=0)


def test_realistic_window_is_close_to_offline(obfuscator) -> None:
    """Running statistics on 4 s of audio against offline obfuscation of the whole utterance.

    Measured relative error ||stream - offline|| / ||offline|| of the features (untrained tiny
    network, seed 0): 0.29 with the default window (0.96 s), 0.18 with 2 s, 0.16 with 3 s;
    calibrated (fixed) front-end statistics change it by < 0.001: the error is InstanceNorm's.
    Bounds at about 1.2x the measurements.
    """
    x = voiced(4.0, f0=120.0, seed=5)
    offline = obfuscator.obfuscate_features(spectrogram(x).features).numpy()
    errors = [rel_error(StreamingObfuscator(obfuscator, window_ms=w).process(x).features,
                        offline) for w in (None, 2000, 3000)]
    assert errors[0] < 0.35 and errors[1] < 0.22 and errors[2] < 0.2
    assert errors[0] > errors[1] > errors[2] > 0.01  # InstanceNorm over a window is not global


def test_griffin_lim_phase(obfuscator, wave) -> None:
    """Per-chunk Griffin-Lim: aligned length, push-size independent, and the audio's STFT
    follows the obfuscated magnitude (spectral convergence measured 0.21; random phase with
    the same magnitude gives 0.9; the input's phase 0.43)."""
    s = StreamingObfuscator(obfuscator, phase="griffin-lim")
    out = s.process(wave, piece=1600)
    again = s.process(wave, piece=593)
    assert out.audio.shape == wave.shape
    np.testing.assert_allclose(again.audio, out.audio, atol=1e-5, rtol=0)
    mag = features_to_magnitude(torch.from_numpy(out.features),
                                torch.from_numpy(out.mean).float()[None],
                                torch.from_numpy(out.std).float()[None])
    from optin.audio.features import spectral_convergence

    assert spectral_convergence(mag, out.audio) < 0.3


# --- errors ---------------------------------------------------------------------------------


def test_bad_input_is_refused(obfuscator) -> None:
    s = StreamingObfuscator(obfuscator)
    with pytest.raises(StreamError, match="mono"):
        s.push(np.zeros((10, 2), np.float32))
    with pytest.raises(StreamError, match="float"):
        s.push(np.zeros(10, np.int16))
    with pytest.raises(StreamError, match="NaN"):
        s.push(np.array([0.0, np.nan], np.float32))
    s.push(np.zeros(100, np.float32))
    with pytest.raises(StreamError, match="100 samples"):
        s.flush()
    s.reset()
    s.push(voiced(0.1))
    s.flush()
    with pytest.raises(StreamError, match="flushed"):
        s.push(np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="lookahead_ms"):
        StreamingObfuscator(obfuscator, lookahead_ms=100)
    with pytest.raises(ValueError, match="both mean and std"):
        StreamingObfuscator(obfuscator, mean=1.0)


# --- CLI ------------------------------------------------------------------------------------


def test_pcm_round_trip() -> None:
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0], np.float32)
    data = float_to_pcm16(x)
    assert len(data) == 10 and data[2:4] == (16384).to_bytes(2, "little", signed=True)
    np.testing.assert_allclose(pcm16_to_float(data), np.clip(x, -1, 32767 / 32768), atol=1e-4)
    with pytest.raises(ValueError, match="odd number of bytes"):
        pcm16_to_float(b"abc")


def test_cli_streams_a_wav_file(model_dir, obfuscator, tmp_path, capsys) -> None:
    x = voiced(1.3, seed=4)
    sf.write(tmp_path / "in.wav", x, RATE, subtype="PCM_16")
    out = tmp_path / "out" / "obf.wav"
    assert main(["stream", "--model", str(model_dir), "--input", str(tmp_path / "in.wav"),
                 "--output", str(out), "--chunk-ms", "40", "--phase", "input"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""  # logs go to stderr
    assert "latency" in captured.err and "real-time factor" in captured.err
    audio, rate = sf.read(out, dtype="float32")
    assert rate == RATE and audio.shape == x.shape
    from optin.audio.io import load_audio

    expected = StreamingObfuscator(obfuscator, chunk_ms=40).process(load_audio(tmp_path / "in.wav"))
    np.testing.assert_allclose(audio, np.clip(expected.audio, -1, 1), atol=2 / 32768)


def test_cli_streams_stdin_pcm_to_stdout(model_dir, obfuscator, monkeypatch, capsysbinary
                                         ) -> None:
    x = voiced(1.0, seed=6) * 0.5
    data = float_to_pcm16(x)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert main(["stream", "--model", str(model_dir), "--input", "-", "--output", "-"]) == 0
    captured = capsysbinary.readouterr()
    assert len(captured.out) == len(data)
    assert b"latency" in captured.err
    # the model does not permit speaker identity: the default phase is per-chunk Griffin-Lim
    assert default_phase(obfuscator) == "griffin-lim"
    expected = StreamingObfuscator(obfuscator, phase="griffin-lim").process(pcm16_to_float(data))
    np.testing.assert_allclose(pcm16_to_float(captured.out), np.clip(expected.audio, -1, 1),
                               atol=2 / 32768)


def test_cli_resamples_raw_pcm_at_another_rate(model_dir, monkeypatch, capsysbinary) -> None:
    x = voiced(1.0, rate=8000, seed=7) * 0.5
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(float_to_pcm16(x))))
    assert main(["stream", "--model", str(model_dir), "--rate", "8000"]) == 0
    n_out = len(capsysbinary.readouterr().out) // 2
    assert abs(n_out - len(x)) <= 2


def test_cli_errors(model_dir, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # as if the extra were missing
    assert main(["stream", "--model", str(model_dir), "--input", "mic",
                 "--output", str(tmp_path / "o.wav")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "sounddevice" in err and "optin[live]" in err
    assert not (tmp_path / "o.wav").exists()
    assert main(["stream", "--model", str(tmp_path / "nope"), "--input",
                 str(tmp_path / "x.wav")]) == 2
    assert "nope" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\x01\x02\x03")))
    assert main(["stream", "--model", str(model_dir), "--output", str(tmp_path / "o.wav")]) == 2
    assert "odd number of bytes" in capsys.readouterr().err
    assert not (tmp_path / "o.wav").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary left


def test_nan_output_is_refused_before_the_sink(obfuscator) -> None:
    net = Generator(GeneratorConfig(**TINY))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(float("nan"))
    streamer = StreamingObfuscator(Obfuscator(net, FeatureConfig()))
    written: list[np.ndarray] = []
    with pytest.raises(AudioError, match=r"^o\.wav: refusing to write audio with \d+ NaN"):
        run_stream(streamer, [voiced(0.5)], written.append, name="o.wav")
    assert written == []


def test_cli_refuses_a_nan_model_and_output_over_input(tmp_path, capsys) -> None:
    sf.write(tmp_path / "in.wav", voiced(0.3), RATE, subtype="PCM_16")
    before = (tmp_path / "in.wav").read_bytes()
    broken = save_tiny_obfuscator(tmp_path / "nan", fill=float("nan"))
    assert main(["stream", "--model", str(broken), "--input", str(tmp_path / "in.wav"),
                 "--output", str(tmp_path / "o.wav")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {broken / 'model.safetensors'}: tensor '")
    assert err.count("\n") == 1 and "NaN" in err
    good = save_tiny_obfuscator(tmp_path / "good")
    (tmp_path / "link.wav").symlink_to(tmp_path / "in.wav")
    assert main(["stream", "--model", str(good), "--input", str(tmp_path / "in.wav"),
                 "--output", str(tmp_path / "link.wav")]) == 2
    assert capsys.readouterr().err == (
        f"error: the output {tmp_path / 'link.wav'} would overwrite the input "
        f"{tmp_path / 'in.wav'}; choose another --output\n")
    assert (tmp_path / "in.wav").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good", "in.wav", "link.wav", "nan"]

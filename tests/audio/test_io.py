"""Decoding, down-mixing, resampling, normalisation and the errors bad files get."""

from __future__ import annotations

import re

import av
import numpy as np
import pytest
import soundfile as sf
from tests.conftest import voiced

from optin.audio import AudioError, SilentAudioError, audio_info, load_audio, prepare_wave
from optin.audio.io import check_output_wave, normalize_volume, write_audio
from optin.files import OutputError


def rms_dbfs(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2))))


@pytest.mark.parametrize("fmt,suffix", [("WAV", ".wav"), ("FLAC", ".flac"), ("OGG", ".ogg"),
                                        ("MP3", ".mp3")])
def test_soundfile_formats_decode_to_16k_mono_float32(tmp_path, fmt, suffix):
    x = voiced(1.0, rate=16000)
    path = tmp_path / f"a{suffix}"
    sf.write(path, x, 16000, format=fmt)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 16000) < 1200  # MP3 adds encoder delay/padding
    assert np.max(np.abs(y)) <= 1.0


def write_m4a(path, x: np.ndarray, rate: int, channels: int = 1) -> None:
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "mono" if channels == 1 else "stereo"
        data = np.tile(x[None, :], (channels, 1)).astype(np.float32)  # planar (C, N)
        for start in range(0, data.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, start:start + 1024]),
                                               format="fltp", layout=stream.layout.name)
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def test_m4a_aac_decodes_with_pyav(tmp_path):
    x = voiced(1.0, rate=48000)
    path = tmp_path / "a.m4a"
    write_m4a(path, x, 48000, channels=2)
    info = audio_info(path)
    assert info.sample_rate == 48000 and info.channels == 2
    assert abs(info.duration - 1.0) < 0.1
    y = load_audio(path)
    assert y.dtype == np.float32 and abs(len(y) - 16000) < 1000


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_other_rates_are_resampled(tmp_path, rate):
    x = voiced(1.0, rate=rate)
    path = tmp_path / "a.wav"
    sf.write(path, x, rate)
    y = load_audio(path)
    assert len(y) == 16000
    # a 140 Hz fundamental stays at 140 Hz after resampling
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert abs(np.argmax(spec[:400]) - 140) <= 2


def test_stereo_is_downmixed_by_averaging(tmp_path):
    left = voiced(1.0)
    path = tmp_path / "st.wav"
    sf.write(path, np.stack([left, -left], axis=1), 16000, subtype="FLOAT")
    with pytest.raises(SilentAudioError):  # opposite channels cancel to silence
        load_audio(path)
    sf.write(path, np.stack([left, np.zeros_like(left)], axis=1), 16000, subtype="FLOAT")
    y = load_audio(path, normalize="none")
    np.testing.assert_allclose(y, left / 2, atol=1e-6)


def test_rms_normalisation_reaches_target_and_never_clips():
    x = voiced(1.0) * 0.01
    y = normalize_volume(x, method="rms", target_dbfs=-25.0)
    # the active-frame RMS is at the target; overall RMS is within a few dB of it
    assert abs(rms_dbfs(y) - (-25.0)) < 3.0
    loud = normalize_volume(voiced(1.0), method="rms", target_dbfs=0.0)
    assert np.max(np.abs(loud)) <= 0.999 + 1e-6
    peak = normalize_volume(x, method="peak")
    assert np.isclose(np.max(np.abs(peak)), 0.95, atol=1e-6)
    assert np.array_equal(normalize_volume(x, method="none"), x)


def test_gain_does_not_change_the_normalised_wave():
    x = voiced(1.0)
    a = prepare_wave(x, 16000)
    b = prepare_wave(x * 0.05, 16000)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_missing_file_error_names_it(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.wav: file does not exist"):
        load_audio(tmp_path / "nope.wav")


def test_zero_length_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.wav: file is empty"):
        load_audio(path)


def test_header_only_wav_has_no_samples(tmp_path):
    path = tmp_path / "nosamples.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match=r"nosamples\.wav: holds no samples"):
        load_audio(path)


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 10)
    with pytest.raises(AudioError, match=r"corrupt\.wav: not a readable audio file"):
        load_audio(path)
    m4a = tmp_path / "corrupt.m4a"
    m4a.write_bytes(b"\x00\x01garbage" * 50)
    with pytest.raises(AudioError, match=r"corrupt\.m4a: could not be"):
        load_audio(m4a)


def test_silence(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(16000, dtype=np.float32), 16000)
    with pytest.raises(SilentAudioError, match=r"silence\.wav: is silent"):
        load_audio(path)
    assert np.all(load_audio(path, allow_silence=True) == 0)


def test_nan_samples(tmp_path):
    x = voiced(0.5)
    x[100:110] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: 10 sample\(s\) are NaN"):
        load_audio(path)


def test_write_audio_refuses_garbage_and_writes_nothing(tmp_path):
    good = voiced(0.2)
    peak_one = good / np.max(np.abs(good))  # the McAdams output scaling: peak exactly 1
    for wave in (good, peak_one, np.zeros(100, np.float32)):
        check_output_wave(wave, "x.wav")
    bad = good.copy()
    bad[5] = np.nan
    cases = [(bad, "audio with 1 NaN or infinite sample"),
             (np.full(1600, np.inf, np.float32), "audio with 1600 NaN or infinite sample"),
             (np.full(1600, -1.0, np.float32), "clipped audio (1600 of 1600 samples"),
             (np.clip(good * 100, -1, 1), "clipped audio")]
    for wave, message in cases:
        with pytest.raises(AudioError, match=re.escape(f"x.wav: refusing to write {message}")):
            write_audio(tmp_path / "x.wav", wave)
    assert list(tmp_path.iterdir()) == []
    write_audio(tmp_path / "x.wav", good)
    assert sf.info(tmp_path / "x.wav").frames == len(good)


def test_write_audio_names_the_file_when_the_os_refuses(tmp_path):
    """libsndfile says "System error."; the error names the file and the real cause."""
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "x.wav").mkdir()  # a folder where the file should go
    with pytest.raises(OutputError, match=r"cannot write .*ro/x\.wav: Is a directory"):
        write_audio(tmp_path / "ro" / "x.wav", voiced(0.1))
    assert sorted(p.name for p in (tmp_path / "ro").iterdir()) == ["x.wav"]

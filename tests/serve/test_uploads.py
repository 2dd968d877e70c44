"""Uploads: size and duration limits, content checked by decoding, temporary files removed;
decoding capped by what the stream holds, whatever its header says."""

from __future__ import annotations

import asyncio
import io
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from tests.conftest import voiced
from tests.serve.crafted_audio import (
    declared_samples,
    flac_declaring_no_samples,
    flac_switching_to_eight_channels,
    wav,
    wav_declaring_rate,
)

from optin.audio.capped_decode import AudioTooLongError, TooManyChannelsError, decode_capped
from optin.serve.uploads import (
    UploadError,
    UploadLimits,
    UploadTooLargeError,
    decode_upload,
    receive_upload,
)
from optin.testing.dummies import write_m4a


def wav_bytes(seconds: float, rate: int = 16000, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, voiced(seconds, rate), rate, format=fmt)
    return buffer.getvalue()


async def _chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def receive(data: bytes, limits: UploadLimits, folder: Path) -> Path:
    return asyncio.run(receive_upload(_chunks(data), limits, folder))


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "MP3"])
def test_decodes_by_content_into_a_server_named_file_then_deletes_it(tmp_path, fmt):
    path = receive(wav_bytes(1.0, 22050, fmt), UploadLimits(), tmp_path)
    assert path.parent == tmp_path and path.name.startswith("optin-upload-")
    assert not path.suffix  # nothing of a client's name, not even a suffix
    wave = decode_upload(path, UploadLimits(), 16000)
    assert wave.dtype == np.float32 and abs(len(wave) - 16000) < 1200
    assert list(tmp_path.iterdir()) == []


def test_decodes_m4a(tmp_path):
    m4a = write_m4a(tmp_path / "in" / "a.m4a", voiced(1.0), 16000).read_bytes()
    out = tmp_path / "tmp"
    out.mkdir()
    wave = decode_upload(receive(m4a, UploadLimits(), out), UploadLimits(), 16000)
    assert abs(len(wave) - 16000) < 2100
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("data, message", [
    (b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 20, "not audio that can be decoded"),
    (b"<html><script>alert(1)</script></html>", "not audio that can be decoded"),
    (b"\x00" * 4000, "not audio that can be decoded"),
])
def test_refuses_what_does_not_decode_and_deletes_it(tmp_path, data, message):
    path = receive(data, UploadLimits(), tmp_path)
    with pytest.raises(UploadError, match=message) as err:
        decode_upload(path, UploadLimits(), 16000)
    assert str(tmp_path) not in str(err.value)  # no server path in the sentence
    assert list(tmp_path.iterdir()) == []


def test_refuses_silence(tmp_path):
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(16000, np.float32), 16000, format="WAV")
    with pytest.raises(UploadError, match="silent"):
        decode_upload(receive(buffer.getvalue(), UploadLimits(), tmp_path), UploadLimits(),
                      16000)
    assert list(tmp_path.iterdir()) == []


def test_refuses_too_large_while_receiving_and_keeps_nothing(tmp_path):
    with pytest.raises(UploadTooLargeError, match="larger than"):
        receive(b"\x01" * 5000, UploadLimits(max_bytes=4096), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_refuses_empty(tmp_path):
    with pytest.raises(UploadError, match="empty"):
        receive(b"", UploadLimits(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_refuses_too_long_audio(tmp_path):
    path = receive(wav_bytes(2.0), UploadLimits(), tmp_path)
    with pytest.raises(UploadTooLargeError, match=r"lasts 2.0 s; the limit is 1.5 s"):
        decode_upload(path, UploadLimits(max_seconds=1.5), 16000)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ caps from the stream itself
def test_a_flac_declaring_no_samples_is_refused_once_decoding_passes_the_cap(tmp_path):
    """An hour of 48 kHz stereo (1.4 GB as float32) in a 660 KB FLAC whose header says it
    holds 0 samples: decoding stops past 30 s and holds about 30 s of mono samples."""
    data = flac_declaring_no_samples(3600)
    assert declared_samples(data) == 0 and len(data) < UploadLimits().max_bytes
    path = receive(data, UploadLimits(), tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(UploadTooLargeError, match=r"^The audio lasts more than the 30 s "
                                                       r"limit\.$"):
            decode_upload(path, UploadLimits(), 16000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 48000 * 30 * 3  # 30 s of mono float32, grown once, and one frame
    assert list(tmp_path.iterdir()) == []


def test_decoding_stops_at_the_cap_at_the_files_own_rate(tmp_path):
    path = tmp_path / "lies"
    path.write_bytes(flac_declaring_no_samples(60, rate=8000, channels=1))
    with pytest.raises(AudioTooLongError, match=r"lies: lasts more than 2 s \(decoding stopped "
                                                r"at 16000 samples at 8000 Hz\)") as err:
        decode_capped(path, max_seconds=2.0)
    assert err.value.seconds is None and err.value.limit == 2.0
    wave, rate = decode_capped(path, max_seconds=60.0)
    assert rate == 8000 and wave.shape == (60 * 8000,)  # exactly the cap still decodes


@pytest.mark.parametrize("data", [wav(1.0, channels=8), flac_switching_to_eight_channels()],
                         ids=["8-channel WAV", "FLAC whose header says 1 channel"])
def test_more_than_two_channels_are_refused(tmp_path, data):
    path = receive(data, UploadLimits(), tmp_path)
    with pytest.raises(UploadError, match=r"^The audio has 8 channels; at most 2 are "
                                          r"accepted\.$"):
        decode_upload(path, UploadLimits(), 16000)
    assert list(tmp_path.iterdir()) == []


def test_the_mono_start_of_a_file_that_switches_channels_is_not_enough(tmp_path):
    """The 8-channel frames come after 2 s of mono: found while decoding, not in the header."""
    path = tmp_path / "switch"
    path.write_bytes(flac_switching_to_eight_channels(seconds=2))
    import av

    with av.open(str(path)) as container:
        assert container.streams.audio[0].codec_context.channels == 1
    with pytest.raises(TooManyChannelsError, match="switch: has 8 channels"):
        decode_capped(path, max_seconds=30.0)


@pytest.mark.parametrize("rate", [1, 1_000_000])
def test_a_header_rate_outside_the_accepted_range_is_refused(tmp_path, rate):
    path = receive(wav_declaring_rate(rate), UploadLimits(), tmp_path)
    with pytest.raises(UploadError, match=rf"^The file's sample rate {rate} Hz is outside the "
                                          r"accepted range 4000-384000 Hz\.$"):
        decode_upload(path, UploadLimits(), 16000)
    assert list(tmp_path.iterdir()) == []


def test_a_codec_with_huge_frames_is_refused_unread(tmp_path):
    """ALAC may declare 16 M samples a frame, which FFmpeg allocates before any is read."""
    import av

    path = tmp_path / "alac"
    with av.open(str(path), "w", format="ipod") as out:
        stream = out.add_stream("alac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray((voiced(1.0) * 32767).astype(np.int16)[None],
                                           format="s16p", layout="mono")
        frame.sample_rate = 16000
        for packet in (*stream.encode(frame), *stream.encode(None)):
            out.mux(packet)
    with pytest.raises(UploadError, match=r"^The file's audio codec 'alac' is not accepted "
                                          r"\(PCM, FLAC, MP3, AAC, Vorbis or Opus\)\.$"):
        decode_upload(path, UploadLimits(), 16000)


@pytest.mark.parametrize("subtype, channels", [("PCM_16", 2), ("PCM_24", 1), ("PCM_U8", 1),
                                               ("FLOAT", 2), ("PCM_32", 1)])
def test_capped_decoding_gives_what_soundfile_gives(tmp_path, subtype, channels):
    path = tmp_path / "tone"
    path.write_bytes(wav(0.5, 22050, channels, subtype))
    wave, rate = decode_capped(path, max_seconds=1.0)
    expected = sf.read(io.BytesIO(path.read_bytes()), dtype="float32")[0]
    expected = expected.mean(axis=1) if expected.ndim == 2 else expected
    assert rate == 22050 and wave.dtype == np.float32
    assert np.allclose(wave, expected, atol=1e-4)

"""Uploads: size and duration limits, content checked by decoding, temporary files removed."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from tests.conftest import voiced

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

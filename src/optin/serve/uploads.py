"""Uploaded audio, taken in safely: size and duration limits, decoded to prove what it is.

The bytes go to a temporary file whose name the server makes (``tempfile``; nothing of the
client's file name is used), are decoded there by :func:`optin.audio.capped_decode.decode_capped`
(FFmpeg's demuxers through PyAV read WAV, FLAC, MP3, M4A, OGG... by their content: a file that
does not decode is refused, whatever it is called), and the file is deleted before the
function returns, whether decoding worked or not.

Decoding is capped by what the stream holds, not by what its header says: it stops once the
audio passes ``max_seconds`` at the file's own rate (30 s: 1,323,000 samples at 44.1 kHz,
11,520,000 at the highest accepted rate, 384 kHz) or a frame has more than ``max_channels``
(2), so one upload within ``max_bytes`` never holds more than ~46 MB of decoded samples.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optin.audio.capped_decode import (
    AudioTooLongError,
    CodecRefusedError,
    TooManyChannelsError,
    decode_capped,
)
from optin.audio.io import AudioError, SilentAudioError, prepare_wave
from optin.errors import OptinError


class UploadError(OptinError, ValueError):
    """An upload that is refused; the message is one sentence for the page."""


class UploadTooLargeError(UploadError):
    """An upload over the size or duration limit."""


@dataclass(frozen=True)
class UploadLimits:
    """The largest upload accepted: ``max_bytes`` of file, ``max_seconds`` of audio (at the
    file's own rate, counted while decoding) and ``max_channels``."""

    max_bytes: int = 20 * 1024 * 1024
    max_seconds: float = 30.0
    max_channels: int = 2


async def receive_upload(chunks: AsyncIterator[bytes], limits: UploadLimits,
                         folder: str | os.PathLike | None = None) -> Path:
    """Write a request body to a new temporary file (in ``folder``, default the system's);
    returns its path. The caller deletes it (:func:`decode_upload` does).

    Raises:
        UploadError: the body is empty or larger than ``limits.max_bytes`` (the partial file
            is deleted).
    """
    fd, name = tempfile.mkstemp(prefix="optin-upload-", dir=folder)
    path = Path(name)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > limits.max_bytes:
                    raise UploadTooLargeError(f"The file is larger than the "
                                      f"{limits.max_bytes // (1024 * 1024)} MB limit.")
                out.write(chunk)
        if size == 0:
            raise UploadError("The upload is empty: choose an audio file.")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def decode_upload(path: Path, limits: UploadLimits, sample_rate: int,
                  normalize: str = "rms", target_dbfs: float = -25.0) -> np.ndarray:
    """Decode an uploaded file (capped: see the module's docstring) to (N,) float32 mono at
    ``sample_rate``, volume-normalised as ``load_audio`` does, then delete it.

    Raises:
        UploadError: the content is not decodable audio, is silent, has too many channels,
            a refused codec or sample rate, or is longer than ``limits.max_seconds``.
    """
    try:
        wave, rate = decode_capped(path, limits.max_seconds, limits.max_channels)
        wave = prepare_wave(wave, rate, sample_rate, normalize=normalize,  # type: ignore[arg-type]
                            target_dbfs=target_dbfs, name=str(path))
    except AudioTooLongError as err:
        raise UploadTooLargeError(_too_long(err.seconds, limits)) from err
    except AudioError as err:
        raise UploadError(_audio_problem(err, path)) from err
    finally:
        path.unlink(missing_ok=True)
    seconds = len(wave) / sample_rate
    if seconds > limits.max_seconds:
        raise UploadTooLargeError(_too_long(seconds, limits))
    if seconds < 0.1:
        raise UploadError(f"The audio lasts {seconds:.2f} s; at least 0.1 s is needed.")
    return wave


def _too_long(seconds: float | None, limits: UploadLimits) -> str:
    if seconds is None:  # decoding stopped at the cap
        return f"The audio lasts more than the {limits.max_seconds:g} s limit."
    return f"The audio lasts {seconds:.1f} s; the limit is {limits.max_seconds:g} s."


def _audio_problem(err: AudioError, path: Path) -> str:
    """One sentence for the page, without the server's temporary path."""
    detail = str(err).removeprefix(f"{path}: ")
    if isinstance(err, SilentAudioError):
        return "The audio is silent."
    if "no samples" in detail:
        return "The file holds no audio samples."
    if isinstance(err, TooManyChannelsError):
        return f"The audio {detail}."
    if isinstance(err, CodecRefusedError):
        return f"The file's audio {detail}."
    if "sample rate" in detail:
        return f"The file's {detail}."
    return "The file is not audio that can be decoded (WAV, FLAC, MP3, M4A or OGG)."

"""Uploaded audio, taken in safely: size and duration limits, decoded to prove what it is.

The bytes go to a temporary file whose name the server makes (``tempfile``; nothing of the
client's file name is used), are decoded there by :func:`optin.audio.io.load_audio` (FFmpeg's
demuxers through PyAV read WAV, FLAC, MP3, M4A, OGG... by their content: a file that does not
decode is refused, whatever it is called), and the file is deleted before the function
returns, whether decoding worked or not.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optin.audio.io import AudioError, SilentAudioError, audio_info, load_audio
from optin.errors import OptinError


class UploadError(OptinError, ValueError):
    """An upload that is refused; the message is one sentence for the page."""


class UploadTooLargeError(UploadError):
    """An upload over the size or duration limit."""


@dataclass(frozen=True)
class UploadLimits:
    """The largest upload accepted: ``max_bytes`` of file, ``max_seconds`` of audio."""

    max_bytes: int = 20 * 1024 * 1024
    max_seconds: float = 30.0


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
    """Decode an uploaded file to (N,) float32 mono at ``sample_rate``, volume-normalised as
    ``load_audio`` does, then delete it.

    Raises:
        UploadError: the content is not decodable audio, is silent, or is longer than
            ``limits.max_seconds``.
    """
    try:
        declared = audio_info(path).duration  # from the header: refuse long files undecoded
        if declared > limits.max_seconds:
            raise UploadTooLargeError(_too_long(declared, limits))
        wave = load_audio(path, sample_rate, normalize=normalize,  # type: ignore[arg-type]
                          target_dbfs=target_dbfs)
    except AudioError as err:
        raise UploadError(_audio_problem(err)) from err
    finally:
        path.unlink(missing_ok=True)
    seconds = len(wave) / sample_rate
    if seconds > limits.max_seconds:
        raise UploadTooLargeError(_too_long(seconds, limits))
    if seconds < 0.1:
        raise UploadError(f"The audio lasts {seconds:.2f} s; at least 0.1 s is needed.")
    return wave


def _too_long(seconds: float, limits: UploadLimits) -> str:
    return f"The audio lasts {seconds:.1f} s; the limit is {limits.max_seconds:g} s."


def _audio_problem(err: AudioError) -> str:
    """One sentence for the page, without the server's temporary path."""
    if isinstance(err, SilentAudioError):
        return "The audio is silent."
    if "no samples" in str(err):
        return "The file holds no audio samples."
    return "The file is not audio that can be decoded (WAV, FLAC, MP3, M4A or OGG)."

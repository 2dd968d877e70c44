"""Decoding an untrusted file with hard caps on its length and channels, from the stream itself.

A header can lie: a FLAC whose STREAMINFO declares 0 samples may hold an hour of audio, and
one that declares 1 channel may switch to 8 after its first frames. :func:`decode_capped`
therefore counts what the decoder actually gives, frame by frame (PyAV: FFmpeg decodes one
codec frame at a time, at most 65535 samples per channel for the accepted codecs), and stops
as soon as the audio passes ``max_seconds`` at the stream's own rate or a frame has more than
``max_channels``. Each frame is down-mixed to mono (the channel average, as
:func:`optin.audio.io.prepare_wave` does) into one buffer that grows to at most the cap, so
memory stays below ``4 * max_seconds * MAX_SAMPLE_RATE`` bytes plus one frame, whatever the
file claims. The header is only used to refuse early, never to accept.

Only codecs whose frames are small are decoded (:data:`ACCEPTED_CODECS`: PCM, FLAC, MP3, AAC,
Vorbis, Opus); others (ALAC's frames, for one, may declare 16 M samples) are refused unread.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from optin.audio.io import AudioError, check_sample_rate

ACCEPTED_CODECS = ("flac", "mp3", "mp3float", "aac", "vorbis", "opus")  # and every pcm_*


class AudioTooLongError(AudioError):
    """Audio longer than the cap; ``seconds`` is its length when known (from the header),
    None when decoding stopped at the cap."""

    def __init__(self, message: str, limit: float, seconds: float | None = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.seconds = seconds


class TooManyChannelsError(AudioError):
    """A stream (or one of its frames) with more channels than allowed."""


class CodecRefusedError(AudioError):
    """A codec outside :data:`ACCEPTED_CODECS`; ``codec`` names it."""

    def __init__(self, message: str, codec: str) -> None:
        super().__init__(message)
        self.codec = codec


class _MonoBuffer:
    """float32 samples appended block by block; grows by doubling, never past ``cap``."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = np.empty(min(cap, 1 << 16), np.float32)
        self.size = 0

    def append(self, block: np.ndarray) -> None:
        end = self.size + len(block)
        if end > len(self.data):
            grown = np.empty(min(self.cap, max(end, 2 * len(self.data))), np.float32)
            grown[:self.size] = self.data[:self.size]
            self.data = grown
        self.data[self.size:end] = block
        self.size = end

    def samples(self) -> np.ndarray:
        return self.data[:self.size]


def decode_capped(path: str | os.PathLike, max_seconds: float,
                  max_channels: int = 2) -> tuple[np.ndarray, int]:
    """Decode ``path`` by its content to (N,) float32 mono at its native rate, refusing it
    as soon as the decoded audio passes ``max_seconds`` (``ceil(max_seconds * rate)``
    samples at the stream's rate) or holds more than ``max_channels`` channels.

    Raises:
        AudioTooLongError: longer than ``max_seconds`` (said by the header, or found while
            decoding: then at most the cap and one frame were decoded).
        TooManyChannelsError: the header or any frame has more than ``max_channels``.
        CodecRefusedError: a codec outside :data:`ACCEPTED_CODECS`.
        AudioError: not decodable audio, no samples, a sample rate outside the accepted
            range or one that changes mid-stream; each message names the file.
    """
    import av  # lazily: FFmpeg's libraries load only when a file is decoded

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            streams = [s for s in container.streams if s.type == "audio"]
            if not streams:
                raise AudioError(f"{path}: holds no audio stream")
            _check_header(streams[0], path, max_seconds, max_channels)
            wave, rate = _decode_frames(container.decode(streams[0]), path, max_seconds,
                                        max_channels)
    except AudioError:
        raise
    except Exception as err:  # PyAV raises many error types (InvalidDataError, ValueError...)
        raise AudioError(f"{path}: could not be decoded ({type(err).__name__}: {err})") from err
    if not len(wave):
        raise AudioError(f"{path}: holds no samples (zero-length audio)")
    return wave, rate


def _check_header(stream: Any, path: Path, max_seconds: float, max_channels: int) -> None:
    """Refuse early what the header already shows: codec, channels, rate, declared length."""
    codec = str(stream.codec_context.name)
    if not (codec.startswith("pcm_") or codec in ACCEPTED_CODECS):
        raise CodecRefusedError(f"{path}: codec '{codec}' is not accepted (PCM, FLAC, MP3, "
                                "AAC, Vorbis or Opus)", codec)
    _check_channels(int(stream.codec_context.channels or 0), path, max_channels)
    rate = int(stream.codec_context.sample_rate or 0)
    if rate:
        check_sample_rate(rate, path)
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
        if seconds > max_seconds:
            raise AudioTooLongError(f"{path}: lasts {seconds:.1f} s; the limit is "
                                    f"{max_seconds:g} s", max_seconds, seconds)


def _check_channels(channels: int, path: Path, max_channels: int) -> None:
    if channels > max_channels:
        raise TooManyChannelsError(f"{path}: has {channels} channels; at most {max_channels} "
                                   "are accepted")


def _decode_frames(frames: Any, path: Path, max_seconds: float, max_channels: int
                   ) -> tuple[np.ndarray, int]:
    """Down-mix frame after frame into one capped buffer; the first frame fixes the rate."""
    buffer: _MonoBuffer | None = None
    rate = 0
    for frame in frames:
        channels = len(frame.layout.channels)
        _check_channels(channels, path, max_channels)
        if buffer is None:
            rate = check_sample_rate(int(frame.sample_rate or 0), path)
            buffer = _MonoBuffer(math.ceil(max_seconds * rate))
        elif frame.sample_rate != rate:
            raise AudioError(f"{path}: sample rate changes mid-stream ({rate} Hz, then "
                             f"{frame.sample_rate} Hz)")
        if buffer.size + frame.samples > buffer.cap:
            raise AudioTooLongError(f"{path}: lasts more than {max_seconds:g} s (decoding "
                                    f"stopped at {buffer.cap} samples at {rate} Hz)",
                                    max_seconds)
        buffer.append(_mono(frame, channels))
    return (buffer.samples() if buffer is not None else np.zeros(0, np.float32)), rate


def _mono(frame: Any, channels: int) -> np.ndarray:
    """One decoded frame as (n,) float32 in [-1, 1], its channels averaged."""
    arr = frame.to_ndarray()
    # planar (C, n) -> (n, C); packed (1, n*C) interleaved -> (n, C)
    arr = arr.T if frame.format.is_planar else arr.reshape(-1, channels)
    if arr.dtype == np.uint8:
        arr = (arr.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / float(-np.iinfo(arr.dtype).min)
    return arr.mean(axis=1, dtype=np.float32) if channels > 1 else arr[:, 0].astype(np.float32)

"""Decoding audio files to float32 mono at a fixed rate, with volume normalisation.

WAV, FLAC, OGG and MP3 are decoded by soundfile (libsndfile); M4A, AAC, MP4 and anything
libsndfile cannot read by PyAV (FFmpeg's libraries inside the wheel, no system ffmpeg).
Resampling uses soxr (VHQ). Multi-channel audio is down-mixed by averaging the channels.

Sample rates are accepted in one range, 4 kHz to 384 kHz (:data:`MIN_SAMPLE_RATE`,
:data:`MAX_SAMPLE_RATE`), checked as soon as a rate is known: in a file's header before it is
decoded, and for in-memory signals before they are resampled. Resampling is refused when its
output would exceed :data:`MAX_RESAMPLED_SAMPLES` (512 MiB as float32).

Volume normalisation (the paper normalises volume before the spectrum) is RMS normalisation
over the active part of the signal: frames of 20 ms whose energy is within 40 dB of the
loudest frame are "active"; the whole signal is scaled so their RMS is ``target_dbfs``
(-25 dBFS by default), then scaled down if needed so the peak does not exceed 0.999.
``normalize="peak"`` scales the peak to 0.95 instead; ``normalize="none"`` keeps the levels.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import soxr

from optin.errors import ConfigError, OptinError
from optin.files import atomic_output
from optin.settings import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE

SAMPLE_RATE = 16000
SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au"}
# What each suffix is written as (libsndfile format, subtype): the suffixes optin also reads.
OUTPUT_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"),
                  ".ogg": ("OGG", "VORBIS"), ".oga": ("OGG", "VORBIS"),
                  ".mp3": ("MP3", "MPEG_LAYER_III"), ".aiff": ("AIFF", "PCM_16"),
                  ".aif": ("AIFF", "PCM_16"), ".au": ("AU", "PCM_16")}
SILENCE_DBFS = -90.0
MAX_CLIPPED_SHARE = 0.1  # written audio with more samples at full scale is refused
_SFE_SYSTEM = 2  # libsndfile's "System error." (an OS call failed)
# Resampling refuses to make more samples than this: 512 MiB as float32, 2 h 20 min at 16 kHz
# (a one-line error instead of a multi-gigabyte allocation for a file whose header lies).
MAX_RESAMPLED_SAMPLES = 2**27

Normalization = Literal["rms", "peak", "none"]


class AudioError(OptinError, ValueError):
    """An audio file that cannot be used; the message names the file and the problem."""


class SilentAudioError(AudioError):
    """The audio holds no signal (peak below -90 dBFS)."""


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds before decoding: native rate, channels and duration in seconds."""

    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def check_sample_rate(rate: int | float, name: str | os.PathLike = "audio") -> int:
    """``rate`` as an int if it lies in [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE] Hz.

    Raises:
        AudioError: naming ``name`` and the accepted range.
    """
    if (not isinstance(rate, (int, float, np.integer)) or isinstance(rate, bool)
            or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE or int(rate) != rate):
        raise AudioError(f"{name}: sample rate {rate} Hz is outside the accepted range "
                         f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    return int(rate)


def check_resample_budget(n: int, rate: int, sample_rate: int,
                          name: str | os.PathLike = "audio") -> int:
    """The number of samples resampling ``n`` samples from ``rate`` to ``sample_rate`` makes
    (``n * sample_rate / rate``), if it is within :data:`MAX_RESAMPLED_SAMPLES`.

    Raises:
        AudioError: naming ``name``, the count and the budget.
    """
    n_out = -(-int(n) * int(sample_rate) // int(rate))
    if n_out > MAX_RESAMPLED_SAMPLES:
        raise AudioError(
            f"{name}: resampling {n} samples from {rate} Hz to {sample_rate} Hz would make "
            f"{n_out} samples ({4 * n_out / 2**30:.1f} GiB), over the budget of "
            f"{MAX_RESAMPLED_SAMPLES} ({4 * MAX_RESAMPLED_SAMPLES / 2**20:.0f} MiB); split the "
            "audio into shorter files")
    return n_out


def resample(wave: np.ndarray, rate: int, sample_rate: int,
             name: str | os.PathLike = "audio") -> np.ndarray:
    """(N,) float32 from ``rate`` to ``sample_rate`` Hz (soxr, VHQ), both rates in the accepted
    range and the output within :data:`MAX_RESAMPLED_SAMPLES` (checked before any work).

    Raises:
        AudioError: a rate out of range or an output over the budget, naming ``name``.
    """
    rate = check_sample_rate(rate, name)
    sample_rate = check_sample_rate(sample_rate, f"{name} (resampled)")
    if rate == sample_rate:
        return wave
    check_resample_budget(len(wave), rate, sample_rate, name)
    out = soxr.resample(np.ascontiguousarray(wave, np.float32), rate, sample_rate,
                        quality="VHQ")
    return out.astype(np.float32, copy=False)


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Rate, channels and length of an audio file without decoding it all.

    Raises:
        AudioError: the file is missing, empty or not a readable audio file.
    """
    path = Path(path)
    _check_exists(path)
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        try:
            info = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError) as err:
            if path.suffix.lower() in {".wav", ".flac", ".ogg", ".oga"}:
                raise AudioError(f"{path}: not a readable audio file ({err})") from err
        else:
            rate = check_sample_rate(info.samplerate, path)
            return AudioInfo(rate, int(info.channels), int(info.frames))
    return _probe_av(path)


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = SAMPLE_RATE,
    normalize: Normalization = "rms",
    target_dbfs: float = -25.0,
    allow_silence: bool = False,
) -> np.ndarray:
    """Decode an audio file to float32 mono at ``sample_rate``, volume normalised.

    Returns:
        wave: (N,) float32 in [-1, 1].

    Raises:
        AudioError: missing, zero-length, corrupt or undecodable file, or NaN/inf samples.
        SilentAudioError: all-silent audio (unless ``allow_silence``).
    """
    path = Path(path)
    wave, rate = decode(path)
    return prepare_wave(
        wave, rate, sample_rate=sample_rate, normalize=normalize, target_dbfs=target_dbfs,
        allow_silence=allow_silence, name=str(path),
    )


def prepare_wave(
    wave: np.ndarray,
    rate: int,
    sample_rate: int = SAMPLE_RATE,
    normalize: Normalization = "rms",
    target_dbfs: float = -25.0,
    allow_silence: bool = False,
    name: str = "audio",
) -> np.ndarray:
    """Down-mix, resample and normalise an in-memory signal, as ``load_audio`` does for files.

    Args:
        wave: (N,) mono or (N, C) multi-channel samples, float or int.
        rate: its sample rate in Hz.
        name: how error messages call it.

    Returns:
        (N',) float32 at ``sample_rate``.
    """
    wave = np.asarray(wave)
    if np.issubdtype(wave.dtype, np.integer):
        wave = wave.astype(np.float32) / float(np.iinfo(wave.dtype).max)
    wave = wave.astype(np.float32, copy=False)
    if wave.ndim == 2:
        wave = wave.mean(axis=1)  # down-mix (N, C) -> (N,)
    if wave.ndim != 1:
        raise AudioError(f"{name}: expected (samples,) or (samples, channels), got {wave.shape}")
    if wave.size == 0:
        raise AudioError(f"{name}: holds no samples (zero-length audio)")
    if not np.isfinite(wave).all():
        bad = int((~np.isfinite(wave)).sum())
        raise AudioError(f"{name}: {bad} sample(s) are NaN or infinite")
    wave = resample(wave, rate, sample_rate, name)
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak <= 10 ** (SILENCE_DBFS / 20):
        if not allow_silence:
            raise SilentAudioError(f"{name}: is silent (peak below {SILENCE_DBFS:.0f} dBFS)")
        return wave
    return normalize_volume(wave, sample_rate, normalize, target_dbfs)


def normalize_volume(
    wave: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    method: Normalization = "rms",
    target_dbfs: float = -25.0,
) -> np.ndarray:
    """Scale ``wave`` (N,) to a fixed loudness; see the module docstring for the rule."""
    if method == "none":
        return wave
    peak = float(np.max(np.abs(wave)))
    if peak == 0.0:
        return wave
    if method == "peak":
        return (wave * (0.95 / peak)).astype(np.float32)
    if method != "rms":
        raise ConfigError(f"unknown normalisation '{method}' (rms, peak or none)")
    frame = max(1, int(0.02 * sample_rate))
    n = len(wave) // frame
    if n >= 1:
        energy = np.mean(wave[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1)
        active = energy >= energy.max() * 1e-4  # within 40 dB of the loudest frame
        rms = float(np.sqrt(energy[active].mean()))
    else:
        rms = float(np.sqrt(np.mean(wave.astype(np.float64) ** 2)))
    gain = 10 ** (target_dbfs / 20) / max(rms, 1e-12)
    gain = min(gain, 0.999 / peak)
    return (wave * gain).astype(np.float32)


def decode(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode a file at its native rate.

    Returns:
        wave: (N, C) float32, rate: int.
    """
    path = Path(path)
    _check_exists(path)
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        try:
            with sf.SoundFile(str(path)) as file:
                rate = check_sample_rate(file.samplerate, path)  # before anything is decoded
                return file.read(dtype="float32", always_2d=True), rate
        except (sf.LibsndfileError, RuntimeError) as err:
            if path.suffix.lower() in {".wav", ".flac", ".ogg", ".oga"}:
                raise AudioError(f"{path}: not a readable audio file ({err})") from err
            # an MP3 or other container libsndfile refuses: let FFmpeg try
    return _decode_av(path)


def output_format(path: str | os.PathLike, option: str | None = None) -> tuple[str, str]:
    """The (libsndfile format, subtype) a file is written in, from its suffix
    (:data:`OUTPUT_FORMATS`: 16-bit PCM, or Vorbis / MP3 for the lossy ones).

    Raises:
        AudioError: a suffix optin cannot write, naming ``option`` (if given) and the path.
    """
    suffix = Path(path).suffix.lower()
    found = OUTPUT_FORMATS.get(suffix)
    if found is None or not sf.check_format(*found):
        writable = ", ".join(s for s, f in OUTPUT_FORMATS.items() if sf.check_format(*f))
        what = f"'{suffix}' files" if suffix else "files without a suffix"
        raise AudioError(f"{option + ' ' if option else ''}{path}: cannot write {what}; "
                         f"give one of {writable}")
    return found


def write_audio(path: str | os.PathLike, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write (N,) float audio atomically, in the format of its suffix (:func:`output_format`).

    Raises:
        AudioError: ``wave`` is not fit to write (see :func:`check_output_wave`), or the
            suffix is not one optin writes.
        OutputError: the file cannot be written (no space, no permission...).
    """
    path = Path(path)
    fmt, subtype = output_format(path)
    check_output_wave(wave, path)
    with atomic_output(path) as tmp:
        try:
            sf.write(str(tmp), np.clip(wave, -1.0, 1.0), sample_rate, format=fmt,
                     subtype=subtype)
        except sf.LibsndfileError as err:
            raise soundfile_oserror(err, path) from err
    return path


def check_output_wave(wave: np.ndarray, name: str | os.PathLike) -> None:
    """Refuse audio that would be garbage once written as PCM.

    Refused: any NaN or infinite sample (PCM turns them into full-scale values), or more than
    :data:`MAX_CLIPPED_SHARE` of the samples at or beyond full scale (|x| >= 1): clipped noise
    or a DC offset, not a signal.

    Raises:
        AudioError: naming ``name`` and what is wrong.
    """
    wave = np.asarray(wave)
    bad = int(np.size(wave) - np.isfinite(wave).sum())
    if bad:
        raise AudioError(f"{name}: refusing to write audio with {bad} NaN or infinite "
                         f"sample(s) of {wave.size} (the model or its input is broken)")
    clipped = int((np.abs(wave) >= 1.0).sum())
    if clipped > MAX_CLIPPED_SHARE * wave.size:
        raise AudioError(f"{name}: refusing to write clipped audio ({clipped} of {wave.size} "
                         "samples at or beyond full scale; the model or its input is broken)")


def soundfile_oserror(err: sf.LibsndfileError, path: str | os.PathLike) -> OSError:
    """The OSError behind libsndfile's "System error.", naming ``path`` (cffi keeps the C
    errno of the failed call); other libsndfile errors as EIO with their message."""
    code = getattr(getattr(sf, "_ffi", None), "errno", 0) if err.code == _SFE_SYSTEM else 0
    if code:
        return OSError(code, os.strerror(code), str(path))
    return OSError(errno.EIO, str(err), str(path))


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise AudioError(f"{path}: file does not exist")
    if not path.is_file():
        raise AudioError(f"{path}: is not a file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")


def _audio_stream(container, path: Path):
    """The first audio stream of an open PyAV container and its sample rate."""
    streams = [s for s in container.streams if s.type == "audio"]
    if not streams:
        raise AudioError(f"{path}: holds no audio stream")
    stream = streams[0]
    return stream, int(stream.codec_context.sample_rate or stream.rate or 0)


def _probe_av(path: Path) -> AudioInfo:
    """Rate, channels and length from the container's header (no full decode)."""
    import av

    try:
        with av.open(str(path)) as container:
            stream, rate = _audio_stream(container, path)
            channels = int(stream.codec_context.channels or 1)
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / 1_000_000  # microseconds
            else:
                seconds = 0.0
    except AudioError:
        raise
    except Exception as err:
        raise AudioError(f"{path}: could not be read ({type(err).__name__}: {err})") from err
    check_sample_rate(rate, path)
    return AudioInfo(rate, channels, round(seconds * rate))


def _decode_av(path: Path) -> tuple[np.ndarray, int]:
    """Decode with PyAV; (N, C) float32 and the native rate."""
    import av  # imported lazily: FFmpeg's libraries are only loaded when needed

    try:
        with av.open(str(path)) as container:
            stream, rate = _audio_stream(container, path)
            check_sample_rate(rate, path)  # before anything is decoded
            chunks = []
            for frame in container.decode(stream):
                arr = frame.to_ndarray()
                # planar (C, n) -> (n, C); packed (1, n*C) interleaved -> (n, C)
                n_ch = len(frame.layout.channels)
                arr = arr.T if frame.format.is_planar else arr.reshape(-1, n_ch)
                if np.issubdtype(arr.dtype, np.integer):
                    arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
                chunks.append(arr.astype(np.float32))
    except AudioError:
        raise
    except Exception as err:  # PyAV raises many error types (InvalidDataError, ValueError...)
        raise AudioError(f"{path}: could not be decoded ({type(err).__name__}: {err})") from err
    if not chunks:
        raise AudioError(f"{path}: holds no samples (zero-length audio)")
    return np.concatenate(chunks, axis=0), rate

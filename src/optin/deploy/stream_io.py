"""Sources and sinks of a stream, and ``optin stream`` (:func:`stream_command`).

An audio file (decoded and volume-normalised like offline obfuscation), raw signed 16-bit
little-endian mono PCM on a pipe, or a microphone through the optional ``sounddevice`` package
(``optin[live]``); out to an audio file in the format of its suffix
(:func:`optin.audio.io.output_format`) or raw PCM. Other rates are resampled piece by piece
(soxr streams); every rate is in the one accepted range (4 kHz to 384 kHz). Options that do not
apply to the source and output asked for are refused by the command line's table
(:mod:`optin.cli.options`). The streaming algorithm itself is :mod:`optin.deploy.streaming`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from optin.audio.io import (
    SAMPLE_RATE,
    audio_info,
    check_output_wave,
    check_sample_rate,
    load_audio,
    output_format,
    soundfile_oserror,
)
from optin.checkpoint import checkpoint_files
from optin.deploy.causal_stream import open_stream
from optin.deploy.streaming import PhaseMode, StreamError, StreamingObfuscator
from optin.errors import OptinError
from optin.files import atomic_output, prepare_out_file
from optin.privacy.obfuscator import Obfuscator

PCM_SCALE = 32768.0


class LiveInputError(OptinError, ValueError):
    """Live microphone input is not available (``sounddevice`` missing or no device)."""


def pcm16_to_float(data: bytes) -> np.ndarray:
    """Signed 16-bit little-endian bytes -> (n,) float32 in [-1, 1)."""
    if len(data) % 2:
        raise StreamError(f"raw PCM input has an odd number of bytes ({len(data)}): "
                          "expected 16-bit samples")
    return (np.frombuffer(data, dtype="<i2").astype(np.float32) / PCM_SCALE)


def float_to_pcm16(wave: np.ndarray) -> bytes:
    """(n,) float -> signed 16-bit little-endian bytes (clipped to [-1, 1])."""
    scaled = np.clip(np.asarray(wave, dtype=np.float64) * PCM_SCALE, -PCM_SCALE, PCM_SCALE - 1)
    return np.round(scaled).astype("<i2").tobytes()


def pcm_source(stream: BinaryIO, piece: int) -> Iterator[np.ndarray]:
    """Read raw PCM from a binary stream in pieces of ``piece`` samples until end of file."""
    carry = b""
    while True:
        data = stream.read(2 * piece)
        if not data:
            break
        data = carry + data
        cut = len(data) - len(data) % 2
        carry = data[cut:]
        if cut:
            yield pcm16_to_float(data[:cut])
    if carry:
        raise StreamError("raw PCM input ended inside a sample (odd number of bytes)")


def file_source(path: str | os.PathLike, streamer: StreamingObfuscator, piece: int
                ) -> Iterator[np.ndarray]:
    """An audio file decoded at the obfuscator's rate, volume-normalised, in pieces."""
    cfg = streamer.features
    wave = load_audio(path, sample_rate=cfg.sample_rate, normalize=cfg.volume,
                      target_dbfs=cfg.target_dbfs)
    for i in range(0, len(wave), piece):
        yield wave[i:i + piece]


def microphone_source(rate: int, piece: int, seconds: float | None = None
                      ) -> Iterator[np.ndarray]:
    """Mono float32 pieces from the default input device until ``seconds`` or Ctrl-C."""
    try:
        import sounddevice
    except (ImportError, OSError) as err:
        raise LiveInputError(
            "--input mic needs the optional 'sounddevice' package (pip install 'optin[live]')"
            f": {err}") from err
    limit = None if seconds is None else round(seconds * rate)
    done = 0
    try:
        with sounddevice.InputStream(samplerate=rate, channels=1, dtype="float32",
                                     blocksize=piece) as mic:
            while limit is None or done < limit:
                data, _ = mic.read(piece)
                wave = np.asarray(data, dtype=np.float32)[:, 0]
                if limit is not None:
                    wave = wave[:limit - done]
                done += len(wave)
                yield wave
    except sounddevice.PortAudioError as err:
        raise LiveInputError(f"microphone: {err}") from err


class _Resampler:
    """Streaming resampling (identity when the rates match)."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self.stream = None if rate_in == rate_out else soxr.ResampleStream(
            rate_in, rate_out, 1, dtype="float32", quality="HQ")

    def __call__(self, wave: np.ndarray, last: bool = False) -> np.ndarray:
        if self.stream is None:
            return wave
        return self.stream.resample_chunk(np.ascontiguousarray(wave, np.float32), last=last)


@dataclass
class StreamReport:
    """What a stream did: seconds in and out, wall time, real-time factor (wall / audio), and
    its latency: the algorithmic latency (chunk + look-ahead + one hop) plus the compute time
    of each push (the time a piece of input waits before its output can be emitted)."""

    seconds_in: float
    seconds_out: float
    wall_seconds: float
    algorithmic_ms: float = 0.0
    push_ms: tuple[float, ...] = ()

    @property
    def real_time_factor(self) -> float:
        return self.wall_seconds / max(self.seconds_in, 1e-9)

    def compute_ms(self, quantile: float) -> float:
        """A quantile of the per-push compute time, in ms (0 when nothing was pushed)."""
        return float(np.quantile(self.push_ms, quantile)) if self.push_ms else 0.0

    def latency_line(self) -> str:
        """The measured latency in one line: algorithmic + compute (median, 99th pct, max)."""
        p50, p99, worst = (self.compute_ms(q) for q in (0.5, 0.99, 1.0))
        return (f"latency: {self.algorithmic_ms:.1f} ms algorithmic + {p50:.2f} ms compute "
                f"(median push; 99th percentile {p99:.2f} ms, max {worst:.2f} ms) = "
                f"{self.algorithmic_ms + p99:.1f} ms at the 99th percentile")


def run_stream(streamer: StreamingObfuscator, source: Iterable[np.ndarray],
               sink: Callable[[np.ndarray], None], rate_in: int | None = None,
               rate_out: int | None = None, stop_on_interrupt: bool = False,
               name: str = "stream output") -> StreamReport:
    """Push every piece of ``source`` through ``streamer``, flush, and give the audio to
    ``sink`` as it becomes final.

    Args:
        source: (n,) float32 pieces at ``rate_in`` (default: the obfuscator's rate).
        sink: called with (m,) float32 pieces at ``rate_out`` (default: the obfuscator's rate).
        stop_on_interrupt: Ctrl-C ends the input (live sources) instead of the run.
        name: how errors call the output.

    Raises:
        AudioError: a piece is not fit to write (NaN, or mostly clipped: see
            :func:`optin.audio.io.check_output_wave`); it is refused before ``sink`` sees it.
    """
    rate = streamer.features.sample_rate
    rate_in, rate_out = rate_in or rate, rate_out or rate
    into, out_of = _Resampler(rate_in, rate), _Resampler(rate, rate_out)
    streamer.reset()
    start, n_in, n_out = time.perf_counter(), 0, 0

    def emit(wave: np.ndarray) -> None:
        nonlocal n_out
        if len(wave):
            check_output_wave(wave, name)
            sink(wave)
            n_out += len(wave)

    pushes: list[float] = []
    try:
        for piece in source:
            n_in += len(piece)
            tick = time.perf_counter()
            out = out_of(streamer.push(into(piece)).audio)
            pushes.append(1000.0 * (time.perf_counter() - tick))
            emit(out)
    except KeyboardInterrupt:
        if not stop_on_interrupt:
            raise
    emit(out_of(streamer.push(into(np.zeros(0, np.float32), last=True)).audio))
    emit(out_of(streamer.flush().audio, last=True))
    return StreamReport(n_in / rate_in, n_out / rate_out, time.perf_counter() - start,
                        streamer.latency_ms, tuple(pushes))


class WavSink:
    """Write audio incrementally to ``path`` in the libsndfile format ``fmt`` and ``subtype``
    (16-bit WAV by default; see :func:`optin.audio.io.output_format`).

    ``stream_command`` gives it the temporary file of :func:`optin.files.atomic_output`;
    libsndfile's errors come out as the OSError behind them, naming ``name``.
    """

    def __init__(self, path: str | os.PathLike, rate: int, fmt: str = "WAV",
                 name: str | os.PathLike | None = None, subtype: str = "PCM_16") -> None:
        self.name = name or path
        try:
            self.file = sf.SoundFile(str(path), "w", samplerate=rate, channels=1,
                                     subtype=subtype, format=fmt)
        except sf.LibsndfileError as err:
            raise soundfile_oserror(err, self.name) from err

    def __call__(self, wave: np.ndarray) -> None:
        try:
            self.file.write(np.clip(wave, -1.0, 1.0))
        except sf.LibsndfileError as err:
            raise soundfile_oserror(err, self.name) from err

    def close(self) -> None:
        try:
            self.file.close()
        except sf.LibsndfileError as err:
            raise soundfile_oserror(err, self.name) from err

    def __enter__(self) -> WavSink:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.close()
        else:  # the first error is the one to report
            with contextlib.suppress(Exception):
                self.close()


def pcm_sink(stream: BinaryIO) -> Callable[[np.ndarray], None]:
    """Write raw 16-bit PCM to a binary stream, flushed after each piece."""

    def write(wave: np.ndarray) -> None:
        stream.write(float_to_pcm16(wave))
        stream.flush()

    return write


def default_phase(obfuscator: Obfuscator) -> PhaseMode:
    """The audio-out phase when none is asked for: the input's phase only when the permitted
    task is speaker identity (the raw phase carries the speaker's signal, which is not to be
    hidden then); otherwise per-chunk Griffin-Lim, so no raw phase leaves the device."""
    attribute = (obfuscator.config.get("target") or {}).get("attribute")
    return "input" if attribute == "speaker" else "griffin-lim"


def check_stream_options(output: str, rate: int | None = None) -> None:
    """Refuse a rate out of range and an output suffix optin cannot write. (Whether ``--rate``
    and ``--seconds`` apply to the source and output asked for is the command line's table,
    :mod:`optin.cli.options`: ``rate`` is read for raw PCM and the microphone only,
    ``seconds`` for the microphone only.)

    Raises:
        AudioError: one line naming the option.
    """
    if rate is not None:
        check_sample_rate(rate, "--rate")
    if output != "-":
        output_format(output, "--output")


def stream_command(model: str | os.PathLike, source: str = "-", output: str = "-",
                   chunk_ms: float | None = None, rate: int | None = None,
                   window_ms: float | None = None, phase: str | None = None,
                   seconds: float | None = None,
                   stdin: BinaryIO | None = None, stdout: BinaryIO | None = None,
                   log: Callable[[str], None] | None = None) -> StreamReport:
    """``optin stream``: obfuscate a file, raw PCM on stdin (``-``) or the microphone
    (``mic``) into an audio file (format by suffix) or raw PCM on stdout (``-``).

    ``rate`` (default 16000) is the rate of raw PCM / microphone input and of raw PCM
    output; files are decoded and written at the obfuscator's rate. The options and the
    output file (:func:`optin.files.prepare_out_file`: never over the input or the model) are
    checked before the model is loaded, an input file's header
    (:func:`optin.audio.io.audio_info`) before the stream starts.
    """
    log = log or (lambda message: print(message, file=sys.stderr))
    check_stream_options(output, rate)
    rate = SAMPLE_RATE if rate is None else rate
    read = [Path(source)] if source not in ("-", "mic") else []
    if output != "-":
        prepare_out_file(output, "--output", inputs=[*read, *checkpoint_files(model)])
    obfuscator = Obfuscator.load(model)
    for path in read:
        audio_info(path)  # missing, unreadable or at a rate out of range: before the stream
    streamer = open_stream(obfuscator, chunk_ms=chunk_ms, window_ms=window_ms,
                           phase=phase or default_phase(obfuscator))  # type: ignore[arg-type]
    feature_rate = streamer.features.sample_rate
    log(f"stream: {streamer.describe()}")
    live = source == "mic"
    if live:
        piece = max(1, round(streamer.chunk_ms * rate / 1000))
        frames: Iterable[np.ndarray] = microphone_source(rate, piece, seconds)
        rate_in = rate
    elif source == "-":
        piece = max(1, round(streamer.chunk_ms * rate / 1000))
        frames = pcm_source(stdin or sys.stdin.buffer, piece)
        rate_in = rate
    else:
        piece = streamer.chunk_frames * streamer.hop
        frames = file_source(source, streamer, piece)
        rate_in = feature_rate
    if output == "-":
        sink: Callable[[np.ndarray], None] = pcm_sink(stdout or sys.stdout.buffer)
        report = run_stream(streamer, frames, sink, rate_in, rate, stop_on_interrupt=live)
    else:
        fmt, subtype = output_format(output, "--output")
        with atomic_output(output) as tmp, \
                WavSink(tmp, feature_rate, fmt, name=output, subtype=subtype) as wav:
            report = run_stream(streamer, frames, wav, rate_in, feature_rate,
                                stop_on_interrupt=live, name=output)
        log(f"wrote {output}")
    log(f"stream: {report.seconds_in:.2f} s in, {report.seconds_out:.2f} s out, "
        f"{report.wall_seconds:.2f} s wall (real-time factor {report.real_time_factor:.2f})")
    log(f"stream: {report.latency_line()}")
    return report

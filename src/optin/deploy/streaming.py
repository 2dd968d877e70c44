"""Streaming obfuscation: audio in small pieces -> obfuscated spectrogram frames and audio.

The offline obfuscator sees a whole utterance. A stream does not, and three things of the
offline path are global; this module replaces each with something causal, and says so:

1. **Receptive field.** The generator is convolutional along time with a finite receptive
   field (:func:`~optin.deploy.receptive_field.receptive_field`; the paper's obfuscator reads
   59 frames back and 56 ahead). The stream runs the network on a *window* of frames: left
   context + one chunk + lookahead, each a multiple of 4 frames (the two stride-2 stages), so
   every frame of the chunk sees its whole receptive field inside the window, and window starts
   fall on the offline stride grid. Only the chunk's frames are kept.
2. **InstanceNorm over time** inside the network: its statistics are over the window, not the
   utterance. The window has a fixed length :attr:`StreamingObfuscator.window_frames` (default:
   the least that covers the receptive field; longer windows add left history, which costs
   compute, not latency). At the start of a stream the window is shorter (frames from 0 to the
   lookahead); at the end it is pulled left to keep its length. This is the one approximation
   that remains when the front-end statistics are fixed: the output equals offline obfuscation
   of the same windows (:meth:`StreamingObfuscator.reference`) to float rounding, and equals
   offline obfuscation of the whole utterance when the window and lookahead cover it.
   (Training crops are 1 s, so windowed statistics are within training conditions.) Measured
   on the demo's trained obfuscator, 40 test utterances of 2-3 s: relative feature error
   0.23 against whole-utterance offline obfuscation with the default window (0.18 with 2 s),
   while the target model's utterance predictions agree 40/40 (segments 97 %).
3. **Front-end mean/std** (per utterance offline): ``normalization="running"`` (default) uses
   the mean and std of all log-spectrogram values received so far, up to the window's end, and
   turns the obfuscated frames back into magnitudes with the same numbers; early windows use
   few frames (the first is about 0.7 s). Given ``mean`` and ``std`` (e.g. from
   :meth:`StreamingObfuscator.calibrate` on a recording of the same speaker and microphone),
   they are fixed for the whole stream. Volume normalisation (offline ``load_audio``) is not
   applied to streamed samples: feed speech at about the training level (-25 dBFS RMS).

Audio out is the inverse STFT, frame by frame with overlap-add, using the *input's own phase*
(``phase="input"``). That keeps the phase of the raw microphone signal in the output, which
the offline default avoids with Griffin-Lim (not causal: it iterates over the whole utterance).
``phase="griffin-lim"`` runs Griffin-Lim per chunk instead: the chunk's phases are iterated
with the audio already emitted held fixed, starting from the phase of the previous frame
advanced by each bin's centre frequency (no raw phase leaves the device; quality is lower).

The output is aligned with the input: after :meth:`~StreamingObfuscator.flush` the audio has
exactly as many samples as went in, sample ``n`` out belonging to sample ``n`` in.
Algorithmic latency (worst case, :attr:`~StreamingObfuscator.latency_samples`): chunk +
lookahead + one hop (10 ms: the STFT frame reaches half a window ahead and the overlap-add
needs the next frame), ``(chunk + lookahead + 1) * hop - 1`` samples; 690 ms for the paper's
obfuscator with 100 ms chunks (rounded up to 120 ms = 12 frames, a multiple of 4).

Sources and sinks for ``optin stream`` (files, raw PCM pipes, a microphone) are
:mod:`optin.deploy.stream_io`. A network built for streaming (causal, each frame computed once,
a stream equal to offline obfuscation, 40 ms latency) streams with
:mod:`optin.deploy.causal_stream`, which reuses this class's front-end and audio out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from optin.audio.features import STD_FLOOR, features_to_magnitude, make_window
from optin.deploy.receptive_field import ReceptiveField, receptive_field
from optin.errors import ConfigError, OptinError
from optin.models.cyclegan_vc2 import DOWNSAMPLE_FACTOR
from optin.privacy.obfuscator import Obfuscator

PhaseMode = Literal["input", "griffin-lim"]
Normalization = Literal["running", "fixed"]


class StreamError(OptinError, ValueError):
    """Bad input to a stream (wrong shape, NaN, too short, pushed after flush)."""


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@dataclass(frozen=True)
class Block:
    """One network run: output frames ``[start, stop)`` from window ``[window_start, window_stop)``.

    With running statistics the block is normalised by all frames in ``[0, window_stop)``.
    """

    start: int
    stop: int
    window_start: int
    window_stop: int

    @property
    def window_frames(self) -> int:
        return self.window_stop - self.window_start


@dataclass
class StreamOutput:
    """What became final in one ``push`` / ``flush`` (or a whole stream, concatenated).

    Attributes:
        features: (F, k) obfuscated normalised frames ``start_frame .. start_frame + k - 1``.
        mean, std: (k,) the statistics each frame was normalised with (magnitude
            ``expm1(features * std + mean)``).
        audio: (n,) float32 samples ``start_sample .. start_sample + n - 1`` of the output.
        start_frame, start_sample: absolute positions in the stream.
    """

    features: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    audio: np.ndarray
    start_frame: int = 0
    start_sample: int = 0

    @property
    def n_frames(self) -> int:
        return int(self.features.shape[1])

    @classmethod
    def empty(cls, n_freq: int, start_frame: int = 0, start_sample: int = 0) -> StreamOutput:
        return cls(np.zeros((n_freq, 0), np.float32), np.zeros(0), np.zeros(0),
                   np.zeros(0, np.float32), start_frame, start_sample)

    @classmethod
    def concat(cls, parts: Iterable[StreamOutput]) -> StreamOutput:
        """Join consecutive outputs (as returned by successive pushes)."""
        parts = list(parts)
        if not parts:
            raise ValueError("nothing to concatenate")
        return cls(
            features=np.concatenate([p.features for p in parts], axis=1),
            mean=np.concatenate([p.mean for p in parts]),
            std=np.concatenate([p.std for p in parts]),
            audio=np.concatenate([p.audio for p in parts]),
            start_frame=parts[0].start_frame,
            start_sample=parts[0].start_sample,
        )


class StreamingObfuscator:
    """Obfuscate a stream of samples chunk by chunk; see the module docstring for the rules.

    Args:
        obfuscator: a loaded :class:`~optin.privacy.obfuscator.Obfuscator`.
        chunk_ms: frames made final per network run, rounded up to a multiple of 4 frames.
        window_ms: frames the network sees per run (default and minimum: left context +
            chunk + lookahead); rounded up to a multiple of 4 frames.
        lookahead_ms: future frames per run (default and minimum: the receptive field's right
            extent, rounded up to a multiple of 4 frames).
        mean, std: fixed front-end statistics; both or neither (default: running statistics).
        phase: "input" (overlap-add with the input's phase) or "griffin-lim" (per chunk).
        griffin_lim_iters: iterations per chunk for ``phase="griffin-lim"``.
    """

    def __init__(
        self,
        obfuscator: Obfuscator,
        chunk_ms: float = 100.0,
        window_ms: float | None = None,
        lookahead_ms: float | None = None,
        mean: float | None = None,
        std: float | None = None,
        phase: PhaseMode = "input",
        griffin_lim_iters: int = 16,
    ) -> None:
        self._setup(obfuscator, chunk_ms, phase, griffin_lim_iters)
        cfg = self.features
        if (mean is None) != (std is None):
            raise ConfigError("give both mean and std, or neither")
        if std is not None and std <= 0:
            raise ConfigError(f"std must be > 0, got {std}")
        self.receptive_field: ReceptiveField = receptive_field(obfuscator.network)
        rf = self.receptive_field
        q = DOWNSAMPLE_FACTOR
        self.chunk_frames = _round_up(math.ceil(chunk_ms / self.hop_ms - 1e-9), q)
        self.lookahead_frames = _round_up(rf.right, q)
        if lookahead_ms is not None:
            wanted = math.ceil(lookahead_ms / self.hop_ms - 1e-9)
            if wanted < rf.right:
                raise ConfigError(
                    f"lookahead_ms={lookahead_ms} is shorter than the network's receptive "
                    f"field ({rf.right} frames = {rf.right * self.hop_ms:g} ms ahead)")
            self.lookahead_frames = _round_up(wanted, q)
        minimum = _round_up(rf.left, q) + self.chunk_frames + self.lookahead_frames
        self.window_frames = minimum
        if window_ms is not None:
            self.window_frames = max(minimum,
                                     _round_up(math.ceil(window_ms / self.hop_ms - 1e-9), q))
        if not cfg.normalize:
            mean, std = 0.0, 1.0
        self.fixed_stats = None if mean is None else (float(mean), float(std))
        self.reset()

    def _setup(self, obfuscator: Obfuscator, chunk_ms: float, phase: PhaseMode,
               griffin_lim_iters: int) -> None:
        """What every stream checks and keeps: the front-end, the phase rule, the window."""
        self.obfuscator = obfuscator
        cfg = obfuscator.features
        self.features = cfg
        self.hop = cfg.hop_length
        self.hop_ms = 1000.0 * cfg.hop_length / cfg.sample_rate
        if cfg.n_fft != cfg.win_length or cfg.n_fft != 2 * cfg.hop_length:
            raise ConfigError("streaming needs n_fft == win_length == 2 * hop_length, got "
                              f"{cfg.n_fft}, {cfg.win_length}, {cfg.hop_length}")
        if chunk_ms <= 0:
            raise ConfigError(f"chunk_ms must be > 0, got {chunk_ms}")
        if phase not in ("input", "griffin-lim"):
            raise ConfigError(f"phase must be 'input' or 'griffin-lim', got {phase!r}")
        if griffin_lim_iters < 1:
            raise ConfigError(f"griffin_lim_iters must be >= 1, got {griffin_lim_iters}")
        self.phase: PhaseMode = phase
        self.griffin_lim_iters = griffin_lim_iters
        self._window = make_window(cfg)  # (n_fft,)
        self._envelope = (self._window**2).numpy().astype(np.float64)

    # ------------------------------------------------------------------ description
    @property
    def normalization(self) -> Normalization:
        return "running" if self.fixed_stats is None else "fixed"

    @property
    def chunk_ms(self) -> float:
        return self.chunk_frames * self.hop_ms

    @property
    def lookahead_ms(self) -> float:
        return self.lookahead_frames * self.hop_ms

    @property
    def window_ms(self) -> float:
        return self.window_frames * self.hop_ms

    @property
    def left_context_frames(self) -> int:
        """Frames of history before a chunk in a full-length window."""
        return self.window_frames - self.chunk_frames - self.lookahead_frames

    @property
    def latency_samples(self) -> int:
        """Worst-case algorithmic latency: input sample ``n`` arrives, output sample ``n`` is
        final this many samples later (chunk + lookahead + one hop, minus one sample)."""
        return (self.chunk_frames + self.lookahead_frames + 1) * self.hop - 1

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.latency_samples / self.features.sample_rate

    def describe(self) -> str:
        """One line for logs."""
        rf = self.receptive_field
        return (f"chunk {self.chunk_ms:g} ms, lookahead {self.lookahead_ms:g} ms, window "
                f"{self.window_ms:g} ms ({self.window_frames} frames), receptive field "
                f"-{rf.left}/+{rf.right} frames, latency {self.latency_ms:.1f} ms, "
                f"{self.normalization} statistics, phase {self.phase}")

    # ------------------------------------------------------------------ geometry
    def block(self, start: int, total_frames: int | None = None) -> Block:
        """The window of the block starting at frame ``start`` (a multiple of the chunk).

        ``total_frames`` is the stream's length once known (at flush); before that the block
        runs when its lookahead has arrived.
        """
        stop = start + self.chunk_frames
        end = stop + self.lookahead_frames
        if total_frames is not None:
            stop, end = min(stop, total_frames), min(end, total_frames)
        window_start = max(0, _round_up(end, DOWNSAMPLE_FACTOR) - self.window_frames)
        return Block(start, stop, window_start, end)

    def plan(self, n_samples: int) -> list[Block]:
        """Every block of a stream of ``n_samples`` samples, in order."""
        total = self.features.frames(n_samples)
        return [self.block(b, total) for b in range(0, total, self.chunk_frames)]

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget everything; the next push starts a new stream."""
        n_freq = self.features.n_freq
        self._n_in = 0  # samples received
        self._pending = np.zeros(0, np.float32)  # samples before the reflect prefix exists
        self._tail = np.zeros(0, np.float32)  # the last n_fft // 2 + 1 samples received
        self._padded: np.ndarray | None = None  # reflect-padded stream from _padded_base
        self._padded_base = 0
        self._frames = 0  # STFT frames computed
        self._frame_base = 0  # absolute index of the first buffered frame
        self._logmag = torch.zeros(n_freq, 0)  # (F, buffered frames)
        self._spec = torch.zeros(n_freq, 0, dtype=torch.complex64)
        self._frame_sum = np.zeros(0)  # per buffered frame: sum and sum of squares (float64)
        self._frame_sq = np.zeros(0)
        self._dropped = [0.0, 0.0]  # sum and sum of squares of frames dropped from the buffer
        self._next_block = 0
        self._ola = np.zeros(0)  # overlap-add numerator and window envelope from _out_base
        self._env = np.zeros(0)
        self._out_base = 0  # samples emitted
        self._last_phase: Tensor | None = None  # (F,) phase of the last synthesised frame
        self._closed = False

    # ------------------------------------------------------------------ streaming
    def push(self, samples: np.ndarray) -> StreamOutput:
        """Feed (n,) float samples at the feature rate; return what became final."""
        self._receive(samples)
        return self._collect(self._run_ready(), final_samples=None)

    def flush(self) -> StreamOutput:
        """End the stream: run the remaining blocks and return the rest of the audio."""
        self._end_input()
        return self._collect(self._run_rest(), final_samples=self._n_in)

    def _receive(self, samples: np.ndarray) -> None:
        """Check (n,) float samples and compute every STFT frame they complete."""
        if self._closed:
            raise StreamError("the stream was flushed; call reset() to start another")
        x = np.asarray(samples)
        if x.ndim != 1:
            raise StreamError(f"expected mono samples (n,), got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise StreamError(f"expected float samples, got {x.dtype}")
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise StreamError("samples contain NaN or infinity")
        self._append(x)
        self._compute_frames()

    def _end_input(self) -> None:
        """Close the input: reflect-pad its end and compute the last STFT frames."""
        if self._closed:
            raise StreamError("the stream was already flushed")
        half = self.features.n_fft // 2
        if self._n_in <= half:
            raise StreamError(f"the stream holds {self._n_in} samples: the front-end needs "
                              f"more than {half}")
        self._closed = True
        # reflect padding at the end: x[N-2], x[N-3], ..., x[N-1-half]
        self._extend_padded(self._tail[-half - 1:-1][::-1].copy())
        self._compute_frames()

    def _run_ready(self) -> list[tuple[Block, Tensor, float, float]]:
        """Run every block whose lookahead has arrived."""
        out = []
        while self._next_block + self.chunk_frames + self.lookahead_frames <= self._frames:
            out.append(self._run(self.block(self._next_block)))
        return out

    def _run_rest(self) -> list[tuple[Block, Tensor, float, float]]:
        """Run the blocks left once the input has ended."""
        total = self._frames
        out = []
        while self._next_block < total:
            out.append(self._run(self.block(self._next_block, total)))
        return out

    def process(self, wave: np.ndarray, piece: int | None = None) -> StreamOutput:
        """Stream a whole (N,) waveform in pieces of ``piece`` samples (default: one chunk)
        and flush; the outputs concatenated."""
        piece = piece or self.chunk_frames * self.hop
        self.reset()
        outs = [self.push(wave[i:i + piece]) for i in range(0, len(wave), piece)]
        outs.append(self.flush())
        return StreamOutput.concat(outs)

    def calibrate(self, wave: np.ndarray) -> tuple[float, float]:
        """Fix the front-end statistics to those of a recording (N,); returns (mean, std)."""
        spec = self.obfuscator.spectrogram(wave)
        self.fixed_stats = (spec.mean, spec.std)
        return self.fixed_stats

    # ------------------------------------------------------------------ internals
    def _append(self, x: np.ndarray) -> None:
        self._n_in += len(x)
        half = self.features.n_fft // 2
        self._tail = np.concatenate([self._tail, x])[-(half + 1):]
        if self._padded is not None:
            self._extend_padded(x)
            return
        self._pending = np.concatenate([self._pending, x])
        if len(self._pending) > half:  # reflect prefix x[half], ..., x[1] is now known
            self._padded = np.concatenate([self._pending[half:0:-1], self._pending])
            self._pending = np.zeros(0, np.float32)

    def _extend_padded(self, x: np.ndarray) -> None:
        assert self._padded is not None
        self._padded = np.concatenate([self._padded, x])

    def _compute_frames(self) -> None:
        """STFT every frame whose samples are all in (centred frames, hop-spaced)."""
        if self._padded is None:
            return
        n_fft, hop = self.features.n_fft, self.hop
        offset = self._frames * hop - self._padded_base
        available = (len(self._padded) - offset - n_fft) // hop + 1
        if available <= 0:
            return
        seg = torch.from_numpy(self._padded[offset:offset + (available - 1) * hop + n_fft])
        spec = torch.stft(seg, n_fft=n_fft, hop_length=hop, win_length=self.features.win_length,
                          window=self._window, center=False, return_complex=True)  # (F, k)
        logmag = torch.log1p(spec.abs())
        self._spec = torch.cat([self._spec, spec], dim=1)
        self._logmag = torch.cat([self._logmag, logmag], dim=1)
        lm = logmag.double()
        self._frame_sum = np.concatenate([self._frame_sum, lm.sum(0).numpy()])
        self._frame_sq = np.concatenate([self._frame_sq, (lm**2).sum(0).numpy()])
        self._frames += available
        drop = self._frames * hop - self._padded_base  # the next frame starts here
        self._padded = self._padded[drop:]
        self._padded_base += drop

    def _stats(self, stop: int) -> tuple[float, float]:
        """Front-end (mean, std) for a window ending at frame ``stop``."""
        if self.fixed_stats is not None:
            return self.fixed_stats
        k = stop - self._frame_base
        total = self._dropped[0] + float(self._frame_sum[:k].sum())
        total_sq = self._dropped[1] + float(self._frame_sq[:k].sum())
        count = stop * self.features.n_freq
        mean = total / count
        var = max(total_sq / count - mean * mean, 0.0)
        return mean, max(math.sqrt(var), STD_FLOOR)

    def _run(self, block: Block) -> tuple[Block, Tensor, float, float]:
        """Obfuscate one block; synthesise its audio into the overlap-add buffer."""
        mean, std = self._stats(block.window_stop)
        b = self._frame_base
        window = (self._logmag[:, block.window_start - b:block.window_stop - b] - mean) / std
        out = self.obfuscator.obfuscate_features(window)  # (F, window frames)
        first = block.start - block.window_start
        feats = out[:, first:first + block.stop - block.start]  # (F, k)
        self._synthesise(block, feats, mean, std)
        self._next_block = block.start + self.chunk_frames
        self._drop_frames()
        return block, feats, mean, std

    def _drop_frames(self) -> None:
        """Forget frames no later window can reach (nor the synthesis needs)."""
        keep = max(0, self._next_block + DOWNSAMPLE_FACTOR - self.window_frames)
        k = keep - self._frame_base
        if k <= 0:
            return
        self._dropped[0] += float(self._frame_sum[:k].sum())
        self._dropped[1] += float(self._frame_sq[:k].sum())
        self._frame_sum, self._frame_sq = self._frame_sum[k:], self._frame_sq[k:]
        self._logmag, self._spec = self._logmag[:, k:], self._spec[:, k:]
        self._frame_base = keep

    def _synthesise(self, block: Block, feats: Tensor, mean: float, std: float) -> None:
        """Overlap-add the block's frames (F, k) into the output buffer."""
        mag = features_to_magnitude(feats, mean, std)  # (F, k)
        b = self._frame_base
        if self.phase == "input":
            phase = torch.angle(self._spec[:, block.start - b:block.stop - b])
            frames = self._frames_audio(torch.polar(mag, phase))
        else:
            frames = self._griffin_lim(block.start, mag)
        self._overlap_add(block.start, frames)

    def _frames_audio(self, spec: Tensor) -> np.ndarray:
        """(F, k) complex -> (n_fft, k) windowed frames, float64."""
        n_fft = self.features.n_fft
        frames = torch.fft.irfft(spec, n=n_fft, dim=0) * self._window[:, None]
        return frames.double().numpy()

    def _overlap_add(self, start: int, frames: np.ndarray) -> None:
        """Add (n_fft, k) windowed frames for frames ``start..`` into the buffers."""
        n_fft, hop = self.features.n_fft, self.hop
        k = frames.shape[1]
        end = (start + k - 1) * hop + n_fft // 2  # one past the last sample touched
        grow = end - self._out_base - len(self._ola)
        if grow > 0:
            self._ola = np.concatenate([self._ola, np.zeros(grow)])
            self._env = np.concatenate([self._env, np.zeros(grow)])
        half = n_fft // 2
        for i in range(k):
            first = (start + i) * hop - half  # absolute sample of the frame's first value
            cut = max(0, -first)  # centred frames: samples before 0 are dropped
            lo = first + cut - self._out_base
            assert lo >= 0, "a frame reached samples that were already emitted"
            self._ola[lo:lo + n_fft - cut] += frames[cut:, i]
            self._env[lo:lo + n_fft - cut] += self._envelope[cut:]

    def _collect(self, runs: list[tuple[Block, Tensor, float, float]],
                 final_samples: int | None) -> StreamOutput:
        """Gather the runs' features and emit the samples that became final."""
        n_freq = self.features.n_freq
        start_frame = runs[0][0].start if runs else self._next_block
        # sample n needs frames n // hop and n // hop + 1
        upto = final_samples if final_samples is not None else max(
            0, (self._next_block - 1) * self.hop)
        n = max(0, upto - self._out_base)
        audio = (self._ola[:n] / np.maximum(self._env[:n], 1e-11)).astype(np.float32)
        out = StreamOutput.empty(n_freq, start_frame, self._out_base)
        self._ola, self._env = self._ola[n:], self._env[n:]
        self._out_base += n
        out.audio = audio
        if runs:
            out.features = torch.cat([r[1] for r in runs], dim=1).numpy()
            out.mean = np.concatenate([np.full(r[0].stop - r[0].start, r[2]) for r in runs])
            out.std = np.concatenate([np.full(r[0].stop - r[0].start, r[3]) for r in runs])
        return out

    def _griffin_lim(self, start: int, mag: Tensor) -> np.ndarray:
        """Per-chunk fast Griffin-Lim: (F, k) magnitudes of frames ``start..`` -> (n_fft, k)
        windowed frames whose overlap-add, with the audio already committed on the left held
        fixed, is consistent with ``mag``."""
        cfg = self.features
        n_fft, hop, k = cfg.n_fft, self.hop, mag.shape[1]
        bins = torch.arange(mag.shape[0], dtype=torch.float32)
        advance = 2 * math.pi * bins * hop / n_fft  # (F,) phase step of each bin's centre
        previous = self._last_phase if self._last_phase is not None else torch.zeros_like(bins)
        phase = previous[:, None] + advance[:, None] * torch.arange(1, k + 1)  # (F, k)
        length = (k - 1) * hop + n_fft
        first = start * hop - n_fft // 2  # absolute sample at local index 0
        skip = max(0, -first)  # local samples before 0 have no committed part
        held = min(len(self._ola), length - skip)  # committed overlap-add on the left
        num0, env0 = np.zeros(length), np.zeros(length)
        num0[skip:skip + held] = self._ola[:held]
        env0[skip:skip + held] = self._env[:held]
        env = env0.copy()
        for i in range(k):
            env[i * hop:i * hop + n_fft] += self._envelope
        angles = torch.polar(torch.ones_like(mag), phase)
        rebuilt_prev = torch.zeros_like(angles)
        momentum = 0.99
        for _ in range(self.griffin_lim_iters):
            frames = self._frames_audio(mag * angles)  # (n_fft, k)
            num = num0.copy()
            for i in range(k):
                num[i * hop:i * hop + n_fft] += frames[:, i]
            y = torch.from_numpy(num / np.maximum(env, 1e-11)).float()
            rebuilt = torch.stft(y, n_fft=n_fft, hop_length=hop, win_length=cfg.win_length,
                                 window=self._window, center=False, return_complex=True)
            accelerated = rebuilt - (momentum / (1 + momentum)) * rebuilt_prev
            angles = accelerated / accelerated.abs().clamp_min(1e-16)
            rebuilt_prev = rebuilt
        self._last_phase = torch.angle(angles[:, -1])
        return self._frames_audio(mag * angles)

    # ------------------------------------------------------------------ offline twin
    @torch.no_grad()
    def reference(self, wave: np.ndarray) -> StreamOutput:
        """The same windows computed offline on a whole (N,) waveform, without streaming
        bookkeeping: the front-end STFT, :meth:`plan`, the network per window, ``torch.istft``
        with the input's phase. Streaming with ``phase="input"`` gives this to float rounding.
        """
        cfg = self.features
        x = torch.as_tensor(np.asarray(wave, dtype=np.float32))
        spec = self.obfuscator.frontend.stft(x[None])[0]  # (F, T)
        logmag = torch.log1p(spec.abs())
        feats, means, stds = [], [], []
        for block in self.plan(len(x)):
            if self.fixed_stats is not None:
                mean, std = self.fixed_stats
            else:
                seen = logmag[:, :block.window_stop].double()
                mean = float(seen.mean())
                std = max(float(seen.std(correction=0)), STD_FLOOR)
            window = (logmag[:, block.window_start:block.window_stop] - mean) / std
            out = self.obfuscator.obfuscate_features(window)
            first = block.start - block.window_start
            feats.append(out[:, first:first + block.stop - block.start])
            means.append(np.full(block.stop - block.start, mean))
            stds.append(np.full(block.stop - block.start, std))
        features = torch.cat(feats, dim=1)
        mean_t = torch.from_numpy(np.concatenate(means)).float()
        std_t = torch.from_numpy(np.concatenate(stds)).float()
        mag = features_to_magnitude(features, mean_t[None], std_t[None])
        audio = torch.istft(torch.polar(mag, torch.angle(spec)), n_fft=cfg.n_fft,
                            hop_length=cfg.hop_length, win_length=cfg.win_length,
                            window=self._window, center=True, length=len(x))
        return StreamOutput(features.numpy(), mean_t.double().numpy(), std_t.double().numpy(),
                            audio.numpy().astype(np.float32))

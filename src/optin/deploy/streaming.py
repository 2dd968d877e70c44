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
obfuscator with its default 120 ms chunks (12 frames: chunks are whole 4-frame steps, and a
chunk or window that is not is refused rather than rounded: :mod:`optin.deploy.budgets`).

Sources and sinks for ``optin stream`` (files, raw PCM pipes, a microphone) are
:mod:`optin.deploy.stream_io`. A network built for streaming (causal, each frame computed once,
a stream equal to offline obfuscation, 40 ms latency) streams with
:mod:`optin.deploy.causal_stream`, which reuses this class's front-end and audio out.

:class:`StreamingObfuscator` composes one part per job: block planning
(:mod:`~optin.deploy.stream_blocks`), the STFT buffer (:mod:`~optin.deploy.stream_stft`), the
front-end statistics (:mod:`~optin.deploy.stream_norm`) and the overlap-add
(:mod:`~optin.deploy.stream_overlap_add`); it runs the network and hands frames between them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from optin.audio.features import FeatureConfig, features_to_magnitude, make_window
from optin.deploy.budgets import frame_bytes
from optin.deploy.receptive_field import ReceptiveField, receptive_field
from optin.deploy.stream_blocks import Block, BlockPlanner
from optin.deploy.stream_norm import FrontEndStats
from optin.deploy.stream_overlap_add import OverlapAdd
from optin.deploy.stream_stft import StftBuffer, StreamError
from optin.errors import ConfigError
from optin.privacy.obfuscator import Obfuscator

__all__ = ["Block", "Normalization", "PhaseMode", "Run", "StreamError", "StreamOutput",
           "StreamingObfuscator"]

PhaseMode = Literal["input", "griffin-lim"]
Normalization = Literal["running", "fixed"]
Run = tuple[Block, Tensor, float, float]  # a block, its (F, k) frames out, mean, std


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
        chunk_ms: frames made final per network run: whole 4-frame steps (40 ms at a 10 ms
            hop), up to 10 s; anything else is refused (:mod:`optin.deploy.budgets`).
        window_ms: frames the network sees per run (default and minimum: left context +
            chunk + lookahead), whole 4-frame steps within the stream's memory budget.
        lookahead_ms: future frames per run (default and minimum: the receptive field's right
            extent, rounded up to a multiple of 4 frames).
        mean, std: fixed front-end statistics; both or neither (default: running statistics).
        phase: "input" (overlap-add with the input's phase) or "griffin-lim" (per chunk).
        griffin_lim_iters: iterations per chunk for ``phase="griffin-lim"``.
    """

    def __init__(
        self,
        obfuscator: Obfuscator,
        chunk_ms: float = 120.0,
        window_ms: float | None = None,
        lookahead_ms: float | None = None,
        mean: float | None = None,
        std: float | None = None,
        phase: PhaseMode = "input",
        griffin_lim_iters: int = 16,
    ) -> None:
        self._setup(obfuscator, chunk_ms, phase, griffin_lim_iters)
        cfg = self.features
        self._norm = FrontEndStats.from_settings(cfg.n_freq, mean, std, cfg.normalize)
        self.receptive_field: ReceptiveField = receptive_field(obfuscator.network)
        self.planner = BlockPlanner.for_network(
            self.receptive_field, self.hop_ms, chunk_ms, window_ms, lookahead_ms,
            frame_bytes(obfuscator.network, cfg.n_freq))
        self.reset()

    def _setup(self, obfuscator: Obfuscator, chunk_ms: float, phase: PhaseMode,
               griffin_lim_iters: int) -> None:
        """What every stream checks and keeps: the front-end, the phase rule, the window."""
        self.obfuscator = obfuscator
        cfg: FeatureConfig = obfuscator.features
        self.features = cfg
        self.hop = cfg.hop_length
        self.hop_ms = 1000.0 * cfg.hop_length / cfg.sample_rate
        if cfg.n_fft != cfg.win_length or cfg.n_fft != 2 * cfg.hop_length:
            raise ConfigError("streaming needs n_fft == win_length == 2 * hop_length, got "
                              f"{cfg.n_fft}, {cfg.win_length}, {cfg.hop_length}")
        if phase not in ("input", "griffin-lim"):
            raise ConfigError(f"phase must be 'input' or 'griffin-lim', got {phase!r}")
        if griffin_lim_iters < 1:
            raise ConfigError(f"griffin_lim_iters must be >= 1, got {griffin_lim_iters}")
        self.phase: PhaseMode = phase
        self.griffin_lim_iters = griffin_lim_iters
        self._window = make_window(cfg)  # (n_fft,)

    # ------------------------------------------------------------------ description
    @property
    def chunk_frames(self) -> int:
        """Frames made final per network run."""
        return self.planner.chunk_frames

    @property
    def lookahead_frames(self) -> int:
        """Future frames a run waits for."""
        return self.planner.lookahead_frames

    @property
    def window_frames(self) -> int:
        """Frames the network sees per run (a full-length window)."""
        return self.planner.window_frames

    @property
    def left_context_frames(self) -> int:
        """Frames of history before a chunk in a full-length window."""
        return self.planner.left_context_frames

    @property
    def fixed_stats(self) -> tuple[float, float] | None:
        """The fixed front-end (mean, std), or None for running statistics."""
        return self._norm.fixed

    @fixed_stats.setter
    def fixed_stats(self, stats: tuple[float, float] | None) -> None:
        self._norm.fixed = stats

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
        """The window of the block starting at frame ``start`` (a multiple of the chunk);
        ``total_frames`` is the stream's length once known (:meth:`BlockPlanner.block`)."""
        return self.planner.block(start, total_frames)

    def plan(self, n_samples: int) -> list[Block]:
        """Every block of a stream of ``n_samples`` samples, in order."""
        return self.planner.plan(self.features.frames(n_samples))

    # ------------------------------------------------------------------ streaming
    def reset(self) -> None:
        """Forget everything; the next push starts a new stream."""
        self._stft = StftBuffer(self.features, self._window)
        self._norm.reset()
        self._audio = OverlapAdd(self.features, self._window)
        self._next_block = 0  # the first frame no run has made final

    def push(self, samples: np.ndarray) -> StreamOutput:
        """Feed (n,) float samples at the feature rate; return what became final."""
        self._norm.add(self._stft.push(samples))
        return self._collect(self._run_ready(), final_samples=None)

    def flush(self) -> StreamOutput:
        """End the stream: run the remaining blocks and return the rest of the audio."""
        self._norm.add(self._stft.end())
        return self._collect(self._run_rest(), final_samples=self._stft.received)

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
    def _run_ready(self) -> list[Run]:
        """Run every block whose lookahead has arrived."""
        out = []
        while self.planner.ready(self._next_block, self._stft.frames):
            out.append(self._run(self.block(self._next_block)))
        return out

    def _run_rest(self) -> list[Run]:
        """Run the blocks left once the input has ended."""
        total = self._stft.frames
        out = []
        while self._next_block < total:
            out.append(self._run(self.block(self._next_block, total)))
        return out

    def _run(self, block: Block) -> Run:
        """Obfuscate one block; synthesise its audio into the overlap-add buffer."""
        mean, std = self._norm.stats(block.window_stop)
        window = (self._stft.logmag(block.window_start, block.window_stop) - mean) / std
        out = self.obfuscator.obfuscate_features(window)  # (F, window frames)
        first = block.start - block.window_start
        feats = out[:, first:first + block.stop - block.start]  # (F, k)
        self._synthesise(block, feats, mean, std)
        self._next_block = block.start + self.chunk_frames
        self._drop_frames()
        return block, feats, mean, std

    def _drop_frames(self) -> None:
        """Forget frames no later window can reach (nor the synthesis needs)."""
        self._forget_before(self.planner.first_needed(self._next_block))

    def _forget_before(self, frame: int) -> None:
        """Drop the frames before ``frame`` from the STFT buffer and the statistics."""
        self._stft.drop_before(frame)
        self._norm.drop_before(frame)

    def _synthesise(self, block: Block, feats: Tensor, mean: float, std: float) -> None:
        """Overlap-add the block's frames (F, k) into the output buffer."""
        mag = features_to_magnitude(feats, mean, std)  # (F, k)
        if self.phase == "input":
            phase = torch.angle(self._stft.spec(block.start, block.stop))
            self._audio.add_with_phase(block.start, mag, phase)
        else:
            self._audio.add_griffin_lim(block.start, mag, self.griffin_lim_iters)

    def _collect(self, runs: list[Run], final_samples: int | None) -> StreamOutput:
        """Gather the runs' features and emit the samples that became final."""
        start_frame = runs[0][0].start if runs else self._next_block
        # sample n needs frames n // hop and n // hop + 1
        upto = final_samples if final_samples is not None else max(
            0, (self._next_block - 1) * self.hop)
        out = StreamOutput.empty(self.features.n_freq, start_frame, self._audio.emitted)
        out.audio = self._audio.take(upto)
        if runs:
            out.features = torch.cat([r[1] for r in runs], dim=1).numpy()
            out.mean = np.concatenate([np.full(r[0].stop - r[0].start, r[2]) for r in runs])
            out.std = np.concatenate([np.full(r[0].stop - r[0].start, r[3]) for r in runs])
        return out

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
            mean, std = self._norm.offline(logmag, block.window_stop)
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

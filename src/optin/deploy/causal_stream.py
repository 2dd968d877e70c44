"""Streaming the causal obfuscator: every frame computed once, the output equal to offline.

:class:`CausalStreamingObfuscator` shares the front-end (centred STFT frames as their samples
arrive) and the audio out (overlap-add with the input's phase, or per-chunk Griffin-Lim) of
:class:`~optin.deploy.streaming.StreamingObfuscator`, and replaces its windowed network runs
with the network's own state (:meth:`~optin.models.causal_obfuscator.CausalObfuscator.step`):
each push runs exactly the frames that became complete, so the compute per second of audio
is the offline compute, and the frames out equal offline obfuscation of the same audio by the
same model (float rounding; tested to 1e-5 for any chunking from one 10 ms hop up).

No front-end statistics are needed: the network is scale-and-shift equivariant and streams
raw log magnitudes (``StreamOutput.mean`` 0, ``std`` 1; ``features`` are log1p magnitudes).

Latency (worst case, :attr:`~StreamingObfuscator.latency_samples`): one chunk + the network's
look-ahead + one hop: with 10 ms chunks and the default look-ahead of 2 frames,
``(1 + 2 + 1) * 160 - 1`` samples = 39.9 ms at 16 kHz.

The network step runs in PyTorch (:class:`TorchStepper`) or in ONNX Runtime on the graph of
``optin export --streaming`` (:class:`~optin.deploy.stream_graph.OnnxStepper`): anything
with ``reset()`` and ``__call__(frames (F, n), valid) -> (F, n)``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from optin.deploy.budgets import check_chunk_ms
from optin.deploy.receptive_field import ReceptiveField
from optin.deploy.stream_blocks import Block, BlockPlanner
from optin.deploy.stream_norm import FrontEndStats
from optin.deploy.streaming import PhaseMode, Run, StreamingObfuscator, StreamOutput
from optin.errors import ConfigError
from optin.models.causal_obfuscator import CausalObfuscator
from optin.privacy.obfuscator import Obfuscator


class Stepper(Protocol):
    """A causal network's step with its state."""

    def reset(self) -> None: ...

    def __call__(self, frames: Tensor, valid: bool) -> Tensor: ...


class TorchStepper:
    """:meth:`CausalObfuscator.step` on one stream, in PyTorch, state kept here."""

    def __init__(self, network: CausalObfuscator) -> None:
        self.network = network.eval()
        self.reset()

    def reset(self) -> None:
        self.state = self.network.initial_state(1)

    @torch.no_grad()
    def __call__(self, frames: Tensor, valid: bool) -> Tensor:
        """(F, n) log magnitudes (``valid``) or end-of-stream padding -> (F, n) outputs for
        the frames ``lookahead`` earlier."""
        mask = torch.full((1, frames.shape[1]), float(valid))
        out, self.state = self.network.step(frames[None].float(), self.state, mask)
        return out[0]


class CausalStreamingObfuscator(StreamingObfuscator):
    """Stream a :class:`CausalObfuscator`: see the module docstring.

    Args:
        obfuscator: a loaded obfuscator whose network is causal.
        chunk_ms: the piece of audio a caller pushes at a time (default one 10 ms hop): whole
            hops up to 10 s, anything else refused (:mod:`optin.deploy.budgets`); it sets
            :meth:`process`'s pieces and the latency, not the result.
        phase: "input" (overlap-add with the input's phase) or "griffin-lim" (per chunk).
        stepper: runs the network (default: PyTorch).
    """

    def __init__(self, obfuscator: Obfuscator, chunk_ms: float = 10.0,
                 phase: PhaseMode = "input", griffin_lim_iters: int = 16,
                 stepper: Stepper | None = None) -> None:
        network = obfuscator.network
        if not isinstance(network, CausalObfuscator):
            raise ConfigError("CausalStreamingObfuscator needs a causal obfuscator "
                              f"(obfuscator_arch 'causal'), got {type(network).__name__}")
        self._setup(obfuscator, chunk_ms, phase, griffin_lim_iters)
        self.network = network
        self.stepper: Stepper = stepper or TorchStepper(network)
        history = network.config.history
        self.receptive_field = ReceptiveField(left=history, right=network.lookahead, period=1)
        self.planner = BlockPlanner(
            chunk_frames=check_chunk_ms(chunk_ms, self.hop_ms, "a causal obfuscator's stream"),
            lookahead_frames=network.lookahead,
            window_frames=history + 1 + network.lookahead)  # what one output frame reads
        self._norm = FrontEndStats(self.features.n_freq)  # kept, never asked: no statistics
        self.reset()

    @property
    def normalization(self) -> str:  # type: ignore[override]
        return "cumulative"

    def describe(self) -> str:
        return (f"causal obfuscator: chunk {self.chunk_ms:g} ms, look-ahead "
                f"{self.lookahead_ms:g} ms, history {self.receptive_field.left} frames, "
                f"latency {self.latency_ms:.1f} ms, cumulative statistics, phase {self.phase}")

    def reset(self) -> None:
        super().reset()
        self._fed = 0  # frames given to the network
        self.stepper.reset()

    def _run_ready(self) -> list[Run]:
        run = self._advance(padding=False)
        return [run] if run is not None else []

    def _run_rest(self) -> list[Run]:
        runs = [self._advance(padding=False), self._advance(padding=True)]
        return [r for r in runs if r is not None]

    def _advance(self, padding: bool) -> Run | None:
        """Run the frames computed since the last run (or, at the end, the look-ahead's
        padding) and synthesise the output frames that became final."""
        la = self.lookahead_frames
        if padding:
            if not la:
                return None
            frames = torch.zeros(self.features.n_freq, la)
            start = self._stft.frames - la
        else:
            if self._fed == self._stft.frames:
                return None
            frames = self._stft.logmag(self._fed, self._stft.frames)
            start = self._fed - la
            self._fed = self._stft.frames
        out = self.stepper(frames, valid=not padding)  # (F, n) for frames start..
        skip = max(0, -start)  # outputs before frame 0 belong to no frame
        out, start = out[:, skip:], start + skip
        if out.shape[1] == 0:
            return None
        block = Block(start, start + out.shape[1], start, start + out.shape[1])
        self._synthesise(block, out, 0.0, 1.0)
        self._next_block = block.stop
        self._drop_frames()
        return block, out, 0.0, 1.0

    def _drop_frames(self) -> None:
        """Forget frames already synthesised (the network keeps its own history)."""
        self._forget_before(self._next_block)

    def calibrate(self, wave: np.ndarray) -> tuple[float, float]:
        raise ConfigError("a causal obfuscator needs no calibration: it is equivariant to the "
                          "level of its input")

    @torch.no_grad()
    def reference(self, wave: np.ndarray) -> StreamOutput:
        """Offline obfuscation of a whole (N,) waveform by the same network, with the input's
        phase: what the stream gives, to float rounding."""
        cfg = self.features
        x = torch.as_tensor(np.asarray(wave, dtype=np.float32))
        spec = self.obfuscator.frontend.stft(x[None])[0]  # (F, T)
        out = self.network(torch.log1p(spec.abs())[None])[0]  # (F, T) log1p magnitudes
        mag = torch.expm1(out).clamp_min(0.0)
        audio = torch.istft(torch.polar(mag, torch.angle(spec)), n_fft=cfg.n_fft,
                            hop_length=cfg.hop_length, win_length=cfg.win_length,
                            window=self._window, center=True, length=len(x))
        frames = out.shape[1]
        return StreamOutput(out.numpy(), np.zeros(frames), np.ones(frames),
                            audio.numpy().astype(np.float32))


def open_stream(obfuscator: Obfuscator, chunk_ms: float | None = None,
                phase: PhaseMode = "input", griffin_lim_iters: int = 16,
                stepper: Stepper | None = None,
                **windowed: float | None) -> StreamingObfuscator:
    """The stream that suits ``obfuscator``: stateful for a causal network (run by ``stepper``,
    default PyTorch), windowed for the paper's. ``windowed`` (``window_ms``, ``lookahead_ms``,
    ``mean``, ``std``) apply to the windowed stream only; given for a causal network they are
    refused, as is a ``stepper`` for the paper's."""
    obfuscator.refuse_whole_utterance("streaming")
    if obfuscator.streaming_native:
        given = sorted(k for k, v in windowed.items() if v is not None)
        if given:
            raise ConfigError(f"{', '.join(given)}: not settings of a causal obfuscator's "
                              "stream (its look-ahead is part of the model)")
        return CausalStreamingObfuscator(obfuscator, chunk_ms or 10.0, phase,
                                         griffin_lim_iters, stepper)
    if stepper is not None:
        raise ConfigError("a stepper runs a causal obfuscator; this is the paper's network")
    return StreamingObfuscator(obfuscator, chunk_ms or 120.0, phase=phase,
                               griffin_lim_iters=griffin_lim_iters, **windowed)

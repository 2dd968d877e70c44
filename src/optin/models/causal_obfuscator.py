"""A streaming-native obfuscator: causal convolutions over spectrogram frames.

The paper's obfuscator (:mod:`optin.models.cyclegan_vc2`) reads 56 frames ahead and normalises
over the whole utterance, so a stream can only approximate it. This network is built for a
stream: every frame is computed once, from the frames before it and ``lookahead`` frames
after it, and its output on a stream equals its output on the whole utterance.

====  ===========  =========================================================================
 #    stage        what it computes (``H`` hidden channels, ``k`` kernel, ``d`` dilation)
====  ===========  =========================================================================
 1    statistics   cumulative mean ``mu_t`` and std ``sigma_t`` of the input over frames
                   ``0..t`` and all bins (float64), ``z_t = (x_t - mu_t) / sigma_t``
 2    input        causal Conv1d F->H, kernel ``k``; FrameNorm; ``h * sigmoid(h)``
 3..  blocks       ``h + Conv1d 1x1 (FrameNorm(a * sigmoid(g)))``, ``a``, ``g`` causal Conv1d
                   H->H, kernel ``k``, dilation ``2^b``
 B+3  head         Conv1d 1x1 H->F (zero-initialised when ``residual``)
 B+4  output       ``y_t = mu_t + sigma_t * (z_t + head_{t+L})`` (``residual``) or
                   ``mu_t + sigma_t * head_{t+L}``; ``L`` = lookahead
====  ===========  =========================================================================

Frequency bins are the input channels (no 2D stage, no stride): each stage is a matrix product
per frame, about 1 MFLOP per 10 ms frame at H = 128 (the paper's obfuscator: about 10 MFLOP).
FrameNorm normalises each frame over its channels (no statistic over time). The look-ahead is a
delay: the causal core's output for frame ``t + L`` (which has seen ``z`` up to ``t + L``) is
added to ``z_t``; past the end of an utterance ``z`` is zero (the core's right padding), as
in :meth:`CausalObfuscator.step` when the stream is flushed.

**Scale and shift equivariance.** For ``a > 0``: ``F(a x + b) = a F(x) + b`` (the statistics
move with the input, ``z`` does not; the floor on ``sigma`` aside). So the network gives the
same spectrogram whether its input is the per-utterance normalised features of training and
offline obfuscation or the raw log magnitudes of a stream: no statistic of the utterance is
needed, and a stream needs no calibration.

Shapes: ``N`` batch, ``F`` frequency bins (``config.n_freq``), ``T`` frames (any T >= 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from optin.settings import Rule, StrictConfig, at_least, check_fields

STD_FLOOR = 1e-5  # the front-end's floor on a standard deviation
NORM_EPS = 1e-5


@dataclass
class CausalObfuscatorConfig(StrictConfig):
    """Constructor arguments of :class:`CausalObfuscator`; stored in checkpoints.

    Attributes:
        n_freq: frequency bins F (161 for a 320-point STFT).
        hidden: channels H of the causal core.
        blocks: residual blocks; block ``b`` has dilation ``2^b``.
        kernel: kernel size of the causal convolutions (along time).
        lookahead: frames after frame t that its output may read (latency: ``lookahead``
            hops).
        residual: output ``z + head`` with the head zero-initialised, so an untrained network
            is the identity.
    """

    n_freq: int = 161
    hidden: int = 128
    blocks: int = 4
    kernel: int = 3
    lookahead: int = 2
    residual: bool = True

    RANGES: ClassVar[dict[str, Rule]] = {
        "n_freq": at_least(1), "hidden": at_least(1), "blocks": at_least(0),
        "kernel": at_least(1), "lookahead": at_least(0)}

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def history(self) -> int:
        """Frames before frame t that its output reads (the receptive field's left side)."""
        return (self.kernel - 1) * (1 + sum(2**b for b in range(self.blocks)))


class FrameNorm(nn.Module):
    """Normalise every frame over its channels, then a per-channel affine: ``(N, C, T)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels, 1))
        self.bias = nn.Parameter(torch.zeros(channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, T)`` -> ``(N, C, T)``."""
        return self.last(x.transpose(1, 2)).transpose(1, 2)

    def last(self, x: Tensor) -> Tensor:
        """The same on channel-last frames ``(N, T, C)`` (one LayerNorm)."""
        return nnf.layer_norm(x, (x.shape[-1],), self.weight[:, 0], self.bias[:, 0], NORM_EPS)


class CausalConv1d(nn.Conv1d):
    """Conv1d that reads only the present and the past: output ``t`` from inputs
    ``t - (k - 1) d .. t``. Offline the past before frame 0 is zeros; a stream carries the last
    ``(k - 1) d`` inputs as its state."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int,
                 dilation: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel, dilation=dilation)
        self.context = (kernel - 1) * dilation

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C_in, T)`` -> ``(N, C_out, T)``."""
        return super().forward(nnf.pad(x, (self.context, 0)))

    def step(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """``(N, C_in, n)`` new frames and ``(N, C_in, context)`` past ones -> ``(N, C_out, n)``
        outputs and the new state (a convolution: the ONNX graph's Conv nodes)."""
        full = torch.cat([state, x], dim=2)  # (N, C_in, context + n)
        return super().forward(full), full[:, :, full.shape[2] - self.context:]

    def step_last(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`step` with channel-last frames ``(N, n, C_in)`` -> ``(N, n, C_out)``, as
        one matrix product over the gathered taps: on a CPU 20-50x faster than a convolution
        call for a frame or two; the same numbers to float rounding. The state keeps its
        ``(N, C_in, context)`` layout."""
        full = torch.cat([state.transpose(1, 2), x], dim=1)  # (N, context + n, C_in)
        d = self.dilation[0]
        taps = full.unfold(1, self.context + 1, 1)[..., ::d]  # (N, n, C_in, k)
        cols = taps.reshape(taps.shape[0], taps.shape[1], -1)  # (N, n, C_in * k)
        out = nnf.linear(cols, self.weight.reshape(self.out_channels, -1), self.bias)
        return out, full[:, full.shape[1] - self.context:].transpose(1, 2)


class CausalBlock(nn.Module):
    """``h + Conv1x1(FrameNorm(a * sigmoid(g)))`` with causal dilated ``a`` and ``g``."""

    def __init__(self, channels: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.conv = CausalConv1d(channels, 2 * channels, kernel, dilation)  # a and g at once
        self.norm = FrameNorm(channels)
        self.out = nn.Conv1d(channels, channels, 1)

    def _finish(self, h: Tensor, ag: Tensor) -> Tensor:
        a, g = ag.chunk(2, dim=1)
        return h + self.out(self.norm(a * g.sigmoid()))

    def forward(self, h: Tensor) -> Tensor:
        """``(N, H, T)`` -> ``(N, H, T)``."""
        return self._finish(h, self.conv(h))

    def step(self, h: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        ag, state = self.conv.step(h, state)
        return self._finish(h, ag), state

    def step_last(self, h: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`step` on channel-last frames ``(N, n, H)``."""
        ag, state = self.conv.step_last(h, state)
        a, g = ag.chunk(2, dim=2)
        u = self.norm.last(a * g.sigmoid())
        out = nnf.linear(u, self.out.weight[:, :, 0], self.out.bias)
        return h + out, state


@dataclass
class StreamState:
    """Everything a stream of :class:`CausalObfuscator` carries between chunks.

    Attributes:
        moments: (N, 3) float64: frames seen, sum and sum of squares of their values.
        convs: one (N, C_in, context) tensor per causal convolution, in order.
        z, mu, sigma: the last ``lookahead`` frames' (N, F, L) normalised input and
            (N, L) statistics, waiting for the core's look-ahead.
    """

    moments: Tensor
    convs: list[Tensor]
    z: Tensor
    mu: Tensor
    sigma: Tensor

    def tensors(self) -> list[Tensor]:
        """The state as a flat list (the ONNX graph's state inputs and outputs)."""
        return [self.moments, *self.convs, self.z, self.mu, self.sigma]

    @classmethod
    def from_tensors(cls, tensors: list[Tensor]) -> StreamState:
        return cls(tensors[0], list(tensors[1:-3]), tensors[-3], tensors[-2], tensors[-1])


def cumulative_moments(x: Tensor, valid: Tensor, moments: Tensor) -> tuple[Tensor, Tensor,
                                                                          Tensor]:
    """Per-frame cumulative mean and std over frames so far and all bins.

    Args:
        x: (N, F, n) input frames; valid: (N, n) 1 for a frame of the stream, 0 for padding
            past its end (not counted); moments: (N, 3) float64 from earlier frames.

    Returns:
        mu (N, n), sigma (N, n) float64, and the moments after the last frame.
    """
    xd = x.double()
    v = valid.double()
    per_frame = torch.stack([v * x.shape[1], (xd.sum(dim=1) * v), (xd * xd).sum(dim=1) * v],
                            dim=2)  # (N, n, 3)
    running = moments[:, None, :] + per_frame.cumsum(dim=1)  # (N, n, 3)
    count = running[..., 0].clamp_min(1.0)
    mu = running[..., 1] / count
    var = (running[..., 2] / count - mu * mu).clamp_min(0.0)
    last = torch.cat([moments[:, None, :], running], dim=1)[:, -1, :]  # n = 0 keeps moments
    return mu, var.sqrt().clamp_min(STD_FLOOR), last


class CausalObfuscator(nn.Module):
    """Causal, scale-and-shift-equivariant obfuscator: ``(N, F, T)`` -> ``(N, F, T)``.

    ``forward`` runs whole utterances; :meth:`initial_state` and :meth:`step` run a stream
    chunk by chunk with the same result (see the module docstring).
    """

    def __init__(self, config: CausalObfuscatorConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else CausalObfuscatorConfig()
        cfg = self.config
        self.input = CausalConv1d(cfg.n_freq, cfg.hidden, cfg.kernel)
        self.input_norm = FrameNorm(cfg.hidden)
        self.blocks = nn.ModuleList(
            CausalBlock(cfg.hidden, cfg.kernel, 2**b) for b in range(cfg.blocks))
        self.head = nn.Conv1d(cfg.hidden, cfg.n_freq, 1)
        if cfg.residual:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    @property
    def lookahead(self) -> int:
        return self.config.lookahead

    def _convs(self) -> list[CausalConv1d]:
        return [self.input, *(block.conv for block in self.blocks)]

    def _core(self, z: Tensor) -> Tensor:
        """``(N, F, T)`` normalised frames -> ``(N, F, T)`` head output, causal."""
        h = self.input_norm(self.input(z))
        h = h * h.sigmoid()
        for block in self.blocks:
            h = block(h)
        return self.head(h)

    def _core_step(self, z: Tensor, states: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """:meth:`_core` on new frames ``(N, F, n)`` with the convolutions' states."""
        convs = []
        h, s = self.input.step(z, states[0])
        convs.append(s)
        h = self.input_norm(h)
        h = h * h.sigmoid()
        for block, s in zip(self.blocks, states[1:], strict=True):
            h, s = block.step(h, s)
            convs.append(s)
        return self.head(h), convs

    def _core_step_last(self, z: Tensor, states: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """:meth:`_core_step` computed channel-last with matrix products (the CPU's fast
        path for a few frames at a time)."""
        convs = []
        h, s = self.input.step_last(z.transpose(1, 2), states[0])  # (N, n, H)
        convs.append(s)
        h = nnf.silu(self.input_norm.last(h))
        for block, s in zip(self.blocks, states[1:], strict=True):
            h, s = block.step_last(h, s)
            convs.append(s)
        head = nnf.linear(h, self.head.weight[:, :, 0], self.head.bias)  # (N, n, F)
        return head.transpose(1, 2), convs

    def _combine(self, z: Tensor, head: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
        out = z + head if self.config.residual else head
        return (mu[:, None, :] + sigma[:, None, :] * out.double()).to(z.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, F, T)`` spectrogram (normalised or log magnitude) -> ``(N, F, T)``."""
        assert x.ndim == 3, f"expected (N, F, T), got {tuple(x.shape)}"
        assert x.size(1) == self.config.n_freq, f"expected F={self.config.n_freq}, got {x.size(1)}"
        n, _, t = x.shape
        zeros = x.new_zeros(n, 3, dtype=torch.float64)
        mu, sigma, _ = cumulative_moments(x, x.new_ones(n, t), zeros)
        z = ((x.double() - mu[:, None, :]) / sigma[:, None, :]).to(x.dtype)
        head = self._core(nnf.pad(z, (0, self.lookahead)))[:, :, self.lookahead:]
        return self._combine(z, head, mu, sigma)

    def initial_state(self, batch: int = 1, device: torch.device | str = "cpu") -> StreamState:
        """The state before the first frame of a stream."""
        cfg = self.config
        return StreamState(
            moments=torch.zeros(batch, 3, dtype=torch.float64, device=device),
            convs=[torch.zeros(batch, c.in_channels, c.context, device=device)
                   for c in self._convs()],
            z=torch.zeros(batch, cfg.n_freq, cfg.lookahead, device=device),
            mu=torch.zeros(batch, cfg.lookahead, dtype=torch.float64, device=device),
            sigma=torch.zeros(batch, cfg.lookahead, dtype=torch.float64, device=device))

    def step(self, x: Tensor, state: StreamState, valid: Tensor | None = None,
             matmul: bool = True) -> tuple[Tensor, StreamState]:
        """Run ``n`` new frames of a stream.

        Args:
            x: (N, F, n) frames (any n >= 1); valid: (N, n) 1 for stream frames, 0 for the
                ``lookahead`` padding frames that end a stream (default all 1).

        Returns:
            (N, F, n) outputs for the frames ``lookahead`` before the new ones (the first
            ``lookahead`` outputs of a stream belong to no frame: drop them), and the state.
            ``matmul``: channel-last matrix products (:meth:`CausalConv1d.step_last`, the
            CPU's fast path); False: the convolutions, as the ONNX step graph runs them.
        """
        if x.shape[2] == 0:  # nothing new (e.g. flushing a stream with no look-ahead)
            return x, state
        if valid is None:
            valid = x.new_ones(x.shape[0], x.shape[2])
        mu, sigma, moments = cumulative_moments(x, valid, state.moments)
        z = ((x.double() - mu[:, None, :]) / sigma[:, None, :]).to(x.dtype) * valid[:, None, :]
        if matmul:
            head, convs = self._core_step_last(z, state.convs)
        else:
            head, convs = self._core_step(z, state.convs)  # (N, F, n): frames t - lookahead
        la = self.lookahead
        z_all = torch.cat([state.z, z], dim=2)
        mu_all = torch.cat([state.mu, mu], dim=1)
        sigma_all = torch.cat([state.sigma, sigma], dim=1)
        n = x.shape[2]
        out = self._combine(z_all[:, :, :n], head, mu_all[:, :n], sigma_all[:, :n])
        keep = z_all.shape[2] - la
        return out, StreamState(moments, convs, z_all[:, :, keep:], mu_all[:, keep:],
                                sigma_all[:, keep:])

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (all, or only those with ``requires_grad``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

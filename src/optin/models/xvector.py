"""The x-vector speaker embedding network (Snyder et al. 2018), on the project's features.

Shapes: ``B`` batch, ``F`` frequency bins (161), ``T`` frames, ``M`` mel filters (30),
``C`` frame-level width, ``P`` width of the last frame-level layer, ``E`` embedding size,
``K`` training speakers.

Layout (spec, models.md "x-vectors"):

* input: (B, F, T) normalised log spectrogram -> :class:`~optin.audio.filterbank.LogMelFilterbank`
  -> (B, M, T) mean-normalised filterbank;
* frame level: five TDNN layers with contexts [t-2..t+2], {t-2,t,t+2}, {t-3,t,t+3}, {t}, {t}
  (:data:`FRAME_CONTEXTS`), widths C, C, C, C, P (paper 512 and 1500); each is
  affine -> ReLU -> BatchNorm as in the Kaldi recipe; 15 frames of receptive field;
* statistics pooling: mean and standard deviation over the valid frames -> (B, 2P);
* segment level: two layers of E (paper 512), affine -> ReLU -> BatchNorm; a linear softmax
  layer over the K training speakers.

The x-vector is the output of the first segment-level affine layer, before its ReLU (where the
Kaldi recipe extracts it), (B, E).

**Choice** (edges): each TDNN layer zero-pads in time ("same" length), and padded frames are set
to 0 after every layer, so an utterance gives the same embedding alone or padded in a batch, and
utterances shorter than the receptive field still work. Kaldi instead drops 7 frames at each end.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from optin.audio.filterbank import LogMelFilterbank
from optin.settings import StrictConfig

# frame offsets each frame-level layer reads, relative to its output frame
FRAME_CONTEXTS: tuple[tuple[int, ...], ...] = (
    (-2, -1, 0, 1, 2), (-2, 0, 2), (-3, 0, 3), (0,), (0,),
)
STD_FLOOR = 1e-5  # variance floor of statistics pooling (constant frames have std ~ 3e-3)


def receptive_field(contexts: tuple[tuple[int, ...], ...] = FRAME_CONTEXTS) -> int:
    """Input frames one output frame of the frame-level stack depends on (15 for the spec)."""
    return 1 + sum(max(c) - min(c) for c in contexts)


def frame_mask(lengths: Tensor, total: int) -> Tensor:
    """(B, total) bool, True on valid frames (index < length)."""
    return torch.arange(total, device=lengths.device)[None, :] < lengths[:, None]


@dataclass
class XVectorConfig(StrictConfig):
    """Constructor arguments of :class:`XVector`; stored in checkpoints.

    Attributes:
        n_speakers: training speakers K (softmax outputs).
        n_freq, sample_rate: the spectrogram the model reads (161 bins at 16 kHz).
        n_mels, f_min: the mel filterbank (spec: 24-30 filterbanks; 30 here).
        frame_channels: width C of frame-level layers 1-4 (paper 512).
        pool_channels: width P of frame-level layer 5, the one pooled (paper 1500).
        embed_dim: first segment-level layer E, the x-vector (paper 512).
        segment_dim: second segment-level layer (paper 512).
    """

    n_speakers: int = 2
    n_freq: int = 161
    sample_rate: int = 16000
    n_mels: int = 30
    f_min: float = 20.0
    frame_channels: int = 512
    pool_channels: int = 1500
    embed_dim: int = 512
    segment_dim: int = 512

    def __post_init__(self) -> None:
        for name in ("n_freq", "n_mels", "frame_channels", "pool_channels", "embed_dim",
                     "segment_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_speakers < 2:
            raise ValueError(f"n_speakers must be >= 2, got {self.n_speakers}")


class TDNNLayer(nn.Module):
    """One frame-level layer: dilated Conv1d over a symmetric, evenly spaced context, ReLU,
    BatchNorm1d; padded frames zeroed."""

    def __init__(self, in_channels: int, out_channels: int, context: tuple[int, ...]) -> None:
        super().__init__()
        step = context[1] - context[0] if len(context) > 1 else 1
        expected = tuple(range(context[0], context[-1] + 1, step))
        if context != expected or context[0] != -context[-1]:
            raise ValueError(f"context {context} is not symmetric and evenly spaced")
        self.context = context
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=len(context),
                              dilation=step, padding=context[-1])
        self.bn = nn.BatchNorm1d(out_channels)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, C_in, T), mask (B, 1, T) float -> (B, C_out, T), 0 on padded frames."""
        return self.bn(torch.relu(self.conv(x))) * mask


def stats_pool(x: Tensor, lengths: Tensor) -> Tensor:
    """Mean and standard deviation over valid frames.

    Args:
        x: (B, C, T) frame-level outputs.
        lengths: (B,) valid frames, each >= 1.

    Returns:
        (B, 2C): [mean, std] (population std, variance floored at ``STD_FLOOR``).
    """
    mask = frame_mask(lengths, x.shape[-1])[:, None, :].to(x.dtype)  # (B, 1, T)
    count = lengths.to(x.dtype).clamp_min(1.0)[:, None]  # (B, 1)
    mean = (x * mask).sum(dim=2) / count  # (B, C)
    var = (((x - mean[:, :, None]) ** 2) * mask).sum(dim=2) / count  # (B, C)
    return torch.cat([mean, var.clamp_min(STD_FLOOR).sqrt()], dim=1)  # (B, 2C)


class XVector(nn.Module):
    """x-vector TDNN: (B, F, T) features -> speaker logits (B, K) or embeddings (B, E)."""

    def __init__(self, config: XVectorConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else XVectorConfig()
        cfg = self.config
        self.filterbank = LogMelFilterbank(cfg.n_freq, cfg.sample_rate, cfg.n_mels, cfg.f_min)
        widths = [cfg.frame_channels] * (len(FRAME_CONTEXTS) - 1) + [cfg.pool_channels]
        inputs = [cfg.n_mels, *widths[:-1]]
        self.frame_layers = nn.ModuleList(
            TDNNLayer(i, o, c) for i, o, c in zip(inputs, widths, FRAME_CONTEXTS, strict=True)
        )
        self.segment1 = nn.Linear(2 * cfg.pool_channels, cfg.embed_dim)
        self.segment1_post = nn.Sequential(nn.ReLU(), nn.BatchNorm1d(cfg.embed_dim))
        self.segment2 = nn.Sequential(nn.Linear(cfg.embed_dim, cfg.segment_dim), nn.ReLU(),
                                      nn.BatchNorm1d(cfg.segment_dim))
        self.output = nn.Linear(cfg.segment_dim, cfg.n_speakers)

    def _lengths(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        if lengths is None:
            return torch.full((x.shape[0],), x.shape[-1], dtype=torch.long, device=x.device)
        assert lengths.shape == (x.shape[0],), (
            f"lengths must be (B,) = ({x.shape[0]},), got {tuple(lengths.shape)}")
        return lengths.to(x.device).clamp(1, x.shape[-1])

    def frame_level(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, F, T) features -> (B, P, T) last frame-level layer, 0 on padded frames."""
        assert x.ndim == 3, f"expected (B, F, T), got {tuple(x.shape)}"
        lengths = self._lengths(x, lengths)
        mask = frame_mask(lengths, x.shape[-1])[:, None, :].to(x.dtype)  # (B, 1, T)
        h = self.filterbank(x, lengths)  # (B, M, T)
        for layer in self.frame_layers:
            h = layer(h, mask)  # (B, C, T)
        return h

    def embed(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, F, T) features, (B,) valid frames -> (B, E) x-vectors."""
        assert x.ndim == 3, f"expected (B, F, T), got {tuple(x.shape)}"
        lengths = self._lengths(x, lengths)
        stats = stats_pool(self.frame_level(x, lengths), lengths)  # (B, 2P)
        return self.segment1(stats)  # (B, E)

    def classify(self, embedding: Tensor) -> Tensor:
        """(B, E) x-vectors -> (B, K) speaker logits (the rest of the segment level)."""
        assert embedding.ndim == 2, f"expected (B, E), got {tuple(embedding.shape)}"
        h = self.segment1_post(embedding)  # (B, E)
        return self.output(self.segment2(h))  # (B, K)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, F, T) features, (B,) valid frames -> (B, K) speaker logits."""
        return self.classify(self.embed(x, lengths))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

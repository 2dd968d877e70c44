"""Fixed-length segments of a spectrogram, and the map from segments back to utterances.

The paper's classifier predicts once per segment and votes over an utterance's segments.

Rule (``length`` L and ``hop`` H in frames, utterance of T frames):
* T <= L: one segment, the utterance zero-padded on the right to L (0 is the utterance mean
  after normalisation); its ``lengths`` entry is T so a model can mask the padding.
* T > L: segments start at 0, H, 2H, ... while they fit; if the last one stops before T, one
  more segment is added that ends exactly at T (it overlaps its neighbour), so every frame is
  covered and no segment is padded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SegmentConfig:
    """Segment length and hop in frames (10 ms each): 1 s segments every 0.5 s by default."""

    length: int = 100
    hop: int = 50

    def __post_init__(self) -> None:
        if self.length < 1 or self.hop < 1:
            raise ValueError(f"segment length and hop must be >= 1 (got {self.length}, {self.hop})")

    def to_dict(self) -> dict:
        return asdict(self)


def segment_starts(frames: int, length: int, hop: int) -> list[int]:
    """Start frames of the segments of a T-frame utterance (see the module rule)."""
    if frames <= 0:
        raise ValueError("an utterance needs at least one frame")
    if frames <= length:
        return [0]
    starts = list(range(0, frames - length + 1, hop))
    if starts[-1] + length < frames:
        starts.append(frames - length)
    return starts


def segment(features: Tensor, config: SegmentConfig | None = None) -> tuple[Tensor, Tensor]:
    """Cut one utterance into segments.

    Args:
        features: (F, T) spectrogram.

    Returns:
        segments (S, F, L) and lengths (S,) valid frames per segment.
    """
    cfg = config or SegmentConfig()
    assert features.ndim == 2, f"expected (F, T), got {tuple(features.shape)}"
    n_freq, frames = features.shape
    if frames <= cfg.length:
        padded = features.new_zeros(1, n_freq, cfg.length)
        padded[0, :, :frames] = features
        return padded, torch.tensor([frames], dtype=torch.long)
    starts = segment_starts(frames, cfg.length, cfg.hop)
    segs = torch.stack([features[:, s : s + cfg.length] for s in starts])  # (S, F, L)
    return segs, torch.full((len(starts),), cfg.length, dtype=torch.long)


def segment_batch(
    utterances: Sequence[Tensor], config: SegmentConfig | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Segment several utterances and remember which segment came from which.

    Args:
        utterances: U tensors of shape (F, T_u).

    Returns:
        segments (S, F, L), lengths (S,), utterance_index (S,) in 0..U-1.
    """
    segs, lens, index = [], [], []
    for u, feats in enumerate(utterances):
        s, n = segment(feats, config)
        segs.append(s)
        lens.append(n)
        index.append(torch.full((s.shape[0],), u, dtype=torch.long))
    return torch.cat(segs), torch.cat(lens), torch.cat(index)


def count_segments(frames: int, config: SegmentConfig | None = None) -> int:
    """How many segments ``segment`` makes of a T-frame utterance."""
    cfg = config or SegmentConfig()
    return len(segment_starts(frames, cfg.length, cfg.hop))

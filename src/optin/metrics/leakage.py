"""Fixed-size summaries of an utterance's features, for fast leakage screening.

:func:`utterance_statistics` turns the normalised log-spectrogram of one utterance, (F, T) with
any number of frames T, into one vector of D = 3 F + 2 B numbers (B coarse bands), so that a
small classifier on vectors (:mod:`optin.evaluation.gauge`) can ask how much of an attribute a
corpus (or its protected copy) still carries. Pure tensors: no files, no models.
"""

from __future__ import annotations

import torch
from torch import Tensor

BANDS = 8  # coarse frequency bands of the energy contour


def statistics_size(n_freq: int, bands: int = BANDS) -> int:
    """D, the length of :func:`utterance_statistics` for ``n_freq`` frequency bins."""
    return 3 * n_freq + 2 * bands


def utterance_statistics(features: Tensor, bands: int = BANDS) -> Tensor:
    """Summarise an utterance's features (F, T) as one vector (D,), D = 3 F + 2 ``bands``.

    In order:

    * ``[0, F)``: the mean over time of each frequency bin (the long-term spectrum: timbre,
      vocal tract, recording channel);
    * ``[F, 2F)``: the standard deviation over time of each bin (how much it moves);
    * ``[2F, 3F)``: the standard deviation over time of each bin's first frame difference
      ``x[:, t+1] - x[:, t]`` (how fast it moves: articulation rate, vibrato, roughness);
    * ``[3F, 3F + B)``: the mean over time of the band-energy contour, the average of the
      bins of each of ``bands`` contiguous, near-equal frequency bands per frame (B, T);
    * ``[3F + B, 3F + 2B)``: the standard deviation over time of that contour (the prosody of
      each band: loudness and pitch-range movement).

    Standard deviations are population ones (divide by T), so one frame gives zeros, never NaN;
    the frame-difference part is zero below two frames. Non-finite input values are counted
    as 0. The result is float32 on the input's device.

    Raises:
        ValueError: not a 2-D tensor, no frames, or fewer bins than ``bands``.
    """
    if features.ndim != 2:
        raise ValueError(f"utterance_statistics: expected (F, T), got {tuple(features.shape)}")
    n_freq, n_frames = features.shape
    if n_frames == 0:
        raise ValueError("utterance_statistics: the utterance has no frames")
    if not 1 <= bands <= n_freq:
        raise ValueError(f"utterance_statistics: {bands} bands for {n_freq} frequency bins")
    x = torch.nan_to_num(features.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)
    mean = x.mean(dim=1)
    std = x.std(dim=1, correction=0)
    delta = (x.diff(dim=1).std(dim=1, correction=0) if n_frames > 1
             else torch.zeros_like(mean))
    contour = torch.stack([part.mean(dim=0) for part in torch.tensor_split(x, bands, dim=0)])
    return torch.cat([mean, std, delta, contour.mean(dim=1), contour.std(dim=1, correction=0)])

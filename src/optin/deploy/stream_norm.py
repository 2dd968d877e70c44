"""The front-end normalisation of a windowed stream (:mod:`optin.deploy.streaming`, rule 3).

Offline, features are log magnitudes normalised by the utterance's mean and std. A stream uses
either fixed numbers (given, or calibrated on a recording) or *running* statistics: the mean and
std of every log-magnitude value received up to a window's end. :class:`FrontEndStats` keeps, for
that, each held frame's sum and sum of squares (float64) and the totals of the frames it forgot.
"""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

from optin.audio.features import STD_FLOOR
from optin.errors import ConfigError


class FrontEndStats:
    """Front-end (mean, std) for windows of a stream: fixed, or running over the frames so far.

    Args:
        n_freq: frequency bins per frame (F).
        fixed: (mean, std) for every window, or None for running statistics.
    """

    def __init__(self, n_freq: int, fixed: tuple[float, float] | None = None) -> None:
        self.n_freq = n_freq
        self.fixed = fixed
        self.reset()

    @classmethod
    def from_settings(cls, n_freq: int, mean: float | None, std: float | None,
                      normalize: bool = True) -> FrontEndStats:
        """Checked settings: both ``mean`` and ``std`` or neither, ``std > 0``; a front-end that
        does not normalise has fixed statistics (0, 1)."""
        if (mean is None) != (std is None):
            raise ConfigError("give both mean and std, or neither")
        if std is not None and std <= 0:
            raise ConfigError(f"std must be > 0, got {std}")
        if not normalize:
            mean, std = 0.0, 1.0
        return cls(n_freq, None if mean is None else (float(mean), float(std)))

    def reset(self) -> None:
        """Forget the stream's frames (fixed statistics stay)."""
        self._base = 0  # absolute index of the first held frame
        self._frame_sum = np.zeros(0)  # per held frame: sum and sum of squares (float64)
        self._frame_sq = np.zeros(0)
        self._dropped = [0.0, 0.0]  # sum and sum of squares of the frames forgotten

    def add(self, logmag: Tensor) -> None:
        """Count the next frames' (F, k) log magnitudes."""
        if logmag.shape[1] == 0:
            return
        lm = logmag.double()
        self._frame_sum = np.concatenate([self._frame_sum, lm.sum(0).numpy()])
        self._frame_sq = np.concatenate([self._frame_sq, (lm**2).sum(0).numpy()])

    def stats(self, stop: int) -> tuple[float, float]:
        """(mean, std) for a window ending at frame ``stop``: over frames ``[0, stop)``."""
        if self.fixed is not None:
            return self.fixed
        k = stop - self._base
        total = self._dropped[0] + float(self._frame_sum[:k].sum())
        total_sq = self._dropped[1] + float(self._frame_sq[:k].sum())
        count = stop * self.n_freq
        mean = total / count
        var = max(total_sq / count - mean * mean, 0.0)
        return mean, max(math.sqrt(var), STD_FLOOR)

    def drop_before(self, frame: int) -> None:
        """Fold the frames before ``frame`` into the totals (no-op when none is held)."""
        k = frame - self._base
        if k <= 0:
            return
        self._dropped[0] += float(self._frame_sum[:k].sum())
        self._dropped[1] += float(self._frame_sq[:k].sum())
        self._frame_sum, self._frame_sq = self._frame_sum[k:], self._frame_sq[k:]
        self._base = frame

    def offline(self, logmag: Tensor, stop: int) -> tuple[float, float]:
        """What :meth:`stats` gives, computed directly from a whole utterance's (F, T) log
        magnitudes: the fixed numbers, or the mean and std of frames ``[0, stop)``."""
        if self.fixed is not None:
            return self.fixed
        seen = logmag[:, :stop].double()
        return float(seen.mean()), max(float(seen.std(correction=0)), STD_FLOOR)

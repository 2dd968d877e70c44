"""Audio out of a stream: obfuscated frames -> samples by inverse STFT and overlap-add.

Each frame's magnitudes (F,) get a phase, are inverted to ``n_fft`` windowed samples and added
into a buffer, together with the squared window (the envelope); a sample is final once every
frame that reaches it has been added, and comes out as the sum divided by the envelope: what
``torch.istft`` computes for the whole signal (centred frames: samples before 0 are dropped).

The phase is the input's own (:meth:`OverlapAdd.add_with_phase`), or comes from per-chunk fast
Griffin-Lim (:meth:`OverlapAdd.add_griffin_lim`): the chunk's phases are iterated with the audio
already emitted held fixed, starting from the previous frame's phase advanced by each bin's
centre frequency.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from optin.audio.features import FeatureConfig


class OverlapAdd:
    """The overlap-add buffer of a stream, from sample :attr:`emitted` on.

    Args:
        config: the front-end (``n_fft``, ``hop_length``, ``win_length``).
        window: (n_fft,) the analysis and synthesis window.
    """

    def __init__(self, config: FeatureConfig, window: Tensor) -> None:
        self.config = config
        self.window = window
        self.envelope = (window**2).numpy().astype(np.float64)  # (n_fft,)
        self.emitted = 0  # samples emitted
        self._ola = np.zeros(0)  # overlap-add numerator and window envelope from `emitted`
        self._env = np.zeros(0)
        self._last_phase: Tensor | None = None  # (F,) phase of the last synthesised frame

    def add_with_phase(self, start: int, mag: Tensor, phase: Tensor) -> None:
        """Add frames ``start..`` from (F, k) magnitudes and (F, k) phases."""
        self._overlap_add(start, self.frames_audio(torch.polar(mag, phase)))

    def add_griffin_lim(self, start: int, mag: Tensor, iters: int) -> None:
        """Add frames ``start..`` from (F, k) magnitudes, phases by ``iters`` iterations of
        per-chunk Griffin-Lim."""
        self._overlap_add(start, self._griffin_lim(start, mag, iters))

    def take(self, upto: int) -> np.ndarray:
        """Emit the samples up to absolute sample ``upto`` (exclusive): (n,) float32."""
        n = max(0, upto - self.emitted)
        audio = (self._ola[:n] / np.maximum(self._env[:n], 1e-11)).astype(np.float32)
        self._ola, self._env = self._ola[n:], self._env[n:]
        self.emitted += n
        return audio

    def frames_audio(self, spec: Tensor) -> np.ndarray:
        """(F, k) complex -> (n_fft, k) windowed frames, float64."""
        frames = torch.fft.irfft(spec, n=self.config.n_fft, dim=0) * self.window[:, None]
        return frames.double().numpy()

    def _overlap_add(self, start: int, frames: np.ndarray) -> None:
        """Add (n_fft, k) windowed frames for frames ``start..`` into the buffers."""
        n_fft, hop = self.config.n_fft, self.config.hop_length
        k = frames.shape[1]
        end = (start + k - 1) * hop + n_fft // 2  # one past the last sample touched
        grow = end - self.emitted - len(self._ola)
        if grow > 0:
            self._ola = np.concatenate([self._ola, np.zeros(grow)])
            self._env = np.concatenate([self._env, np.zeros(grow)])
        half = n_fft // 2
        for i in range(k):
            first = (start + i) * hop - half  # absolute sample of the frame's first value
            cut = max(0, -first)  # centred frames: samples before 0 are dropped
            lo = first + cut - self.emitted
            assert lo >= 0, "a frame reached samples that were already emitted"
            self._ola[lo:lo + n_fft - cut] += frames[cut:, i]
            self._env[lo:lo + n_fft - cut] += self.envelope[cut:]

    def _griffin_lim(self, start: int, mag: Tensor, iters: int) -> np.ndarray:
        """Per-chunk fast Griffin-Lim: (F, k) magnitudes of frames ``start..`` -> (n_fft, k)
        windowed frames whose overlap-add, with the audio already committed on the left held
        fixed, is consistent with ``mag``."""
        cfg = self.config
        n_fft, hop, k = cfg.n_fft, cfg.hop_length, mag.shape[1]
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
            env[i * hop:i * hop + n_fft] += self.envelope
        angles = torch.polar(torch.ones_like(mag), phase)
        rebuilt_prev = torch.zeros_like(angles)
        momentum = 0.99
        for _ in range(iters):
            frames = self.frames_audio(mag * angles)  # (n_fft, k)
            num = num0.copy()
            for i in range(k):
                num[i * hop:i * hop + n_fft] += frames[:, i]
            y = torch.from_numpy(num / np.maximum(env, 1e-11)).float()
            rebuilt = torch.stft(y, n_fft=n_fft, hop_length=hop, win_length=cfg.win_length,
                                 window=self.window, center=False, return_complex=True)
            accelerated = rebuilt - (momentum / (1 + momentum)) * rebuilt_prev
            angles = accelerated / accelerated.abs().clamp_min(1e-16)
            rebuilt_prev = rebuilt
        self._last_phase = torch.angle(angles[:, -1])
        return self.frames_audio(mag * angles)

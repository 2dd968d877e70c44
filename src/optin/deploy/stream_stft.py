"""The front-end of a stream: samples in, centred STFT frames out as soon as their samples are in.

The offline front-end (:mod:`optin.audio.features`) reflect-pads the utterance by ``n_fft // 2``
at both ends and takes hop-spaced frames. :class:`StftBuffer` does the same on a stream: the
reflect prefix exists once ``n_fft // 2 + 1`` samples have arrived, every frame is computed when
its last sample arrives, and :meth:`StftBuffer.end` reflect-pads the end. It keeps the complex
spectrum and the log magnitude of the frames a later window may read, from :attr:`base` on.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from optin.audio.features import FeatureConfig
from optin.errors import OptinError


class StreamError(OptinError, ValueError):
    """Bad input to a stream (wrong shape, NaN, too short, pushed after flush)."""


def checked_samples(samples: np.ndarray) -> np.ndarray:
    """(n,) float samples as float32, or :class:`StreamError` (not mono, not float, not finite)."""
    x = np.asarray(samples)
    if x.ndim != 1:
        raise StreamError(f"expected mono samples (n,), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise StreamError(f"expected float samples, got {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise StreamError("samples contain NaN or infinity")
    return x


class StftBuffer:
    """Centred STFT frames of a stream of samples, computed as the samples arrive.

    Attributes:
        received: samples received.
        frames: frames computed (absolute count).
        base: absolute index of the first frame still held.
        closed: the input has ended (:meth:`end`).
    """

    def __init__(self, config: FeatureConfig, window: Tensor) -> None:
        self.config = config
        self.window = window  # (n_fft,)
        self.received = 0
        self.frames = 0
        self.base = 0
        self.closed = False
        self._pending = np.zeros(0, np.float32)  # samples before the reflect prefix exists
        self._tail = np.zeros(0, np.float32)  # the last n_fft // 2 + 1 samples received
        self._padded: np.ndarray | None = None  # reflect-padded stream from _padded_base
        self._padded_base = 0
        self._logmag = torch.zeros(config.n_freq, 0)  # (F, held frames)
        self._spec = torch.zeros(config.n_freq, 0, dtype=torch.complex64)

    def push(self, samples: np.ndarray) -> Tensor:
        """Take (n,) float samples; return the log magnitudes (F, k) of the k frames they
        complete (k may be 0)."""
        if self.closed:
            raise StreamError("the stream was flushed; call reset() to start another")
        self._append(checked_samples(samples))
        return self._compute_frames()

    def end(self) -> Tensor:
        """Close the input: reflect-pad its end; return the last frames' log magnitudes (F, k)."""
        if self.closed:
            raise StreamError("the stream was already flushed")
        half = self.config.n_fft // 2
        if self.received <= half:
            raise StreamError(f"the stream holds {self.received} samples: the front-end needs "
                              f"more than {half}")
        self.closed = True
        # reflect padding at the end: x[N-2], x[N-3], ..., x[N-1-half]
        self._extend_padded(self._tail[-half - 1:-1][::-1].copy())
        return self._compute_frames()

    def logmag(self, start: int, stop: int) -> Tensor:
        """(F, stop - start) log1p magnitudes of frames ``[start, stop)`` (held frames only)."""
        return self._logmag[:, start - self.base:stop - self.base]

    def spec(self, start: int, stop: int) -> Tensor:
        """(F, stop - start) complex spectrum of frames ``[start, stop)`` (held frames only)."""
        return self._spec[:, start - self.base:stop - self.base]

    def drop_before(self, frame: int) -> None:
        """Forget the frames before ``frame`` (no-op when none is held)."""
        k = frame - self.base
        if k <= 0:
            return
        self._logmag, self._spec = self._logmag[:, k:], self._spec[:, k:]
        self.base = frame

    def _append(self, x: np.ndarray) -> None:
        self.received += len(x)
        half = self.config.n_fft // 2
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

    def _compute_frames(self) -> Tensor:
        """STFT every frame whose samples are all in (centred frames, hop-spaced); their log
        magnitudes (F, k)."""
        cfg = self.config
        none = self._logmag[:, :0]
        if self._padded is None:
            return none
        n_fft, hop = cfg.n_fft, cfg.hop_length
        offset = self.frames * hop - self._padded_base
        available = (len(self._padded) - offset - n_fft) // hop + 1
        if available <= 0:
            return none
        seg = torch.from_numpy(self._padded[offset:offset + (available - 1) * hop + n_fft])
        spec = torch.stft(seg, n_fft=n_fft, hop_length=hop, win_length=cfg.win_length,
                          window=self.window, center=False, return_complex=True)  # (F, k)
        logmag = torch.log1p(spec.abs())
        self._spec = torch.cat([self._spec, spec], dim=1)
        self._logmag = torch.cat([self._logmag, logmag], dim=1)
        self.frames += available
        drop = self.frames * hop - self._padded_base  # the next frame starts here
        self._padded = self._padded[drop:]
        self._padded_base += drop
        return logmag

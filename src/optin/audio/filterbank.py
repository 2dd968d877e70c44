"""Mel filterbank features computed from the project's normalised log spectrogram.

The x-vector extractor needs 24-30 dim filterbanks with mean normalisation. Every system in the
harness (original, obfuscated, baselines) produces DeepSpeech2 features: the per-utterance
normalised ``log1p`` magnitude, (161, T). So the filterbank input is computed *from those
features*, inside the model, and any protection transform reaches it unchanged:

``fbank = W @ S`` with ``W`` a fixed (n_mels, n_freq) matrix of triangular mel weights (HTK mel
scale, triangles over the bin centre frequencies, each row normalised to sum 1), ``S`` the
normalised log spectrogram; then cepstral mean normalisation (CMN): each of the ``n_mels``
channels has its mean over the utterance's valid frames subtracted, and padded frames are 0.

Because the rows sum to 1 each channel is a weighted mean of log magnitudes in its band (the
log of a geometric mean of magnitudes, not of the band's summed energy); the per-utterance
normalisation of ``S`` is an affine map, so after CMN only its scale survives.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def hz_to_mel(freq: Tensor | float) -> Tensor:
    """HTK mel scale: ``2595 log10(1 + f / 700)``."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(freq, dtype=torch.float64) / 700.0)


def mel_to_hz(mel: Tensor | float) -> Tensor:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (torch.as_tensor(mel, dtype=torch.float64) / 2595.0) - 1.0)


def mel_matrix(n_freq: int = 161, sample_rate: int = 16000, n_mels: int = 30,
               f_min: float = 20.0, f_max: float | None = None) -> Tensor:
    """Triangular mel weights, each row normalised to sum 1.

    Args:
        n_freq: STFT bins from 0 Hz to ``sample_rate / 2`` inclusive (161 for a 320-point STFT).
        n_mels: number of filters.
        f_min, f_max: band edges in Hz (``f_max`` defaults to ``sample_rate / 2``).

    Returns:
        (n_mels, n_freq) float32; filter m rises from mel point m to m + 1 and falls to m + 2
        of ``n_mels + 2`` points evenly spaced on the mel scale.

    Raises:
        ValueError: bad sizes or band edges, or a filter so narrow that no bin falls inside it
            (too many filters for the frequency resolution).
    """
    nyquist = sample_rate / 2
    f_max = nyquist if f_max is None else f_max
    if n_freq < 2 or n_mels < 1:
        raise ValueError(f"n_freq must be >= 2 and n_mels >= 1 (got {n_freq}, {n_mels})")
    if not 0.0 <= f_min < f_max <= nyquist:
        raise ValueError(f"need 0 <= f_min < f_max <= {nyquist} Hz (got {f_min}, {f_max})")
    bins = torch.linspace(0.0, nyquist, n_freq, dtype=torch.float64)  # (F,)
    points = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)),
                                      n_mels + 2, dtype=torch.float64))  # (M + 2,)
    lower, centre, upper = points[:-2, None], points[1:-1, None], points[2:, None]  # (M, 1)
    rising = (bins[None, :] - lower) / (centre - lower)  # (M, F)
    falling = (upper - bins[None, :]) / (upper - centre)  # (M, F)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)  # (M, F)
    sums = weights.sum(dim=1)
    empty = (sums <= 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"mel filter(s) {empty} of {n_mels} cover no frequency bin (bin spacing "
            f"{nyquist / (n_freq - 1):.1f} Hz); use fewer filters or a higher f_min"
        )
    return (weights / sums[:, None]).float()


def log_mel(features: Tensor, weights: Tensor | None = None,
            lengths: Tensor | None = None) -> Tensor:
    """Mean-normalised mel filterbank of normalised log spectrograms.

    Args:
        features: (F, T) or (B, F, T) normalised log spectrogram (``optin.audio.features``).
        weights: (M, F) mel matrix; default ``mel_matrix(F)`` (30 filters, 16 kHz).
        lengths: (B,) valid frames per item (default: all T); padded frames come out 0.

    Returns:
        (M, T) or (B, M, T): the filterbank with each channel's mean over the valid frames
        subtracted.
    """
    single = features.ndim == 2
    x = features[None] if single else features  # (B, F, T)
    assert x.ndim == 3, f"expected (F, T) or (B, F, T), got {tuple(features.shape)}"
    if weights is None:
        weights = mel_matrix(x.shape[1]).to(x.device)
    if weights.shape[1] != x.shape[1]:
        raise ValueError(f"mel matrix has {weights.shape[1]} frequency bins, features have "
                         f"{x.shape[1]}")
    batch, _, total = x.shape
    if lengths is None:
        lengths = torch.full((batch,), total, dtype=torch.long, device=x.device)
    mask = (torch.arange(total, device=x.device)[None, :] < lengths[:, None])  # (B, T)
    mask = mask[:, None, :].to(x.dtype)  # (B, 1, T)
    fbank = torch.einsum("mf,bft->bmt", weights.to(x.dtype), x)  # (B, M, T)
    count = lengths.to(x.dtype).clamp_min(1.0)[:, None, None]  # (B, 1, 1)
    mean = (fbank * mask).sum(dim=2, keepdim=True) / count  # (B, M, 1)
    out = (fbank - mean) * mask  # (B, M, T)
    return out[0] if single else out


class LogMelFilterbank(nn.Module):
    """:func:`log_mel` as a module with a fixed (not trained, not saved) mel matrix buffer.

    The matrix is rebuilt from the constructor arguments, so checkpoints hold no copy of it.
    """

    def __init__(self, n_freq: int = 161, sample_rate: int = 16000, n_mels: int = 30,
                 f_min: float = 20.0, f_max: float | None = None) -> None:
        super().__init__()
        self.n_mels = n_mels
        with torch.device("cpu"):  # a computed constant, also where modules are built on meta
            weights = mel_matrix(n_freq, sample_rate, n_mels, f_min, f_max)
        self.register_buffer("weights", weights, persistent=False)

    def forward(self, features: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, F, T) or (F, T) normalised log spectrogram -> (B, M, T) or (M, T) mean-normalised
        filterbank (padded frames 0)."""
        return log_mel(features, self.weights, lengths)


def mel_centres(sample_rate: int = 16000, n_mels: int = 30, f_min: float = 20.0,
                f_max: float | None = None) -> list[float]:
    """Centre frequencies in Hz of the filters of :func:`mel_matrix` (for plots and checks)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    mels = torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2,
                          dtype=torch.float64)
    return [float(f) for f in mel_to_hz(mels[1:-1])]

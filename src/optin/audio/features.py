"""The DeepSpeech2 spectrogram front-end and its inverse.

Features (as in deepspeech.pytorch): STFT with n_fft = win_length = 320 samples (20 ms at 16 kHz),
hop 160 (10 ms), periodic Hamming window, centred frames with reflect padding, then
``log1p(|STFT|)`` giving 161 bins x T frames, T = 1 + N // 160, then per-utterance
normalisation ``(S - mean) / std`` over the whole spectrogram (population std, floored at 1e-5).
The mean and std are kept so that a (possibly obfuscated) spectrogram can be turned back into
audio: ``to_waveform`` undoes the normalisation and the log, then inverts the STFT with a given
phase or, by default, with fast Griffin-Lim from the magnitude alone (no raw phase leaves the
device).

One module, :class:`SpectrogramFrontEnd`, computes the features for training, evaluation, export
and streaming, so a model sees the same numbers everywhere.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

from optin.errors import ConfigError
from optin.settings import SAMPLE_RATES, Rule, StrictConfig, at_least, between, check_fields

FEATURE_VERSION = 1  # bump when the numbers the front-end produces change
STD_FLOOR = 1e-5


@dataclass(frozen=True)
class FeatureConfig(StrictConfig):
    """Settings of the audio front-end; part of every checkpoint and cache key.

    ``volume`` and ``target_dbfs`` are the volume normalisation of ``load_audio``.
    """

    sample_rate: int = 16000
    n_fft: int = 320
    win_length: int = 320
    hop_length: int = 160
    window: Literal["hamming", "hann"] = "hamming"
    volume: Literal["rms", "peak", "none"] = "rms"
    target_dbfs: float = -25.0
    normalize: bool = True  # per-utterance mean/std normalisation

    RANGES: ClassVar[dict[str, Rule]] = {
        "sample_rate": SAMPLE_RATES, "n_fft": at_least(2), "win_length": at_least(1),
        "hop_length": at_least(1), "target_dbfs": between(-100, 0)}

    def __post_init__(self) -> None:
        check_fields(self)
        if self.win_length > self.n_fft:
            raise ConfigError(f"FeatureConfig.win_length: expected at most n_fft "
                              f"({self.n_fft}), got {self.win_length}")

    @property
    def n_freq(self) -> int:
        """Number of frequency bins (161 for n_fft = 320)."""
        return self.n_fft // 2 + 1

    def fingerprint(self) -> str:
        """Hex digest of the settings and the front-end version."""
        blob = json.dumps({"v": FEATURE_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def frames(self, n_samples: int) -> int:
        """Frames T of the spectrogram of ``n_samples`` samples (centred STFT)."""
        return 1 + n_samples // self.hop_length


@dataclass
class Spectrogram:
    """Normalised features of one utterance and what is needed to turn them back into audio.

    Attributes:
        features: (F, T) float32, normalised log1p magnitude.
        mean, std: the normalisation statistics (scalars).
        n_samples: length of the waveform it came from.
        phase: (F, T) float32 radians, when asked for.
    """

    features: Tensor
    mean: float
    std: float
    n_samples: int
    phase: Tensor | None = None

    def magnitude(self) -> Tensor:
        """(F, T) linear STFT magnitude recovered from the normalised features."""
        return features_to_magnitude(self.features, self.mean, self.std)


def make_window(config: FeatureConfig, device: torch.device | None = None) -> Tensor:
    """(win_length,) analysis window."""
    if config.window == "hamming":
        return torch.hamming_window(config.win_length, periodic=True, device=device)
    if config.window == "hann":
        return torch.hann_window(config.win_length, periodic=True, device=device)
    raise ValueError(f"unknown window '{config.window}' (hamming or hann)")


class SpectrogramFrontEnd(nn.Module):
    """Waveform batch -> normalised DeepSpeech2 features, with padding-aware statistics."""

    def __init__(self, config: FeatureConfig | None = None) -> None:
        super().__init__()
        self.config = config or FeatureConfig()
        self.register_buffer("window", make_window(self.config), persistent=False)

    def check_length(self, wave: Tensor) -> None:
        """Refuse audio too short for a centred STFT frame (N <= n_fft // 2 samples)."""
        half = self.config.n_fft // 2
        if wave.shape[-1] <= half:
            raise ValueError(
                f"audio of {wave.shape[-1]} samples is too short for the front-end: "
                f"needs more than {half} samples"
            )

    def stft(self, wave: Tensor) -> Tensor:
        """(B, N) float -> (B, F, T) complex STFT."""
        self.check_length(wave)
        cfg = self.config
        return torch.stft(
            wave, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
            window=self.window, center=True, pad_mode="reflect", return_complex=True,
        )

    def forward(
        self, wave: Tensor, lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Compute features.

        Args:
            wave: (B, N) float waveforms, zero-padded on the right.
            lengths: (B,) valid samples per waveform (default: all N).

        Returns:
            features (B, F, T) normalised (padded frames set to 0), mean (B,), std (B,),
            frames (B,) valid frames per item.
        """
        assert wave.ndim == 2, f"expected (B, N), got {tuple(wave.shape)}"
        spec = torch.log1p(self.stft(wave).abs())  # (B, F, T)
        batch, _, total = spec.shape
        if lengths is None:
            frames = torch.full((batch,), total, dtype=torch.long, device=wave.device)
        else:
            frames = (1 + lengths.to(wave.device) // self.config.hop_length).clamp(max=total)
        mask = (torch.arange(total, device=wave.device)[None, :] < frames[:, None])  # (B, T)
        mask3 = mask[:, None, :].to(spec.dtype)  # (B, 1, T)
        if not self.config.normalize:
            ones = torch.ones(batch, device=wave.device)
            return spec * mask3, torch.zeros_like(ones), ones, frames
        count = frames.to(spec.dtype) * spec.shape[1]  # (B,)
        mean = (spec * mask3).sum(dim=(1, 2)) / count
        var = (((spec - mean[:, None, None]) ** 2) * mask3).sum(dim=(1, 2)) / count
        std = var.sqrt().clamp_min(STD_FLOOR)
        features = (spec - mean[:, None, None]) / std[:, None, None] * mask3
        return features, mean, std, frames


def spectrogram(
    wave: np.ndarray | Tensor,
    config: FeatureConfig | None = None,
    return_phase: bool = False,
    frontend: SpectrogramFrontEnd | None = None,
) -> Spectrogram:
    """Features of one waveform.

    Args:
        wave: (N,) float waveform at ``config.sample_rate`` (as returned by ``load_audio``).
        return_phase: also keep the STFT phase (F, T), for ``to_waveform(..., phase=...)``.

    Returns:
        Spectrogram with features (161, T), T = 1 + N // 160 for the default settings.
    """
    frontend = frontend or SpectrogramFrontEnd(config)
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32) if not isinstance(wave, Tensor)
                        else wave.float())
    assert x.ndim == 1, f"expected a mono (N,) waveform, got {tuple(x.shape)}"
    with torch.no_grad():
        features, mean, std, _ = frontend(x[None, :])
        phase = torch.angle(frontend.stft(x[None, :]))[0] if return_phase else None
    return Spectrogram(features=features[0], mean=float(mean[0]), std=float(std[0]),
                       n_samples=int(x.shape[0]), phase=phase)


def features_to_magnitude(features: Tensor, mean: float | Tensor, std: float | Tensor) -> Tensor:
    """Undo normalisation and log1p: (..., F, T) features -> linear magnitude, >= 0."""
    return torch.expm1(features * std + mean).clamp_min(0.0)


MAX_LOG_MAGNITUDE = 15.0  # log1p magnitude cap before expm1 (e^15: far above any real STFT)


def features_to_wave(features: Tensor, mean: Tensor, std: Tensor, phase: Tensor,
                     config: FeatureConfig | None = None, length: int | None = None) -> Tensor:
    """Differentiable inverse of the front-end with a given phase, for a batch.

    Args:
        features: (B, F, T) normalised log1p magnitude (e.g. an obfuscator's output).
        mean, std: (B,) the statistics the features were normalised with.
        phase: (B, F, T) radians (the input's, as during training against a waveform target).
        length: samples out (default (T - 1) * hop).

    Returns:
        (B, length) waveforms; gradients reach ``features``.
    """
    cfg = config or FeatureConfig()
    log_mag = (features * std[:, None, None] + mean[:, None, None]).clamp(max=MAX_LOG_MAGNITUDE)
    magnitude = torch.expm1(log_mag).clamp_min(0.0)
    spec = torch.polar(magnitude, phase.to(magnitude.dtype))
    out = length if length is not None else (features.shape[-1] - 1) * cfg.hop_length
    return torch.istft(spec, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                       win_length=cfg.win_length, window=make_window(cfg, features.device),
                       center=True, length=out)


def to_waveform(
    features: Tensor | np.ndarray,
    mean: float,
    std: float,
    phase: Tensor | np.ndarray | None = None,
    config: FeatureConfig | None = None,
    n_samples: int | None = None,
    n_iter: int = 64,
    momentum: float = 0.99,
    seed: int = 0,
) -> np.ndarray:
    """Turn (possibly obfuscated) normalised features back into audio.

    Args:
        features: (F, T) normalised log1p magnitude.
        mean, std: the statistics the features were normalised with.
        phase: (F, T) radians; when given the STFT is inverted with it, otherwise fast
            Griffin-Lim (momentum ``momentum``, ``n_iter`` iterations, seeded random start).
        n_samples: output length (default (T - 1) * hop).

    Returns:
        (N,) float32 waveform.
    """
    cfg = config or FeatureConfig()
    feats = torch.as_tensor(np.asarray(features, dtype=np.float32)
                            if not isinstance(features, Tensor) else features.float())
    assert feats.ndim == 2, f"expected (F, T), got {tuple(feats.shape)}"
    mag = features_to_magnitude(feats, mean, std)
    length = n_samples if n_samples is not None else (feats.shape[1] - 1) * cfg.hop_length
    if phase is not None:
        ph = torch.as_tensor(np.asarray(phase, dtype=np.float32)
                             if not isinstance(phase, Tensor) else phase.float())
        wave = _istft(torch.polar(mag, ph), cfg, length)
    else:
        wave = griffin_lim(mag, cfg, length, n_iter=n_iter, momentum=momentum, seed=seed)
    return wave.numpy().astype(np.float32)


def _istft(complex_spec: Tensor, cfg: FeatureConfig, length: int) -> Tensor:
    """(F, T) complex -> (length,) waveform."""
    return torch.istft(
        complex_spec, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
        window=make_window(cfg), center=True, length=length,
    )


def _stft(wave: Tensor, cfg: FeatureConfig) -> Tensor:
    """(N,) -> (F, T) complex, the same transform as the front-end."""
    return torch.stft(
        wave, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
        window=make_window(cfg), center=True, pad_mode="reflect", return_complex=True,
    )


def griffin_lim(
    magnitude: Tensor,
    config: FeatureConfig | None = None,
    n_samples: int | None = None,
    n_iter: int = 64,
    momentum: float = 0.99,
    seed: int = 0,
) -> Tensor:
    """Fast Griffin-Lim (Perraudin et al. 2013): (F, T) magnitude -> (N,) waveform."""
    cfg = config or FeatureConfig()
    length = n_samples if n_samples is not None else (magnitude.shape[1] - 1) * cfg.hop_length
    gen = torch.Generator().manual_seed(seed)
    angles = torch.polar(torch.ones_like(magnitude),
                         2 * torch.pi * torch.rand(magnitude.shape, generator=gen))
    previous = torch.zeros_like(angles)
    wave = _istft(magnitude * angles, cfg, length)
    for _ in range(n_iter):
        rebuilt = _stft(wave, cfg)
        accelerated = rebuilt - (momentum / (1 + momentum)) * previous
        angles = accelerated / accelerated.abs().clamp_min(1e-16)
        previous = rebuilt
        wave = _istft(magnitude * angles, cfg, length)
    return wave


def spectral_convergence(magnitude: Tensor, wave: Tensor | np.ndarray,
                         config: FeatureConfig | None = None) -> float:
    """||S - |STFT(wave)| ||_F / ||S||_F for a target magnitude S (F, T) and a waveform (N,)."""
    cfg = config or FeatureConfig()
    w = torch.as_tensor(np.asarray(wave, dtype=np.float32) if not isinstance(wave, Tensor)
                        else wave.float())
    rebuilt = _stft(w, cfg).abs()
    frames = min(rebuilt.shape[1], magnitude.shape[1])
    diff = magnitude[:, :frames] - rebuilt[:, :frames]
    reference = torch.linalg.norm(magnitude[:, :frames]).clamp_min(1e-12)
    return float(torch.linalg.norm(diff) / reference)


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Signal-to-noise ratio of ``estimate`` against ``reference`` in dB (same length)."""
    ref = np.asarray(reference, dtype=np.float64)
    est = np.asarray(estimate, dtype=np.float64)[: len(ref)]
    noise = np.sum((ref[: len(est)] - est) ** 2)
    return float(10 * np.log10(np.sum(ref**2) / max(noise, 1e-20)))

"""What a waveform target needs besides the features: each utterance's audio, STFT phase and
normalisation statistics, and training crops that carry them.

During training the obfuscator's output reaches a waveform target T through
:func:`optin.audio.features.features_to_wave` with the input's phase; :class:`PhaseStore` gives
that phase (computed from the audio, the same front-end as the features), and
:class:`PhasedCropDataset` crops features and phase at the same frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from optin.audio.features import (
    FeatureConfig,
    SpectrogramFrontEnd,
    features_to_wave,
    to_waveform,
)
from optin.audio.io import load_audio
from optin.training.data import FeatureStore, RandomCropDataset

PRELOAD_AUDIO_BYTES = 2 << 30  # keep audio in memory below 2 GiB, decode again above


@dataclass(frozen=True)
class Utterance:
    """One utterance as a waveform target sees it: wave (N,), phase (F, T), mean, std."""

    wave: Tensor
    phase: Tensor
    mean: float
    std: float


class PhaseStore:
    """Audio, phase and feature statistics of a :class:`FeatureStore`'s rows (same order)."""

    def __init__(self, store: FeatureStore, features: FeatureConfig) -> None:
        self.store = store
        self.features = features
        self.frontend = SpectrogramFrontEnd(features)
        self._waves: dict[int, Tensor] = {}
        self._stats: dict[int, tuple[float, float]] = {}
        self._budget = PRELOAD_AUDIO_BYTES

    def __len__(self) -> int:
        return len(self.store)

    def wave(self, index: int) -> Tensor:
        """(N,) the audio the features were computed from (resampled, volume normalised)."""
        if index in self._waves:
            return self._waves[index]
        cfg = self.features
        wave = torch.from_numpy(load_audio(self.store.paths[index], cfg.sample_rate,
                                           cfg.volume, cfg.target_dbfs, allow_silence=True))
        if wave.numel() * 4 <= self._budget:
            self._budget -= wave.numel() * 4
            self._waves[index] = wave
        return wave

    def utterance(self, index: int) -> Utterance:
        wave = self.wave(index)
        with torch.no_grad():
            phase = torch.angle(self.frontend.stft(wave[None]))[0]
        if index not in self._stats:  # read once: training asks at every draw
            spec = self.store.cache.load(self.store.paths[index], compute=False)
            self._stats[index] = (spec.mean, spec.std)
        return Utterance(wave, phase, *self._stats[index])


def heard_waves(features: Tensor, utt: Utterance, config: FeatureConfig,
                griffin_lim_iters: int = 32) -> dict[str, Tensor]:
    """What an app hears of (obfuscated) features (F, T) of ``utt``: ``griffin_lim`` (as
    ``optin obfuscate`` writes it) and ``input_phase`` (the input's phase, as in training),
    each (N,) with the utterance's length."""
    device = features.device
    stats = torch.tensor([utt.mean], device=device), torch.tensor([utt.std], device=device)
    with torch.no_grad():
        with_phase = features_to_wave(features[None], *stats, utt.phase[None].to(device),
                                      config, length=len(utt.wave))[0]
    griffin = torch.from_numpy(to_waveform(features.cpu(), utt.mean, utt.std, config=config,
                                           n_samples=len(utt.wave), n_iter=griffin_lim_iters))
    return {"griffin_lim": griffin.to(device), "input_phase": with_phase}


class PhasedCropDataset(RandomCropDataset):
    """Training draws with the phase and statistics a waveform target needs.

    ``__getitem__((row, crop seed))`` -> (features (F, L), valid frames, label, phase (F, L),
    (mean, std)); the crop is the one :class:`RandomCropDataset` draws for the same item.
    """

    def __init__(self, store: FeatureStore, phases: PhaseStore, labels: Sequence[int],
                 segments) -> None:
        super().__init__(store, labels, segments)
        self.phases = phases

    def __getitem__(self, item: tuple[int, int]):
        index, crop_seed = item
        utt = self.phases.utterance(index)
        (feats, phase), length = self.crop([self.store.features(index), utt.phase], crop_seed)
        return feats, length, self.labels[index], phase, torch.tensor([utt.mean, utt.std])


def collate_phased(batch) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """-> x (B, F, L), lengths (B,), labels (B,), phase (B, F, L), stats (B, 2)."""
    x = torch.stack([b[0] for b in batch])
    lengths = torch.tensor([b[1] for b in batch], dtype=torch.long)
    labels = torch.tensor([b[2] for b in batch], dtype=torch.long)
    return x, lengths, labels, torch.stack([b[3] for b in batch]), torch.stack([b[4] for b in
                                                                             batch])

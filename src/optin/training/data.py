"""Feeding cached spectrograms to models: utterance stores, segment datasets, padded batches.

Training draws random fixed-length crops (one segment per draw, class-balanced when asked);
evaluation cuts every utterance into all its segments (``optin.audio.segments``) and votes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from optin.audio.segments import SegmentConfig, count_segments, segment
from optin.corpora.feature_cache import CacheReport, FeatureCache
from optin.corpora.manifest import Manifest, ManifestError

PRELOAD_LIMIT_BYTES = 4 << 30  # keep features in memory below 4 GiB, read the cache above


class FeatureStore:
    """The normalised features (F, T) of a manifest's rows, from the feature cache.

    Every row's features are computed (or found) in the cache on construction; a row whose
    audio cannot be used raises a ManifestError naming it, unless ``skip_failed`` is set, in
    which case such rows are left out and listed in ``self.report.failed``.
    """

    def __init__(self, manifest: Manifest, cache: FeatureCache, workers: int | None = None,
                 progress: bool = True, skip_failed: bool = False,
                 preload: bool | None = None) -> None:
        self.cache = cache
        self.report: CacheReport = cache.fill(manifest, workers=workers, progress=progress)
        if self.report.failed and not skip_failed:
            ident, why = self.report.failed[0]
            raise ManifestError(
                f"{len(self.report.failed)} row(s) of {manifest.source or 'the manifest'} have "
                f"unusable audio; first: id '{ident}': {why}"
            )
        failed = {i for i, _ in self.report.failed}
        self.manifest = manifest.filter(lambda r: r["id"] not in failed)
        self.paths = [self.manifest.audio_path(r) for r in self.manifest.rows]
        self._memory: list[Tensor] | None = None
        self.frames: list[int] = []
        feats = [cache.load(p) for p in self.paths]
        self.frames = [int(s.features.shape[1]) for s in feats]
        size = sum(s.features.numel() * 4 for s in feats)
        if preload if preload is not None else size <= PRELOAD_LIMIT_BYTES:
            self._memory = [s.features for s in feats]

    def __len__(self) -> int:
        return len(self.paths)

    def transformed(self, transform: Callable[[Tensor], Tensor], progress: bool = False
                    ) -> FeatureStore:
        """A store holding ``transform(features)`` of every row, computed once, in memory.

        Used for protected data (e.g. obfuscated features): each utterance is transformed
        whole, once, instead of at every draw.
        """
        out = object.__new__(FeatureStore)
        out.cache, out.report, out.manifest, out.paths = (self.cache, self.report,
                                                          self.manifest, self.paths)
        out._memory = [transform(self.features(i))
                       for i in tqdm(range(len(self)), desc="protecting", unit="utt",
                                     disable=not progress, leave=False)]
        out.frames = [int(f.shape[1]) for f in out._memory]
        return out

    def features(self, index: int) -> Tensor:
        """(F, T) features of row ``index``."""
        if self._memory is not None:
            return self._memory[index]
        return self.cache.load(self.paths[index], compute=False).features


@dataclass(frozen=True)
class SegmentRef:
    row: int  # index into the store
    start: int  # first frame, -1 for a random crop


class RandomCropDataset(Dataset):
    """Training draws: a random ``length``-frame crop of an utterance with its label.

    ``__getitem__(i)`` takes (row index, crop seed); the sampler decides both, so an epoch's
    draws are a pure function of (seed, epoch) and training resumes exactly.

    ``transform`` (optional) maps features (F, T) -> (F, T) before cropping (used for
    obfuscated data).
    """

    def __init__(self, store: FeatureStore, labels: Sequence[int], segments: SegmentConfig,
                 transform: Callable[[Tensor], Tensor] | None = None) -> None:
        self.store = store
        self.labels = list(labels)
        self.segments = segments
        self.transform = transform

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor, int, int]:
        index, crop_seed = item
        feats = self.store.features(index)
        if self.transform is not None:
            feats = self.transform(feats)
        (crop,), length = self.crop([feats], crop_seed)
        return crop, length, self.labels[index]

    def crop(self, tensors: Sequence[Tensor], crop_seed: int) -> tuple[list[Tensor], int]:
        """The same random ``length``-frame crop of each (F, T) tensor (zero-padded when the
        utterance is shorter) and its valid frames."""
        frames = tensors[0].shape[1]
        length = self.segments.length
        if frames > length:
            gen = torch.Generator().manual_seed(crop_seed)
            start = int(torch.randint(0, frames - length + 1, (1,), generator=gen))
            return [t[:, start : start + length] for t in tensors], length
        cut = [segment(t, self.segments) for t in tensors]
        return [segs[0] for segs, _ in cut], int(cut[0][1][0])


class BalancedSampler(torch.utils.data.Sampler):
    """Per-epoch draws of (row, crop seed), class-balanced or uniform, seeded by (seed, epoch).

    Under DistributedDataParallel each rank takes every ``world_size``-th draw of the same plan.

    ``draws_per_epoch`` defaults to the number of segments in the training rows, so long
    utterances are seen about as often as their length warrants.
    """

    def __init__(self, labels: Sequence[int], draws_per_epoch: int, seed: int,
                 balanced: bool = True, rank: int = 0, world_size: int = 1) -> None:
        self.labels = torch.as_tensor(list(labels))
        self.draws = draws_per_epoch
        self.seed = seed
        self.balanced = balanced
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Choose the epoch and how many draws to skip (resume inside an epoch)."""
        self.epoch = epoch
        self.skip = skip

    def draws_for(self, epoch: int) -> list[tuple[int, int]]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        if self.balanced:
            counts = torch.bincount(self.labels).float()
            weights = 1.0 / counts[self.labels]
        else:
            weights = torch.ones(len(self.labels))
        rows = torch.multinomial(weights, self.draws, replacement=True, generator=gen)
        seeds = torch.randint(0, 2**31 - 1, (self.draws,), generator=gen)
        return list(zip(rows.tolist(), seeds.tolist(), strict=True))

    def shard(self) -> list[tuple[int, int]]:
        """This rank's draws of the current epoch: every ``world_size``-th, from ``rank``.

        The plan is cut to a multiple of ``world_size`` so every rank takes as many steps
        (DistributedDataParallel needs that).
        """
        plan = self.draws_for(self.epoch)
        plan = plan[: len(plan) // self.world_size * self.world_size]
        return plan[self.rank :: self.world_size]

    def __iter__(self):
        return iter(self.shard()[self.skip :])

    def __len__(self) -> int:
        return len(self.shard()) - self.skip


def collate_segments(batch: Sequence[tuple[Tensor, int, int]]) -> tuple[Tensor, Tensor, Tensor]:
    """[(features (F, L), length, label)] -> x (B, F, L), lengths (B,), labels (B,)."""
    x = torch.stack([b[0] for b in batch])
    lengths = torch.tensor([b[1] for b in batch], dtype=torch.long)
    labels = torch.tensor([b[2] for b in batch], dtype=torch.long)
    return x, lengths, labels


def segment_count(store: FeatureStore, segments: SegmentConfig) -> int:
    """Total segments over the store's utterances."""
    return sum(count_segments(t, segments) for t in store.frames)


def eval_batches(
    store: FeatureStore,
    segments: SegmentConfig,
    batch_segments: int = 256,
    transform: Callable[[Tensor], Tensor] | None = None,
):
    """Yield (x (B, F, L), lengths (B,), utterance index (B,)) over every segment of every row.

    Utterances are never split across batches unless one alone exceeds ``batch_segments``.
    """
    xs: list[Tensor] = []
    lens: list[Tensor] = []
    idx: list[Tensor] = []
    count = 0
    for i in range(len(store)):
        feats = store.features(i)
        if transform is not None:
            feats = transform(feats)
        segs, n = segment(feats, segments)
        if count and count + segs.shape[0] > batch_segments:
            yield torch.cat(xs), torch.cat(lens), torch.cat(idx)
            xs, lens, idx, count = [], [], [], 0
        xs.append(segs)
        lens.append(n)
        idx.append(torch.full((segs.shape[0],), i, dtype=torch.long))
        count += segs.shape[0]
    if xs:
        yield torch.cat(xs), torch.cat(lens), torch.cat(idx)


def steps_per_epoch(draws: int, batch_size: int) -> int:
    return math.ceil(draws / batch_size)


@dataclass
class CropTraining:
    """Random-crop training draws: the seeded sampler, the crop dataset and the batch size."""

    sampler: BalancedSampler
    dataset: RandomCropDataset
    batch_size: int

    @classmethod
    def build(cls, store: FeatureStore, labels: Sequence[int], segments: SegmentConfig,
              batch_size: int, draws_per_epoch: int | None, seed: int, balanced: bool = True
              ) -> CropTraining:
        """``draws_per_epoch`` defaults to the number of segments in the store; one draw is
        added where the last batch would hold a single crop (batch norm cannot train on it)."""
        draws = draws_per_epoch or segment_count(store, segments)
        if batch_size > 1 and draws % batch_size == 1:
            draws += 1
        return cls(BalancedSampler(labels, draws, seed, balanced=balanced),
                   RandomCropDataset(store, labels, segments), batch_size)

    @property
    def steps(self) -> int:
        """Batches per epoch."""
        return steps_per_epoch(self.sampler.draws, self.batch_size)

    def loader(self, epoch: int, workers: int = 0, skip: int = 0) -> DataLoader:
        """The batches of ``epoch``, leaving out its first ``skip`` draws (resume)."""
        self.sampler.set_epoch(epoch, skip=skip)
        return DataLoader(self.dataset, batch_size=self.batch_size, sampler=self.sampler,
                          collate_fn=collate_segments, num_workers=workers)

"""Feeding features: in-memory and cache-reading stores agree, sampling is a function of
(seed, epoch), and resuming inside an epoch skips exactly the draws already used."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from optin.audio.segments import SegmentConfig
from optin.corpora import LabelEncoder, Manifest
from optin.corpora.feature_cache import FeatureCache
from optin.training.data import (
    BalancedSampler,
    CropTraining,
    FeatureStore,
    RandomCropDataset,
    collate_segments,
    eval_batches,
    segment_count,
)


def test_cache_reading_workers_match_memory(quick_corpus):
    manifest = Manifest.read(quick_corpus).split("valid")
    cache = FeatureCache.for_manifest(manifest)
    memory = FeatureStore(manifest, cache, progress=False, preload=True)
    disk = FeatureStore(manifest, cache, progress=False, preload=False)
    labels = LabelEncoder.fit(manifest, "gender").encode_all(manifest)
    segments = SegmentConfig(50, 25)
    batches = []
    for store, workers in ((memory, 0), (disk, 2)):
        sampler = BalancedSampler(labels, 40, seed=5)
        sampler.set_epoch(2)
        loader = DataLoader(RandomCropDataset(store, labels, segments), batch_size=8,
                            sampler=sampler, collate_fn=collate_segments, num_workers=workers)
        batches.append(list(loader))
    for (xa, la, ya), (xb, lb, yb) in zip(*batches, strict=True):
        assert torch.equal(xa, xb) and torch.equal(la, lb) and torch.equal(ya, yb)


def test_sampler_is_seeded_balanced_and_resumable():
    labels = [0] * 90 + [1] * 10
    sampler = BalancedSampler(labels, 2000, seed=1)
    sampler.set_epoch(0)
    draws = list(sampler)
    share = sum(labels[row] for row, _ in draws) / len(draws)
    assert 0.4 < share < 0.6  # balanced despite 90/10 rows
    assert draws == sampler.draws_for(0) != sampler.draws_for(1)
    sampler.set_epoch(0, skip=120)
    assert list(sampler) == draws[120:]
    uniform = BalancedSampler(labels, 2000, seed=1, balanced=False)
    assert sum(labels[r] for r, _ in uniform.draws_for(0)) / 2000 < 0.2


def test_eval_batches_cover_every_segment_once(quick_corpus):
    manifest = Manifest.read(quick_corpus).split("test")
    store = FeatureStore(manifest, FeatureCache.for_manifest(manifest), progress=False)
    segments = SegmentConfig(100, 50)
    seen = torch.cat([idx for _, _, idx in eval_batches(store, segments, batch_segments=16)])
    assert len(seen) == segment_count(store, segments)
    assert torch.equal(seen, torch.sort(seen).values)  # utterances stay in order
    assert set(seen.tolist()) == set(range(len(store)))


def test_crop_training_never_makes_a_batch_of_one(tmp_path):
    """A last batch of a single crop cannot train a batch-norm model: one draw is added."""
    from tests.conftest import write_tiny_corpus

    manifest = Manifest.read(write_tiny_corpus(tmp_path))
    store = FeatureStore(manifest, FeatureCache.for_manifest(manifest), progress=False)
    labels = [0, 1, 0, 1]
    odd = CropTraining.build(store, labels, SegmentConfig(20, 10), batch_size=4,
                             draws_per_epoch=9, seed=0, balanced=False)
    assert odd.sampler.draws == 10 and odd.steps == 3
    sizes = [len(x) for x, _, _ in odd.loader(0)]
    assert sizes == [4, 4, 2]
    even = CropTraining.build(store, labels, SegmentConfig(20, 10), batch_size=4,
                              draws_per_epoch=10, seed=0, balanced=False)
    assert even.sampler.draws == 10

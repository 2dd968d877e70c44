"""The spectrogram cache: computed once, reused, resumable, invalidated on change."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
import torch
from tests.conftest import voiced

from optin.audio.features import FeatureConfig, spectrogram
from optin.audio.io import load_audio
from optin.corpora import Manifest
from optin.corpora.feature_cache import FeatureCache


@pytest.fixture
def corpus(tmp_path):
    rows = []
    for i in range(10):
        path = tmp_path / "wav" / f"u{i}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, voiced(0.5 + 0.05 * i, f0=100 + 10 * i, seed=i), 16000)
        rows.append({"id": f"u{i}", "path": f"wav/u{i}.wav", "speaker": f"s{i % 3}"})
    Manifest(rows, root=tmp_path).write(tmp_path / "m.csv")
    return Manifest.read(tmp_path / "m.csv")


def test_fill_then_reuse_and_equal_to_direct_computation(corpus):
    cache = FeatureCache.for_manifest(corpus)
    first = cache.fill(corpus, workers=2, progress=False)
    assert (first.computed, first.reused, first.failed) == (10, 0, [])
    second = cache.fill(corpus, workers=2, progress=False)
    assert (second.computed, second.reused) == (0, 10)
    row = corpus.rows[4]
    cached = cache.load(corpus.audio_path(row), compute=False)
    direct = spectrogram(load_audio(corpus.audio_path(row)))
    assert torch.equal(cached.features, direct.features)  # bit for bit
    assert cached.mean == pytest.approx(direct.mean) and cached.n_samples == direct.n_samples


def test_resume_after_interruption_computes_only_the_missing(corpus):
    cache = FeatureCache.for_manifest(corpus)
    cache.fill(corpus, workers=1, progress=False)
    removed = [cache.entry_path(corpus.audio_path(r)) for r in corpus.rows[:3]]
    for p in removed:
        p.unlink()
    # a half-written temporary file from a killed run is ignored
    (removed[0].parent / ".junk.123.tmp.npz").write_bytes(b"partial")
    report = cache.fill(corpus, workers=1, progress=False)
    assert (report.computed, report.reused) == (3, 7)


def test_changed_audio_or_settings_invalidate(corpus):
    cache = FeatureCache.for_manifest(corpus)
    cache.fill(corpus, workers=1, progress=False)
    path = corpus.audio_path(corpus.rows[0])
    sf.write(path, voiced(0.9, f0=300), 16000)
    os.utime(path, ns=(1, 1_000_000_000))
    report = cache.fill(corpus, workers=1, progress=False)
    assert (report.computed, report.reused) == (1, 9)
    other = FeatureCache.for_manifest(corpus, FeatureConfig(hop_length=80))
    assert other.dir != cache.dir
    assert other.fill(corpus, workers=1, progress=False).computed == 10


def test_failures_are_reported_not_dropped(corpus):
    bad = corpus.audio_path(corpus.rows[2])
    sf.write(bad, np.zeros(8000, dtype=np.float32), 16000)
    report = FeatureCache.for_manifest(corpus).fill(corpus, workers=1, progress=False)
    assert report.computed == 9
    assert report.failed[0][0] == "u2" and "is silent" in report.failed[0][1]
    assert "1 failed" in report.summary()


def test_damaged_entry_is_recomputed(corpus):
    cache = FeatureCache.for_manifest(corpus)
    cache.fill(corpus, workers=1, progress=False)
    entry = cache.entry_path(corpus.audio_path(corpus.rows[0]))
    entry.write_bytes(b"not an npz")
    spec = cache.load(corpus.audio_path(corpus.rows[0]))
    assert spec.features.shape[0] == 161

"""Shared fixtures: small synthetic signals written to tmp_path."""

from __future__ import annotations

import numpy as np
import pytest


def voiced(seconds: float = 1.0, rate: int = 16000, f0: float = 140.0, seed: int = 0
           ) -> np.ndarray:
    """A vowel-like signal: harmonics of a vibrato F0 with a syllable envelope, plus noise."""
    t = np.arange(int(seconds * rate)) / rate
    freq = f0 * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(freq) / rate
    x = sum((1 / k) * np.sin(k * phase) for k in range(1, 25) if k * f0 < rate / 2)
    x = x * (0.3 + 0.7 * np.sin(2 * np.pi * 1.5 * t) ** 2)
    x = x + 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


@pytest.fixture
def vowel() -> np.ndarray:
    return voiced()


@pytest.fixture(scope="session")
def quick_corpus(tmp_path_factory):
    """The built-in quick corpus, synthesized once per test session; returns manifest.csv."""
    from optin.corpora.synth import synthesize_corpus

    out = tmp_path_factory.mktemp("quick_corpus")
    report = synthesize_corpus(out, quick=True, progress=False)
    return report.out

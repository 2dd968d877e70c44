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


def kill_and_resume(command: list[str], tmp_path, timeout: float = 300.0):
    """Run ``command + ["--out", DIR]`` once unbroken, and once killed inside its first epoch
    (as soon as a training state is saved) then rerun to completion.

    Returns (unbroken dir, resumed dir, the training state found after the kill, the rerun's
    stderr). Single-threaded so both runs compute the same numbers.
    """
    import os
    import subprocess
    import time

    from optin.training.checkpoint import load_state

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full, broken = tmp_path / "full", tmp_path / "broken"
    subprocess.run([*command, "--out", str(full)], check=True, env=env, capture_output=True)
    proc = subprocess.Popen([*command, "--out", str(broken)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_dir = broken / "train_state"
    deadline = time.time() + timeout
    while not (state_dir / "state.json").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    saved = load_state(state_dir)
    assert saved is not None, "no training state was saved before the kill"
    rerun = subprocess.run([*command, "--out", str(broken)], check=True, env=env,
                           capture_output=True, text=True)
    return full, broken, saved, rerun.stderr

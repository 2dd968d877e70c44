"""Shared fixtures: small synthetic signals written to tmp_path."""

from __future__ import annotations

import os

import numpy as np
import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, one torch thread per worker: the workers already fill the cores, and
    two threads each on two cores only thrash (the small models here gain nothing from them)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


# Files whose shared fixture trains for about a minute: run first, so that under
# ``--dist loadfile`` one of them does not finish the run alone while the other worker idles.
LONG_FILES = ("tests/serve/test_served_run.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the tests of :data:`LONG_FILES` to the front (the rest keep their order)."""
    items.sort(key=lambda item: not item.nodeid.startswith(LONG_FILES))


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


@pytest.fixture
def one_thread():
    """One torch thread: the machine is shared, and small convs are faster that way."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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

    from optin.checkpoint import load_state

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


def write_tiny_corpus(root, broken: bool = False):
    """Four short utterances of two speakers (plus one empty file when ``broken``) under
    ``root/wav``; returns ``root/manifest.csv``."""
    import soundfile as sf

    from optin.corpora.manifest import Manifest

    rows = []
    for i in range(4):
        speaker = f"spk{i % 2}"
        path = root / "wav" / f"utt {i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, voiced(seconds=0.3, f0=120 + 40 * i, seed=i), 16000, subtype="PCM_16")
        rows.append({"id": f"utt {i}", "path": f"wav/utt {i}.wav", "speaker": speaker,
                     "gender": ["female", "male"][i % 2], "split": ["train", "test"][i // 2]})
    if broken:
        (root / "wav" / "empty.wav").write_bytes(b"")
        rows.append({"id": "empty", "path": "wav/empty.wav", "speaker": "spk0",
                     "gender": "female", "split": "test"})
    return Manifest(rows=rows, root=root).write(root / "manifest.csv")


def save_tiny_obfuscator(directory, seed: int = 0, fill: float | None = None):
    """An untrained obfuscator (base width 4, one residual block) saved as a checkpoint
    folder; ``fill`` sets every float tensor to that value (e.g. NaN, with a matching SHA-256,
    as a broken model would be saved). Returns ``directory``."""
    import torch

    from optin.audio.features import FeatureConfig
    from optin.checkpoint import save_checkpoint
    from optin.models.cyclegan_vc2 import Generator, GeneratorConfig
    from optin.privacy.obfuscator import OBFUSCATOR_KIND

    torch.manual_seed(seed)
    net = Generator(GeneratorConfig(base_width=4, residual_blocks=1))
    state = net.state_dict()
    if fill is not None:
        state = {k: torch.full_like(v, fill) if v.is_floating_point() else v
                 for k, v in state.items()}
    return save_checkpoint(directory, state, {
        "kind": OBFUSCATOR_KIND, "architecture": net.config.to_dict(),
        "features": FeatureConfig().to_dict()})


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A folder with good.wav and corpus/manifest.csv (four rows: two train, two test); the
    current folder (the hostile-input tests of the CLI)."""
    import soundfile as sf

    sf.write(tmp_path / "good.wav", voiced(0.3), 16000, subtype="PCM_16")
    write_tiny_corpus(tmp_path / "corpus")
    monkeypatch.chdir(tmp_path)
    return tmp_path

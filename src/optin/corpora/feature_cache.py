"""Spectrograms computed once per audio file and feature settings, then reused.

Layout: ``<cache_root>/<settings fingerprint[:16]>/<key[:2]>/<key>.npz`` where ``key`` hashes the
audio file's absolute path, size and modification time. Each entry holds ``features`` (F, T)
float32 and the normalisation ``mean`` and ``std``. Entries are written atomically (temporary
file, then rename), so an interrupted run leaves only whole entries and the next run computes
just what is missing. Changing the audio (size or mtime) or any feature setting changes the key,
so stale entries are never read. Files are loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from optin.audio.features import FeatureConfig, Spectrogram, SpectrogramFrontEnd, spectrogram
from optin.audio.io import AudioError, load_audio
from optin.corpora.manifest import Manifest
from optin.files import atomic_output, write_json

DEFAULT_CACHE_DIRNAME = ".optin_cache"


@dataclass
class CacheReport:
    """What a cache pass did: entries computed, reused, and files that failed (with why)."""

    computed: int = 0
    reused: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (manifest id, reason)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [f"features: {self.computed} computed, {self.reused} reused, "
                 f"{len(self.failed)} failed ({self.seconds:.1f} s)"]
        lines += [f"  {i}: {why}" for i, why in self.failed[:20]]
        if len(self.failed) > 20:
            lines.append(f"  ... and {len(self.failed) - 20} more")
        return "\n".join(lines)


class FeatureCache:
    """Reads and fills the spectrogram cache of one feature configuration."""

    def __init__(self, root: str | os.PathLike, config: FeatureConfig | None = None) -> None:
        self.config = config or FeatureConfig()
        self.root = Path(root)
        self.dir = self.root / self.config.fingerprint()[:16]

    @classmethod
    def for_manifest(cls, manifest: Manifest, config: FeatureConfig | None = None,
                     root: str | os.PathLike | None = None) -> FeatureCache:
        """The cache beside a manifest (``<manifest folder>/.optin_cache``) unless ``root``."""
        return cls(root if root is not None else manifest.root / DEFAULT_CACHE_DIRNAME, config)

    def entry_path(self, audio_path: str | os.PathLike) -> Path:
        """Where the entry of an audio file lives (whether or not it exists yet)."""
        p = Path(audio_path).resolve()
        st = p.stat()
        key = hashlib.sha1(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
        return self.dir / key[:2] / f"{key}.npz"

    def load(self, audio_path: str | os.PathLike, compute: bool = True) -> Spectrogram:
        """The features of one file, computing and storing them when missing."""
        entry = self.entry_path(audio_path)
        if entry.is_file():
            try:
                return _read_entry(entry)
            except (OSError, ValueError, KeyError):
                entry.unlink(missing_ok=True)  # a damaged entry is recomputed
        if not compute:
            raise KeyError(f"no cached features for {audio_path}")
        spec = compute_features(audio_path, self.config)
        _write_entry(entry, spec)
        return spec

    def has(self, audio_path: str | os.PathLike) -> bool:
        return self.entry_path(audio_path).is_file()

    def fill(
        self,
        manifest: Manifest,
        workers: int | None = None,
        progress: bool = True,
    ) -> CacheReport:
        """Compute the features of every row that has no entry yet, in parallel.

        Failures (unreadable or silent audio) are collected in the report, never dropped
        silently; the caller decides whether they are fatal.
        """
        import time

        start = time.perf_counter()
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self.dir / "settings.json", self.config.to_dict(), sort_keys=True)
        report = CacheReport()
        todo: list[tuple[str, str, str]] = []
        for row in manifest.rows:
            path = manifest.audio_path(row)
            try:
                entry = self.entry_path(path)
            except OSError as err:
                report.failed.append((row["id"], f"{path}: {err.strerror or err}"))
                continue
            if entry.is_file():
                report.reused += 1
            else:
                todo.append((row["id"], str(path), str(entry)))
        workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
        bar = tqdm(total=len(todo), desc="features", unit="utt", disable=not progress or not todo)
        if workers <= 1 or len(todo) < 8:
            for item in todo:
                _record(report, _compute_entry(item, self.config.to_dict()))
                bar.update()
        else:
            ctx = mp.get_context("spawn")  # no fork after torch threads start
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                     initializer=_worker_init) as pool:
                cfg = self.config.to_dict()
                futures = [pool.submit(_compute_chunk, chunk, cfg)
                           for chunk in _chunks(todo, max(1, len(todo) // (workers * 8)))]
                for fut in futures:
                    for result in fut.result():
                        _record(report, result)
                        bar.update()
        bar.close()
        report.seconds = time.perf_counter() - start
        return report


def compute_features(audio_path: str | os.PathLike, config: FeatureConfig,
                     frontend: SpectrogramFrontEnd | None = None) -> Spectrogram:
    """Load an audio file and compute its normalised spectrogram with ``config``."""
    wave = load_audio(audio_path, sample_rate=config.sample_rate, normalize=config.volume,
                      target_dbfs=config.target_dbfs)
    return spectrogram(wave, config, frontend=frontend)


def _record(report: CacheReport, result: tuple[str, str | None]) -> None:
    ident, problem = result
    if problem is None:
        report.computed += 1
    else:
        report.failed.append((ident, problem))


def _chunks(items: Sequence, size: int) -> list[Sequence]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _worker_init() -> None:
    torch.set_num_threads(1)


def _compute_entry(item: tuple[str, str, str], config: dict,
                   frontend: SpectrogramFrontEnd | None = None) -> tuple[str, str | None]:
    ident, path, entry = item
    try:
        spec = compute_features(path, FeatureConfig.from_dict(config), frontend)
    except (AudioError, ValueError) as err:
        return ident, str(err)
    _write_entry(Path(entry), spec)
    return ident, None


def _compute_chunk(chunk: Sequence[tuple[str, str, str]], config: dict
                   ) -> list[tuple[str, str | None]]:
    frontend = SpectrogramFrontEnd(FeatureConfig.from_dict(config))
    return [_compute_entry(item, config, frontend) for item in chunk]


def _write_entry(entry: Path, spec: Spectrogram) -> None:
    with atomic_output(entry, suffix=".npz") as tmp:
        np.savez(tmp, features=spec.features.numpy().astype(np.float32),
                 mean=np.float64(spec.mean), std=np.float64(spec.std),
                 n_samples=np.int64(spec.n_samples))


def _read_entry(entry: Path) -> Spectrogram:
    with np.load(entry, allow_pickle=False) as data:
        return Spectrogram(
            features=torch.from_numpy(data["features"].copy()),
            mean=float(data["mean"]),
            std=float(data["std"]),
            n_samples=int(data["n_samples"]),
        )

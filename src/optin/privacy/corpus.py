"""Obfuscating files and whole corpora: ``optin obfuscate``.

For each input audio file the obfuscated spectrogram is written as ``<name>.npy`` ((F, T)
float32, normalised features) and the obfuscated audio as ``<name>.wav`` (16-bit, Griffin-Lim).
A manifest as input obfuscates every row into ``OUT/features/<id>.npy`` and
``OUT/audio/<id>.wav`` and writes ``OUT/manifest.csv``: the same rows and labels, paths pointing
at the obfuscated audio, plus ``feature_mean`` and ``feature_std`` (the statistics that turn the
``.npy`` back into audio). Rows already done are skipped, so a killed run resumes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from optin.audio.io import AudioError, write_audio
from optin.corpora.manifest import Manifest
from optin.privacy.obfuscator import Obfuscator


@dataclass
class ObfuscationReport:
    """Files written, reused (already done) and failed (with why)."""

    written: int = 0
    reused: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    manifest: Path | None = None

    def summary(self) -> str:
        lines = [f"obfuscated {self.written}, already done {self.reused}, "
                 f"failed {len(self.failed)}"]
        lines += [f"  {name}: {why}" for name, why in self.failed[:20]]
        if self.manifest is not None:
            lines.append(f"manifest of the obfuscated copy: {self.manifest}")
        return "\n".join(lines)


def safe_name(text: str) -> str:
    """A file-name-safe version of an id."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "item"


def _save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def obfuscate_one(obfuscator: Obfuscator, source: Path, npy: Path, wav: Path,
                  griffin_lim_iters: int = 64) -> tuple[float, float]:
    """Obfuscate one file into ``npy`` and ``wav``; returns the feature (mean, std)."""
    spec, audio = obfuscator.obfuscate_file(source, n_iter=griffin_lim_iters)
    _save_npy(npy, spec.features.numpy().astype(np.float32))
    write_audio(wav, audio, obfuscator.features.sample_rate)
    return spec.mean, spec.std


def obfuscate_inputs(
    model: str | os.PathLike | Obfuscator,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    progress: bool = True,
    griffin_lim_iters: int = 64,
    on_error: str = "fail",
) -> ObfuscationReport:
    """Obfuscate audio files, or every row of one manifest (``.csv``), into ``out_dir``."""
    obfuscator = model if isinstance(model, Obfuscator) else Obfuscator.load(model)
    out = Path(out_dir)
    paths = [Path(p) for p in inputs]
    if len(paths) == 1 and paths[0].suffix.lower() == ".csv":
        return obfuscate_manifest(obfuscator, Manifest.read(paths[0]), out, progress,
                                  griffin_lim_iters, on_error)
    if any(p.suffix.lower() == ".csv" for p in paths):
        raise ValueError("give either one manifest .csv or audio files, not both")
    names = [p.stem for p in paths]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"inputs share the file name(s) {', '.join(duplicates)}; obfuscate "
                         "them into separate --out-dir folders")
    report = ObfuscationReport()
    for path in tqdm(paths, desc="obfuscating", unit="file", disable=not progress):
        try:
            obfuscate_one(obfuscator, path, out / f"{path.stem}.npy", out / f"{path.stem}.wav",
                          griffin_lim_iters)
            report.written += 1
        except (AudioError, ValueError) as err:
            if on_error == "fail":
                raise
            report.failed.append((str(path), str(err)))
    return report


def obfuscate_manifest(obfuscator: Obfuscator, manifest: Manifest, out: Path,
                       progress: bool = True, griffin_lim_iters: int = 64,
                       on_error: str = "fail") -> ObfuscationReport:
    """Obfuscate every row of a manifest; write the manifest of the obfuscated copy."""
    report = ObfuscationReport()
    rows = []
    for row in tqdm(manifest.rows, desc="obfuscating", unit="utt", disable=not progress):
        name = safe_name(row["id"])
        npy, wav = out / "features" / f"{name}.npy", out / "audio" / f"{name}.wav"
        stats = out / "features" / f"{name}.stats"
        try:
            if npy.is_file() and wav.is_file() and stats.is_file():
                mean, std = (float(v) for v in stats.read_text().split())
                report.reused += 1
            else:
                mean, std = obfuscate_one(obfuscator, manifest.audio_path(row), npy, wav,
                                          griffin_lim_iters)
                tmp = stats.with_name(f".{stats.name}.tmp")
                tmp.write_text(f"{mean!r} {std!r}\n")
                os.replace(tmp, stats)
                report.written += 1
        except (AudioError, ValueError) as err:
            if on_error == "fail":
                raise AudioError(f"row '{row['id']}': {err}") from err
            report.failed.append((row["id"], str(err)))
            continue
        rows.append(dict(row, path=str(wav.resolve()), feature_mean=f"{mean:.8g}",
                         feature_std=f"{std:.8g}"))
    result = Manifest(rows=rows, columns=[*manifest.columns, "feature_mean", "feature_std"],
                      root=out)
    report.manifest = result.write(out / "manifest.csv")
    return report

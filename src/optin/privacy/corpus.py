"""Obfuscating files and whole corpora: ``optin obfuscate``.

For each input audio file the obfuscated spectrogram is written as ``<name>.npy`` ((F, T)
float32, normalised features) and the obfuscated audio as ``<name>.wav`` (16-bit, Griffin-Lim).
A manifest as input obfuscates every row into ``OUT/features/<id>.npy`` and
``OUT/audio/<id>.wav`` and writes ``OUT/manifest.csv``: the same rows and labels, paths pointing
at the obfuscated audio, plus ``feature_mean`` and ``feature_std`` (the statistics that turn the
``.npy`` back into audio). Rows already done are skipped, so a killed run resumes;
``OUT/obfuscation.json`` records the model (a hash of its weights) and the settings, and a rerun
with another model or other settings into the same folder is refused. Features and audio that
are not finite (or audio that is mostly clipped) are refused before they are written.

The batch loop itself (per file or row, resume, ``on_error``, workers) is
:mod:`optin.corpora.batch`, which the baselines share.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optin.audio.io import AudioError, check_output_wave, write_audio
from optin.corpora.batch import (
    BatchReport,
    process_files,
    process_manifest,
    split_inputs,
)
from optin.corpora.manifest import Manifest
from optin.files import write_bytes, write_text
from optin.privacy.obfuscator import Obfuscator

STATE_FILE = "obfuscation.json"


@dataclass
class ObfuscationReport(BatchReport):
    """What ``obfuscate_inputs`` did."""

    verb: str = "obfuscated"
    doing: str = "obfuscating"


def save_features(path: Path, array: np.ndarray) -> None:
    """Write features as ``.npy`` atomically; NaN or infinite values are refused (AudioError)."""
    bad = int(array.size - np.isfinite(array).sum())
    if bad:
        raise AudioError(f"{path}: refusing to write features with {bad} NaN or infinite "
                         f"value(s) of {array.size} (the model or its input is broken)")
    buffer = io.BytesIO()  # np.save to a file loses the cause of a failed write
    np.save(buffer, array)
    write_bytes(path, buffer.getvalue())


def obfuscate_one(obfuscator: Obfuscator, source: Path, npy: Path, wav: Path,
                  griffin_lim_iters: int = 64) -> tuple[float, float]:
    """Obfuscate one file into ``npy`` and ``wav``; returns the feature (mean, std).

    Both are checked before either is written: nothing is written for a broken result.
    """
    spec, audio = obfuscator.obfuscate_file(source, n_iter=griffin_lim_iters)
    features = spec.features.numpy().astype(np.float32)
    check_output_wave(audio, wav)
    save_features(npy, features)
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
    manifest, paths = split_inputs(inputs)
    if manifest is not None:
        return obfuscate_manifest(obfuscator, Manifest.read(manifest), out, progress,
                                  griffin_lim_iters, on_error)

    def outputs(path: Path) -> tuple[Path, Path]:
        return out / f"{path.stem}.npy", out / f"{path.stem}.wav"

    def task(path: Path) -> None:
        obfuscate_one(obfuscator, path, *outputs(path), griffin_lim_iters)

    return process_files(paths, task, ObfuscationReport(), progress, on_error, outputs=outputs)


def obfuscate_manifest(obfuscator: Obfuscator, manifest: Manifest, out: Path,
                       progress: bool = True, griffin_lim_iters: int = 64,
                       on_error: str = "fail") -> ObfuscationReport:
    """Obfuscate every row of a manifest; write the manifest of the obfuscated copy.

    Raises:
        OutputError: ``out`` holds rows made by another model or with other settings.
    """

    def outputs(name: str) -> tuple[Path, Path, Path]:
        return (out / "features" / f"{name}.npy", out / "audio" / f"{name}.wav",
                out / "features" / f"{name}.stats")

    def task(row: dict[str, str], source: Path, name: str) -> tuple[dict[str, str], bool]:
        npy, wav, stats = outputs(name)
        written = not (npy.is_file() and wav.is_file() and stats.is_file())
        if written:
            mean, std = obfuscate_one(obfuscator, source, npy, wav, griffin_lim_iters)
            write_text(stats, f"{mean!r} {std!r}\n")
        else:
            mean, std = (float(v) for v in stats.read_text().split())
        return {"path": str(wav.resolve()), "feature_mean": f"{mean:.8g}",
                "feature_std": f"{std:.8g}"}, written

    settings = {"model_weights_sha256": obfuscator.weights_sha256(),
                "features": obfuscator.features.to_dict(), "griffin_lim_iters": griffin_lim_iters}
    return process_manifest(manifest, out, task, ["feature_mean", "feature_std"],
                            ObfuscationReport(), progress, on_error, outputs=outputs,
                            state=(STATE_FILE, settings))

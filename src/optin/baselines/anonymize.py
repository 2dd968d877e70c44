"""Anonymizing files and whole corpora with a signal-processing baseline: ``optin anonymize``.

Audio files are written as ``OUT/<stem>.wav``. A manifest as input anonymizes every row into
``OUT/audio/<safe id>.wav`` and writes ``OUT/manifest.csv``: the same rows, labels and splits,
``path`` pointing at the anonymized audio, plus an ``alpha`` column (the McAdams coefficient
used). Rows whose audio exists are reused, so a killed run resumes; ``OUT/anonymization.json``
records the settings, and a rerun with other settings into the same folder is refused instead
of mixing two anonymizations (:func:`optin.files.claim_folder`). An output that would overwrite
an input (the audio or the input manifest) is refused. Audio is read with ``load_audio``
(16 kHz, the usual volume normalisation) and written as 16-bit WAV at 16 kHz, peak 1 (the
McAdams output scaling).

Files carry no speaker label: with ``per="speaker"`` each file counts as its own speaker.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from optin.audio.io import SAMPLE_RATE, load_audio, write_audio
from optin.baselines.mcadams import McAdamsConfig, mcadams
from optin.corpora.batch import BatchReport, process_files, process_manifest, split_inputs
from optin.corpora.manifest import Manifest
from optin.errors import ConfigError

METHODS = ("mcadams",)
STATE_FILE = "anonymization.json"


def anonymize_file(source: str | os.PathLike, dest: str | os.PathLike, alpha: float,
                   config: McAdamsConfig | None = None) -> Path:
    """Load ``source`` at 16 kHz, apply McAdams with ``alpha``, write ``dest`` (16-bit WAV).

    Raises:
        AudioError: ``source`` is missing, unreadable or silent.
    """
    config = config or McAdamsConfig()
    wave = load_audio(source, sample_rate=SAMPLE_RATE)
    out = mcadams(wave, SAMPLE_RATE, alpha=alpha, lpc_order=config.lpc_order, name=str(source))
    return write_audio(dest, out, SAMPLE_RATE)


@dataclass(frozen=True)
class _FileTask:
    """Anonymize one audio file into ``out/<stem>.wav`` (picklable for worker processes)."""

    config: McAdamsConfig
    out: Path

    def outputs(self, path: Path) -> list[Path]:
        return [self.out / f"{path.stem}.wav"]

    def __call__(self, path: Path) -> None:
        alpha = self.config.alpha_for(path.stem, path.stem)
        anonymize_file(path, self.outputs(path)[0], alpha, self.config)


@dataclass(frozen=True)
class _RowTask:
    """Anonymize one manifest row into ``out/audio/<name>.wav`` unless it is there already."""

    config: McAdamsConfig
    out: Path

    def outputs(self, name: str) -> list[Path]:
        return [self.out / "audio" / f"{name}.wav"]

    def __call__(self, row: dict[str, str], source: Path, name: str
                 ) -> tuple[dict[str, str], bool]:
        alpha = self.config.alpha_for(row["speaker"], row["id"])
        wav = self.outputs(name)[0]
        written = not wav.is_file()
        if written:
            anonymize_file(source, wav, alpha, self.config)
        return {"path": str(wav.resolve()), "alpha": f"{alpha:.6f}"}, written


def anonymize_inputs(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    config: McAdamsConfig | None = None,
    method: str = "mcadams",
    progress: bool = True,
    on_error: str = "fail",
    workers: int = 1,
) -> BatchReport:
    """Anonymize audio files, or every row of one manifest (``.csv``), into ``out_dir``.

    Args:
        inputs: audio files, or a single manifest CSV.
        config: how alpha is chosen (default: fixed 0.8).
        method: the baseline; only ``"mcadams"`` so far.
        on_error: ``"fail"`` stops at the first unusable file (the error names it);
            ``"skip"`` leaves it out and lists it in the report.
        workers: processes to spread the files over (1: this process).

    Returns:
        The report: counts written / reused / failed, and the new manifest's path.

    Raises:
        ConfigError: unknown method, a manifest mixed with files, duplicate file names.
        OutputError: an output folder anonymized with other settings, or an output that
            would overwrite an input.
        ManifestError, AudioError: unusable manifest, or audio with ``on_error="fail"``.
    """
    _check_method(method)
    config = config or McAdamsConfig()
    out = Path(out_dir)
    manifest_path, paths = split_inputs(inputs)
    if manifest_path is None:
        task = _FileTask(config, out)
        return process_files(paths, task, _report(), progress, on_error, workers,
                             outputs=task.outputs)
    return anonymize_manifest(Manifest.read(manifest_path), out, config, progress, on_error,
                              workers, method)


def anonymize_manifest(manifest: Manifest, out: str | os.PathLike,
                       config: McAdamsConfig | None = None, progress: bool = True,
                       on_error: str = "fail", workers: int = 1, method: str = "mcadams"
                       ) -> BatchReport:
    """Anonymize every row of a manifest; write ``out/manifest.csv`` of the anonymized copy."""
    _check_method(method)
    config = config or McAdamsConfig()
    out = Path(out)
    task = _RowTask(config, out.resolve())
    return process_manifest(manifest, out, task, ["alpha"], _report(), progress, on_error,
                            workers, outputs=task.outputs,
                            state=(STATE_FILE, {"method": method, "config": config.to_dict()}))


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ConfigError(f"method: unknown anonymization '{method}' (known: "
                          f"{', '.join(METHODS)})")


def _report() -> BatchReport:
    return BatchReport(verb="anonymized", doing="anonymizing")


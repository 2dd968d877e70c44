"""What every corpus importer shares: the report, layout errors and the audio check.

An importer is one ``prepare_<corpus>(src, out, on_error=...) -> ImportReport`` function in its
own module. It validates the tree before it writes anything, checks that every audio file it
lists is readable and non-empty (``on_error="fail"`` raises, ``"skip"`` leaves the file out and
names it in the report), and writes the manifest with paths relative to the manifest's folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tqdm.auto import tqdm

from optin.audio import AudioError, audio_info
from optin.corpora.manifest import Manifest, ManifestError
from optin.errors import ConfigError

OnError = Literal["fail", "skip"]


class LayoutError(ManifestError):
    """A corpus tree that does not have the expected layout: says what was expected and found."""


@dataclass
class ImportReport:
    """Outcome of an import: the manifest written, and everything left out with the reason."""

    manifest: Manifest
    out: Path | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (file or folder, reason)
    warnings: list[str] = field(default_factory=list)  # labels the metadata did not give

    def summary(self) -> str:
        """A few lines for a person: rows written, files skipped and not understood."""
        lines = [f"{len(self.manifest)} utterances" + (f" -> {self.out}" if self.out else "")]
        for col in ("speaker", "gender", "emotion", "split"):
            if col in self.manifest.columns and any(self.manifest.column(col)):
                counts = self.manifest.counts(col)
                if col == "speaker":
                    lines.append(f"  speakers: {len(counts)}")
                else:
                    parts = (f"{k or '?'}={v}" for k, v in sorted(counts.items()))
                    lines.append(f"  {col}: " + ", ".join(parts))
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} unreadable file(s):")
            lines += [f"    {p}: {why}" for p, why in self.skipped[:20]]
            if len(self.skipped) > 20:
                lines.append(f"    ... and {len(self.skipped) - 20} more")
        lines += [f"  warning: {w}" for w in self.warnings]
        if self.ignored:
            lines.append(f"  left out {len(self.ignored)} path(s):")
            lines += [f"    {p}: {why}" for p, why in self.ignored[:20]]
            if len(self.ignored) > 20:
                lines.append(f"    ... and {len(self.ignored) - 20} more")
        return "\n".join(lines)


def check_audio_files(
    rows: list[dict[str, str]],
    path_of: Callable[[dict[str, str]], Path],
    on_error: OnError = "fail",
    progress: bool = True,
    workers: int = 8,
) -> tuple[list[dict[str, str]], list[tuple[str, str]]]:
    """Probe every row's audio file (header only); fill ``duration``; keep or report failures.

    Returns:
        (rows that are readable, [(file, reason) for every skipped file]).

    Raises:
        AudioError: the first unreadable file, when ``on_error == "fail"``.
    """
    if on_error not in ("fail", "skip"):
        raise ConfigError(f"on_error must be 'fail' or 'skip', not {on_error!r}")

    def probe(row: dict[str, str]) -> tuple[dict[str, str], str | None]:
        try:
            info = audio_info(path_of(row))
        except AudioError as err:
            return row, str(err)
        if info.frames <= 0:
            return row, f"{path_of(row)}: holds no samples (zero-length audio)"
        return dict(row, duration=f"{info.duration:.3f}"), None

    kept: list[dict[str, str]] = []
    skipped: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(probe, rows)
        for row, problem in tqdm(results, total=len(rows), desc="checking audio",
                                 disable=not progress, unit="file", leave=False):
            if problem is None:
                kept.append(row)
            elif on_error == "fail":
                raise AudioError(problem + " (on_error='skip' / --on-error skip leaves such "
                                 "files out and reports them)")
            else:
                skipped.append((str(path_of(row)), problem))
    return kept, skipped


def require_dir(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path; LayoutError when it is not an existing folder."""
    path = Path(path)
    if not path.is_dir():
        raise LayoutError(f"{what}: expected a folder at {path}, found "
                          + ("a file" if path.exists() else "nothing"))
    return path


def listing(paths: Iterable[Path], limit: int = 8) -> str:
    """A short comma-separated list of names for error messages."""
    names = sorted(p.name for p in paths)
    shown = ", ".join(names[:limit])
    return (shown + f", ... ({len(names)} in all)") if len(names) > limit else (shown or "nothing")


def finish_import(
    rows: list[dict[str, str]],
    src: Path,
    out: str | os.PathLike | None,
    on_error: OnError = "fail",
    ignored: list[tuple[str, str]] | None = None,
    progress: bool = True,
) -> ImportReport:
    """Check the audio of ``rows`` (paths relative to ``src`` or absolute), write the manifest.

    Rows are sorted by id. ``out`` None returns the manifest without writing it.
    """
    src = Path(src).resolve()
    rows = sorted(rows, key=lambda r: r["id"])
    kept, skipped = check_audio_files(
        rows, lambda r: src / r["path"], on_error=on_error, progress=progress
    )
    if not kept:
        raise LayoutError(f"{src}: no usable audio files were found"
                          + (f" ({len(skipped)} skipped as unreadable)" if skipped else ""))
    manifest = Manifest(rows=kept, root=src)
    manifest.validate(check_files=False)
    out_path = manifest.write(out) if out is not None else None
    if out_path is not None:
        manifest = Manifest.read(out_path, check_files=False)
    return ImportReport(manifest=manifest, out=out_path, skipped=skipped, ignored=ignored or [],
                        warnings=missing_label_warnings(manifest))


def missing_label_warnings(manifest: Manifest, columns: tuple[str, ...] = ("gender", "emotion")
                           ) -> list[str]:
    """One line per label column that some speakers have no value for in the metadata."""
    warnings = []
    for col in columns:
        if col not in manifest.columns or not any(manifest.column(col)):
            continue
        speakers = sorted({r["speaker"] for r in manifest.rows if not r[col]})
        if speakers:
            shown = ", ".join(speakers[:8]) + (" ..." if len(speakers) > 8 else "")
            warnings.append(f"{len(speakers)} speaker(s) have no '{col}' in the corpus "
                            f"metadata ({shown}); their rows have an empty {col}")
    return warnings

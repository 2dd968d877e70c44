"""VoxCeleb2 importer: ``{dev,test}/aac/idNNNNN/<video id>/NNNNN.m4a`` plus ``vox2_meta.csv``.

Gender comes from ``vox2_meta.csv`` (columns VoxCeleb2 ID, VGGFace2 ID, Gender m/f, Set dev/test;
the whitespace around fields varies). The paper's protocol (following ADR): the dev set ("V2D")
trains, with a valid set carved from it speaker-disjointly, and the test set ("V2T") tests.
The AAC audio is probed and decoded with PyAV; no system ffmpeg is needed.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from optin.corpora.importing import (
    ImportReport,
    LayoutError,
    OnError,
    finish_import,
    listing,
    require_dir,
)
from optin.corpora.manifest import Manifest
from optin.corpora.splits import carve_valid

META_FILE = "vox2_meta.csv"
SETS: dict[str, str] = {"dev": "train", "test": "test"}  # folder -> split
GENDERS: dict[str, str] = {"f": "female", "m": "male"}

_SPEAKER_DIR = re.compile(r"id\d+")
_CLIP = re.compile(r"\d+\.m4a", re.IGNORECASE)


def read_meta(path: str | os.PathLike) -> dict[str, str]:
    """VoxCeleb2 ID -> ``"female"``/``"male"`` from ``vox2_meta.csv`` (fields are stripped).

    Raises:
        LayoutError: no "VoxCeleb2 ID" or "Gender" column, or a gender other than m or f.
    """
    with open(path, newline="", encoding="utf-8-sig") as fh:
        lines = [[cell.strip() for cell in line] for line in csv.reader(fh)]
    lines = [line for line in lines if any(line)]
    if not lines:
        raise LayoutError(f"{path} is empty; expected a header with columns "
                          "VoxCeleb2 ID, VGGFace2 ID, Gender, Set")
    header = [" ".join(name.lower().split()) for name in lines[0]]
    missing = [name for name in ("voxceleb2 id", "gender") if name not in header]
    if missing:
        raise LayoutError(f"{path}: missing column(s) {', '.join(missing)}; found columns: "
                          f"{', '.join(lines[0])}")
    id_col, gender_col = header.index("voxceleb2 id"), header.index("gender")
    genders: dict[str, str] = {}
    for number, line in enumerate(lines[1:], start=2):
        if len(line) <= max(id_col, gender_col):
            raise LayoutError(f"{path}, row {number}: expected {len(header)} fields, "
                              f"found {len(line)}")
        gender = line[gender_col].lower()
        if gender not in GENDERS:
            raise LayoutError(f"{path}, row {number}: Gender must be m or f, found "
                              f"{line[gender_col]!r}")
        genders[line[id_col]] = GENDERS[gender]
    return genders


def prepare_voxceleb2(
    src: str | os.PathLike,
    out: str | os.PathLike | None = None,
    on_error: OnError = "fail",
    seed: int = 0,
    valid_fraction: float = 0.1,
    progress: bool = True,
) -> ImportReport:
    """Import VoxCeleb2 from ``src`` (holding ``vox2_meta.csv`` and ``dev/aac``, ``test/aac``).

    Args:
        src: the corpus folder.
        out: manifest CSV to write (None: only return it; paths then relative to ``src``).
        on_error: ``"fail"`` raises AudioError on an unreadable file, ``"skip"`` reports it.
        seed, valid_fraction: the speaker-disjoint valid set carved from the dev speakers.

    Raises:
        LayoutError: no ``vox2_meta.csv``, neither ``dev/aac`` nor ``test/aac``, or no clips.
        AudioError: an unreadable or empty file with ``on_error="fail"``.
    """
    src = require_dir(src, "VoxCeleb2").resolve()
    metas = [p for p in src.iterdir() if p.is_file() and p.name.lower() == META_FILE]
    sets = [src / name for name in SETS if (src / name).is_dir()]
    if not metas or not sets:
        raise LayoutError(
            f"VoxCeleb2: expected {META_FILE} and dev/aac/idNNNNN/<video>/NNNNN.m4a and/or "
            f"test/aac/idNNNNN/<video>/NNNNN.m4a under {src}, found: {listing(src.iterdir())}"
        )
    genders = read_meta(metas[0])
    ignored = [(str(p), "not part of the VoxCeleb2 layout")
               for p in sorted(src.iterdir()) if p not in (metas[0], *sets)]
    rows: list[dict[str, str]] = []
    for folder in sets:
        rows += _set_rows(folder, src, genders, ignored)
    if not rows:
        raise LayoutError(f"VoxCeleb2: no idNNNNN/<video>/NNNNN.m4a files under "
                          f"{', '.join(str(f / 'aac') for f in sets)}")
    manifest = carve_valid(Manifest(rows=rows, root=src), valid_fraction, seed)
    return finish_import(manifest.rows, src, out, on_error=on_error, ignored=ignored,
                         progress=progress)


def _set_rows(folder: Path, src: Path, genders: dict[str, str],
              ignored: list[tuple[str, str]]) -> list[dict[str, str]]:
    """Rows of ``dev`` or ``test``; files and folders not understood go to ``ignored``."""
    aac = folder / "aac"
    if not aac.is_dir():
        raise LayoutError(f"VoxCeleb2: expected {aac}/idNNNNN/<video>/NNNNN.m4a, found in "
                          f"{folder}: {listing(folder.iterdir())}")
    ignored += [(str(p), "not part of the VoxCeleb2 layout")
                for p in sorted(folder.iterdir()) if p != aac]
    rows: list[dict[str, str]] = []
    for speaker_dir in sorted(aac.iterdir()):
        if not (speaker_dir.is_dir() and _SPEAKER_DIR.fullmatch(speaker_dir.name)):
            ignored.append((str(speaker_dir), "expected idNNNNN speaker folders"))
            continue
        speaker = speaker_dir.name
        for video_dir in sorted(speaker_dir.iterdir()):
            if not video_dir.is_dir():
                ignored.append((str(video_dir), "expected <video id> folders"))
                continue
            for path in sorted(video_dir.iterdir()):
                if not (path.is_file() and _CLIP.fullmatch(path.name)):
                    ignored.append((str(path), "expected NNNNN.m4a clips"))
                    continue
                rows.append({
                    "id": f"voxceleb2_{speaker}_{video_dir.name}_{path.stem}",
                    "path": path.relative_to(src).as_posix(),
                    "speaker": speaker,
                    "gender": genders.get(speaker, ""),
                    "split": SETS[folder.name],
                    "set": folder.name,
                    "video": video_dir.name,
                })
    return rows

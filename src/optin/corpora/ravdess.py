"""RAVDESS importer: the speech part (``Audio_Speech_Actors_01-24``), labels from file names.

Files are ``Actor_XX/MM-VV-EE-II-SS-RR-AA.wav`` (see ``/spec/datasets.md``). Only audio-only
speech (modality 03, vocal channel 01) is imported; song, video and audio-video files and names
that do not follow the pattern are named in ``ImportReport.ignored``. Gender follows the actor
number (odd male, even female). The paper's protocol keeps the same speakers in train, valid and
test with different clips (``assign_split(..., "same-speakers")``, stratified speaker x emotion).
"""

from __future__ import annotations

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
from optin.corpora.splits import assign_split

SPEECH_FOLDER = "Audio_Speech_Actors_01-24"
MODALITIES = {"01": "audio-video", "02": "video-only", "03": "audio-only"}
VOCAL_CHANNELS = {"01": "speech", "02": "song"}
EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
INTENSITIES = {"01": "normal", "02": "strong"}
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
REPETITIONS = ("01", "02")
ACTORS = tuple(f"{n:02d}" for n in range(1, 25))

_ACTOR_DIR = re.compile(r"actor_(\d{2})", re.IGNORECASE)
_FILE_NAME = re.compile(r"(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})(\.[^.]+)?")


def parse_ravdess_name(name: str) -> dict[str, str]:
    """The seven codes of a RAVDESS file name, plus its suffix (lower case).

    Returns:
        ``{"modality", "vocal", "emotion", "intensity", "statement", "repetition", "actor",
        "suffix"}``, each a two-digit code (suffix e.g. ``".wav"``).

    Raises:
        ValueError: the name does not have seven two-digit fields or a code is out of range.
    """
    match = _FILE_NAME.fullmatch(name)
    if match is None:
        raise ValueError("not a RAVDESS file name (expected MM-VV-EE-II-SS-RR-AA.wav, "
                         "seven two-digit fields)")
    keys = ("modality", "vocal", "emotion", "intensity", "statement", "repetition", "actor")
    fields = dict(zip(keys, match.groups()[:7], strict=True))
    fields["suffix"] = (match.group(8) or "").lower()
    allowed = {
        "modality": MODALITIES, "vocal": VOCAL_CHANNELS, "emotion": EMOTIONS,
        "intensity": INTENSITIES, "statement": STATEMENTS, "repetition": REPETITIONS,
        "actor": ACTORS,
    }
    for key, codes in allowed.items():
        if fields[key] not in codes:
            raise ValueError(f"{key} code {fields[key]} is not one of {min(codes)}-{max(codes)}")
    return fields


def prepare_ravdess(
    src: str | os.PathLike,
    out: str | os.PathLike | None = None,
    on_error: OnError = "fail",
    seed: int = 0,
    test_fraction: float = 0.2,
    valid_fraction: float = 0.1,
    progress: bool = True,
) -> ImportReport:
    """Import RAVDESS speech from ``src`` (holding ``Actor_XX`` or ``Audio_Speech_Actors_01-24``).

    Args:
        src: the corpus folder.
        out: manifest CSV to write (None: only return it; paths then relative to ``src``).
        on_error: ``"fail"`` raises AudioError on an unreadable file, ``"skip"`` reports it.
        seed, test_fraction, valid_fraction: the same-speakers split (shares of clips per
            speaker x emotion).

    Raises:
        LayoutError: no ``Actor_XX`` folders or no speech files in them.
        AudioError: an unreadable or empty file with ``on_error="fail"``.
    """
    src = require_dir(src, "RAVDESS").resolve()
    ignored: list[tuple[str, str]] = []
    rows: list[dict[str, str]] = []
    for folder, actor in _actor_folders(src, ignored):
        for path in sorted(folder.iterdir()):
            row = _row(path, actor, src, ignored)
            if row is not None:
                rows.append(row)
    if not rows:
        raise LayoutError(
            f"RAVDESS: no speech files (MM-VV-EE-II-SS-RR-AA.wav with modality 03 and vocal "
            f"channel 01) in the Actor_XX folders under {src}; "
            f"{len(ignored)} path(s) were not understood"
            + (f", e.g. {Path(ignored[0][0]).name}: {ignored[0][1]}" if ignored else "")
        )
    manifest = assign_split(Manifest(rows=rows, root=src), "same-speakers",
                            test_fraction=test_fraction, valid_fraction=valid_fraction, seed=seed)
    return finish_import(manifest.rows, src, out, on_error=on_error, ignored=ignored,
                         progress=progress)


def _actor_folders(src: Path, ignored: list[tuple[str, str]]) -> list[tuple[Path, str]]:
    """``(folder, actor code)`` for every ``Actor_XX`` folder; anything else goes to ``ignored``."""

    def actor_dirs(folder: Path) -> list[Path]:
        return [p for p in folder.iterdir() if p.is_dir() and _ACTOR_DIR.fullmatch(p.name)]

    base = src
    if not actor_dirs(src):
        speech = [p for p in src.iterdir()
                  if p.is_dir() and p.name.lower() == SPEECH_FOLDER.lower()]
        if speech and actor_dirs(speech[0]):
            base = speech[0]
    found = actor_dirs(base)
    if not found:
        raise LayoutError(
            f"RAVDESS: expected folders Actor_01..Actor_24 under {src} "
            f"(or under {src / SPEECH_FOLDER}), found: {listing(src.iterdir())}"
        )
    if base != src:
        for entry in sorted(src.iterdir()):
            if entry != base:
                ignored.append((str(entry), f"not part of {SPEECH_FOLDER}"))
    folders: list[tuple[Path, str]] = []
    for entry in sorted(base.iterdir()):
        match = _ACTOR_DIR.fullmatch(entry.name)
        if entry.is_dir() and match and match.group(1) in ACTORS:
            folders.append((entry, match.group(1)))
        elif entry.is_dir() and match:
            ignored.append((str(entry), "actor number outside 01-24"))
        else:
            ignored.append((str(entry), "not an Actor_XX folder"))
    return folders


def _row(path: Path, actor: str, src: Path, ignored: list[tuple[str, str]]
         ) -> dict[str, str] | None:
    """The manifest row of one file in an actor folder, or None (and a reason in ``ignored``)."""
    if not path.is_file():
        ignored.append((str(path), "a folder inside an actor folder (expected .wav files only)"))
        return None
    try:
        fields = parse_ravdess_name(path.name)
    except ValueError as err:
        ignored.append((str(path), str(err)))
        return None
    reason = None
    if fields["modality"] == "02":
        reason = "video-only file (modality 02): no audio"
    elif fields["modality"] == "01":
        reason = "audio-video file (modality 01): the audio-only copy (modality 03) is used"
    elif fields["vocal"] == "02":
        reason = "song (vocal channel 02): only speech is imported"
    elif fields["suffix"] != ".wav":
        reason = f"expected a .wav file, found '{fields['suffix'] or 'no suffix'}'"
    elif fields["actor"] != actor:
        reason = f"actor code {fields['actor']} does not match its folder Actor_{actor}"
    if reason is not None:
        ignored.append((str(path), reason))
        return None
    return {
        "id": f"ravdess_{path.stem}",
        "path": path.relative_to(src).as_posix(),
        "speaker": f"ravdess_actor{actor}",
        "gender": "male" if int(actor) % 2 else "female",
        "emotion": EMOTIONS[fields["emotion"]],
        "utterance": fields["statement"],
        "text": STATEMENTS[fields["statement"]],
        "intensity": INTENSITIES[fields["intensity"]],
        "repetition": fields["repetition"],
    }

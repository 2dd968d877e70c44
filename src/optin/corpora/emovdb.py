"""EmoV-DB importer: one ``<speaker>_<Emotion>`` folder of WAVs per speaker and emotion.

Folder names are matched case-insensitively (``bea_Amused``, ``Bea_amused``, ``josh_Sleepy``,
``sam_Disgusted`` ...); files are ``<emotion>_<a>-<b>_<NNNN>.wav`` whose trailing number is the
CMU ARCTIC prompt (``arctic_aNNNN``). Gender comes from the speaker (bea, jenie female; josh, sam
male). A ``cmuarctic.data`` file at the top of the tree, if present, gives the prompt texts.
Folders and files not understood (other speakers, unpacked archives, ...) are named in
``ImportReport.ignored``. The paper keeps the same speakers in train, valid and test.
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

SPEAKERS: dict[str, str] = {"bea": "female", "jenie": "female", "josh": "male", "sam": "male"}
EMOTIONS: tuple[str, ...] = ("neutral", "amused", "angry", "sleepy", "disgust")
# folder and file spellings seen in copies of the corpus -> emotion name
EMOTION_NAMES: dict[str, str] = {
    "neutral": "neutral",
    "amused": "amused",
    "angry": "angry",
    "anger": "angry",
    "sleepy": "sleepy",
    "sleepiness": "sleepy",
    "disgust": "disgust",
    "disgusted": "disgust",
}
TEXT_FILE = "cmuarctic.data"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")

_FOLDER = re.compile(r"([a-z]+)[_-]([a-z]+)", re.IGNORECASE)
_FILE = re.compile(r"(.+)_(\d{1,4})\.wav", re.IGNORECASE)
_PROMPT_LINE = re.compile(r'\(\s*(\S+)\s+"(.*)"\s*\)')


def parse_folder_name(name: str) -> tuple[str, str]:
    """``(speaker, emotion)`` of a folder name such as ``Bea_amused``, in lower case.

    Raises:
        ValueError: the name is not ``<speaker>_<emotion>`` or either part is unknown.
    """
    match = _FOLDER.fullmatch(name)
    if match is None:
        raise ValueError("not a <speaker>_<emotion> folder")
    speaker, emotion = match.group(1).lower(), match.group(2).lower()
    if speaker not in SPEAKERS:
        raise ValueError(f"speaker '{speaker}' is not one of {', '.join(SPEAKERS)}")
    if emotion not in EMOTION_NAMES:
        raise ValueError(f"emotion '{emotion}' is not one of {', '.join(EMOTIONS)}")
    return speaker, EMOTION_NAMES[emotion]


def read_prompts(path: str | os.PathLike) -> dict[str, str]:
    """Prompt texts from a CMU ARCTIC ``cmuarctic.data`` file: ``{"arctic_a0001": "Author..."}``.

    Raises:
        LayoutError: a non-empty line that is not ``( arctic_aNNNN "text" )``.
    """
    prompts: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            match = _PROMPT_LINE.fullmatch(line.strip())
            if match is None:
                raise LayoutError(f"{path}, line {number}: expected '( arctic_aNNNN \"text\" )', "
                                  f"found {line.strip()[:60]!r}")
            prompts[match.group(1)] = match.group(2)
    return prompts


def prepare_emovdb(
    src: str | os.PathLike,
    out: str | os.PathLike | None = None,
    on_error: OnError = "fail",
    seed: int = 0,
    test_fraction: float = 0.2,
    valid_fraction: float = 0.1,
    progress: bool = True,
) -> ImportReport:
    """Import EmoV-DB from ``src``, the folder holding the unpacked ``<speaker>_<Emotion>`` folders.

    Args:
        src: the corpus folder.
        out: manifest CSV to write (None: only return it; paths then relative to ``src``).
        on_error: ``"fail"`` raises AudioError on an unreadable file, ``"skip"`` reports it.
        seed, test_fraction, valid_fraction: the same-speakers split (shares of clips per
            speaker x emotion).

    Raises:
        LayoutError: no folder understood, or two folders for the same speaker and emotion.
        AudioError: an unreadable or empty file with ``on_error="fail"``.
    """
    src = require_dir(src, "EmoV-DB").resolve()
    ignored: list[tuple[str, str]] = []
    folders: dict[tuple[str, str], Path] = {}
    prompts: dict[str, str] = {}
    for entry in sorted(src.iterdir()):
        if entry.is_file() and entry.name.lower() == TEXT_FILE:
            prompts = read_prompts(entry)
        elif entry.is_file() and entry.name.lower().endswith(ARCHIVE_SUFFIXES):
            ignored.append((str(entry), "an archive: unpack it into this folder to import it"))
        elif not entry.is_dir():
            ignored.append((str(entry), "not a <speaker>_<emotion> folder"))
        else:
            try:
                key = parse_folder_name(entry.name)
            except ValueError as err:
                ignored.append((str(entry), str(err)))
                continue
            if key in folders:
                raise LayoutError(
                    f"EmoV-DB: folders {folders[key].name} and {entry.name} under {src} both hold "
                    f"speaker {key[0]}, emotion {key[1]}; keep one of them"
                )
            folders[key] = entry
    if not folders:
        raise LayoutError(
            f"EmoV-DB: expected folders named <speaker>_<emotion> (speakers "
            f"{', '.join(SPEAKERS)}; emotions {', '.join(EMOTIONS)}; any case) under {src}, "
            f"found: {listing(src.iterdir())}"
        )
    rows: list[dict[str, str]] = []
    for (speaker, emotion), folder in sorted(folders.items()):
        for path in sorted(folder.iterdir()):
            match = _FILE.fullmatch(path.name) if path.is_file() else None
            if match is None:
                ignored.append((str(path), "expected <emotion>_<a>-<b>_<NNNN>.wav files only"))
                continue
            prompt = f"arctic_a{int(match.group(2)):04d}"
            rows.append({
                "id": f"emovdb_{speaker}_{emotion}_{path.stem}",
                "path": path.relative_to(src).as_posix(),
                "speaker": f"emovdb_{speaker}",
                "gender": SPEAKERS[speaker],
                "emotion": emotion,
                "utterance": prompt,
                "text": prompts.get(prompt, ""),
            })
    if not rows:
        raise LayoutError(f"EmoV-DB: the folders {listing(folders.values())} under {src} hold "
                          "no <emotion>_<a>-<b>_<NNNN>.wav files")
    manifest = assign_split(Manifest(rows=rows, root=src), "same-speakers",
                            test_fraction=test_fraction, valid_fraction=valid_fraction, seed=seed)
    return finish_import(manifest.rows, src, out, on_error=on_error, ignored=ignored,
                         progress=progress)

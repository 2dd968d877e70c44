"""LibriSpeech importer: ``<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac``.

Gender comes from ``SPEAKERS.TXT`` (``ID | SEX | SUBSET | MINUTES | NAME``), transcripts from the
``<speaker>-<chapter>.trans.txt`` files. The paper's protocol: train-clean-100 and
train-clean-360 are the training pool (valid is carved from it speaker-disjointly), test-clean is
the test set. Other subsets are imported only when asked for with ``subsets`` (train-* into the
pool, dev-* as valid, test-* as test); subset folders left out are named in
``ImportReport.ignored``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
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

PAPER_SUBSETS: tuple[str, ...] = ("train-clean-100", "train-clean-360", "test-clean")
KNOWN_SUBSETS: tuple[str, ...] = (
    "train-clean-100", "train-clean-360", "train-other-500",
    "dev-clean", "dev-other", "test-clean", "test-other",
)
METADATA_FILES: frozenset[str] = frozenset(
    {"SPEAKERS.TXT", "CHAPTERS.TXT", "BOOKS.TXT", "README.TXT", "LICENSE.TXT"}
)
SPLIT_OF_PREFIX: dict[str, str] = {"train": "train", "dev": "valid", "test": "test"}
SEXES: dict[str, str] = {"F": "female", "M": "male"}

_AUDIO = re.compile(r"(\d+)-(\d+)-(\d+)\.flac")


def read_speakers(path: str | os.PathLike) -> dict[str, str]:
    """Speaker id -> ``"female"``/``"male"`` from a LibriSpeech ``SPEAKERS.TXT``.

    Lines are ``ID | SEX | SUBSET | MINUTES | NAME`` (a name may itself hold ``|``); lines
    starting with ``;`` are comments.

    Raises:
        LayoutError: a line without the fields, or a SEX other than M or F.
    """
    genders: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip() or line.lstrip().startswith(";"):
                continue
            fields = [f.strip() for f in line.split("|", maxsplit=4)]
            if len(fields) < 3 or not fields[0]:
                raise LayoutError(f"{path}, line {number}: expected 'ID | SEX | SUBSET | "
                                  f"MINUTES | NAME', found {line.strip()[:60]!r}")
            sex = fields[1].upper()
            if sex not in SEXES:
                raise LayoutError(f"{path}, line {number}: SEX must be M or F, found "
                                  f"{fields[1]!r}")
            genders[fields[0]] = SEXES[sex]
    return genders


def read_transcripts(path: str | os.PathLike) -> dict[str, str]:
    """Utterance id -> text from a ``<speaker>-<chapter>.trans.txt`` file."""
    texts: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            utt, _, text = line.strip().partition(" ")
            if utt:
                texts[utt] = text.strip()
    return texts


def prepare_librispeech(
    src: str | os.PathLike,
    out: str | os.PathLike | None = None,
    on_error: OnError = "fail",
    seed: int = 0,
    valid_fraction: float = 0.1,
    subsets: Sequence[str] | None = None,
    progress: bool = True,
) -> ImportReport:
    """Import LibriSpeech from ``src`` (the ``LibriSpeech`` folder or the folder holding it).

    Args:
        src: the corpus folder.
        out: manifest CSV to write (None: only return it; paths then relative to ``src``).
        on_error: ``"fail"`` raises AudioError on an unreadable file, ``"skip"`` reports it.
        seed, valid_fraction: the speaker-disjoint valid set carved from the training subsets.
        subsets: subset folders to import; default the paper's (train-clean-100,
            train-clean-360, test-clean) that are present.

    Raises:
        LayoutError: no SPEAKERS.TXT, a subset asked for that is missing, or no subset found.
        AudioError: an unreadable or empty file with ``on_error="fail"``.
    """
    src = require_dir(src, "LibriSpeech").resolve()
    base = src
    if not (src / "SPEAKERS.TXT").is_file() and (src / "LibriSpeech").is_dir():
        base = src / "LibriSpeech"
    if not (base / "SPEAKERS.TXT").is_file():
        raise LayoutError(f"LibriSpeech: expected SPEAKERS.TXT and subset folders under {src} "
                          f"(or under {src / 'LibriSpeech'}), found: {listing(src.iterdir())}")
    genders = read_speakers(base / "SPEAKERS.TXT")
    ignored: list[tuple[str, str]] = []
    if base != src:
        ignored += [(str(p), "not part of the LibriSpeech folder")
                    for p in sorted(src.iterdir()) if p != base]
    wanted = _choose_subsets(base, subsets, ignored)

    rows: list[dict[str, str]] = []
    for subset in wanted:
        rows += _subset_rows(base / subset, src, genders, ignored)
    if not rows:
        raise LayoutError(f"LibriSpeech: the subsets {', '.join(wanted)} under {base} hold no "
                          "<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac files")
    manifest = carve_valid(Manifest(rows=rows, root=src), valid_fraction, seed)
    return finish_import(manifest.rows, src, out, on_error=on_error, ignored=ignored,
                         progress=progress)


def _choose_subsets(base: Path, subsets: Sequence[str] | None,
                    ignored: list[tuple[str, str]]) -> list[str]:
    """The subset folders to import; other entries of ``base`` go to ``ignored``."""
    present = sorted(p.name for p in base.iterdir() if p.is_dir())
    if subsets is None:
        wanted = [s for s in PAPER_SUBSETS if s in present]
        if not wanted:
            raise LayoutError(f"LibriSpeech: expected subset folders {', '.join(PAPER_SUBSETS)} "
                              f"under {base} (the paper's protocol), found: "
                              f"{listing(base.iterdir())}; pass subsets=[...] to import others")
        reason = (f"subset not in the paper's protocol ({', '.join(PAPER_SUBSETS)}); "
                  "pass subsets=[...] to import it")
    else:
        wanted = list(dict.fromkeys(subsets))
        missing = [s for s in wanted if s not in present]
        if missing:
            raise LayoutError(f"LibriSpeech: subset folder(s) {', '.join(missing)} asked for but "
                              f"not found under {base}; found: {listing(base.iterdir())}")
        unknown = [s for s in wanted if s.split("-")[0] not in SPLIT_OF_PREFIX]
        if unknown:
            raise LayoutError(f"LibriSpeech: cannot tell the split of subset(s) "
                              f"{', '.join(unknown)}: names must start with train-, dev- or test-")
        reason = "subset not asked for in subsets=[...]"
    for entry in sorted(base.iterdir()):
        if entry.is_dir() and entry.name not in wanted:
            ignored.append((str(entry), reason if entry.name in KNOWN_SUBSETS
                            else "not a LibriSpeech subset folder"))
        elif entry.is_file() and entry.name not in METADATA_FILES:
            ignored.append((str(entry), "not a LibriSpeech metadata file"))
    return wanted


def _subset_rows(folder: Path, src: Path, genders: dict[str, str],
                 ignored: list[tuple[str, str]]) -> list[dict[str, str]]:
    """Rows of one subset folder; files and folders not understood go to ``ignored``."""
    split = SPLIT_OF_PREFIX[folder.name.split("-")[0]]
    rows: list[dict[str, str]] = []
    for speaker_dir in sorted(folder.iterdir()):
        if not (speaker_dir.is_dir() and speaker_dir.name.isdigit()):
            ignored.append((str(speaker_dir), "expected numbered speaker folders"))
            continue
        speaker = speaker_dir.name
        for chapter_dir in sorted(speaker_dir.iterdir()):
            if not (chapter_dir.is_dir() and chapter_dir.name.isdigit()):
                ignored.append((str(chapter_dir), "expected numbered chapter folders"))
                continue
            chapter = chapter_dir.name
            trans = chapter_dir / f"{speaker}-{chapter}.trans.txt"
            texts = read_transcripts(trans) if trans.is_file() else {}
            for path in sorted(chapter_dir.iterdir()):
                if path == trans:
                    continue
                match = _AUDIO.fullmatch(path.name) if path.is_file() else None
                if match is None or match.group(1, 2) != (speaker, chapter):
                    ignored.append((str(path), f"expected {speaker}-{chapter}-NNNN.flac or "
                                               f"{trans.name}"))
                    continue
                utt = path.name[: -len(".flac")]
                rows.append({
                    "id": f"librispeech_{utt}",
                    "path": path.relative_to(src).as_posix(),
                    "speaker": speaker,
                    "gender": genders.get(speaker, ""),
                    "utterance": utt,
                    "text": texts.get(utt, ""),
                    "split": split,
                    "subset": folder.name,
                    "chapter": chapter,
                })
    return rows

"""EmoDB importer (Berlin Database of Emotional Speech): labels from the file names.

Files are ``SSTTTEV.wav`` (or ``.flac``, suffix in any case), e.g. ``03a01Fa.wav``: speaker 03,
text a01, emotion letter F (the German initial: W Wut/Ärger, L Langeweile, E Ekel, A Angst,
F Freude, T Trauer, N neutral), version a. The official distribution keeps them in ``wav/``; when
``src`` holds a ``wav`` folder only that folder is searched (recursively) and the other entries of
``src`` are named in ``ImportReport.ignored``, otherwise ``src`` itself is searched. Names that do
not follow the scheme, speakers outside the corpus's ten and unknown letters are named there too,
as is the second copy of a recording found twice (e.g. ``.wav`` and ``.flac``: the ``.wav`` is
kept). Gender follows the speaker table of Burkhardt et al. (Interspeech 2005). The paper's
protocol for small emotional corpora keeps the same speakers in train, valid and test with
different clips (``assign_split(..., "same-speakers")``, stratified speaker x emotion).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
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

AUDIO_FOLDER = "wav"
AUDIO_SUFFIXES: tuple[str, ...] = (".wav", ".flac")
SPEAKERS: dict[str, str] = {
    "03": "male", "08": "female", "09": "female", "10": "male", "11": "male",
    "12": "male", "13": "female", "14": "female", "15": "male", "16": "female",
}
EMOTIONS: dict[str, str] = {
    "W": "angry",  # Wut / Ärger
    "L": "bored",  # Langeweile
    "E": "disgust",  # Ekel
    "A": "fearful",  # Angst
    "F": "happy",  # Freude
    "T": "sad",  # Trauer
    "N": "neutral",
}
# the ten sentences as given in the corpus documentation (emodb.bilderbar.info)
SENTENCES: dict[str, str] = {
    "a01": "Der Lappen liegt auf dem Eisschrank.",
    "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
}

_FILE_NAME = re.compile(r"(\d{2})([a-z]\d{2})([a-z])([a-z])(\.[^.]+)", re.IGNORECASE)


def parse_emodb_name(name: str) -> dict[str, str]:
    """The codes of an EmoDB file name such as ``03a01Fa.wav`` (letters in any case).

    Returns:
        ``{"speaker": "03", "text": "a01", "emotion": "F", "version": "a", "suffix": ".wav"}``
        (emotion letter upper case; text, version and suffix lower case).

    Raises:
        ValueError: the name is not ``SSTTTEV.<suffix>``, or its speaker, text or emotion is not
            one of the corpus's.
    """
    match = _FILE_NAME.fullmatch(name)
    if match is None:
        raise ValueError("not an EmoDB file name (expected e.g. 03a01Fa.wav: speaker 03, "
                         "text a01, emotion letter F, version a)")
    speaker, text, emotion, version, suffix = match.groups()
    fields = {"speaker": speaker, "text": text.lower(), "emotion": emotion.upper(),
              "version": version.lower(), "suffix": suffix.lower()}
    allowed = {"speaker": SPEAKERS, "text": SENTENCES, "emotion": EMOTIONS}
    for key, codes in allowed.items():
        if fields[key] not in codes:
            raise ValueError(f"{key} {'letter' if key == 'emotion' else 'code'} {fields[key]} "
                             f"is not one of {' '.join(codes)}")
    return fields


def prepare_emodb(
    src: str | os.PathLike,
    out: str | os.PathLike | None = None,
    on_error: OnError = "fail",
    seed: int = 0,
    test_fraction: float = 0.2,
    valid_fraction: float = 0.1,
    progress: bool = True,
) -> ImportReport:
    """Import EmoDB from ``src`` (the corpus folder holding ``wav/``, or the audio folder itself).

    Args:
        src: the corpus folder.
        out: manifest CSV to write (None: only return it; paths then relative to ``src``).
        on_error: ``"fail"`` raises AudioError on an unreadable file, ``"skip"`` reports it.
        seed, test_fraction, valid_fraction: the same-speakers split (shares of clips per
            speaker x emotion).

    Raises:
        LayoutError: no EmoDB audio file found.
        AudioError: an unreadable or empty file with ``on_error="fail"``.
    """
    src = require_dir(src, "EmoDB").resolve()
    ignored: list[tuple[str, str]] = []
    base = _audio_folder(src, ignored)
    copies: dict[tuple[str, str, str, str], list[Path]] = defaultdict(list)
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        if path.suffix.lower() not in AUDIO_SUFFIXES:
            ignored.append((str(path), "not a .wav or .flac file"))
            continue
        try:
            fields = parse_emodb_name(path.name)
        except ValueError as err:
            ignored.append((str(path), str(err)))
            continue
        copies[(fields["speaker"], fields["text"], fields["emotion"], fields["version"])].append(
            path)
    rows: list[dict[str, str]] = []
    for (speaker, text, emotion, version), paths in sorted(copies.items()):
        kept, *others = sorted(paths, key=lambda p: (p.suffix.lower() != ".wav", p.as_posix()))
        for other in others:
            ignored.append((str(other), f"the same recording (speaker {speaker}, text {text}, "
                                        f"emotion {emotion}, version {version}) as "
                                        f"{kept.relative_to(src).as_posix()}, which is imported"))
        rows.append({
            "id": f"emodb_{speaker}{text}{emotion}{version}",
            "path": kept.relative_to(src).as_posix(),
            "speaker": f"emodb{speaker}",
            "gender": SPEAKERS[speaker],
            "emotion": EMOTIONS[emotion],
            "utterance": text,
            "text": SENTENCES[text],
            "version": version,
        })
    if not rows:
        raise LayoutError(
            f"EmoDB: expected audio files named like 03a01Fa.wav or 03a01Fa.flac under {base} "
            f"(or in its sub-folders), found: {listing(base.iterdir())}; "
            f"{len(ignored)} path(s) were not understood"
            + (f", e.g. {Path(ignored[0][0]).name}: {ignored[0][1]}" if ignored else "")
        )
    manifest = assign_split(Manifest(rows=rows, root=src), "same-speakers",
                            test_fraction=test_fraction, valid_fraction=valid_fraction, seed=seed)
    return finish_import(manifest.rows, src, out, on_error=on_error, ignored=ignored,
                         progress=progress)


def _audio_folder(src: Path, ignored: list[tuple[str, str]]) -> Path:
    """``src/wav`` (any case) if there is one, the other entries of ``src`` going to
    ``ignored``; otherwise ``src``."""
    entries = sorted(src.iterdir())
    folders = [p for p in entries if p.is_dir() and p.name.lower() == AUDIO_FOLDER]
    if not folders:
        return src
    for entry in entries:
        if entry != folders[0]:
            ignored.append((str(entry), f"not part of the audio folder {folders[0].name}/"))
    return folders[0]

"""Small fake corpora with exactly the real layouts, for tests (no network, a second or less).

Each ``make_<corpus>_tree(root, ...)`` writes short real audio (tones plus noise) and the
corpus's metadata under ``root`` and returns a ``FakeTree``: the folder to give the importer,
the labels every imported row must carry, and the paths the importer must name as ignored.
``break_audio`` turns a file into an empty, header-only or corrupt one.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf

from optin.corpora.emodb import EMOTIONS as EMODB_EMOTIONS
from optin.corpora.emodb import SENTENCES as EMODB_SENTENCES
from optin.corpora.emodb import SPEAKERS as EMODB_SPEAKERS
from optin.corpora.librispeech import PAPER_SUBSETS
from optin.corpora.ravdess import EMOTIONS as RAVDESS_EMOTIONS
from optin.corpora.ravdess import INTENSITIES as RAVDESS_INTENSITIES
from optin.corpora.ravdess import STATEMENTS as RAVDESS_STATEMENTS


@dataclass
class FakeTree:
    """A fake corpus on disk and the truth about it.

    Attributes:
        src: the folder to pass to the importer.
        expected: for every file the importer must import by default, its path relative to
            ``src`` (forward slashes) -> the column values its row must have.
        ignored: paths relative to ``src`` that the importer must name in ``report.ignored``.
        extra: paths relative to ``src`` of audio files imported only on request (LibriSpeech
            subsets outside the paper's protocol) -> their expected column values.
    """

    src: Path
    expected: dict[str, dict[str, str]] = field(default_factory=dict)
    ignored: set[str] = field(default_factory=set)
    extra: dict[str, dict[str, str]] = field(default_factory=dict)

    def path(self, rel: str) -> Path:
        """Absolute path of a file given relative to ``src``."""
        return self.src / rel


def tone(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """(N,) float32: a random-pitch tone with a few harmonics plus a little noise, peak ~0.5."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = rng.uniform(90.0, 300.0)
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in (1, 2, 3))
    x = x + 0.05 * rng.standard_normal(len(t))
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


def write_m4a(path: str | os.PathLike, wave: np.ndarray, rate: int) -> Path:
    """Write (N,) float mono audio as AAC in an MP4 container (.m4a) with PyAV."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # encoded in memory, written at once
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        data = np.asarray(wave, dtype=np.float32)[None, :]  # planar (1, N)
        for start in range(0, data.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, start:start + 1024]),
                                               format="fltp", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    path.write_bytes(buffer.getvalue())
    return path


def break_audio(path: str | os.PathLike, how: Literal["empty", "corrupt", "no-samples"]) -> Path:
    """Spoil an audio file in place: 0 bytes, random bytes, or a valid header with no samples."""
    path = Path(path)
    if how == "empty":
        path.write_bytes(b"")
    elif how == "corrupt":
        path.write_bytes(b"this is not audio " + bytes(np.random.default_rng(0).integers(
            0, 256, 512, dtype=np.uint8)))
    elif how == "no-samples":
        fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
        sf.write(str(path), np.zeros(0, dtype=np.float32), 16000, format=fmt)
    else:
        raise ValueError(f"unknown way to break a file: {how!r}")
    return path


def _wav(path: Path, rate: int, seconds: float, rng: np.random.Generator) -> None:
    """A 16-bit WAV or FLAC (by suffix) tone, encoded in memory: one write per file is faster."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
    sf.write(buffer, tone(seconds, rate, rng), rate, subtype="PCM_16", format=fmt)
    path.write_bytes(buffer.getvalue())


# ---------------------------------------------------------------------------------- RAVDESS
def make_ravdess_tree(
    root: str | os.PathLike,
    actors: Sequence[int] = (1, 2, 3, 4),
    emotions: Sequence[str] = tuple(RAVDESS_EMOTIONS),
    parent: bool = True,
    extras: bool = True,
    seconds: float = 0.1,
    rate: int = 48000,
    seed: int = 0,
) -> FakeTree:
    """A RAVDESS tree: every speech clip of the given actors and emotion codes.

    Args:
        actors: actor numbers 1-24 (odd male, even female).
        emotions: emotion codes "01".."08" (neutral has normal intensity only).
        parent: put the actors under ``Audio_Speech_Actors_01-24/`` (else directly in root).
        extras: add files the importer must ignore: song, video-only, audio-video, bad names,
            a stray folder, and (with ``parent``) an ``Audio_Song_Actors_01-24`` folder.
    """
    root = Path(root)
    base = root / "Audio_Speech_Actors_01-24" if parent else root
    rng = np.random.default_rng(seed)
    tree = FakeTree(src=root)
    for actor in actors:
        folder = base / f"Actor_{actor:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for emotion in emotions:
            for intensity in ("01",) if emotion == "01" else ("01", "02"):
                for statement in ("01", "02"):
                    for repetition in ("01", "02"):
                        stem = f"03-01-{emotion}-{intensity}-{statement}-{repetition}-{actor:02d}"
                        _wav(folder / f"{stem}.wav", rate, seconds, rng)
                        tree.expected[(folder / f"{stem}.wav").relative_to(root).as_posix()] = {
                            "id": f"ravdess_{stem}",
                            "speaker": f"ravdess_actor{actor:02d}",
                            "gender": "male" if actor % 2 else "female",
                            "emotion": RAVDESS_EMOTIONS[emotion],
                            "utterance": statement,
                            "text": RAVDESS_STATEMENTS[statement],
                            "intensity": RAVDESS_INTENSITIES[intensity],
                            "repetition": repetition,
                        }
    if extras:
        first = base / f"Actor_{actors[0]:02d}"
        a = f"{actors[0]:02d}"
        odd = {
            f"03-02-03-01-01-01-{a}.wav": "audio",  # song
            f"02-01-03-01-01-01-{a}.mp4": "bytes",  # video only
            f"01-01-03-01-01-01-{a}.mp4": "bytes",  # audio-video
            f"03-01-03-01-01-{a}.wav": "audio",  # six fields
            f"03-01-09-01-01-01-{a}.wav": "audio",  # emotion 09
            "notes.txt": "bytes",
        }
        for name, kind in odd.items():
            if kind == "audio":
                _wav(first / name, rate, seconds, rng)
            else:
                (first / name).write_bytes(b"\x00" * 64)
            tree.ignored.add((first / name).relative_to(root).as_posix())
        (first / "stray").mkdir()
        tree.ignored.add((first / "stray").relative_to(root).as_posix())
        (base / "README.txt").write_text("fake RAVDESS\n")
        tree.ignored.add((base / "README.txt").relative_to(root).as_posix())
        if parent:
            song = root / "Audio_Song_Actors_01-24"
            _wav(song / f"Actor_{actors[0]:02d}" / f"03-02-01-01-01-01-{a}.wav", rate, seconds,
                 rng)
            tree.ignored.add(song.name)
    return tree


# ---------------------------------------------------------------------------------- EmoV-DB
EMOVDB_GENDERS: dict[str, str] = {"bea": "female", "jenie": "female", "josh": "male",
                                  "sam": "male"}
# emotion -> (folder word, file prefix) as spelled in the corpus
_EMOV_WORDS: dict[str, tuple[str, str]] = {
    "neutral": ("Neutral", "neutral"),
    "amused": ("Amused", "amused"),
    "angry": ("Angry", "anger"),
    "sleepy": ("Sleepy", "sleepiness"),
    "disgust": ("Disgusted", "disgust"),
}


def _emov_folder_name(speaker: str, word: str, k: int) -> str:
    """Folder names in the varying case of real copies: bea_Amused, Bea_amused, ..."""
    styles = (
        f"{speaker}_{word}",
        f"{speaker.capitalize()}_{word.lower()}",
        f"{speaker}_{word.lower()}",
        f"{speaker.upper()}_{word.upper()}",
    )
    return styles[k % len(styles)]


def make_emovdb_tree(
    root: str | os.PathLike,
    speakers: Sequence[str] = ("bea", "jenie", "josh", "sam"),
    emotions: Sequence[str] = ("neutral", "amused", "angry", "sleepy", "disgust"),
    clips: int = 5,
    with_text: bool = False,
    extras: bool = True,
    seconds: float = 0.1,
    rate: int = 16000,
    seed: int = 0,
) -> FakeTree:
    """An EmoV-DB tree: one ``<speaker>_<Emotion>`` folder (case varying) per speaker and emotion.

    Args:
        clips: WAVs per folder, ``<prefix>_1-28_<NNNN>.wav`` with distinct prompt numbers.
        with_text: also write ``cmuarctic.data`` with a text for every prompt used.
        extras: add what the importer must ignore: an unknown emotion and an unknown speaker
            folder, an archive, a loose file, and a non-WAV file inside a folder.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tree = FakeTree(src=root)
    prompts: dict[str, str] = {}
    folders: list[Path] = []
    k = 0
    for speaker in speakers:
        for emotion in emotions:
            word, prefix = _EMOV_WORDS[emotion]
            folder = root / _emov_folder_name(speaker, word, k)
            folders.append(folder)
            for i in range(clips):
                number = 1 + 7 * k + 3 * i  # distinct, not contiguous
                stem = f"{prefix}_1-28_{number:04d}"
                prompt = f"arctic_a{number:04d}"
                prompts[prompt] = f"Fake prompt number {number}, for the tests."
                _wav(folder / f"{stem}.wav", rate, seconds, rng)
                tree.expected[f"{folder.name}/{stem}.wav"] = {
                    "id": f"emovdb_{speaker}_{emotion}_{stem}",
                    "speaker": f"emovdb_{speaker}",
                    "gender": EMOVDB_GENDERS[speaker],
                    "emotion": emotion,
                    "utterance": prompt,
                    "text": prompts[prompt] if with_text else "",
                }
            k += 1
    if with_text:
        lines = [f'( {p} "{t}" )\n' for p, t in sorted(prompts.items())]
        (root / "cmuarctic.data").write_text("".join(lines), encoding="utf-8")
    if extras:
        _wav(root / "bea_Whispering" / "whisper_1-28_0001.wav", rate, seconds, rng)
        _wav(root / "emmanuel_Amused" / "amused_1-28_0001.wav", rate, seconds, rng)
        (root / "sam_Amused.tar.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 30)
        (root / "notes.txt").write_text("fake EmoV-DB\n")
        first = folders[0]
        (first / "readme.md").write_text("not audio\n")
        tree.ignored |= {"bea_Whispering", "emmanuel_Amused", "sam_Amused.tar.gz", "notes.txt",
                         f"{first.name}/readme.md"}
    return tree


# ---------------------------------------------------------------------------------- EmoDB
_EMODB_SUFFIXES = (".wav", ".flac", ".WAV", ".FLAC")  # both formats, any case, as users have


def make_emodb_tree(
    root: str | os.PathLike,
    speakers: Sequence[str] = ("03", "08", "10", "16"),
    emotions: str = "WLEAFTN",
    texts: Sequence[str] = ("a01", "a05", "b09"),
    versions: str = "ab",
    wav_folder: bool = True,
    nested: bool = False,
    extras: bool = True,
    seconds: float = 0.1,
    rate: int = 16000,
    seed: int = 0,
) -> FakeTree:
    """An EmoDB tree: ``SSTTTEV`` files (``03a01Fa.wav``), every speaker x emotion x text x version.

    Args:
        speakers: speaker codes of the corpus ("03", "08", ...; see ``emodb.SPEAKERS``).
        emotions: emotion letters (W L E A F T N).
        texts, versions: sentence codes ("a01" ...) and version letters.
        wav_folder: put the audio under ``wav/`` as the official distribution does (else
            directly in root).
        nested: one sub-folder per speaker inside the audio folder.
        extras: add what the importer must name as ignored: names off the scheme, an unknown
            speaker, text and emotion letter, a non-audio file, a second copy of a recording
            in the other format (in a sub-folder), and (with ``wav_folder``) the distribution's
            other files next to ``wav/``.
    """
    root = Path(root)
    base = root / "wav" if wav_folder else root
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tree = FakeTree(src=root)
    k = 0
    for speaker in speakers:
        folder = base / speaker if nested else base
        for emotion in emotions:
            for text in texts:
                for version in versions:
                    stem = f"{speaker}{text}{emotion}{version}"
                    path = folder / f"{stem}{_EMODB_SUFFIXES[k % len(_EMODB_SUFFIXES)]}"
                    k += 1
                    _wav(path, rate, seconds, rng)
                    tree.expected[path.relative_to(root).as_posix()] = {
                        "id": f"emodb_{stem}",
                        "speaker": f"emodb{speaker}",
                        "gender": EMODB_SPEAKERS[speaker],
                        "emotion": EMODB_EMOTIONS[emotion],
                        "utterance": text,
                        "text": EMODB_SENTENCES[text],
                        "version": version,
                    }
    if extras:
        first = next(iter(tree.expected))  # the first file written: a .wav
        copy = base / "converted" / Path(first).with_suffix(".flac").name
        s, t = speakers[0], texts[0]
        odd = [f"{s}{t}{emotions[0]}a_copy.wav", f"{s}{t}Xa.wav", f"07{t}{emotions[0]}a.flac",
               f"{s}c01{emotions[0]}a.wav", f"{s}{t}.wav"]
        for name in odd:
            _wav(base / name, rate, seconds, rng)
        _wav(copy, rate, seconds, rng)
        (base / "notes.txt").write_text("fake EmoDB\n")
        tree.ignored |= {(base / n).relative_to(root).as_posix()
                         for n in [*odd, "notes.txt"]} | {copy.relative_to(root).as_posix()}
        if wav_folder:
            (root / "erkennung.txt").write_text("Satz\terkannt\n")
            (root / "lablaut").mkdir()
            (root / "lablaut" / f"{Path(first).stem}.lab").write_text("fake\n")
            tree.ignored |= {"erkennung.txt", "lablaut"}
    return tree


# ---------------------------------------------------------------------------------- LibriSpeech
# (id, sex, subset, name); 60's name holds "|" as in the real SPEAKERS.TXT
LIBRISPEECH_SPEAKERS: tuple[tuple[str, str, str, str], ...] = (
    ("19", "F", "train-clean-100", "Kara Shallenberg"),
    ("26", "M", "train-clean-100", "Denny Sayers"),
    ("60", "M", "train-clean-100", "|CBW|Simon"),
    ("103", "F", "train-clean-100", "Karen Savage"),
    ("1001", "F", "train-clean-360", "Fake Reader One"),
    ("1002", "M", "train-clean-360", "Fake Reader Two"),
    ("1089", "M", "test-clean", "Fake Reader Three"),
    ("121", "F", "test-clean", "Fake Reader Four"),
    ("1272", "M", "dev-clean", "Fake Reader Five"),
)
_SPEAKERS_HEADER = """\
; Some speakers are in more than one subset in other releases; not here.
;
;ID  |SEX| SUBSET           |MINUTES| NAME
"""
_WORDS = ("THE", "OLD", "MAN", "SAW", "A", "RIVER", "OF", "LIGHT", "BY", "NIGHT", "AND", "DAY")


def make_librispeech_tree(
    root: str | os.PathLike,
    speakers: Sequence[tuple[str, str, str, str]] = LIBRISPEECH_SPEAKERS,
    chapters: int = 2,
    utterances: int = 2,
    parent: bool = True,
    extras: bool = True,
    seconds: float = 0.1,
    rate: int = 16000,
    seed: int = 0,
) -> FakeTree:
    """A LibriSpeech tree: ``LibriSpeech/<subset>/<spk>/<chapter>/`` FLACs and transcripts.

    Args:
        speakers: (id, sex M/F, subset, name) rows, also written to ``SPEAKERS.TXT`` (plus
            one speaker who has no files, as in real copies that hold only some subsets).
        parent: ``src`` is the folder holding ``LibriSpeech/`` (else ``LibriSpeech`` itself).
        extras: add a stray file in a chapter folder and a metadata file (CHAPTERS.TXT, which
            must not be reported). Subsets outside the paper's protocol (dev-clean in the
            default speakers) land in ``extra`` and their folders in ``ignored``.
    """
    root = Path(root)
    base = root / "LibriSpeech"
    base.mkdir(parents=True, exist_ok=True)
    src = root if parent else base
    rng = np.random.default_rng(seed)
    tree = FakeTree(src=src)
    lines = [f"{spk:<5}| {sex} | {subset:<17}| {rng.uniform(20, 30):5.2f} | {name}\n"
             for spk, sex, subset, name in speakers]
    lines.append("9999 | F | train-other-500  | 24.10 | Absent Reader\n")  # not in the tree
    (base / "SPEAKERS.TXT").write_text(_SPEAKERS_HEADER + "".join(lines), encoding="utf-8")
    for n, (spk, sex, subset, _) in enumerate(speakers):
        for c in range(chapters):
            chapter = str(100 * (n + 1) + 7 * c)
            folder = base / subset / spk / chapter
            transcript = []
            for u in range(utterances):
                utt = f"{spk}-{chapter}-{u:04d}"
                text = " ".join(rng.choice(_WORDS, size=4))
                transcript.append(f"{utt} {text}\n")
                _wav(folder / f"{utt}.flac", rate, seconds, rng)
                truth = {
                    "id": f"librispeech_{utt}",
                    "speaker": spk,
                    "gender": "female" if sex == "F" else "male",
                    "utterance": utt,
                    "text": text,
                    "subset": subset,
                    "chapter": chapter,
                }
                rel = (folder / f"{utt}.flac").relative_to(src).as_posix()
                (tree.expected if subset in PAPER_SUBSETS else tree.extra)[rel] = truth
            (folder / f"{spk}-{chapter}.trans.txt").write_text("".join(transcript))
    for subset in sorted({s[2] for s in speakers} - set(PAPER_SUBSETS)):
        tree.ignored.add((base / subset).relative_to(src).as_posix())
    if extras:
        (base / "CHAPTERS.TXT").write_text(";ID |READER|MINUTES| SUBSET | ...\n")
        spk, subset = speakers[0][0], speakers[0][2]
        first = base / subset / spk / "100"  # the first speaker's first chapter
        (first / "notes.txt").write_text("not audio\n")
        tree.ignored.add((first / "notes.txt").relative_to(src).as_posix())
        if parent:
            (root / "LibriSpeech.tar.gz.md5").write_text("0\n")
            tree.ignored.add("LibriSpeech.tar.gz.md5")
    return tree



# ---------------------------------------------------------------------------------- VoxCeleb2
# (id, gender m/f, set)
VOXCELEB2_SPEAKERS: tuple[tuple[str, str, str], ...] = (
    ("id00012", "m", "dev"),
    ("id00015", "f", "dev"),
    ("id00016", "m", "dev"),
    ("id00017", "f", "dev"),
    ("id00019", "f", "dev"),
    ("id00061", "m", "test"),
    ("id00081", "f", "test"),
)
_VIDEO_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


def make_voxceleb2_tree(
    root: str | os.PathLike,
    speakers: Sequence[tuple[str, str, str]] = VOXCELEB2_SPEAKERS,
    videos: int = 2,
    clips: int = 2,
    extras: bool = True,
    seconds: float = 0.1,
    rate: int = 16000,
    seed: int = 0,
) -> FakeTree:
    """A VoxCeleb2 tree: ``{dev,test}/aac/idNNNNN/<video>/NNNNN.m4a`` (real AAC) and vox2_meta.csv.

    Args:
        speakers: (VoxCeleb2 id, gender m/f, set dev/test).
        extras: add a non-m4a file in a video folder, a loose file in ``dev/aac`` and a
            top-level folder the importer must ignore.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tree = FakeTree(src=root)
    # the real file's header has a space before each comma; fields vary here on purpose
    meta = ["VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set \n"]
    pads = (("", " "), (" ", ""), ("  ", "  "), ("\t", " "))
    for n, (spk, gender, set_name) in enumerate(speakers):
        left, right = pads[n % len(pads)]
        meta.append(f"{left}{spk}{right},{left}n{spk[2:]}{right},{left}{gender}{right},"
                    f"{left}{set_name}{right}\n")
        for _ in range(videos):
            video = "".join(rng.choice(list(_VIDEO_CHARS), size=11))
            for c in range(clips):
                rel = f"{set_name}/aac/{spk}/{video}/{c + 1:05d}.m4a"
                write_m4a(root / rel, tone(seconds, rate, rng), rate)
                tree.expected[rel] = {
                    "id": f"voxceleb2_{spk}_{video}_{c + 1:05d}",
                    "speaker": spk,
                    "gender": "female" if gender == "f" else "male",
                    "set": set_name,
                    "video": video,
                }
    meta.append(" id09999 , n009999 , m , test \n")  # listed, not in the tree
    (root / "vox2_meta.csv").write_text("".join(meta), encoding="utf-8")
    if extras:
        first = sorted(tree.expected)[0]
        notes = str(Path(first).parent / "notes.txt")
        (root / notes).write_text("not audio\n")
        (root / "dev" / "aac").mkdir(parents=True, exist_ok=True)
        (root / "dev" / "aac" / "README").write_text("fake\n")
        (root / "txt").mkdir()
        tree.ignored |= {Path(notes).as_posix(), "dev/aac/README", "txt"}
    return tree

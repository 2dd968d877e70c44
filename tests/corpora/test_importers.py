"""Corpus importers on fake trees with the real layouts: labels, ignored paths, splits, errors."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from optin.audio import AudioError
from optin.corpora.csv_import import prepare_csv
from optin.corpora.emodb import EMOTIONS, SENTENCES, SPEAKERS, parse_emodb_name, prepare_emodb
from optin.corpora.emovdb import prepare_emovdb
from optin.corpora.importing import ImportReport, LayoutError
from optin.corpora.librispeech import prepare_librispeech
from optin.corpora.manifest import Manifest, ManifestError
from optin.corpora.ravdess import prepare_ravdess
from optin.corpora.voxceleb2 import prepare_voxceleb2
from optin.testing.dummies import (
    FakeTree,
    break_audio,
    make_emodb_tree,
    make_emovdb_tree,
    make_librispeech_tree,
    make_ravdess_tree,
    make_voxceleb2_tree,
    tone,
)

LABELS = {
    "ravdess": ("id", "speaker", "gender", "emotion", "utterance", "text", "intensity",
                "repetition"),
    "emovdb": ("id", "speaker", "gender", "emotion", "utterance", "text"),
    "emodb": ("id", "speaker", "gender", "emotion", "utterance", "text", "version"),
    "librispeech": ("id", "speaker", "gender", "utterance", "text", "subset", "chapter"),
    "voxceleb2": ("id", "speaker", "gender", "set", "video"),
}
BUILDERS: dict[str, Callable[..., FakeTree]] = {
    "ravdess": make_ravdess_tree,
    "emovdb": make_emovdb_tree,
    "emodb": make_emodb_tree,
    "librispeech": make_librispeech_tree,
    "voxceleb2": make_voxceleb2_tree,
}
IMPORTERS: dict[str, Callable[..., ImportReport]] = {
    "ravdess": prepare_ravdess,
    "emovdb": prepare_emovdb,
    "emodb": prepare_emodb,
    "librispeech": prepare_librispeech,
    "voxceleb2": prepare_voxceleb2,
}
SMALL = {  # for trees built per test
    "ravdess": {"actors": (1, 2), "emotions": ("01", "05")},
    "emovdb": {"emotions": ("neutral", "angry")},
    "emodb": {"speakers": ("03", "08"), "emotions": "WN", "texts": ("a01",)},
}


def rel(manifest: Manifest, row: dict[str, str], src: Path) -> str:
    """A row's audio path relative to the corpus folder."""
    return manifest.audio_path(row).resolve().relative_to(src.resolve()).as_posix()


def ignored_rel(report: ImportReport, src: Path) -> set[str]:
    return {Path(p).resolve().relative_to(src.resolve()).as_posix() for p, _ in report.ignored}


def assert_rows_match(report: ImportReport, tree: FakeTree, labels: tuple[str, ...],
                      expected: dict[str, dict[str, str]] | None = None) -> None:
    """One row per expected file, every listed label right on every row."""
    expected = tree.expected if expected is None else expected
    manifest = report.manifest
    paths = [rel(manifest, row, tree.src) for row in manifest]
    assert len(paths) == len(set(paths))
    assert sorted(paths) == sorted(expected)
    assert len(set(manifest.column("id"))) == len(manifest)
    for row, path in zip(manifest, paths, strict=True):
        got = {k: row[k] for k in labels}
        want = {k: expected[path][k] for k in labels}
        assert got == want, path
        assert float(row["duration"]) > 0


def speakers_by_split(manifest: Manifest) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for row in manifest:
        out[row["split"]].add(row["speaker"])
    return out


# ------------------------------------------------------------------------------ shared trees
@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, FakeTree]:
    root = tmp_path_factory.mktemp("corpora")
    return {name: build(root / name) for name, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def reports(trees) -> dict[str, ImportReport]:
    return {name: IMPORTERS[name](trees[name].src, progress=False) for name in trees}


# ------------------------------------------------------------------------------ rows and labels
@pytest.mark.parametrize("name", list(BUILDERS))
def test_one_row_per_speech_file_with_the_right_labels(trees, reports, name):
    assert_rows_match(reports[name], trees[name], LABELS[name])
    assert reports[name].skipped == []


@pytest.mark.parametrize("name", list(BUILDERS))
def test_every_path_not_understood_is_named_in_ignored(trees, reports, name):
    report = reports[name]
    assert ignored_rel(report, trees[name].src) == trees[name].ignored
    assert all(reason for _, reason in report.ignored)
    assert "left out" in report.summary()


def test_ravdess_ignored_reasons_say_why(trees, reports):
    why = {Path(p).name: reason for p, reason in reports["ravdess"].ignored}
    assert "song" in why["03-02-03-01-01-01-01.wav"]
    assert "video-only" in why["02-01-03-01-01-01-01.mp4"]
    assert "audio-video" in why["01-01-03-01-01-01-01.mp4"]
    assert "seven two-digit fields" in why["03-01-03-01-01-01.wav"]
    assert "emotion code 09" in why["03-01-09-01-01-01-01.wav"]


def test_ravdess_actors_directly_under_src(tmp_path):
    tree = make_ravdess_tree(tmp_path, actors=(7, 10), parent=False)
    report = prepare_ravdess(tree.src, progress=False)
    assert_rows_match(report, tree, LABELS["ravdess"])
    assert ignored_rel(report, tree.src) == tree.ignored
    assert {r["speaker"]: r["gender"] for r in report.manifest} == {
        "ravdess_actor07": "male", "ravdess_actor10": "female"}


def test_emovdb_folder_case_varies_and_texts_come_from_cmuarctic(tmp_path):
    tree = make_emovdb_tree(tmp_path, with_text=True)
    folders = {p.split("/")[0] for p in tree.expected}
    assert {"bea_Neutral", "Bea_amused", "BEA_SLEEPY", "bea_angry"} <= folders
    report = prepare_emovdb(tree.src, progress=False)
    assert_rows_match(report, tree, LABELS["emovdb"])
    assert all(row["text"].startswith("Fake prompt number") for row in report.manifest)


def test_emovdb_without_text_file_leaves_text_empty(reports):
    assert set(reports["emovdb"].manifest.column("text")) == {""}


def test_emodb_tables_match_the_corpus_paper():
    assert SPEAKERS == {"03": "male", "08": "female", "09": "female", "10": "male",
                        "11": "male", "12": "male", "13": "female", "14": "female",
                        "15": "male", "16": "female"}
    assert EMOTIONS == {"W": "angry", "L": "bored", "E": "disgust", "A": "fearful",
                        "F": "happy", "T": "sad", "N": "neutral"}
    assert sorted(SENTENCES) == ["a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09",
                                 "b10"]


@pytest.mark.parametrize("letter,emotion", [("W", "angry"), ("L", "bored"), ("E", "disgust"),
                                            ("A", "fearful"), ("F", "happy"), ("T", "sad"),
                                            ("N", "neutral")])
def test_emodb_every_emotion_letter_in_both_genders(reports, letter, emotion):
    rows = [r for r in reports["emodb"].manifest if r["id"][11] == letter]
    assert rows and {r["emotion"] for r in rows} == {emotion}
    assert {(r["speaker"], r["gender"]) for r in rows} == {
        ("emodb03", "male"), ("emodb08", "female"), ("emodb10", "male"), ("emodb16", "female")}
    assert parse_emodb_name(f"16b10{letter.lower()}C.FLAC") == {
        "speaker": "16", "text": "b10", "emotion": letter, "version": "c", "suffix": ".flac"}


def test_emodb_ignored_reasons_say_why(trees, reports):
    why = {Path(p).relative_to(trees["emodb"].src).as_posix(): reason
           for p, reason in reports["emodb"].ignored}
    assert "not an EmoDB file name" in why["wav/03a01.wav"]
    assert "not an EmoDB file name" in why["wav/03a01Wa_copy.wav"]
    assert "emotion letter X is not one of W L E A F T N" in why["wav/03a01Xa.wav"]
    assert "speaker code 07 is not one of 03 08" in why["wav/07a01Wa.flac"]
    assert "text code c01 is not one of a01" in why["wav/03c01Wa.wav"]
    assert "not a .wav or .flac" in why["wav/notes.txt"]
    assert "not part of the audio folder wav/" in why["lablaut"]
    # the same recording as .wav and .flac: the .wav is imported, the copy named
    assert "as wav/03a01Wa.wav, which is imported" in why["wav/converted/03a01Wa.flac"]
    paths = {r["id"]: r["path"] for r in reports["emodb"].manifest}
    assert paths["emodb_03a01Wa"] == "wav/03a01Wa.wav"
    suffixes = {Path(p).suffix for p in paths.values()}
    assert suffixes == {".wav", ".flac", ".WAV", ".FLAC"}


def test_emodb_audio_in_src_itself_searched_recursively(tmp_path):
    tree = make_emodb_tree(tmp_path, speakers=("09", "12"), emotions="LT", wav_folder=False,
                           nested=True)
    assert all(p.startswith(("09/", "12/")) for p in tree.expected)
    report = prepare_emodb(tree.src, progress=False)
    assert_rows_match(report, tree, LABELS["emodb"])
    assert ignored_rel(report, tree.src) == tree.ignored


def test_emodb_wav_flac_pair_in_one_folder_keeps_the_wav(tmp_path):
    tree = make_emodb_tree(tmp_path, speakers=("13",), emotions="A", texts=("a02",),
                           versions="ab", extras=False)
    assert sorted(tree.expected) == ["wav/13a02Aa.wav", "wav/13a02Ab.flac"]
    (tree.src / "wav" / "13a02Aa.wav").rename(tree.src / "wav" / "13a02Aa.WAV")
    flac = tree.path("wav/13a02Ab.flac")
    flac.with_suffix(".wav").write_bytes(tree.path("wav/13a02Aa.WAV").read_bytes())
    report = prepare_emodb(tree.src, progress=False)
    assert [r["path"] for r in report.manifest] == ["wav/13a02Aa.WAV", "wav/13a02Ab.wav"]
    assert [Path(p).name for p, _ in report.ignored] == ["13a02Ab.flac"]


def test_librispeech_pointed_at_the_librispeech_folder(tmp_path):
    tree = make_librispeech_tree(tmp_path, parent=False)
    assert tree.src.name == "LibriSpeech"
    report = prepare_librispeech(tree.src, progress=False)
    assert_rows_match(report, tree, LABELS["librispeech"])
    assert ignored_rel(report, tree.src) == tree.ignored


def test_librispeech_other_subsets_only_when_asked(tmp_path):
    tree = make_librispeech_tree(tmp_path)
    subsets = ["train-clean-100", "dev-clean", "test-clean"]
    report = prepare_librispeech(tree.src, subsets=subsets, progress=False)
    wanted = {p: t for p, t in {**tree.expected, **tree.extra}.items() if t["subset"] in subsets}
    assert_rows_match(report, tree, LABELS["librispeech"], expected=wanted)
    split_of = {r["subset"]: set() for r in report.manifest}
    for row in report.manifest:
        split_of[row["subset"]].add(row["split"])
    assert split_of == {"train-clean-100": {"train", "valid"}, "dev-clean": {"valid"},
                        "test-clean": {"test"}}
    ignored = dict((Path(p).name, why) for p, why in report.ignored)
    assert "not asked for" in ignored["train-clean-360"]
    assert "dev-clean" not in ignored


# ------------------------------------------------------------------------------ splits
@pytest.mark.parametrize("name", ["ravdess", "emovdb", "emodb"])
def test_same_speakers_protocol_puts_every_speaker_in_every_split(reports, name):
    manifest = reports[name].manifest
    speakers = set(manifest.column("speaker"))
    by_split = speakers_by_split(manifest)
    assert by_split["train"] == by_split["valid"] == by_split["test"] == speakers
    cells: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in manifest:
        cells[(row["speaker"], row["emotion"])].add(row["split"])
    assert all(splits == {"train", "valid", "test"} for splits in cells.values())
    counts = manifest.counts("split")
    assert counts["train"] > counts["test"] >= counts["valid"] > 0


@pytest.mark.parametrize("name,test_set", [("librispeech", ("subset", "test-clean")),
                                           ("voxceleb2", ("set", "test"))])
def test_speaker_disjoint_protocol_keeps_the_official_test_set(reports, name, test_set):
    manifest = reports[name].manifest
    column, value = test_set
    assert [r["split"] == "test" for r in manifest] == [r[column] == value for r in manifest]
    by_split = speakers_by_split(manifest)
    assert by_split["train"] and by_split["valid"] and by_split["test"]
    assert not by_split["train"] & by_split["valid"]
    assert not by_split["train"] & by_split["test"]
    assert not by_split["valid"] & by_split["test"]
    for split in ("train", "valid"):  # stratified by gender: both genders on each side
        assert {r["gender"] for r in manifest if r["split"] == split} == {"female", "male"}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_same_seed_same_split_other_seed_other_split(trees, reports, name):
    again = IMPORTERS[name](trees[name].src, seed=0, progress=False)
    assert again.manifest.rows == reports[name].manifest.rows
    others = [IMPORTERS[name](trees[name].src, seed=s, progress=False).manifest.column("split")
              for s in (1, 2, 3)]
    assert any(o != reports[name].manifest.column("split") for o in others)


# ------------------------------------------------------------------------------ written manifest
@pytest.mark.parametrize("name", list(BUILDERS))
def test_written_manifest_round_trips_with_files_checked(trees, reports, name, tmp_path):
    out = tmp_path / "manifests" / f"{name}.csv"
    report = IMPORTERS[name](trees[name].src, out=out, progress=False)
    assert report.out == out and out.is_file()
    read = Manifest.read(out, check_files=True)
    assert read.rows == report.manifest.rows
    assert not any(Path(r["path"]).is_absolute() for r in read)
    assert_rows_match(ImportReport(manifest=read), trees[name], LABELS[name])
    assert read.column("split") == reports[name].manifest.column("split")


# ------------------------------------------------------------------------------ bad audio
@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("how", ["empty", "corrupt"])
def test_unreadable_file_fails_naming_it(tmp_path, name, how):
    tree = BUILDERS[name](tmp_path / "src", **SMALL.get(name, {}))
    bad = tree.path(sorted(tree.expected)[1])
    break_audio(bad, how)
    out = tmp_path / "m.csv"
    with pytest.raises(AudioError) as err:
        IMPORTERS[name](tree.src, out=out, progress=False)
    assert str(bad) in str(err.value)
    assert not out.exists()


@pytest.mark.parametrize("name", list(BUILDERS))
def test_unreadable_files_are_skipped_and_listed(tmp_path, name):
    tree = BUILDERS[name](tmp_path / "src", **SMALL.get(name, {}))
    files = sorted(tree.expected)
    broken = {files[0]: "empty", files[-1]: "corrupt"}
    if name != "voxceleb2":
        broken[files[len(files) // 2]] = "no-samples"
    for path, how in broken.items():
        break_audio(tree.path(path), how)
    report = IMPORTERS[name](tree.src, on_error="skip", progress=False)
    assert {Path(p).resolve().relative_to(tree.src.resolve()).as_posix()
            for p, _ in report.skipped} == set(broken)
    assert all(reason for _, reason in report.skipped)
    kept = {p: t for p, t in tree.expected.items() if p not in broken}
    assert_rows_match(report, tree, LABELS[name], expected=kept)
    assert f"skipped {len(broken)} unreadable" in report.summary()


# ------------------------------------------------------------------------------ layout errors
def _mkdirs(root: Path, *names: str) -> Path:
    for name in names:
        (root / name).mkdir(parents=True)
    return root


def test_ravdess_wrong_layout_says_what_was_expected_and_found(tmp_path):
    _mkdirs(tmp_path, "src/speakers", "src/wavs")
    out = tmp_path / "m.csv"
    with pytest.raises(LayoutError, match=r"expected folders Actor_01\.\.Actor_24 under .*"
                                          r"found: speakers, wavs"):
        prepare_ravdess(tmp_path / "src", out=out, progress=False)
    assert not out.exists()


def test_ravdess_actor_folders_without_speech(tmp_path):
    tree = make_ravdess_tree(tmp_path, actors=(1,), emotions=())
    with pytest.raises(LayoutError, match="no speech files"):
        prepare_ravdess(tree.src, progress=False)


def test_missing_source_folder(tmp_path):
    with pytest.raises(LayoutError, match=r"expected a folder at .*found nothing"):
        prepare_ravdess(tmp_path / "nope", progress=False)


def test_emovdb_no_folder_understood_names_what_was_found(tmp_path):
    _mkdirs(tmp_path, "bea_Whispering", "speaker1")
    (tmp_path / "bea_Amused.tar.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(LayoutError) as err:
        prepare_emovdb(tmp_path, progress=False)
    message = str(err.value)
    assert "<speaker>_<emotion>" in message
    assert "bea_Amused.tar.gz, bea_Whispering, speaker1" in message


def test_emovdb_two_folders_for_one_speaker_and_emotion(tmp_path):
    tree = make_emovdb_tree(tmp_path, speakers=("bea",), emotions=("amused",), extras=False)
    _mkdirs(tree.src, "Bea-AMUSED")
    with pytest.raises(LayoutError, match=r"Bea-AMUSED .*both hold speaker bea, emotion amused"):
        prepare_emovdb(tree.src, progress=False)


def test_emodb_nothing_understood_names_what_was_found(tmp_path):
    _mkdirs(tmp_path, "src/wav/speaker03")
    (tmp_path / "src" / "wav" / "speaker03" / "03a01Fa.mp3").write_bytes(b"\x00")
    (tmp_path / "src" / "wav" / "happy.wav").write_bytes(b"\x00")
    out = tmp_path / "m.csv"
    with pytest.raises(LayoutError, match=r"expected audio files named like 03a01Fa\.wav .*"
                                          r"found: happy\.wav, speaker03; 2 path\(s\) were "
                                          r"not understood"):
        prepare_emodb(tmp_path / "src", out=out, progress=False)
    assert not out.exists()


def test_emodb_from_the_command_line(tmp_path, capsys):
    from optin.cli import main

    tree = make_emodb_tree(tmp_path / "emodb", speakers=("11", "14"), emotions="FE")
    out = tmp_path / "m.csv"
    assert main(["data", "import", "emodb", str(tree.src), "--out", str(out), "-q"]) == 0
    manifest = Manifest.read(out, check_files=True)
    assert_rows_match(ImportReport(manifest=manifest), tree, LABELS["emodb"])
    printed = capsys.readouterr().out
    assert f"{len(tree.expected)} utterances -> {out}" in printed
    assert "speakers: 2" in printed and f"left out {len(tree.ignored)} path(s)" in printed
    break_audio(tree.path(sorted(tree.expected)[0]), "corrupt")
    assert main(["data", "import", "emodb", str(tree.src), "--out", str(out), "-q"]) == 2
    assert Path(sorted(tree.expected)[0]).name in capsys.readouterr().err
    assert main(["data", "import", "emodb", str(tree.src), "--out", str(out), "-q",
                 "--on-error", "skip"]) == 0
    assert "skipped 1 unreadable file" in capsys.readouterr().out
    assert len(Manifest.read(out)) == len(tree.expected) - 1


def test_librispeech_without_speakers_txt(tmp_path):
    tree = make_librispeech_tree(tmp_path)
    (tree.src / "LibriSpeech" / "SPEAKERS.TXT").unlink()
    with pytest.raises(LayoutError, match=r"expected SPEAKERS\.TXT .*found: LibriSpeech"):
        prepare_librispeech(tree.src, progress=False)


def test_librispeech_without_paper_subsets(tmp_path):
    tree = make_librispeech_tree(tmp_path, speakers=[("1272", "M", "dev-clean", "X")])
    with pytest.raises(LayoutError, match=r"expected subset folders train-clean-100, "
                                          r"train-clean-360, test-clean .*found: .*dev-clean"):
        prepare_librispeech(tree.src, progress=False)
    with pytest.raises(LayoutError, match="test-other asked for but not found"):
        prepare_librispeech(tree.src, subsets=["test-other"], progress=False)


def test_librispeech_speaker_in_train_and_test_is_refused(tmp_path):
    speakers = [("19", "F", "train-clean-100", "A"), ("26", "M", "train-clean-100", "B"),
                ("19", "F", "test-clean", "A")]
    tree = make_librispeech_tree(tmp_path, speakers=speakers, extras=False)
    with pytest.raises(ManifestError, match=r"speaker\(s\) 19 .*not be speaker-disjoint"):
        prepare_librispeech(tree.src, progress=False)


def test_librispeech_bad_speakers_line(tmp_path):
    tree = make_librispeech_tree(tmp_path)
    speakers = tree.src / "LibriSpeech" / "SPEAKERS.TXT"
    speakers.write_text(speakers.read_text() + "77 | X | train-clean-100 | 1.0 | Who\n")
    with pytest.raises(LayoutError, match=r"SPEAKERS\.TXT, line .*SEX must be M or F"):
        prepare_librispeech(tree.src, progress=False)


def test_voxceleb2_without_meta_or_sets(tmp_path):
    tree = make_voxceleb2_tree(tmp_path, extras=False)
    (tree.src / "vox2_meta.csv").rename(tree.src / "meta.csv")
    with pytest.raises(LayoutError, match=r"expected vox2_meta\.csv and dev/aac/.*found: dev, "
                                          r"meta\.csv, test"):
        prepare_voxceleb2(tree.src, progress=False)
    (tree.src / "meta.csv").rename(tree.src / "vox2_meta.csv")
    (tree.src / "dev").rename(tree.src / "vox2_dev")
    (tree.src / "test").rename(tree.src / "vox2_test")
    with pytest.raises(LayoutError, match=r"found: vox2_dev, vox2_meta\.csv, vox2_test"):
        prepare_voxceleb2(tree.src, progress=False)


def test_voxceleb2_set_without_aac_folder(tmp_path):
    tree = make_voxceleb2_tree(tmp_path, extras=False)
    (tree.src / "test" / "aac").rename(tree.src / "test" / "m4a")
    with pytest.raises(LayoutError, match=r"expected .*test/aac/idNNNNN.*found in .*: m4a"):
        prepare_voxceleb2(tree.src, progress=False)


def test_voxceleb2_meta_without_gender_column(tmp_path):
    tree = make_voxceleb2_tree(tmp_path, extras=False)
    (tree.src / "vox2_meta.csv").write_text("VoxCeleb2 ID ,Set \nid00012 ,dev \n")
    with pytest.raises(LayoutError, match=r"missing column\(s\) gender"):
        prepare_voxceleb2(tree.src, progress=False)


# ------------------------------------------------------------------------------ CSV importer
def _write_csv_corpus(root: Path, lines: list[str], files: list[str]) -> Path:
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    for name in files:
        (root / "audio" / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / "audio" / name, tone(0.1, 16000, rng), 16000)
    csv_path = root / "list.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    return csv_path


CSV_FILES = [f"s{s}/u{u}.wav" for s in range(4) for u in range(5)]
CSV_LINES = ["file, spk ,sex,mood,room"] + [
    f"{name},spk{name[1]},{'F' if int(name[1]) % 2 else 'm'},{('calm', 'sad')[i % 2]},r{i}"
    for i, name in enumerate(CSV_FILES)
]


def test_csv_import_with_a_column_mapping(tmp_path):
    src = _write_csv_corpus(tmp_path, CSV_LINES, CSV_FILES)
    report = prepare_csv(src, columns={"path": "file", "speaker": "spk", "gender": "sex",
                                       "emotion": "mood"},
                         audio_root=tmp_path / "audio", progress=False)
    manifest = report.manifest
    assert len(manifest) == len(CSV_FILES)
    assert "room" in manifest.columns and "file" not in manifest.columns
    by_id = {row["id"]: row for row in manifest}
    for i, name in enumerate(CSV_FILES):
        row = by_id[name.removesuffix(".wav")]  # id made from the path
        assert manifest.audio_path(row).resolve() == (tmp_path / "audio" / name).resolve()
        assert row["speaker"] == f"spk{name[1]}"
        assert row["gender"] == ("female" if int(name[1]) % 2 else "male")
        assert row["emotion"] == ("calm", "sad")[i % 2]
        assert row["room"] == f"r{i}"
    assert "split" not in manifest.columns  # no protocol, no split column: none invented


def test_csv_import_paths_relative_to_the_csv_and_a_split_protocol(tmp_path):
    lines = ["path,speaker,split"] + [f"audio/{n},spk{n[1]}," for n in CSV_FILES]
    src = _write_csv_corpus(tmp_path, lines, CSV_FILES)
    out = tmp_path / "out" / "manifest.csv"
    report = prepare_csv(src, out=out, protocol="speaker-disjoint", seed=3, progress=False)
    read = Manifest.read(out, check_files=True)
    assert read.rows == report.manifest.rows
    by_split = speakers_by_split(read)
    assert set(by_split) == {"train", "valid", "test"}
    assert sum(len(s) for s in by_split.values()) == 4  # every speaker in one split only
    again = prepare_csv(src, protocol="speaker-disjoint", seed=3, progress=False)
    assert again.manifest.column("split") == read.column("split")


def test_csv_import_keeps_a_given_split(tmp_path):
    lines = ["path,speaker,split"] + [
        f"audio/{n},spk{n[1]},{'test' if n[1] == '0' else 'train'}" for n in CSV_FILES]
    src = _write_csv_corpus(tmp_path, lines, CSV_FILES)
    report = prepare_csv(src, progress=False)
    assert report.manifest.counts("split") == {"test": 5, "train": 15}
    carved = prepare_csv(src, protocol="speaker-disjoint", keep_test=True, progress=False)
    assert {r["speaker"] for r in carved.manifest if r["split"] == "test"} == {"spk0"}
    assert carved.manifest.counts("split")["valid"] > 0


def test_csv_import_missing_mapped_column_is_named(tmp_path):
    src = _write_csv_corpus(tmp_path, CSV_LINES, CSV_FILES)
    with pytest.raises(ManifestError, match=r"column 'speaker_id' \(mapped to 'speaker'\) is not "
                                            r"in the CSV; its columns are: file, spk, sex"):
        prepare_csv(src, columns={"path": "file", "speaker": "speaker_id"}, progress=False)
    with pytest.raises(ManifestError, match="no 'speaker' column"):
        prepare_csv(src, columns={"path": "file"}, progress=False)


def test_csv_import_row_errors(tmp_path):
    src = _write_csv_corpus(tmp_path, ["path,speaker", "audio/s0/u0.wav,", "x.wav,a"],
                            ["s0/u0.wav"])
    with pytest.raises(ManifestError, match="line 2: empty 'speaker'"):
        prepare_csv(src, progress=False)
    src.write_text("path,speaker\naudio/s0/u0.wav,a\naudio/s0/u0.wav,b\n")
    with pytest.raises(ManifestError, match="duplicate id 'audio/s0/u0'"):
        prepare_csv(src, progress=False)
    src.write_text("path,speaker,speaker_name\naudio/s0/u0.wav,a,x\n")
    with pytest.raises(ManifestError, match="speaker would be overwritten"):
        prepare_csv(src, columns={"speaker": "speaker_name"}, progress=False)
    src.write_text("path,speaker,gender\naudio/s0/u0.wav,a,f\naudio/s0/u1.wav\n")
    with pytest.raises(ManifestError, match=r"csv, line 3: 1 fields for 3 columns"):
        prepare_csv(src, progress=False)  # a truncated row, not blank speaker and gender
    src.write_bytes("path,speaker\naudio/s0/u0.wav,Zo\xeb\n".encode("latin-1"))
    with pytest.raises(ManifestError, match=rf"CSV file {src}, line 2: byte 0xeb is not UTF-8"):
        prepare_csv(src, progress=False)


def test_csv_import_missing_audio_fails_or_is_skipped(tmp_path):
    lines = ["path,speaker"] + [f"audio/{n},spk{n[1]}" for n in CSV_FILES] + ["audio/gone.wav,x"]
    src = _write_csv_corpus(tmp_path, lines, CSV_FILES)
    with pytest.raises(AudioError, match=r"gone\.wav: file does not exist"):
        prepare_csv(src, progress=False)
    report = prepare_csv(src, on_error="skip", progress=False)
    assert len(report.manifest) == len(CSV_FILES)
    assert [Path(p).name for p, _ in report.skipped] == ["gone.wav"]


def test_speaker_missing_from_metadata_is_reported(tmp_path):
    from optin.corpora.librispeech import prepare_librispeech
    from optin.testing.dummies import LIBRISPEECH_SPEAKERS, make_librispeech_tree

    tree = make_librispeech_tree(tmp_path, extras=False)
    speakers_txt = tmp_path / "LibriSpeech" / "SPEAKERS.TXT"
    dropped = LIBRISPEECH_SPEAKERS[0][0]
    kept = [line for line in speakers_txt.read_text().splitlines(keepends=True)
            if not line.startswith(f"{dropped} ")]
    speakers_txt.write_text("".join(kept))
    report = prepare_librispeech(tree.src, tmp_path / "m.csv", progress=False)
    assert any("no 'gender'" in w and dropped in w for w in report.warnings), report.warnings
    assert "warning:" in report.summary()
    assert {r["gender"] for r in report.manifest.rows if r["speaker"] == dropped} == {""}

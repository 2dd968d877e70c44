"""The manifest CSV interface, label encoding and the two split protocols."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from optin.corpora import LabelEncoder, Manifest, ManifestError, assign_split, split_summary


def make_rows(speakers: str = "abcdefgh", emotions=("neutral", "happy", "sad"), per: int = 6):
    return [
        {"id": f"{s}_{e}_{k}", "path": f"wav/{s}_{e}_{k}.wav", "speaker": s,
         "gender": "female" if i % 2 else "male", "emotion": e}
        for i, s in enumerate(speakers) for e in emotions for k in range(per)
    ]


def write_csv(path, text: str):
    path.write_text(text)
    return path


def test_round_trip_and_relative_paths(tmp_path):
    (tmp_path / "audio").mkdir()
    sf.write(tmp_path / "audio" / "a.wav", np.zeros(160, dtype=np.float32), 16000)
    csv = write_csv(tmp_path / "m.csv", "id,path,speaker,extra\nu1,audio/a.wav,s1,x\n")
    m = Manifest.read(csv)
    assert m.columns[:3] == ["id", "path", "speaker"] and "extra" in m.columns
    assert m.audio_path(m.rows[0]) == (tmp_path / "audio" / "a.wav").resolve()
    out = m.write(tmp_path / "sub" / "copy.csv")
    again = Manifest.read(out)
    assert again.rows[0]["path"] == "../audio/a.wav"
    assert again.rows[0]["extra"] == "x"
    assert again.audio_path(again.rows[0]).resolve() == m.audio_path(m.rows[0]).resolve()


def test_missing_column_is_named(tmp_path):
    csv = write_csv(tmp_path / "m.csv", "id,path\nu1,a.wav\n")
    with pytest.raises(ManifestError, match=r"missing required column\(s\) speaker"):
        Manifest.read(csv, check_files=False)


def test_duplicate_id_names_both_lines(tmp_path):
    csv = write_csv(tmp_path / "m.csv", "id,path,speaker\nu1,a.wav,s\nu2,b.wav,s\nu1,c.wav,s\n")
    with pytest.raises(ManifestError, match=r"line 4: duplicate id 'u1' \(first seen on line 2\)"):
        Manifest.read(csv, check_files=False)


def test_missing_audio_file_is_named(tmp_path):
    csv = write_csv(tmp_path / "m.csv", "id,path,speaker\nu1,gone.wav,s\n")
    with pytest.raises(ManifestError, match=r"gone\.wav for id 'u1' does not exist"):
        Manifest.read(csv)


def test_empty_required_value_and_bad_split(tmp_path):
    csv = write_csv(tmp_path / "m.csv", "id,path,speaker\nu1,a.wav,\n")
    with pytest.raises(ManifestError, match=r"line 2: empty value in column 'speaker'"):
        Manifest.read(csv, check_files=False)
    csv = write_csv(tmp_path / "m.csv", "id,path,speaker,split\nu1,a.wav,s,dev\n")
    with pytest.raises(ManifestError, match="split 'dev' is not one of"):
        Manifest.read(csv, check_files=False)


def test_empty_file(tmp_path):
    with pytest.raises(ManifestError, match="is empty"):
        Manifest.read(write_csv(tmp_path / "m.csv", ""), check_files=False)
    with pytest.raises(ManifestError, match="does not exist"):
        Manifest.read(tmp_path / "none.csv")


@pytest.mark.parametrize(("data", "message"), [
    ("id,path,speaker,text\nu1,a.wav,s,Caf\xe9\n".encode("latin-1"),
     r"m\.csv, line 2: byte 0xe9 is not UTF-8 text"),
    (b"id,path,speaker,split,split\nu1,a.wav,s,train,\n",
     r"m\.csv, line 1: column name\(s\) split appear twice"),
    (b"id,path,speaker,,gender\nu1,a.wav,s,x,f\n", r"m\.csv, line 1: column 4 has no name"),
    (b"id,path,speaker,gender,split\nu1,a.wav,s,f,train\nu2,b.wav,s\n",
     r"m\.csv, line 3: 3 fields for 5 columns \(id, path, speaker, gender, split\)"),
    (b"id,path,speaker\nu1,a.wav,s,surprise,x\n", r"m\.csv, line 2: 5 fields for 3 columns"),
])
def test_a_malformed_csv_is_refused_naming_the_file_and_line(tmp_path, data, message):
    path = tmp_path / "m.csv"
    path.write_bytes(data)
    with pytest.raises(ManifestError, match=rf"^manifest .*{message}"):
        Manifest.read(path, check_files=False)


def test_blank_lines_a_bom_and_quoted_fields_still_read(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes('\ufeffid,path,speaker,text\n\nu1,a.wav,s,"one, two"\n,,,\n'.encode())
    m = Manifest.read(path, check_files=False)
    assert m.column("text") == ["one, two"] and m.columns[:3] == ["id", "path", "speaker"]


def test_filter_where_and_split_errors():
    m = Manifest(make_rows())
    assert len(m.where(gender="female")) == len(m) // 2
    assert len(m.where(emotion=["happy", "sad"])) == 2 * len(m) // 3
    with pytest.raises(ManifestError, match="no column 'accent'"):
        m.where(accent="x")
    with pytest.raises(ManifestError, match="no split assigned"):
        m.split("train")
    split = assign_split(m, "same-speakers", seed=0)
    assert len(split.split("test")) > 0
    with pytest.raises(ManifestError, match="unknown split"):
        split.split("dev")


def test_label_encoder():
    m = Manifest(make_rows())
    enc = LabelEncoder.fit(m, "emotion")
    assert enc.classes == ("happy", "neutral", "sad")
    assert enc.encode("sad") == 2 and enc.decode(0) == "happy"
    with pytest.raises(ManifestError, match="'angry' is not a known emotion class"):
        enc.encode("angry")
    rows = make_rows()
    rows[3]["emotion"] = ""
    with pytest.raises(ManifestError, match=r"1 row\(s\) have no 'emotion' label"):
        LabelEncoder.fit(Manifest(rows), "emotion")
    with pytest.raises(ManifestError, match="single class"):
        LabelEncoder.fit(Manifest(make_rows(emotions=("neutral",))), "emotion")


def test_same_speakers_split_is_stratified_and_seeded():
    m = Manifest(make_rows(per=10))
    a = assign_split(m, "same-speakers", test_fraction=0.2, valid_fraction=0.1, seed=1)
    b = assign_split(m, "same-speakers", test_fraction=0.2, valid_fraction=0.1, seed=1)
    c = assign_split(m, "same-speakers", test_fraction=0.2, valid_fraction=0.1, seed=2)
    assert a.column("split") == b.column("split")
    assert a.column("split") != c.column("split")
    cells = Counter((r["speaker"], r["emotion"], r["split"]) for r in a.rows)
    for spk in "abcdefgh":
        for emo in ("neutral", "happy", "sad"):
            assert (cells[(spk, emo, "train")], cells[(spk, emo, "valid")],
                    cells[(spk, emo, "test")]) == (7, 1, 2)
    summary = split_summary(a)
    assert summary["train"]["speakers"] == summary["test"]["speakers"] == 8


def test_speaker_disjoint_split_keeps_speakers_apart_and_gender_balance():
    m = Manifest(make_rows(speakers="abcdefghijklmnopqrst"))
    s = assign_split(m, "speaker-disjoint", test_fraction=0.2, valid_fraction=0.1, seed=0)
    by_split = {name: {r["speaker"] for r in s.rows if r["split"] == name}
                for name in ("train", "valid", "test")}
    assert not (by_split["train"] & by_split["test"])
    assert not (by_split["train"] & by_split["valid"])
    assert not (by_split["valid"] & by_split["test"])
    genders = {r["speaker"]: r["gender"] for r in s.rows}
    assert Counter(genders[x] for x in by_split["test"]) == {"female": 2, "male": 2}


def test_keep_test_only_divides_the_rest():
    rows = make_rows(speakers="abcdefghij")
    for r in rows:
        r["split"] = "test" if r["speaker"] in "ab" else "train"
    s = assign_split(Manifest(rows), "speaker-disjoint", valid_fraction=0.25, keep_test=True)
    assert {r["speaker"] for r in s.rows if r["split"] == "test"} == {"a", "b"}
    assert len({r["speaker"] for r in s.rows if r["split"] == "valid"}) == 2


def test_split_errors():
    m = Manifest(make_rows())
    with pytest.raises(ManifestError, match="unknown split protocol"):
        assign_split(m, "random")  # type: ignore[arg-type]
    with pytest.raises(ManifestError, match="fractions"):
        assign_split(m, "same-speakers", test_fraction=0.7, valid_fraction=0.4)
    rows = make_rows()
    rows[0]["gender"] = "female" if rows[0]["gender"] == "male" else "male"
    with pytest.raises(ManifestError, match="speaker 'a' has rows with different gender"):
        assign_split(Manifest(rows), "speaker-disjoint")

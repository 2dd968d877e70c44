"""The content attacker: pocketsphinx on clean eSpeak NG speech and on destroyed speech.

Three short English sentences are synthesized once (eSpeak NG, through the package's own
binding) and transcribed once per distinct waveform (a caching wrapper around the real
recognizer), so every test sees the real recognizer's output and the file runs in about
half a minute.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import soxr
import torch

from optin import cli
from optin.audio.io import SAMPLE_RATE, write_audio
from optin.corpora.espeak import ESpeak
from optin.corpora.manifest import Manifest, ManifestError
from optin.errors import ConfigError
from optin.evaluation import content
from optin.evaluation.content import (
    Recognizer,
    RecognizerError,
    content_attack,
    has_usable_reference,
    transcribe_manifest,
)
from optin.metrics.wer import word_error_rate
from optin.testing.dummies import break_audio

SENTENCES = {
    "u1": "My brother bought a new bicycle last weekend.",
    "u2": "She opened the window and looked at the garden.",
    "u3": "Please put the blue folder on the kitchen table.",
}


class CachingRecognizer:
    """The real recognizer, asked once per distinct waveform."""

    def __init__(self) -> None:
        self.inner = Recognizer()
        self.name = self.inner.name
        self.cache: dict[bytes, str] = {}
        self.calls = 0

    def transcribe(self, wave, sample_rate: int = SAMPLE_RATE) -> str:
        wave = np.asarray(wave, dtype=np.float32)
        key = hashlib.sha1(wave.tobytes() + str(sample_rate).encode()).digest()
        if key not in self.cache:
            self.calls += 1
            self.cache[key] = self.inner.transcribe(wave, sample_rate)
        return self.cache[key]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Original and time-reversed copies of three sentences, with their manifests."""
    root = tmp_path_factory.mktemp("content")
    engine = ESpeak()
    rows, reversed_rows = [], []
    raw = {}
    for key, text in SENTENCES.items():
        samples, rate = engine.synthesize(text, voice="en-us", rate=150)
        raw[key] = (samples, rate)
        wave = soxr.resample(samples.astype(np.float32) / 32768.0, rate, SAMPLE_RATE)
        write_audio(root / "orig" / f"{key}.wav", wave)
        write_audio(root / "rev" / f"{key}.wav", wave[::-1].copy())
        base = {"id": key, "speaker": "s1", "split": "test", "text": text}
        rows.append(dict(base, path=f"orig/{key}.wav"))
        reversed_rows.append(dict(base, path=f"rev/{key}.wav"))
    Manifest(rows=rows, root=root).write(root / "original.csv")
    Manifest(rows=reversed_rows, root=root).write(root / "reversed.csv")
    return {"root": root, "raw": raw, "recognizer": CachingRecognizer()}


def _read(corpus, name: str) -> Manifest:
    return Manifest.read(corpus["root"] / name)


def test_clean_speech_is_recognized_and_reversed_speech_is_not(corpus):
    report = content_attack(_read(corpus, "original.csv"), _read(corpus, "reversed.csv"),
                            recognizer=corpus["recognizer"], progress=False)
    assert report.utterances == 3 and report.references == 3 and not report.skipped
    # measured: 0.115 (3 of 26 words) on clean speech, 1.08 on the reversed copies
    assert report.wer_original <= 0.6, report.transcripts
    assert report.wer_protected >= 0.8, report.transcripts
    assert report.wer_protected_vs_original >= 0.8, report.transcripts
    assert report.counts["original"].reference == 26
    assert report.wer_original == pytest.approx(word_error_rate(
        [(SENTENCES[i], t["original"]) for i, t in report.transcripts.items()]))
    table = report.format()
    assert "| 3 | 0 |" in table and f"{report.wer_original:.3f}" in table
    assert "weak attacker" in report.limits and "US English" in report.limits
    data = json.loads(json.dumps(report.to_dict()))
    assert data["wer_protected"] == report.wer_protected
    assert data["counts"]["original"]["reference_words"] == 26


def test_noise_is_not_transcribed_as_the_words(corpus):
    recognizer = corpus["recognizer"]
    noise = np.random.default_rng(0).standard_normal(2 * SAMPLE_RATE).astype(np.float32) * 0.1
    heard = recognizer.transcribe(noise, SAMPLE_RATE)
    assert word_error_rate([(SENTENCES["u1"], heard)]) >= 0.8


def test_transcribe_resamples_and_takes_tensors(corpus):
    samples, rate = corpus["raw"]["u3"]  # int16 at eSpeak's 22050 Hz
    heard = corpus["recognizer"].inner.transcribe(torch.from_numpy(samples.copy()), rate)
    assert word_error_rate([(SENTENCES["u3"], heard)]) <= 0.6, heard
    assert corpus["recognizer"].inner.transcribe(np.zeros(0, np.float32)) == ""
    with pytest.raises(ValueError, match="expected"):
        corpus["recognizer"].inner.transcribe(np.zeros((2, 100), np.float32))


def test_identity_protection_and_transform(corpus):
    original = _read(corpus, "original.csv")
    same = content_attack(original, original, recognizer=corpus["recognizer"], progress=False)
    assert same.wer_protected_vs_original == 0.0
    assert same.wer_protected == same.wer_original
    as_tensor = content_attack(original, transform=torch.from_numpy,
                               recognizer=corpus["recognizer"], progress=False)
    assert as_tensor.wer_protected_vs_original == 0.0
    assert as_tensor.protection == "transform from_numpy"
    alone = content_attack(original, recognizer=corpus["recognizer"], progress=False)
    assert alone.wer_protected is None and alone.wer_protected_vs_original is None
    assert alone.wer_original == same.wer_original
    with pytest.raises(ConfigError, match="not both"):
        content_attack(original, original, transform=lambda w: w,
                       recognizer=corpus["recognizer"])


def test_missing_ids_are_refused_by_name(corpus):
    protected = _read(corpus, "reversed.csv")
    protected = protected.filter(lambda row: row["id"] == "u2")
    before = corpus["recognizer"].calls
    with pytest.raises(ManifestError, match=r"lacks 2 of the 3 id\(s\).*u1, u3"):
        content_attack(_read(corpus, "original.csv"), protected,
                       recognizer=corpus["recognizer"], progress=False)
    assert corpus["recognizer"].calls == before  # refused before any decoding


def test_unreadable_audio_is_skipped_and_reported(corpus, tmp_path):
    for name in ("orig", "rev"):
        shutil.copytree(corpus["root"] / name, tmp_path / name)
    for name in ("original.csv", "reversed.csv"):
        shutil.copy(corpus["root"] / name, tmp_path / name)
    break_audio(tmp_path / "orig" / "u1.wav", "corrupt")
    break_audio(tmp_path / "rev" / "u3.wav", "empty")
    report = content_attack(Manifest.read(tmp_path / "original.csv"),
                            Manifest.read(tmp_path / "reversed.csv"),
                            recognizer=corpus["recognizer"], progress=False)
    assert report.utterances == 1 and set(report.transcripts) == {"u2"}
    reasons = dict(report.skipped)
    assert reasons["u1"].startswith("original: ") and "u1.wav" in reasons["u1"]
    assert reasons["u3"].startswith("protected: ") and "empty" in reasons["u3"]
    assert "skipped u1" in report.format()
    skipped: list[tuple[str, str]] = []
    heard = transcribe_manifest(Manifest.read(tmp_path / "original.csv"),
                                recognizer=corpus["recognizer"], progress=False,
                                skipped=skipped)
    assert set(heard) == {"u2", "u3"} and [i for i, _ in skipped] == ["u1"]
    with pytest.raises(ValueError, match="u1"):
        transcribe_manifest(Manifest.read(tmp_path / "original.csv"),
                            recognizer=corpus["recognizer"], progress=False)


def test_sentence_codes_give_only_protected_vs_original(corpus):
    original = _read(corpus, "original.csv")
    codes = original.with_column("text", ["a01", "a02", "b01"])
    with_reference = content_attack(original, _read(corpus, "reversed.csv"),
                                    recognizer=corpus["recognizer"], progress=False)
    report = content_attack(codes, _read(corpus, "reversed.csv"),
                            recognizer=corpus["recognizer"], progress=False)
    assert report.references == 0
    assert report.wer_original is None and report.wer_protected is None
    assert report.wer_protected_vs_original == with_reference.wer_protected_vs_original
    assert "no WER against a reference" in report.limits
    assert "no usable reference" in report.format()
    no_text = Manifest(rows=[{k: v for k, v in r.items() if k != "text"} for r in original.rows],
                       root=original.root)
    assert content_attack(no_text, recognizer=corpus["recognizer"],
                          progress=False).wer_original is None


def test_usable_reference_detection():
    assert not has_usable_reference(["a01", "b02", "", "10"])
    assert not has_usable_reference(["a", "I"])
    assert has_usable_reference(["a01", "Hello there"])


def test_recognizer_names_the_missing_package(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pocketsphinx", None)
    with pytest.raises(RecognizerError, match="'pocketsphinx'"):
        Recognizer()


def test_cli_prints_the_table_and_writes_json(corpus, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(content, "Recognizer", lambda: corpus["recognizer"])
    out = tmp_path / "report.json"
    status = cli.main(["content", str(corpus["root"] / "original.csv"), "--protected",
                       str(corpus["root"] / "reversed.csv"), "--limit", "2", "--json",
                       str(out), "-q"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "WER protected vs original" in printed and "limits:" in printed
    data = json.loads(out.read_text())
    assert data["utterances"] == 2 and data["wer_original"] is not None

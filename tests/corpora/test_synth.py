"""The built-in synthetic corpus: counts, audio format, determinism, resuming, and whether the
emotion styles and genders really differ in the signal (no classifier, simple measurements)."""

from __future__ import annotations

import hashlib
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from optin.corpora.espeak import ESpeak, ESpeakError, Utterance
from optin.corpora.manifest import Manifest
from optin.corpora.synth import synthesize_corpus
from optin.corpora.synth_plan import (
    EMOTION_NAMES,
    FEMALE_VARIANTS,
    MALE_VARIANTS,
    SENTENCES,
    SynthesisError,
    plan_clips,
    plan_speakers,
)

QUICK_SPEAKERS, QUICK_SENTENCES = 8, 6


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick corpus, seed 0, made once with two worker processes."""
    out = tmp_path_factory.mktemp("synth") / "quick"
    synthesize_corpus(out, quick=True, seed=0, progress=False, workers=2)
    return out


@pytest.fixture(scope="module")
def manifest(corpus: Path) -> Manifest:
    return Manifest.read(corpus / "manifest.csv")


@pytest.fixture(scope="module")
def features(corpus: Path, manifest: Manifest) -> dict[str, dict[str, float]]:
    """Per clip: F0 estimate (Hz), active RMS (dB), duration (s), spectral centroid (Hz)."""
    out = {}
    for row in manifest:
        wave, rate = sf.read(str(manifest.audio_path(row)), dtype="float64")
        out[row["id"]] = {
            "f0": f0_estimate(wave, rate),
            "rms": active_rms_db(wave),
            "dur": len(wave) / rate,
            "centroid": spectral_centroid(wave, rate),
        }
    return out


# ---------------------------------------------------------------------------------- measurements
def _frames(x: np.ndarray, size: int, hop: int) -> np.ndarray:
    count = 1 + max(0, (len(x) - size) // hop)
    return x[np.arange(size)[None, :] + hop * np.arange(count)[:, None]]


def f0_estimate(x: np.ndarray, rate: int) -> float:
    """Median autocorrelation F0 (60-400 Hz) over the loud, periodic 40 ms frames."""
    frames = _frames(x, int(0.04 * rate), int(0.01 * rate))
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = np.sqrt((frames**2).mean(axis=1))
    frames = frames[energy > 0.3 * energy.max()]
    size = frames.shape[1]
    ac = np.fft.irfft(np.abs(np.fft.rfft(frames, 2 * size)) ** 2)[:, :size]
    ac = ac / np.maximum(ac[:, :1], 1e-12)
    lo, hi = rate // 400, rate // 60
    lag = lo + np.argmax(ac[:, lo:hi], axis=1)
    periodic = ac[np.arange(len(lag)), lag] > 0.5
    return float(np.median(rate / lag[periodic])) if periodic.any() else float("nan")


def active_rms_db(x: np.ndarray) -> float:
    """RMS in dBFS over 20 ms frames within 40 dB of the loudest."""
    energy = (_frames(x, 320, 320) ** 2).mean(axis=1)
    return float(10 * np.log10(energy[energy >= energy.max() * 1e-4].mean()))


def spectral_centroid(x: np.ndarray, rate: int) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    return float((power * np.fft.rfftfreq(len(x), 1 / rate)).sum() / power.sum())


def per_speaker_emotion(manifest: Manifest, features: dict[str, dict[str, float]], name: str
                        ) -> dict[str, dict[str, float]]:
    """Mean of one feature for each speaker and emotion."""
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in manifest:
        values[(row["speaker"], row["emotion"])].append(features[row["id"]][name])
    table: dict[str, dict[str, float]] = defaultdict(dict)
    for (speaker, emotion), vals in values.items():
        table[speaker][emotion] = float(np.nanmean(vals))
    return table


def file_digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.wav"))}


# ---------------------------------------------------------------------------------- planning (fast)
def test_plan_speakers_distinct_balanced_and_deterministic() -> None:
    people = plan_speakers(24, seed=0)
    assert [p.speaker for p in people] == [f"spk{k:02d}" for k in range(1, 25)]
    assert sum(p.gender == "female" for p in people) == 12
    assert len({(p.accent, p.variant) for p in people}) == 24
    assert len({p.variant for p in people}) == 24  # distinct variants while the pools last
    assert all(p.variant in FEMALE_VARIANTS for p in people if p.gender == "female")
    assert all(p.variant in MALE_VARIANTS for p in people if p.gender == "male")
    assert plan_speakers(24, seed=0) == people
    assert plan_speakers(24, seed=1) != people
    many = plan_speakers(60, seed=3)  # more voices than variants: accents keep them distinct
    assert len({(p.accent, p.variant) for p in many}) == 60
    with pytest.raises(ValueError, match="speakers"):
        plan_speakers(1)


def test_plan_clips_every_combination_with_jitter() -> None:
    clips = plan_clips(4, 3, seed=0)
    assert len(clips) == 4 * len(EMOTION_NAMES) * 3
    assert len({c.id for c in clips}) == len(clips)
    neutral = [c for c in clips if c.emotion == "neutral"]
    assert len({(c.rate, c.pitch, c.pitch_range, c.level_db) for c in neutral}) > 1
    with pytest.raises(ValueError, match="sentences"):
        plan_clips(4, len(SENTENCES) + 1)


def test_espeak_binding(tmp_path: Path) -> None:
    with pytest.raises(ESpeakError, match="espeak-ng-data"):
        ESpeak(data=tmp_path)
    with pytest.raises(ESpeakError, match="library not found"):
        ESpeak(library=tmp_path / "libespeak-ng.so")
    engine = ESpeak()
    assert engine.sample_rate == 22050
    samples, rate = engine.synthesize("Hello there.", voice="en-us+f3", rate=180)
    assert rate == 22050 and samples.dtype == np.int16 and np.abs(samples).max() > 1000
    again, _ = engine.synthesize("Hello there.", voice="en-us+f3", rate=180)
    assert np.array_equal(samples, again)  # isolated: independent of what came before
    batch = engine.synthesize_batch([Utterance("One.", "en-gb-x-rp+m3"), Utterance("Two.")])
    assert len(batch) == 2 and all(len(b) > 0 for b in batch)
    with pytest.raises(ESpeakError, match="no voice variant"):
        engine.synthesize("Hello.", voice="en-us+nosuchvariant")
    with pytest.raises(ESpeakError, match="no voice"):
        engine.synthesize("Hello.", voice="xx-nosuchvoice")


# ---------------------------------------------------------------------------------- the corpus
@pytest.mark.slow
def test_counts(corpus: Path, manifest: Manifest) -> None:
    assert len(manifest) == QUICK_SPEAKERS * len(EMOTION_NAMES) * QUICK_SENTENCES
    speakers = manifest.counts("speaker")
    assert len(speakers) == QUICK_SPEAKERS
    assert set(speakers.values()) == {len(EMOTION_NAMES) * QUICK_SENTENCES}
    gender_of = {r["speaker"]: r["gender"] for r in manifest}
    assert all(r["gender"] == gender_of[r["speaker"]] for r in manifest)
    assert sorted(gender_of.values()) == ["female"] * 4 + ["male"] * 4
    assert len({r["voice"] for r in manifest}) == QUICK_SPEAKERS
    for speaker in speakers:
        rows = manifest.where(speaker=speaker)
        assert set(rows.counts("emotion")) == set(EMOTION_NAMES)
        assert set(rows.counts("emotion").values()) == {QUICK_SENTENCES}
        assert set(rows.column("split")) == {"train", "valid", "test"}
    assert len(manifest.counts("utterance")) == QUICK_SENTENCES
    assert {r["text"] for r in manifest} == set(SENTENCES[:QUICK_SENTENCES])
    readme = (corpus / "README.txt").read_text()
    assert "synthetic" in readme.lower() and "eSpeak NG" in readme and "seed=0" in readme


@pytest.mark.slow
def test_audio_files(manifest: Manifest) -> None:
    for row in manifest:
        path = manifest.audio_path(row)
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), path
        wave, _ = sf.read(str(path), dtype="float32")
        assert np.abs(wave).max() > 0.05 and active_rms_db(wave) > -45, path
        assert 1.0 < len(wave) / 16000 < 8.0, path
        assert float(row["duration"]) == pytest.approx(len(wave) / 16000, abs=1e-3)
        # trimmed: speech starts and ends within ~0.15 s of the file's edges
        loud = np.nonzero(np.abs(wave) > 0.05 * np.abs(wave).max())[0]
        assert loud[0] < 0.15 * 16000 and len(wave) - loud[-1] < 0.15 * 16000, path


@pytest.mark.slow
def test_no_two_clips_identical(corpus: Path, manifest: Manifest) -> None:
    digests = file_digests(corpus)
    assert len(digests) == len(manifest)
    assert len(set(digests.values())) == len(digests)


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_other_bytes(corpus: Path, tmp_path: Path) -> None:
    again = synthesize_corpus(tmp_path / "again", quick=True, seed=0, progress=False, workers=1)
    assert again.out == tmp_path / "again" / "manifest.csv"
    assert again.out.read_bytes() == (corpus / "manifest.csv").read_bytes()
    assert (tmp_path / "again" / "README.txt").read_bytes() == (corpus / "README.txt").read_bytes()
    assert file_digests(tmp_path / "again") == file_digests(corpus)

    other = synthesize_corpus(tmp_path / "other", quick=True, seed=1, progress=False)
    assert other.out.read_bytes() != (corpus / "manifest.csv").read_bytes()
    mine, theirs = file_digests(corpus), file_digests(tmp_path / "other")
    assert set(mine) == set(theirs)  # same names, different sound
    assert sum(mine[k] != theirs[k] for k in mine) == len(mine)


@pytest.mark.slow
def test_resume_and_folder_checks(corpus: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(corpus, copy)
    removed = sorted(copy.rglob("*.wav"))[::50]
    for path in removed:
        path.unlink()
    (copy / "manifest.csv").unlink()
    report = synthesize_corpus(copy, quick=True, seed=0, progress=False, workers=1)
    assert len(report.manifest) == len(Manifest.read(corpus / "manifest.csv"))
    assert file_digests(copy) == file_digests(corpus)
    assert (copy / "manifest.csv").read_bytes() == (corpus / "manifest.csv").read_bytes()

    with pytest.raises(SynthesisError, match="other settings"):
        synthesize_corpus(copy, quick=True, seed=5, progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SynthesisError, match="not empty"):
        synthesize_corpus(foreign, quick=True, progress=False)


@pytest.mark.slow
def test_emotion_styles_relative_to_each_speaker(manifest: Manifest, features) -> None:
    f0 = per_speaker_emotion(manifest, features, "f0")
    rms = per_speaker_emotion(manifest, features, "rms")
    dur = per_speaker_emotion(manifest, features, "dur")
    centroid = per_speaker_emotion(manifest, features, "centroid")
    speakers = sorted(f0)

    def share(table: dict[str, dict[str, float]], high: str, low: str) -> float:
        return float(np.mean([table[s][high] > table[s][low] for s in speakers]))

    # loudness, rate and spectral tilt: set directly, so for every speaker
    assert share(rms, "angry", "sad") == 1.0
    assert share(rms, "happy", "sleepy") == 1.0
    assert share(rms, "angry", "neutral") == 1.0 and share(rms, "neutral", "sleepy") == 1.0
    assert share(dur, "sad", "angry") == 1.0
    assert share(dur, "sleepy", "happy") == 1.0 and share(dur, "sleepy", "neutral") == 1.0
    assert share(centroid, "angry", "sad") == 1.0 and share(centroid, "angry", "neutral") == 1.0
    # pitch, through eSpeak's prosody and a simple estimator: most speakers
    assert share(f0, "angry", "sad") >= 0.75
    assert share(f0, "happy", "neutral") >= 0.75 and share(f0, "neutral", "sleepy") >= 0.75
    # relative, not absolute: a female voice when sad is still higher than a male one when
    # angry, so pitch alone does not give the emotion away
    female = [s for s in speakers if manifest.where(speaker=s).rows[0]["gender"] == "female"]
    male = [s for s in speakers if s not in female]
    assert min(f0[s]["sad"] for s in female) > min(f0[s]["angry"] for s in male)


@pytest.mark.slow
def test_female_voices_are_higher(manifest: Manifest, features) -> None:
    f0 = per_speaker_emotion(manifest, features, "f0")
    gender_of = {r["speaker"]: r["gender"] for r in manifest}
    female = [f0[s]["neutral"] for s in f0 if gender_of[s] == "female"]
    male = [f0[s]["neutral"] for s in f0 if gender_of[s] == "male"]
    assert min(female) > max(male)
    assert np.mean(female) > 1.5 * np.mean(male)
    all_female = [features[r["id"]]["f0"] for r in manifest if r["gender"] == "female"]
    all_male = [features[r["id"]]["f0"] for r in manifest if r["gender"] == "male"]
    assert np.nanmean(all_female) > 1.5 * np.nanmean(all_male)

"""The built-in corpus: synthetic English speech (eSpeak NG) with known speaker, gender, emotion.

It is a stand-in for the real corpora, so that every part of the project runs end to end offline
with ground truth; results on it are not results on human speech.

How it is made (all of it deterministic from ``seed``):

* Speakers: half female, half male. Each is a distinct eSpeak voice: an English accent
  (``en-us``, ``en-us-nyc``, ``en-gb``, ``en-gb-x-rp``, ``en-gb-scotland``, ``en-gb-x-gbclan``,
  ``en-gb-x-gbcwmd``, ``en-029``) with a voice variant (female ``f1``-``f5``, ``Alicia``,
  ``Annie``...; male ``m1``-``m8``, ``adam``, ``max``...), and its own base pitch, pitch range,
  speaking rate and loudness. Female variants speak at about 170-280 Hz, male ones at about
  75-125 Hz, and the base-pitch parameter ranges keep them apart.
* Emotions: five prosody styles (:data:`EMOTIONS`) applied *relative to each speaker's own
  baseline*: rate and pitch-range factors, a pitch offset, a loudness offset, pauses between
  words, and voice-quality cues done as signal processing after synthesis (spectral tilt for
  tense or lax voice, soft saturation, breathy noise, tremolo). A loud male voice that is sad
  can therefore be louder and lower than a quiet female voice that is happy: neither label can
  be read off the other.
* Every speaker x emotion x sentence is one clip, with its own small jitter (+-3 % rate,
  +-2 pitch steps, +-3 range steps, +-0.75 dB), seeded per clip.
* eSpeak speaks at 22050 Hz; the clip is trimmed to its speech plus 50 ms on each side,
  resampled to 16 kHz with soxr, processed, set to its loudness (RMS over the active frames) and
  written as 16-bit mono WAV.
* The ``split`` column uses the ``same-speakers`` protocol (every speaker in every split,
  stratified by speaker x emotion) with the same seed.

Byte-identical output for the same seed, whatever the number of workers: each clip's parameters
and noise come from a hash of (seed, speaker, emotion, sentence), and eSpeak renders each
speaker x emotion group as one batch from a fresh forked state (see :mod:`optin.corpora.espeak`).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import soundfile as sf
from tqdm.auto import tqdm

from optin.audio.io import SAMPLE_RATE
from optin.corpora.espeak import ESpeak
from optin.corpora.importing import ImportReport
from optin.corpora.manifest import Manifest
from optin.corpora.splits import assign_split
from optin.corpora.synth_plan import (
    DEFAULT_SENTENCES,
    DEFAULT_SPEAKERS,
    EMOTION_NAMES,
    EMOTIONS,
    MANIFEST_NAME,
    QUICK_SENTENCES,
    QUICK_SPEAKERS,
    SENTENCES,
    STATE_FILE,
    SYNTH_VERSION,
    Clip,
    SynthesisError,
    plan_clips,
)
from optin.corpora.synth_render import (
    init_worker,
    worker_task,
    write_group,
)
from optin.files import write_json, write_text


def synthesize_corpus(
    out_dir: str | os.PathLike,
    speakers: int | None = None,
    sentences: int | None = None,
    seed: int = 0,
    quick: bool = False,
    progress: bool = True,
    workers: int | None = None,
) -> ImportReport:
    """Synthesize the built-in corpus into ``out_dir`` and write its manifest.

    Writes ``OUT/wav/<speaker>/<id>.wav`` (16 kHz mono 16-bit), ``OUT/manifest.csv``,
    ``OUT/README.txt`` and ``OUT/.synth_state.json``. Resumable: clips already in ``OUT`` from
    the same configuration are kept (each is written atomically), the rest are made.

    Args:
        speakers: number of speakers, half female half male (default 24; 8 with ``quick``).
        sentences: sentences per speaker and emotion (default 10; 6 with ``quick``).
        seed: decides voices, jitter, noise and the split; same seed, same bytes.
        quick: the small version for tests and demos (8 x 5 x 6 = 240 clips).
        progress: show a progress bar.
        workers: worker processes (default: up to the CPU count, 1 for small jobs); the
            output does not depend on it.

    Returns:
        ImportReport whose ``manifest`` is ``OUT/manifest.csv`` read back and ``out`` its path.

    Raises:
        SynthesisError: ``OUT`` holds something else or a corpus made with other settings.
        ESpeakError: eSpeak NG cannot be loaded.
        ValueError: a bad number of speakers or sentences.
    """
    out = Path(out_dir)
    n_speakers = speakers if speakers is not None else (
        QUICK_SPEAKERS if quick else DEFAULT_SPEAKERS)
    n_sentences = sentences if sentences is not None else (
        QUICK_SENTENCES if quick else DEFAULT_SENTENCES)
    clips = plan_clips(n_speakers, n_sentences, seed)
    engine = ESpeak(isolate=True)
    config = {
        "generator": f"optin.corpora.synth v{SYNTH_VERSION}",
        "espeak_ng": engine.version,
        "seed": seed,
        "speakers": n_speakers,
        "sentences": n_sentences,
        "emotions": list(EMOTION_NAMES),
        "sample_rate": SAMPLE_RATE,
    }
    _claim_folder(out, config)

    durations: dict[str, int] = {}
    todo: list[tuple[list[Clip], set[str]]] = []  # (speaker x emotion group, missing ids)
    for group in _groups(clips):
        missing = set()
        for clip in group:
            frames = _existing_frames(out / clip.path)
            if frames:
                durations[clip.id] = frames
            else:
                missing.add(clip.id)
        if missing:
            todo.append((group, missing))
    n_todo = sum(len(m) for _, m in todo)
    if workers is None:
        workers = max(1, min(os.cpu_count() or 1, 8, n_todo // 400))
    with tqdm(total=len(clips), initial=len(clips) - n_todo, desc="synthesizing",
              unit="clip", disable=not progress) as bar:
        for done in _render_all(engine, out, todo, workers):
            for clip_id, frames in done:
                durations[clip_id] = frames
            bar.update(len(done))

    rows = [_row(clip, durations[clip.id]) for clip in clips]
    manifest = Manifest(rows=rows, columns=list(rows[0]), root=out.resolve())
    manifest = assign_split(manifest, "same-speakers", seed=seed)
    csv_path = manifest.write(out / MANIFEST_NAME)
    write_text(out / "README.txt", _readme(config, clips, durations))
    return ImportReport(manifest=Manifest.read(csv_path), out=csv_path)


def _groups(clips: list[Clip]) -> list[list[Clip]]:
    """Clips grouped by speaker x emotion, each group in id order (one eSpeak batch each)."""
    groups: dict[tuple[str, str], list[Clip]] = {}
    for clip in sorted(clips, key=lambda c: c.id):
        groups.setdefault((clip.speaker.speaker, clip.emotion), []).append(clip)
    return list(groups.values())


def _render_all(engine: ESpeak, out: Path, todo: list[tuple[list[Clip], set[str]]],
                workers: int) -> Iterator[list[tuple[str, int]]]:
    """Render groups in this process or in ``workers`` spawned processes."""
    if workers <= 1 or len(todo) <= 1:
        for group, missing in todo:
            yield write_group(engine, out, group, missing)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=init_worker) as pool:
        jobs = [(str(out), group, missing) for group, missing in todo]
        yield from pool.imap_unordered(worker_task, jobs)


def _claim_folder(out: Path, config: dict) -> None:
    """Make ``out`` ours: new or empty, or holding a corpus of exactly this configuration."""
    state_path = out / STATE_FILE
    wanted = {"config": config,
              "config_hash": hashlib.sha256(json.dumps(config, sort_keys=True).encode())
              .hexdigest()}
    if out.exists() and not out.is_dir():
        raise SynthesisError(f"{out} is a file; expected a folder for the synthetic corpus")
    if out.is_dir() and any(out.iterdir()):
        if not state_path.is_file():
            raise SynthesisError(
                f"{out} is not empty and holds no synthetic corpus ({STATE_FILE} is missing); "
                "choose an empty or new folder"
            )
        try:
            found = json.loads(state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise SynthesisError(f"{state_path} cannot be read ({err}); remove the folder "
                                 "or choose another") from err
        if found.get("config_hash") != wanted["config_hash"]:
            old = found.get("config", {})
            diff = ", ".join(f"{k}: {old.get(k)!r} there, {v!r} now"
                             for k, v in config.items() if old.get(k) != v)
            raise SynthesisError(
                f"{out} holds a synthetic corpus made with other settings ({diff or 'unknown'}); "
                "use the same settings to resume, or another folder"
            )
        return
    write_json(state_path, wanted, sort_keys=True)


def _existing_frames(path: Path) -> int:
    """Frames of a finished clip at ``path`` (16 kHz mono), or 0 when it must be made."""
    if not path.is_file():
        return 0
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError):
        return 0
    if info.samplerate != SAMPLE_RATE or info.channels != 1:
        return 0
    return int(info.frames)


def _row(clip: Clip, frames: int) -> dict[str, str]:
    spk = clip.speaker
    return {
        "id": clip.id,
        "path": clip.path,
        "speaker": spk.speaker,
        "gender": spk.gender,
        "emotion": clip.emotion,
        "utterance": clip.utterance,
        "text": clip.text,
        "split": "",
        "duration": f"{frames / SAMPLE_RATE:.3f}",
        "voice": spk.voice,
        "accent": spk.accent,
        "variant": spk.variant,
        "speaker_pitch": str(spk.pitch),
        "speaker_range": str(spk.pitch_range),
        "speaker_rate": str(spk.rate),
        "speaker_level_db": f"{spk.level_db:.2f}",
        "rate": str(clip.rate),
        "pitch": str(clip.pitch),
        "pitch_range": str(clip.pitch_range),
        "word_gap": str(clip.word_gap),
        "level_dbfs": f"{clip.level_db:.2f}",
        "clip_seed": str(clip.seed),
    }


def _readme(config: dict, clips: list[Clip], frames: dict[str, int]) -> str:
    speakers = sorted({c.speaker for c in clips}, key=lambda s: s.speaker)
    minutes = sum(frames.values()) / SAMPLE_RATE / 60
    lines = [
        "OPTIN BUILT-IN CORPUS - SYNTHETIC SPEECH",
        "",
        "Every file here is synthetic speech made by the eSpeak NG formant synthesizer, not a",
        "recording of a person. It is a stand-in for the real corpora (LibriSpeech, VoxCeleb2,",
        "EmoV-DB, RAVDESS) with known speaker, gender and emotion labels, so that the whole",
        "pipeline runs offline. Results on it are NOT results on human speech.",
        "",
        f"Made by {config['generator']} with eSpeak NG {config['espeak_ng']} (espeakng-loader).",
        f"seed={config['seed']}  speakers={config['speakers']}  "
        f"sentences={config['sentences']}  emotions={len(EMOTIONS)}",
        f"{len(clips)} clips, {minutes:.1f} minutes, {SAMPLE_RATE} Hz mono 16-bit WAV.",
        "Same seed and settings give byte-identical files and manifest.",
        "",
        "Speakers: half female, half male; each a distinct eSpeak voice (accent + variant) with",
        "its own base pitch, pitch range, speaking rate and loudness (columns voice, accent,",
        "variant, speaker_pitch, speaker_range, speaker_rate, speaker_level_db).",
    ]
    for s in speakers:
        lines.append(f"  {s.speaker}  {s.gender:6s}  {s.voice:24s}  pitch {s.pitch:3d}  "
                     f"range {s.pitch_range:3d}  rate {s.rate:3d} wpm  level {s.level_db:+.2f} dB")
    lines += [
        "",
        "Emotions are prosody styles applied relative to each speaker's own baseline:",
        "  name     rate  pitch  range  level  gap  tilt   drive  breath  tremolo",
    ]
    for e in EMOTIONS:
        breath = f"{e.breath_db:+.0f}dB" if e.breath_db is not None else "-"
        tremolo = f"{e.tremolo_hz}Hz/{e.tremolo_depth}" if e.tremolo_depth else "-"
        lines.append(f"  {e.name:8s} x{e.rate:.2f} {e.pitch:+4d}   x{e.pitch_range:.2f} "
                     f"{e.level_db:+5.1f}dB {e.word_gap * 10:3d}ms {e.tilt:+.2f}  {e.drive:4.1f}"
                     f"   {breath:6s}  {tremolo}")
    lines += [
        "  rate: factor on words per minute; pitch: steps of eSpeak's 0-100 pitch parameter",
        "  (+10 is about +15 % F0); range: factor on the pitch-range parameter; level: loudness",
        "  (RMS over active frames); gap: extra pause between words; tilt > 0: pre-emphasis",
        "  (tense voice), < 0: one-pole low-pass (lax voice); drive: tanh saturation; breath:",
        "  high-passed noise following the speech envelope; tremolo: amplitude modulation.",
        "Each clip adds its own jitter (+-3 % rate, +-2 pitch steps, +-3 range steps,",
        "+-0.75 dB), seeded from (seed, speaker, emotion, sentence).",
        "",
        "Processing: eSpeak at 22050 Hz, silence trimmed to 50 ms around the speech, resampled",
        "to 16 kHz (soxr VHQ), voice-quality cues, loudness set, written as 16-bit PCM.",
        "Split: protocol same-speakers (every speaker in every split, stratified by speaker x",
        f"emotion; 70/10/20 %) with seed {config['seed']}.",
        "",
        "Sentences:",
    ]
    lines += [f"  s{k:02d}  {t}" for k, t in enumerate(SENTENCES[: config["sentences"]], 1)]
    return "\n".join(lines) + "\n"

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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy.ndimage import uniform_filter1d
from scipy.signal import lfilter
from tqdm.auto import tqdm

from optin.audio.io import SAMPLE_RATE, normalize_volume, write_audio
from optin.corpora.espeak import ESpeak, Utterance
from optin.corpora.importing import ImportReport
from optin.corpora.manifest import Manifest, ManifestError
from optin.corpora.splits import assign_split
from optin.errors import ConfigError
from optin.files import write_json, write_text
from optin.settings import Rule, at_least, between

SYNTH_VERSION = 1  # bump when the output of a given configuration changes
STATE_FILE = ".synth_state.json"
MANIFEST_NAME = "manifest.csv"

# accent name in the manifest -> eSpeak voice name
ACCENTS: dict[str, str] = {
    "en-us": "en-us",
    "en-us-nyc": "en-us-nyc",
    "en-gb": "en",
    "en-gb-x-rp": "en-gb-x-rp",
    "en-gb-scotland": "en-gb-scotland",
    "en-gb-x-gbclan": "en-gb-x-gbclan",
    "en-gb-x-gbcwmd": "en-gb-x-gbcwmd",
    "en-029": "en-029",
}
FEMALE_VARIANTS: tuple[str, ...] = (
    "f1", "f2", "f3", "f4", "f5", "Alicia", "Andrea", "Annie", "anika", "belinda", "linda",
    "steph", "grandma", "aunty",
)
MALE_VARIANTS: tuple[str, ...] = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "adam", "max", "Andy", "Lee", "travis",
    "Storm", "paul", "robert", "michel", "quincy",
)
# eSpeak pitch parameter (0..100, 50 = the variant's own, +10 is about +15 % F0)
FEMALE_PITCH = (42, 68)
MALE_PITCH = (32, 58)
SPEAKER_RANGE = (35, 70)  # eSpeak pitch-range parameter
SPEAKER_RATE = (150, 190)  # words per minute
SPEAKER_LEVEL_DB = (-2.0, 2.0)
REFERENCE_LEVEL_DBFS = -26.0  # active-frame RMS of a neutral clip of an average speaker

SENTENCES: tuple[str, ...] = (
    "The train leaves the station at half past nine.",
    "Please put the blue folder on the kitchen table.",
    "We walked along the river until the sun went down.",
    "My brother bought a new bicycle last weekend.",
    "The meeting has been moved to Thursday afternoon.",
    "She opened the window and looked at the garden.",
    "There are seven apples left in the basket.",
    "The library closes early on public holidays.",
    "He forgot his umbrella at the bus stop.",
    "Turn left at the bakery and keep going straight.",
    "The children painted the fence bright yellow.",
    "Our neighbours are moving to a smaller house.",
    "I will call you when the package arrives.",
    "The coffee machine on the third floor is broken.",
    "They planted tomatoes and beans behind the shed.",
    "The last bus to the airport leaves at midnight.",
)

DEFAULT_SPEAKERS, DEFAULT_SENTENCES = 24, 10
QUICK_SPEAKERS, QUICK_SENTENCES = 8, 6
MAX_SPEAKERS = 2 * len(ACCENTS) * min(len(FEMALE_VARIANTS), len(MALE_VARIANTS))
# the valid values of synthesize_corpus's options (experiment configs check them at load time)
SYNTH_RANGES: dict[str, Rule] = {"speakers": between(2, MAX_SPEAKERS),
                                 "sentences": between(1, len(SENTENCES)),
                                 "seed": at_least(0), "workers": at_least(1)}

TRIM_MARGIN_S = 0.05
TRIM_THRESHOLD_DB = -45.0


class SynthesisError(ManifestError):
    """The corpus cannot be synthesized into the given folder with the given settings."""


@dataclass(frozen=True)
class EmotionStyle:
    """A prosody and voice-quality style, relative to the speaker's baseline.

    Attributes:
        rate: factor on the speaker's words per minute.
        pitch: steps added to the speaker's eSpeak pitch parameter (0..100 scale).
        pitch_range: factor on the speaker's pitch-range parameter.
        level_db: added to the speaker's loudness.
        word_gap: extra pause between words, in 10 ms units.
        tilt: spectral tilt; > 0 is a pre-emphasis ``x[n] - tilt x[n-1]`` (tense, bright
            voice), < 0 a one-pole low-pass with pole ``-tilt`` (lax, soft voice).
        drive: soft saturation ``tanh(drive x) / tanh(drive)`` on the peak-scaled signal
            (harsh, pressed voice); 0 is none.
        breath_db: level of high-passed noise following the speech envelope, relative to the
            speech (breathy voice); None is none.
        tremolo_hz, tremolo_depth: amplitude modulation (unsteady voice); depth 0 is none.
    """

    name: str
    rate: float
    pitch: int
    pitch_range: float
    level_db: float
    word_gap: int = 0
    tilt: float = 0.0
    drive: float = 0.0
    breath_db: float | None = None
    tremolo_hz: float = 0.0
    tremolo_depth: float = 0.0


EMOTIONS: tuple[EmotionStyle, ...] = (
    EmotionStyle("neutral", rate=1.00, pitch=0, pitch_range=1.00, level_db=0.0),
    EmotionStyle("happy", rate=1.10, pitch=12, pitch_range=1.60, level_db=3.0, tilt=0.35,
                 tremolo_hz=5.5, tremolo_depth=0.12),
    EmotionStyle("angry", rate=1.12, pitch=6, pitch_range=1.35, level_db=6.0, tilt=0.75,
                 drive=2.0),
    EmotionStyle("sad", rate=0.82, pitch=-8, pitch_range=0.50, level_db=-4.0, word_gap=2,
                 tilt=-0.5, breath_db=-26.0),
    EmotionStyle("sleepy", rate=0.72, pitch=-14, pitch_range=0.35, level_db=-7.0, word_gap=4,
                 tilt=-0.65, breath_db=-18.0),
)
EMOTION_NAMES: tuple[str, ...] = tuple(e.name for e in EMOTIONS)


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an eSpeak voice and its baseline prosody."""

    speaker: str
    gender: str
    accent: str
    variant: str
    pitch: int
    pitch_range: int
    rate: int
    level_db: float

    @property
    def voice(self) -> str:
        """The eSpeak voice name, e.g. ``en-gb-x-rp+f3``."""
        return f"{ACCENTS[self.accent]}+{self.variant}"


@dataclass(frozen=True)
class Clip:
    """Everything needed to render one clip; picklable for worker processes."""

    id: str
    path: str  # relative to the corpus folder
    speaker: Speaker
    emotion: str
    utterance: str
    text: str
    rate: int
    pitch: int
    pitch_range: int
    word_gap: int
    level_db: float
    seed: int


# ---------------------------------------------------------------------------------- planning
def derive_seed(seed: int, *keys: object) -> int:
    """A 31-bit seed from ``seed`` and keys, stable across processes and Python versions."""
    text = "|".join(str(k) for k in (seed, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def plan_speakers(n_speakers: int, seed: int = 0) -> list[Speaker]:
    """``n_speakers`` distinct voices, alternately female and male (``spk01`` is female).

    Raises:
        ValueError: fewer than 2 speakers, or more than the distinct voices available.
    """
    n_female, n_male = (n_speakers + 1) // 2, n_speakers // 2
    limit = MAX_SPEAKERS
    if not 2 <= n_speakers <= limit:
        raise ConfigError(f"speakers must be between 2 and {limit}, not {n_speakers}")
    rng = np.random.default_rng(derive_seed(seed, "speakers"))
    by_gender: dict[str, list[Speaker]] = {}
    for gender, pool, count, (lo, hi) in (("female", FEMALE_VARIANTS, n_female, FEMALE_PITCH),
                                          ("male", MALE_VARIANTS, n_male, MALE_PITCH)):
        variants = [str(v) for v in rng.permutation(np.array(pool))]
        accents = [str(a) for a in rng.permutation(np.array(list(ACCENTS)))]
        # the first len(pool) voices use distinct variants and cycle through the accents;
        # later rounds pair each variant with another accent, so every voice stays distinct
        combos = [(variants[v], accents[(v + r) % len(accents)])
                  for r in range(len(accents)) for v in range(len(variants))]
        people = []
        for variant, accent in combos[:count]:
            people.append(Speaker(
                speaker="", gender=gender, accent=accent, variant=variant,
                pitch=int(rng.integers(lo, hi + 1)),
                pitch_range=int(rng.integers(SPEAKER_RANGE[0], SPEAKER_RANGE[1] + 1)),
                rate=int(rng.integers(SPEAKER_RATE[0], SPEAKER_RATE[1] + 1)),
                level_db=round(float(rng.uniform(*SPEAKER_LEVEL_DB)), 2),
            ))
        by_gender[gender] = people
    order = [p for pair in zip(by_gender["female"], by_gender["male"], strict=False)
             for p in pair]
    order += by_gender["female"][n_male:]
    width = max(2, len(str(n_speakers)))
    return [Speaker(**{**asdict(p), "speaker": f"spk{k:0{width}d}"})
            for k, p in enumerate(order, start=1)]


def plan_clips(n_speakers: int, n_sentences: int, seed: int = 0) -> list[Clip]:
    """Every speaker x emotion x sentence clip, sorted by id, with its jittered parameters.

    Raises:
        ValueError: a bad number of speakers or sentences.
    """
    if not 1 <= n_sentences <= len(SENTENCES):
        raise ConfigError(f"sentences must be between 1 and {len(SENTENCES)}, not {n_sentences}")
    clips = []
    for spk in plan_speakers(n_speakers, seed):
        for style in EMOTIONS:
            for k, text in enumerate(SENTENCES[:n_sentences], start=1):
                utt = f"s{k:02d}"
                clip_seed = derive_seed(seed, "clip", spk.speaker, style.name, utt)
                rng = np.random.default_rng(clip_seed)
                rate = spk.rate * style.rate * rng.uniform(0.97, 1.03)
                pitch = spk.pitch + style.pitch + int(rng.integers(-2, 3))
                prange = spk.pitch_range * style.pitch_range + int(rng.integers(-3, 4))
                level = REFERENCE_LEVEL_DBFS + spk.level_db + style.level_db \
                    + rng.uniform(-0.75, 0.75)
                clip_id = f"{spk.speaker}_{style.name}_{utt}"
                clips.append(Clip(
                    id=clip_id, path=f"wav/{spk.speaker}/{clip_id}.wav", speaker=spk,
                    emotion=style.name, utterance=utt, text=text,
                    rate=int(np.clip(round(rate), 80, 450)),
                    pitch=int(np.clip(pitch, 0, 100)),
                    pitch_range=int(np.clip(round(prange), 0, 100)),
                    word_gap=style.word_gap, level_db=round(float(level), 2), seed=clip_seed,
                ))
    return sorted(clips, key=lambda c: c.id)


# ---------------------------------------------------------------------------------- rendering
def trim_silence(wave: np.ndarray, rate: int, threshold_db: float = TRIM_THRESHOLD_DB,
                 margin_s: float = TRIM_MARGIN_S) -> np.ndarray:
    """Cut leading and trailing silence, keeping ``margin_s`` around the speech.

    Frames of 10 ms count as speech when their RMS is within ``threshold_db`` of the loudest.
    """
    frame = max(1, rate // 100)
    n = len(wave) // frame
    if n == 0:
        return wave
    energy = np.mean(wave[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1)
    if energy.max() <= 0:
        return wave
    active = np.nonzero(energy >= energy.max() * 10 ** (threshold_db / 10))[0]
    margin = round(margin_s * rate)
    start = max(0, active[0] * frame - margin)
    end = min(len(wave), (active[-1] + 1) * frame + margin)
    return wave[start:end]


def apply_style(wave: np.ndarray, style: EmotionStyle, rng: np.random.Generator,
                rate: int = SAMPLE_RATE) -> np.ndarray:
    """The voice-quality cues of ``style`` on a float64 wave (before loudness is set)."""
    y = np.asarray(wave, dtype=np.float64)
    if style.tilt > 0:
        y = lfilter([1.0, -style.tilt], [1.0], y)
    elif style.tilt < 0:
        pole = -style.tilt
        y = lfilter([1.0 - pole], [1.0, -pole], y)
    if style.drive > 0:
        peak = float(np.max(np.abs(y))) or 1.0
        y = np.tanh(style.drive * y / peak) / np.tanh(style.drive) * peak
    if style.breath_db is not None:
        window = max(1, int(0.02 * rate))
        envelope = uniform_filter1d(np.abs(y), window, mode="constant")
        noise = lfilter([1.0, -0.9], [1.0], rng.standard_normal(len(y))) * envelope
        speech_rms = float(np.sqrt(np.mean(y**2)))
        noise_rms = float(np.sqrt(np.mean(noise**2)))
        if noise_rms > 0:
            y = y + noise * (speech_rms / noise_rms) * 10 ** (style.breath_db / 20)
    if style.tremolo_depth > 0:
        t = np.arange(len(y)) / rate
        phase = rng.uniform(0, 2 * np.pi)
        y = y * (1.0 + style.tremolo_depth * np.sin(2 * np.pi * style.tremolo_hz * t + phase))
    return y


def render_clips(engine: ESpeak, clips: list[Clip]) -> list[np.ndarray]:
    """Synthesize clips in one eSpeak batch: (N,) float32 each at 16 kHz, trimmed, styled
    and levelled.

    The samples depend on the whole list (eSpeak carries state from one utterance to the
    next inside a batch); the corpus renders one batch per speaker x emotion, in id order.
    """
    batch = [Utterance(c.text, voice=c.speaker.voice, rate=c.rate, pitch=c.pitch,
                       pitch_range=c.pitch_range, volume=100, word_gap=c.word_gap, seed=c.seed)
             for c in clips]
    waves = []
    for clip, samples in zip(clips, engine.synthesize_batch(batch), strict=True):
        if samples.size == 0 or not np.any(samples):
            raise SynthesisError(f"eSpeak NG produced no sound for clip {clip.id}")
        wave = trim_silence(samples.astype(np.float32) / 32768.0, engine.sample_rate)
        wave = soxr.resample(wave, engine.sample_rate, SAMPLE_RATE, quality="VHQ")
        style = EMOTIONS[EMOTION_NAMES.index(clip.emotion)]
        wave = apply_style(wave.astype(np.float64), style, np.random.default_rng(clip.seed))
        waves.append(normalize_volume(wave.astype(np.float32), SAMPLE_RATE, "rms",
                                      clip.level_db))
    return waves


def _write_group(engine: ESpeak, out: Path, group: list[Clip], missing: set[str]
                 ) -> list[tuple[str, int]]:
    """Render a speaker x emotion group; write the clips named in ``missing``."""
    done = []
    for clip, wave in zip(group, render_clips(engine, group), strict=True):
        if clip.id in missing:
            write_audio(out / clip.path, wave, SAMPLE_RATE)
            done.append((clip.id, len(wave)))
    return done


_worker_engine: list[ESpeak] = []  # one engine per worker process, made by _init_worker


def _init_worker() -> None:
    _worker_engine.append(ESpeak(isolate=True))


def _worker_task(job: tuple[str, list[Clip], set[str]]) -> list[tuple[str, int]]:
    return _write_group(_worker_engine[0], Path(job[0]), job[1], job[2])


# ---------------------------------------------------------------------------------- the corpus
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
            yield _write_group(engine, out, group, missing)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker) as pool:
        jobs = [(str(out), group, missing) for group, missing in todo]
        yield from pool.imap_unordered(_worker_task, jobs)


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

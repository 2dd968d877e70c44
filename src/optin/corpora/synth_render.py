"""Rendering the built-in corpus's clips: eSpeak NG synthesis, trimming, the emotion styles'
voice-quality processing, loudness, and the worker processes that write each group of clips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soxr
from scipy.ndimage import uniform_filter1d
from scipy.signal import lfilter

from optin.audio.io import SAMPLE_RATE, normalize_volume, write_audio
from optin.corpora.espeak import ESpeak, Utterance
from optin.corpora.synth_plan import (
    EMOTION_NAMES,
    EMOTIONS,
    TRIM_MARGIN_S,
    TRIM_THRESHOLD_DB,
    Clip,
    EmotionStyle,
    SynthesisError,
)


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


def write_group(engine: ESpeak, out: Path, group: list[Clip], missing: set[str]
                 ) -> list[tuple[str, int]]:
    """Render a speaker x emotion group; write the clips named in ``missing``."""
    done = []
    for clip, wave in zip(group, render_clips(engine, group), strict=True):
        if clip.id in missing:
            write_audio(out / clip.path, wave, SAMPLE_RATE)
            done.append((clip.id, len(wave)))
    return done


_worker_engine: list[ESpeak] = []  # one engine per worker process, made by init_worker


def init_worker() -> None:
    _worker_engine.append(ESpeak(isolate=True))


def worker_task(job: tuple[str, list[Clip], set[str]]) -> list[tuple[str, int]]:
    return write_group(_worker_engine[0], Path(job[0]), job[1], job[2])



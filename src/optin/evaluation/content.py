"""The content attacker: do the words pass? Word error rate of an offline speech recognizer.

The attacker is pocketsphinx 5 with the US English acoustic model, language model and
dictionary bundled in its wheel (offline, CPU, about real time on one core). It transcribes
every utterance of a split of the original corpus and of its protected copy, and the report
gives three word error rates (:mod:`optin.metrics.wer`, corpus-level):

* original vs reference: the recognizer on the original audio against the manifest's ``text``
  (how good the attacker is to begin with);
* protected vs reference: the same on the protected audio (how many words still pass);
* protected vs original: the transcript of the protected audio against the recognizer's own
  transcript of the original. It needs no reference, so it also works on corpora whose ``text``
  column holds sentence codes (EmoDB's ``a01``) or nothing.

The protected side is a manifest with the same ids (a protected copy of the audio, e.g. written
by ``optin obfuscate`` or ``optin anonymize``), or a ``transform`` of the original waveform, or
absent (then only the first rate). Audio that cannot be read is skipped and reported, as the
batch jobs do; when no row at all can be read, the attack is refused in one line.

Limits (also in every report): the model is US English, so on other languages the rate against
the original transcript measures only whether the recognizer's output survives the protection,
not understanding; and it is one recognizer, a weak attacker: a high WER bounds what *this*
attacker recovers, not what every attacker can.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from optin.audio.io import (
    SAMPLE_RATE,
    AudioError,
    check_sample_rate,
    load_audio,
    normalize_volume,
    resample,
)
from optin.corpora.manifest import Manifest, ManifestError
from optin.errors import ConfigError, OptinError, refuse_all_failed
from optin.metrics.wer import EditCounts, edit_counts, normalize_words

RECOGNIZER_RATE = 16000  # the en-us acoustic model's rate
LANGUAGE = "en-us"
LEVEL_DBFS = -25.0  # speech level the recognizer hears (RMS of the active part)
NOISE_FLOOR_DBFS = -50.0  # the noise floor added under it (see Recognizer)
MAX_NAMED = 10  # ids named in an error message

# A protection applied on the fly: (N,) float32 at 16 kHz -> (M,) float array or tensor.
WaveTransform = Callable[[np.ndarray], Any]


class RecognizerError(OptinError, RuntimeError):
    """The speech recognizer cannot be loaded (package or model missing) or fails."""


class Recognizer:
    """pocketsphinx's decoder with its bundled US English model, silenced.

    Every utterance is levelled to -25 dBFS RMS (as ``load_audio`` does) and given a fixed,
    seeded white-noise floor (``noise_floor_dbfs``, default -50 dBFS: 25 dB below the speech)
    before decoding: the acoustic model was trained on recordings, which always have one, and
    digitally silent or perfectly clean synthetic audio (eSpeak NG) throws off its cepstral
    mean normalisation. Measured on clean eSpeak NG sentences: WER 0.66 without the floor,
    0.37 with it. The same input always gives the same transcript.

    Args:
        model_dir: a folder like pocketsphinx's ``model/en-us`` (``en-us/`` acoustic model,
            ``en-us.lm.bin``, ``cmudict-en-us.dict``); default: the one in the wheel.
        noise_floor_dbfs: level of the added noise floor; ``None`` adds none.
        **options: further pocketsphinx settings (``beam=1e-60``, ``lw=6.5``...).

    Raises:
        RecognizerError: pocketsphinx is not installed, or its model cannot be loaded.
    """

    def __init__(self, model_dir: str | os.PathLike | None = None,
                 noise_floor_dbfs: float | None = NOISE_FLOOR_DBFS, **options: Any) -> None:
        try:
            import pocketsphinx
        except ImportError as err:
            raise RecognizerError(
                "the content attacker needs the speech recognizer package 'pocketsphinx' "
                f"(pip install 'pocketsphinx>=5'): {err}") from err
        folder = Path(model_dir) if model_dir is not None else \
            Path(pocketsphinx.get_model_path()) / LANGUAGE
        self.model = {"hmm": folder / LANGUAGE, "lm": folder / f"{LANGUAGE}.lm.bin",
                      "dict": folder / "cmudict-en-us.dict"}
        missing = [str(p) for p in self.model.values() if not p.exists()]
        if missing:
            raise RecognizerError(f"pocketsphinx model file(s) missing: {', '.join(missing)}")
        settings = {key: str(path) for key, path in self.model.items()}
        settings.update(options)
        try:
            config = pocketsphinx.Config(logfn=os.devnull, **settings)
            self._decoder = pocketsphinx.Decoder(config)
        except (RuntimeError, ValueError, KeyError) as err:
            raise RecognizerError(f"pocketsphinx could not load its model from {folder}: "
                                  f"{err}") from err
        self.noise_floor_dbfs = noise_floor_dbfs
        self.name = f"pocketsphinx {getattr(pocketsphinx, '__version__', '5')} ({LANGUAGE})"

    def transcribe(self, wave: Any, sample_rate: int = SAMPLE_RATE) -> str:
        """The recognizer's best word sequence for one utterance ("" when it hears none).

        Args:
            wave: (N,) float samples in [-1, 1] (numpy array or torch tensor; integer
                samples are scaled by their type's range).
            sample_rate: its rate in Hz; resampled to 16 kHz (soxr) when it differs.

        Raises:
            AudioError: not one channel of samples, NaN/infinite samples or a bad rate.
        """
        if hasattr(wave, "detach"):  # a torch tensor, without importing torch here
            wave = wave.detach().cpu().numpy()
        wave = np.asarray(wave)
        if wave.ndim != 1:
            raise AudioError(f"transcribe: expected (samples,), got shape {wave.shape}")
        if np.issubdtype(wave.dtype, np.integer):
            wave = wave.astype(np.float32) / float(np.iinfo(wave.dtype).max)
        wave = wave.astype(np.float32, copy=False)
        if not np.isfinite(wave).all():
            raise AudioError("transcribe: the audio holds NaN or infinite samples")
        check_sample_rate(sample_rate, "transcribe")
        if wave.size == 0:
            return ""
        wave = resample(wave, sample_rate, RECOGNIZER_RATE, "transcribe")
        wave = normalize_volume(wave, RECOGNIZER_RATE, "rms", LEVEL_DBFS)
        if self.noise_floor_dbfs is not None:
            noise = np.random.default_rng(0).standard_normal(wave.size).astype(np.float32)
            wave = wave + noise * np.float32(10 ** (self.noise_floor_dbfs / 20))
        pcm = (np.clip(wave, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        decoder = self._decoder
        decoder.start_utt()
        decoder.process_raw(pcm, False, True)  # no_search=False, full_utt=True
        decoder.end_utt()
        hyp = decoder.hyp()
        return " ".join(hyp.hypstr.split()) if hyp is not None else ""


@dataclass
class ContentReport:
    """Word error rates of the content attacker on one split of one corpus.

    Rates are corpus-level (:func:`optin.metrics.wer.word_error_rate`); ``None`` where not
    measured (no protected side, no usable reference, or no reference words at all).

    Attributes:
        corpus: the original manifest (its file, or "manifest").
        split: the split attacked.
        protection: what the protected side is: a manifest's path, "transform", or "none".
        recognizer: which recognizer attacked.
        utterances: rows transcribed on every side (the skipped ones excluded).
        references: rows among them with a usable reference text (0: no usable reference).
        wer_original: original audio vs the reference text.
        wer_protected: protected audio vs the reference text.
        wer_protected_vs_original: protected audio vs the transcript of the original.
        counts: the edit counts behind each rate (same keys as the rates' names).
        skipped: ``(id, why)`` of each row left out (unreadable audio).
        audio_seconds: original audio transcribed; decoded_seconds: audio transcribed on
            both sides; decode_seconds: time spent recognising it.
        transcripts: ``id -> {"reference", "original", "protected"}``.
        limits: what these numbers do not say.
    """

    corpus: str
    split: str
    protection: str
    recognizer: str
    utterances: int = 0
    references: int = 0
    wer_original: float | None = None
    wer_protected: float | None = None
    wer_protected_vs_original: float | None = None
    counts: dict[str, EditCounts] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    audio_seconds: float = 0.0
    decoded_seconds: float = 0.0
    decode_seconds: float = 0.0
    transcripts: dict[str, dict[str, str]] = field(default_factory=dict)
    limits: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return {
            "corpus": self.corpus, "split": self.split, "protection": self.protection,
            "recognizer": self.recognizer, "utterances": self.utterances,
            "references": self.references, "wer_original": self.wer_original,
            "wer_protected": self.wer_protected,
            "wer_protected_vs_original": self.wer_protected_vs_original,
            "counts": {name: {"substitutions": c.substitutions, "deletions": c.deletions,
                              "insertions": c.insertions, "reference_words": c.reference}
                       for name, c in self.counts.items()},
            "skipped": [{"id": i, "why": why} for i, why in self.skipped],
            "audio_seconds": round(self.audio_seconds, 3),
            "decoded_seconds": round(self.decoded_seconds, 3),
            "decode_seconds": round(self.decode_seconds, 3),
            "transcripts": self.transcripts, "limits": self.limits,
        }

    def format(self) -> str:
        """A markdown table of the rates, the skipped rows and the limits."""
        def rate(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.3f}"

        lines = [
            "| corpus | split | protection | utterances | skipped | WER original vs reference "
            "| WER protected vs reference | WER protected vs original |",
            "|---|---|---|---:|---:|---:|---:|---:|",
            f"| {self.corpus} | {self.split} | {self.protection} | {self.utterances} | "
            f"{len(self.skipped)} | {rate(self.wer_original)} | {rate(self.wer_protected)} | "
            f"{rate(self.wer_protected_vs_original)} |",
            "",
            f"recognizer: {self.recognizer}; "
            + (f"{self.references} utterance(s) with a reference text"
               if self.references else "no usable reference text (only protected vs original)")
            + (f"; {self.audio_seconds:.1f} s of original audio, decoding took "
               f"{self.decode_seconds / self.decoded_seconds:.2f} s per second of audio"
               if self.decoded_seconds else ""),
        ]
        lines += [f"skipped {name}: {why}" for name, why in self.skipped[:20]]
        if len(self.skipped) > 20:
            lines.append(f"... and {len(self.skipped) - 20} more skipped")
        lines += ["", f"limits: {self.limits}"]
        return "\n".join(lines)


def has_usable_reference(texts: list[str]) -> bool:
    """Whether texts hold real words: some word of two or more letters and nothing else.

    Sentence codes ("a01", "s03"), numbers and empty cells are not a reference.
    """
    return any(len(word) > 1 and word.replace("'", "").isalpha()
               for text in texts for word in normalize_words(text))


def transcribe_manifest(manifest: Manifest, split: str | None = "test",
                        recognizer: Recognizer | None = None, progress: bool = True,
                        skipped: list[tuple[str, str]] | None = None) -> dict[str, str]:
    """The recognizer's transcript of every row of a split (``None``: every row).

    Args:
        skipped: a list to collect ``(id, why)`` of unreadable audio into (the row is left
            out); without it, unreadable audio raises.

    Returns:
        ``{id: transcript}`` in row order.

    Raises:
        AudioError: unreadable audio, naming the row (when ``skipped`` is None).
    """
    recognizer = recognizer if recognizer is not None else Recognizer()
    part = manifest.split(split) if split is not None else manifest
    out: dict[str, str] = {}
    for row in tqdm(part.rows, desc="transcribing", unit="utt", disable=not progress):
        try:
            wave = load_audio(part.audio_path(row), allow_silence=True)
        except AudioError as err:
            if skipped is None:
                raise AudioError(f"row '{row['id']}': {err}") from err
            skipped.append((row["id"], str(err)))
            continue
        out[row["id"]] = recognizer.transcribe(wave, SAMPLE_RATE)
    return out


def content_attack(original: Manifest, protected: Manifest | None = None, split: str = "test",
                   transform: WaveTransform | None = None, recognizer: Recognizer | None = None,
                   progress: bool = True, limit: int | None = None) -> ContentReport:
    """Transcribe a split of the original corpus and its protected version; score the words.

    Args:
        original: the corpus; its ``text`` column is the reference when it holds words.
        protected: a manifest holding every attacked id (its audio is the protected copy;
            its other rows and columns are ignored).
        transform: or a protection applied to each original waveform (16 kHz) on the fly.
        limit: attack only the first ``limit`` rows of the split (manifest order).

    Raises:
        ConfigError: both ``protected`` and ``transform`` given, or ``limit`` below 1.
        ManifestError: no such split, or ids missing from the protected manifest (named).
        RecognizerError: pocketsphinx is missing.
        NothingReadError: no row could be read (every one skipped), naming the first.
    """
    if protected is not None and transform is not None:
        raise ConfigError("content attack: give a protected manifest or a transform, not both")
    if limit is not None and limit < 1:
        raise ConfigError(f"content attack: limit must be at least 1, got {limit}")
    part = original.split(split)
    rows = part.rows[:limit] if limit is not None else part.rows
    protected_rows = _protected_rows(protected, rows, split)
    recognizer = recognizer if recognizer is not None else Recognizer()
    report = ContentReport(corpus=str(original.source) if original.source else "manifest",
                           split=split, protection=_protection_name(protected, transform),
                           recognizer=recognizer.name)
    with_text = "text" in original.columns
    usable = with_text and has_usable_reference([row["text"] for row in rows])
    has_side = protected is not None or transform is not None
    totals = {"original": EditCounts(), "protected": EditCounts(),
              "protected_vs_original": EditCounts()}
    for row in tqdm(rows, desc="content attack", unit="utt", disable=not progress):
        heard = _hear_row(row, part, protected, protected_rows, transform, recognizer, report)
        if heard is None:
            continue
        entry = {"original": heard[0]}
        reference = normalize_words(row["text"]) if usable else []
        if reference:
            report.references += 1
            entry["reference"] = row["text"]
            totals["original"] += edit_counts(reference, normalize_words(heard[0]))
        if heard[1] is not None:
            entry["protected"] = heard[1]
            if reference:
                totals["protected"] += edit_counts(reference, normalize_words(heard[1]))
            totals["protected_vs_original"] += edit_counts(normalize_words(heard[0]),
                                                           normalize_words(heard[1]))
        report.transcripts[row["id"]] = entry
    refuse_all_failed(report.skipped, report.utterances, f"rows of split '{split}'")
    _finish(report, totals, has_side)
    report.limits = _limits(with_text, usable, totals["protected_vs_original"], has_side)
    return report


def _protected_rows(protected: Manifest | None, rows: list[dict[str, str]], split: str
                    ) -> dict[str, dict[str, str]]:
    """The protected manifest's rows by id; a ManifestError naming the attacked ids it lacks."""
    if protected is None:
        return {}
    by_id = {row["id"]: row for row in protected.rows}
    missing = [row["id"] for row in rows if row["id"] not in by_id]
    if missing:
        where = f"protected manifest {protected.source}" if protected.source \
            else "the protected manifest"
        shown = ", ".join(missing[:MAX_NAMED]) + (" ..." if len(missing) > MAX_NAMED else "")
        raise ManifestError(f"{where} lacks {len(missing)} of the {len(rows)} id(s) of split "
                            f"'{split}' to attack: {shown}")
    return by_id


def _protection_name(protected: Manifest | None, transform: WaveTransform | None) -> str:
    """How the report names the protection: the manifest, the transform, or "none"."""
    if protected is not None:
        return str(protected.source) if protected.source else "protected manifest"
    if transform is not None:
        name = getattr(transform, "__name__", None) or type(transform).__name__
        return f"transform {name}"
    return "none"


def _hear_row(row: dict[str, str], part: Manifest, protected: Manifest | None,
              protected_rows: dict[str, dict[str, str]], transform: WaveTransform | None,
              recognizer: Recognizer, report: ContentReport) -> tuple[str, str | None] | None:
    """What the recognizer hears on one row's original and protected audio (None for the
    latter without a protection); counts the audio and time in ``report``. None, with the
    row in ``report.skipped``, when either audio cannot be read."""
    try:
        wave = load_audio(part.audio_path(row), allow_silence=True)
    except AudioError as err:
        report.skipped.append((row["id"], f"original: {err}"))
        return None
    start = time.perf_counter()
    heard = recognizer.transcribe(wave, SAMPLE_RATE)
    decode = time.perf_counter() - start
    decoded = len(wave) / SAMPLE_RATE
    heard_protected = None
    if protected is not None or transform is not None:
        try:
            protected_wave = (load_audio(protected.audio_path(protected_rows[row["id"]]),
                                         allow_silence=True) if protected is not None
                              else transform(wave))  # type: ignore[misc]
        except AudioError as err:
            report.skipped.append((row["id"], f"protected: {err}"))
            return None
        start = time.perf_counter()
        heard_protected = recognizer.transcribe(protected_wave, SAMPLE_RATE)
        decode += time.perf_counter() - start
        decoded += len(protected_wave) / SAMPLE_RATE
    report.utterances += 1
    report.decode_seconds += decode
    report.decoded_seconds += decoded
    report.audio_seconds += len(wave) / SAMPLE_RATE
    return heard, heard_protected


def _finish(report: ContentReport, totals: dict[str, EditCounts], has_side: bool) -> None:
    """The word error rates of the report from the summed edit counts."""
    if report.references:
        report.counts["original"] = totals["original"]
        report.wer_original = _rate(totals["original"])
        if has_side:
            report.counts["protected"] = totals["protected"]
            report.wer_protected = _rate(totals["protected"])
    if has_side and report.utterances:
        report.counts["protected_vs_original"] = totals["protected_vs_original"]
        report.wer_protected_vs_original = _rate(totals["protected_vs_original"])


def _rate(counts: EditCounts) -> float | None:
    """errors / reference words; None when there are no reference words."""
    return counts.errors / counts.reference if counts.reference else None


def _limits(with_text: bool, usable: bool, versus_original: EditCounts, has_side: bool) -> str:
    notes = [
        "pocketsphinx's model is US English: on other languages (EmoDB is German) the WER of "
        "protected vs original measures only whether the recognizer's output on the protected "
        "audio still matches its output on the original, not understanding",
        "it is one recognizer, a weak attacker: a high WER bounds what this attacker recovers, "
        "not what every attacker can (a stronger recognizer, or one adapted to the protected "
        "audio, may recover more words)",
    ]
    if not usable:
        why = "has no text column" if not with_text else \
            "holds no words in its text column (e.g. sentence codes like 'a01')"
        notes.append(f"the manifest {why}, so there is no WER against a reference")
    if has_side and versus_original.reference == 0:
        notes.append("the recognizer heard no words in the original audio, so protected vs "
                     "original is undefined")
    return "; ".join(notes) + "."

"""The plan of the built-in corpus: its speakers, emotion styles, sentences and clips.

Pure data and seeded arithmetic: every clip's parameters come from a hash of (seed, speaker,
emotion, sentence), so a plan is the same on every machine and for any number of workers. How
the corpus is made is told in :mod:`optin.corpora.synth`; the audio is made by
:mod:`optin.corpora.synth_render`.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np

from optin.corpora.manifest import ManifestError
from optin.errors import ConfigError
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



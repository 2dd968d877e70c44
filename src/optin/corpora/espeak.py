"""A small ctypes binding to eSpeak NG (the library and data of the ``espeakng-loader`` wheel).

Only what the built-in corpus needs: synchronous synthesis of a text with one voice and a few
prosody parameters, returned as int16 samples at the library's rate (22050 Hz).

The C library is process-global (one voice, one set of parameters, one callback and its
internal state per process), so one process should use one :class:`ESpeak` instance at a time;
every call is guarded by a lock so threads cannot interleave. For parallel synthesis use worker
*processes*, each with its own instance.

Reproducibility: eSpeak NG carries state from one utterance into the next (the pitch-flutter
phase, the automatic gain control, the voicing-cycle counter), none of which the API can reset,
so the same call gives different samples depending on what was spoken before. With
``isolate=True`` (the default where ``os.fork`` exists) every synthesis runs in a forked child
of a process that never synthesizes itself, so its samples depend only on its arguments. That
costs a few milliseconds per call. Do not mix isolated and in-process synthesis in one process
if you need byte-identical output.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optin.errors import OptinError

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of calling exit() on a bad data path
POS_CHARACTER = 1
CHARS_UTF8 = 1
ENDPAUSE = 0x1000

PARAM_RATE = 1  # words per minute, 80..450, default 175
PARAM_VOLUME = 2  # 0..200, default 100
PARAM_PITCH = 3  # 0..100, default 50
PARAM_RANGE = 4  # 0..100, default 50
PARAM_WORDGAP = 7  # extra pause between words, units of 10 ms at the default rate

EE_OK = 0

_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_LOCK = threading.Lock()  # the library is process-global: one synthesis at a time


class ESpeakError(OptinError, RuntimeError):
    """The library or its data cannot be loaded, or a call into it failed."""


@dataclass(frozen=True)
class Utterance:
    """One text to speak and how (see :meth:`ESpeak.synthesize` for the units)."""

    text: str
    voice: str = "en-us+f3"
    rate: int = 175
    pitch: int = 50
    pitch_range: int = 50
    volume: int = 100
    word_gap: int = 0
    seed: int = 0


def default_paths() -> tuple[Path, Path]:
    """(library, data folder) of the ``espeakng-loader`` wheel.

    Raises:
        ESpeakError: the wheel is not installed or lacks its files.
    """
    try:
        import espeakng_loader
    except ImportError as err:
        raise ESpeakError(
            "eSpeak NG is not available: the package 'espeakng-loader' is not installed "
            "(pip install espeakng-loader)"
        ) from err
    return Path(espeakng_loader.get_library_path()), Path(espeakng_loader.get_data_path())


class ESpeak:
    """One handle on the eSpeak NG library, initialised in synchronous mode.

    Args:
        library: path of ``libespeak-ng``; default from ``espeakng-loader``.
        data: the ``espeak-ng-data`` folder; default from ``espeakng-loader``.
        isolate: synthesize each utterance in a forked child so that its samples depend only
            on the arguments (see the module docstring); default True where ``os.fork``
            exists.

    Raises:
        ESpeakError: the library cannot be loaded or initialised with the data folder.
    """

    def __init__(self, library: str | os.PathLike | None = None,
                 data: str | os.PathLike | None = None, isolate: bool | None = None) -> None:
        if library is None or data is None:
            default_lib, default_data = default_paths()
            library = default_lib if library is None else library
            data = default_data if data is None else data
        self.library_path = Path(library)
        self.data_path = Path(data)
        can_fork = hasattr(os, "fork")
        if isolate and not can_fork:
            raise ESpeakError("isolate=True needs os.fork, which this platform lacks")
        self.isolate = can_fork if isolate is None else bool(isolate)
        if not self.library_path.is_file():
            raise ESpeakError(f"eSpeak NG library not found at {self.library_path}")
        if not (self.data_path / "phontab").is_file():
            raise ESpeakError(
                f"eSpeak NG data not found: {self.data_path} is not an espeak-ng-data folder "
                "(no 'phontab' in it)"
            )
        try:
            self._lib = ctypes.CDLL(str(self.library_path))
        except OSError as err:
            raise ESpeakError(
                f"cannot load the eSpeak NG library {self.library_path}: {err}"
            ) from err
        self._declare()
        self._chunks: list[np.ndarray] = []
        # the C side keeps only a raw pointer: keep the Python callback alive with the instance
        self._callback = _CALLBACK(self._collect)
        libc_name = ctypes.util.find_library("c")
        self._libc = ctypes.CDLL(libc_name) if libc_name else None
        with _LOCK:
            rate = self._lib.espeak_Initialize(
                AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_path).encode(), INITIALIZE_DONT_EXIT
            )
            if rate <= 0:
                raise ESpeakError(
                    f"espeak_Initialize failed (returned {rate}) with data {self.data_path}"
                )
            self._lib.espeak_SetSynthCallback(self._callback)
        self.sample_rate = int(rate)
        self.version = self._lib.espeak_Info(None).decode(errors="replace")

    def _declare(self) -> None:
        """Argument and result types of the functions used."""
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                          ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint,
                                     ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                     ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        self._set_rand_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._set_rand_seed is not None:
            self._set_rand_seed.argtypes = [ctypes.c_long]
            self._set_rand_seed.restype = None

    def _collect(self, wav: ctypes.POINTER(ctypes.c_short), n: int, events: int) -> int:
        """Synth callback: copy the block of samples; 0 means 'go on'."""
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def variants(self) -> list[str]:
        """Names of the voice variants in the data folder (``f3``, ``m1``, ``Annie``...)."""
        folder = self.data_path / "voices" / "!v"
        return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []

    def synthesize(
        self,
        text: str,
        voice: str = "en-us+f3",
        rate: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
        volume: int = 100,
        word_gap: int = 0,
        seed: int = 0,
    ) -> tuple[np.ndarray, int]:
        """Speak ``text`` and return its samples.

        Args:
            voice: a voice name with an optional variant: ``en-us``, ``en-gb-x-rp+m3``,
                ``en-029+Annie``.
            rate: words per minute (80..450). pitch, pitch_range: 0..100 (50 is the voice's
                own). volume: 0..200 (100 is normal). word_gap: extra pause between words
                in units of 10 ms.
            seed: seeds the library's random numbers (breath and Klatt noise).

        Returns:
            (samples (N,) int16, sample rate in Hz).

        Raises:
            ESpeakError: unknown voice or variant, or a failed synthesis call.
        """
        utt = Utterance(text, voice, rate, pitch, pitch_range, volume, word_gap, seed)
        return self.synthesize_batch([utt])[0], self.sample_rate

    def synthesize_batch(self, utterances: Sequence[Utterance]) -> list[np.ndarray]:
        """Speak several utterances in order; one (N,) int16 array each, at ``sample_rate``.

        With ``isolate`` the whole batch runs in one forked child, so the samples depend only
        on the batch (its utterances and their order), at the cost of one fork per batch.

        Raises:
            ESpeakError: unknown voice or variant, or a failed synthesis call.
        """
        items = [Utterance(u.text, u.voice, int(u.rate), int(u.pitch), int(u.pitch_range),
                           int(u.volume), int(u.word_gap), int(u.seed)) for u in utterances]
        for u in items:
            self._check_voice(u.voice)
        if not items:
            return []
        with _LOCK:
            if self.isolate:
                return self._synth_forked(items)
            return [self._synth_here(u) for u in items]

    def _check_voice(self, voice: str) -> None:
        """ESpeakError for a variant that does not exist (the library would ignore it)."""
        if "+" in voice:
            variant = voice.split("+", 1)[1]
            if not (self.data_path / "voices" / "!v" / variant).is_file():
                raise ESpeakError(
                    f"eSpeak NG has no voice variant '{variant}' (in voice '{voice}'); "
                    f"variants are in {self.data_path / 'voices' / '!v'}"
                )

    def _synth_here(self, u: Utterance) -> np.ndarray:
        """The synthesis itself, in this process; the caller holds the lock."""
        self._lib.espeak_SetSynthCallback(self._callback)
        err = self._lib.espeak_SetVoiceByName(u.voice.encode())
        if err != EE_OK:
            raise ESpeakError(f"eSpeak NG has no voice '{u.voice}' (error {err})")
        for param, value in ((PARAM_RATE, u.rate), (PARAM_VOLUME, u.volume),
                             (PARAM_PITCH, u.pitch), (PARAM_RANGE, u.pitch_range),
                             (PARAM_WORDGAP, u.word_gap)):
            err = self._lib.espeak_SetParameter(param, value, 0)
            if err != EE_OK:
                raise ESpeakError(f"espeak_SetParameter({param}, {value}) failed ({err})")
        if self._set_rand_seed is not None:
            self._set_rand_seed(u.seed & 0x7FFFFFFF)
        if self._libc is not None:
            self._libc.srand(ctypes.c_uint(u.seed & 0xFFFFFFFF))
        data = u.text.encode("utf-8") + b"\0"
        self._chunks = []
        try:
            err = self._lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8,
                                         None, None)
            if err != EE_OK:
                raise ESpeakError(f"espeak_Synth failed ({err}) for text {u.text!r}")
            err = self._lib.espeak_Synchronize()
            if err != EE_OK:
                raise ESpeakError(f"espeak_Synchronize failed ({err})")
            chunks = self._chunks
        finally:
            self._chunks = []
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(chunks).astype(np.int16, copy=False)

    def _synth_forked(self, items: list[Utterance]) -> list[np.ndarray]:
        """Run :meth:`_synth_here` on each item in a forked child; read the samples back.

        The child sends ``b"\\0"``, the item count and lengths (int64), then the samples; or
        ``b"\\1"`` and an error message.
        """
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never returns
            code = 0
            try:
                os.close(read_fd)
                try:
                    waves = [self._synth_here(u) for u in items]
                    sizes = np.array([len(items), *(len(w) for w in waves)], dtype="<i8")
                    payload = b"\0" + sizes.tobytes() + b"".join(
                        w.astype("<i2").tobytes() for w in waves)
                except BaseException as err:
                    payload = b"\1" + f"{err}".encode(errors="replace")
                view = memoryview(payload)
                while view:
                    view = view[os.write(write_fd, view):]
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as fh:
            payload = fh.read()
        _, status = os.waitpid(pid, 0)
        if status != 0 or not payload:
            raise ESpeakError(f"the eSpeak NG synthesis process failed (wait status {status}) "
                              f"for text {items[0].text!r}")
        if payload[:1] == b"\1":
            raise ESpeakError(payload[1:].decode(errors="replace"))
        count = int(np.frombuffer(payload, dtype="<i8", count=1, offset=1)[0])
        sizes = np.frombuffer(payload, dtype="<i8", count=count, offset=9)
        samples = np.frombuffer(payload, dtype="<i2", offset=9 + 8 * count)
        bounds = [0, *np.cumsum(sizes).tolist()]
        return [samples[a:b].astype(np.int16) for a, b in itertools.pairwise(bounds)]

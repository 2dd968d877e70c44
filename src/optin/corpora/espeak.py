"""A small ctypes binding to eSpeak NG (the library and data of the ``espeakng-loader`` wheel).

Only what the built-in corpus needs: synchronous synthesis of a text with one voice and a few
prosody parameters, returned as int16 samples at the library's rate (22050 Hz).

The C library is process-global (one voice, one set of parameters, one callback, one ``rand()``
state per process), so one process should use one :class:`ESpeak` instance at a time; every
call is guarded by a lock so threads cannot interleave. For parallel synthesis use worker
*processes*, each with its own instance.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from pathlib import Path

import numpy as np

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


class ESpeakError(RuntimeError):
    """The library or its data cannot be loaded, or a call into it failed."""


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

    Raises:
        ESpeakError: the library cannot be loaded or initialised with the data folder.
    """

    def __init__(self, library: str | os.PathLike | None = None,
                 data: str | os.PathLike | None = None) -> None:
        if library is None or data is None:
            default_lib, default_data = default_paths()
            library = default_lib if library is None else library
            data = default_data if data is None else data
        self.library_path = Path(library)
        self.data_path = Path(data)
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
            raise ESpeakError(f"cannot load the eSpeak NG library {self.library_path}: {err}") \
                from err
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

    def _collect(self, wav: ctypes.POINTER(ctypes.c_short), n: int, events: int) -> int:
        """Synth callback: copy the block of samples; 0 means 'go on'."""
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def synthesize(
        self,
        text: str,
        voice: str = "en-us+f3",
        rate: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
        volume: int = 100,
        word_gap: int = 0,
        seed: int | None = 0,
    ) -> tuple[np.ndarray, int]:
        """Speak ``text`` and return its samples.

        Args:
            voice: a voice name such as ``en-us``, ``en-gb-x-rp+m3`` or ``en-029+Annie``.
            rate: words per minute (80..450). pitch, pitch_range: 0..100 (50 is the voice's
                own). volume: 0..200 (100 is normal). word_gap: extra pause between words
                in units of 10 ms.
            seed: seeds the C library's ``rand()`` (used for breath and Klatt noise) before
                synthesis, so the same call gives the same samples; None leaves it alone.

        Returns:
            (samples (N,) int16, sample rate in Hz).

        Raises:
            ESpeakError: unknown voice or a failed synthesis call.
        """
        data = text.encode("utf-8") + b"\0"
        with _LOCK:
            self._lib.espeak_SetSynthCallback(self._callback)
            err = self._lib.espeak_SetVoiceByName(voice.encode())
            if err != EE_OK:
                raise ESpeakError(f"eSpeak NG has no voice '{voice}' (error {err})")
            for param, value in ((PARAM_RATE, rate), (PARAM_VOLUME, volume),
                                 (PARAM_PITCH, pitch), (PARAM_RANGE, pitch_range),
                                 (PARAM_WORDGAP, word_gap)):
                err = self._lib.espeak_SetParameter(param, int(value), 0)
                if err != EE_OK:
                    raise ESpeakError(f"espeak_SetParameter({param}, {value}) failed ({err})")
            if seed is not None and self._libc is not None:
                self._libc.srand(ctypes.c_uint(seed & 0xFFFFFFFF))
            self._chunks = []
            err = self._lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8,
                                         None, None)
            if err != EE_OK:
                raise ESpeakError(f"espeak_Synth failed ({err}) for text {text!r}")
            err = self._lib.espeak_Synchronize()
            if err != EE_OK:
                raise ESpeakError(f"espeak_Synchronize failed ({err})")
            chunks, self._chunks = self._chunks, []
        samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        return samples.astype(np.int16, copy=False), self.sample_rate

"""Audio files whose headers lie, written with soundfile and patched byte by byte.

FLAC (https://xiph.org/flac/format.html): ``fLaC``, then the STREAMINFO block: a 4-byte block
header and 34 bytes, of which bytes 10..17 (file offset 18..25) pack, big-endian, the sample
rate (20 bits), channels - 1 (3 bits), bits per sample - 1 (5 bits) and the total number of
samples (36 bits; 0 means "unknown"). WAV: the ``fmt `` chunk's sample rate is the
little-endian uint32 at offset 24.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

STREAMINFO_FIELDS = slice(18, 26)
TOTAL_SAMPLES_MASK = (1 << 36) - 1


def _flac(blocks, rate: int, channels: int) -> bytes:
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", rate, channels, "PCM_16", format="FLAC") as out:
        for block in blocks:
            out.write(block)
    data = buffer.getvalue()
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO comes first
    return data


def _patch_streaminfo(data: bytes, keep: int) -> bytes:
    """Clear the STREAMINFO bits outside ``keep`` (a mask over the packed 64-bit field)."""
    patched = bytearray(data)
    field = int.from_bytes(patched[STREAMINFO_FIELDS], "big")
    patched[STREAMINFO_FIELDS] = (field & keep).to_bytes(8, "big")
    return bytes(patched)


def declared_samples(data: bytes) -> int:
    return int.from_bytes(data[STREAMINFO_FIELDS], "big") & TOTAL_SAMPLES_MASK


def flac_declaring_no_samples(seconds: int, rate: int = 48000, channels: int = 2) -> bytes:
    """``seconds`` of a constant tone (a few hundred bytes a minute) in a FLAC whose header
    says it holds 0 samples (as a streaming encoder that never seeks back writes)."""
    block = np.full((rate, channels), 1000, np.int16)
    data = _flac((block for _ in range(seconds)), rate, channels)
    return _patch_streaminfo(data, ~TOTAL_SAMPLES_MASK & ((1 << 64) - 1))


def flac_switching_to_eight_channels(seconds: int = 2, rate: int = 48000) -> bytes:
    """A mono FLAC (header: 1 channel) whose frames turn to 8 channels after ``seconds``:
    the frames of an 8-channel FLAC appended to a mono one."""
    noise = np.random.default_rng(0).standard_normal
    mono = _flac([(noise((seconds * rate, 1)) * 3000).astype(np.int16)], rate, 1)
    eight = _flac([(noise((seconds * rate, 8)) * 3000).astype(np.int16)], rate, 8)
    return mono + _frames(eight)


def _frames(data: bytes) -> bytes:
    """A FLAC file's audio frames: everything after its last metadata block."""
    pos = 4
    while True:
        header, length = data[pos], int.from_bytes(data[pos + 1:pos + 4], "big")
        pos += 4 + length
        if header & 0x80:
            return data[pos:]


def wav(seconds: float, rate: int = 16000, channels: int = 1, subtype: str = "PCM_16") -> bytes:
    """A tone of ``seconds`` with a different phase per channel."""
    t = np.arange(int(seconds * rate)) / rate
    wave = np.stack([0.3 * np.sin(2 * np.pi * 220 * t + c) for c in range(channels)], axis=1)
    buffer = io.BytesIO()
    sf.write(buffer, wave.astype(np.float32), rate, subtype=subtype, format="WAV")
    return buffer.getvalue()


def wav_declaring_rate(rate: int, seconds: float = 1.0) -> bytes:
    """A 16 kHz WAV whose header says ``rate`` Hz."""
    patched = bytearray(wav(seconds))
    assert patched[12:16] == b"fmt " and int.from_bytes(patched[24:28], "little") == 16000
    patched[24:28] = rate.to_bytes(4, "little")
    patched[28:32] = (rate * 2).to_bytes(4, "little")  # byte rate: 16-bit mono
    return bytes(patched)

"""Audio front-end: decoding, volume normalisation, DeepSpeech2 spectrogram and its inverse."""

from optin.audio.io import (
    SAMPLE_RATE,
    AudioError,
    AudioInfo,
    SilentAudioError,
    audio_info,
    decode,
    load_audio,
    normalize_volume,
    prepare_wave,
    write_audio,
)

__all__ = [
    "SAMPLE_RATE",
    "AudioError",
    "AudioInfo",
    "SilentAudioError",
    "audio_info",
    "decode",
    "load_audio",
    "normalize_volume",
    "prepare_wave",
    "write_audio",
]

"""What a stream or a bench may ask for, checked before anything is allocated.

A stream's lengths come in whole steps of its network, and are refused rather than rounded:

* the paper's obfuscator makes :data:`~optin.models.cyclegan_vc2.DOWNSAMPLE_FACTOR` frames
  (40 ms at a 10 ms hop: its two stride-2 stages) final per run, so its chunk and window are
  whole 40 ms steps; its window is at least the one that covers the receptive field;
* a causal obfuscator runs whole hops (10 ms).

Memory: one network run over a window of ``n`` frames holds about
:data:`ACTIVATIONS` feature maps of one frame each (measured: 73 KB per frame for the paper's
obfuscator, C = 16 channels x F = 161 bins, against 82 KB estimated), plus the stream's STFT
buffer (a complex and a real value per bin). A window whose estimate exceeds
:data:`STREAM_MEMORY_BYTES` (512 MiB: 63 s for the paper's obfuscator) is refused, naming the
longest that fits; a chunk is at most :data:`MAX_CHUNK_MS` (10 s, also what a raw PCM read
takes at once). ``optin bench`` is held to :data:`BENCH_MEMORY_BYTES` (4 GiB: batch x seconds
of audio at once) and its streaming waveform to the stream's budget.
"""

from __future__ import annotations

import math

from torch import nn

from optin.errors import ConfigError
from optin.models.causal_obfuscator import CausalObfuscatorConfig
from optin.models.cyclegan_vc2 import DOWNSAMPLE_FACTOR, GeneratorConfig
from optin.models.onnx_limits import format_bytes

STREAM_MEMORY_BYTES = 512 << 20
BENCH_MEMORY_BYTES = 4 << 30
MAX_CHUNK_MS = 10_000.0
ACTIVATIONS = 8  # feature maps of one frame alive at once in a network run (see above)
FLOAT_BYTES = 4
STFT_FLOATS_PER_BIN = 3  # complex64 spectrum + float32 log magnitude, per held frame


def frame_bytes(network: nn.Module, n_freq: int) -> int:
    """Estimated bytes one frame of a network run holds (activations + the stream's STFT)."""
    config = getattr(network, "config", None)
    if isinstance(config, GeneratorConfig):
        channels = config.base_width * config.n_freq
    elif isinstance(config, CausalObfuscatorConfig):
        channels = config.hidden + config.n_freq
    else:
        channels = n_freq
    return FLOAT_BYTES * (ACTIVATIONS * channels + STFT_FLOATS_PER_BIN * n_freq)


def steps(value_ms: float, step_ms: float) -> int | None:
    """``value_ms`` as a whole number of ``step_ms`` steps, or None when it is not one."""
    count = value_ms / step_ms
    whole = round(count)
    return whole if whole >= 1 and abs(count - whole) < 1e-6 else None


def _neighbours(value_ms: float, step_ms: float) -> str:
    low = math.floor(value_ms / step_ms) * step_ms
    options = [v for v in (low, low + step_ms) if v >= step_ms]
    return " or ".join(f"{v:g}" for v in options)


def check_chunk_ms(chunk_ms: float, step_ms: float, who: str) -> int:
    """The chunk in frames, or a refusal naming the allowed values.

    ``step_ms``: the network's step (40 ms for the paper's, one hop for a causal one);
    ``who``: how the message names the network and its step.
    """
    if not chunk_ms > 0 or chunk_ms > MAX_CHUNK_MS:
        raise ConfigError(f"--chunk-ms {chunk_ms:g}: give a chunk in (0, {MAX_CHUNK_MS:g}] ms "
                          "(longer is not streaming)")
    count = steps(chunk_ms, step_ms)
    if count is None:
        raise ConfigError(f"--chunk-ms {chunk_ms:g}: {who} runs whole {step_ms:g} ms steps; "
                          f"give {_neighbours(chunk_ms, step_ms)} (a multiple of "
                          f"{step_ms:g}), it is not rounded")
    return count


def check_window_ms(window_ms: float, least_frames: int, hop_ms: float,
                    bytes_per_frame: int) -> int:
    """The paper's stream window in frames: whole 40 ms steps, from ``least_frames`` (the
    receptive field, chunk and look-ahead) up to what fits :data:`STREAM_MEMORY_BYTES`."""
    step_ms = DOWNSAMPLE_FACTOR * hop_ms
    most = STREAM_MEMORY_BYTES // bytes_per_frame // DOWNSAMPLE_FACTOR * DOWNSAMPLE_FACTOR
    allowed = (f"give {least_frames * hop_ms:g} to {most * hop_ms:g} ms in steps of "
               f"{step_ms:g} ms (the least covers the receptive field, chunk and look-ahead; "
               f"the most fits the stream's {format_bytes(STREAM_MEMORY_BYTES)} budget)")
    if not window_ms > 0 or not math.isfinite(window_ms):
        raise ConfigError(f"--window-ms {window_ms:g}: {allowed}")
    frames = window_ms / hop_ms
    if frames > most:
        need = format_bytes(frames * bytes_per_frame)
        raise ConfigError(f"--window-ms {window_ms:g}: its buffers would take about {need}, "
                          f"over the stream's {format_bytes(STREAM_MEMORY_BYTES)} budget; "
                          f"{allowed}")
    count = steps(window_ms, step_ms)
    if count is None or count * DOWNSAMPLE_FACTOR < least_frames:
        what = ("shorter than the receptive field needs" if frames < least_frames
                else "not a whole number of steps")
        raise ConfigError(f"--window-ms {window_ms:g}: {what}; {allowed}; it is not rounded")
    return count * DOWNSAMPLE_FACTOR


def check_bench_audio(samples: int, frames: int, bytes_per_frame: int, budget: int,
                      option: str = "--seconds x --batch") -> None:
    """Refuse a bench whose audio (``samples`` floats, ``frames`` network frames in one call)
    would exceed ``budget`` bytes before it is made."""
    need = FLOAT_BYTES * samples + frames * bytes_per_frame
    if need > budget:
        raise ConfigError(f"{option}: {samples} samples at once would take about "
                          f"{format_bytes(need)}, over the bench's {format_bytes(budget)} "
                          "budget; time less audio per call")

"""Live mode: microphone samples in, protected samples out, through the streaming obfuscator.

A :class:`LiveSession` wraps one stream of the obfuscator (stateful for a causal obfuscator,
windowed for the paper's: :func:`optin.deploy.causal_stream.open_stream`, with the phase rule
of ``optin stream``) and times it: each push returns the protected audio that became final,
where it sits in the stream, how long the obfuscator took, and the stream's worst-case
algorithmic latency (chunk + lookahead + one hop). The page adds what it measures itself
(capture, network, playback).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from optin.deploy.causal_stream import open_stream
from optin.deploy.stream_io import default_phase
from optin.deploy.streaming import StreamOutput
from optin.errors import OptinError
from optin.privacy.obfuscator import Obfuscator


class LiveError(OptinError, ValueError):
    """Samples the live stream refuses; the message is one sentence for the page."""


@dataclass
class LiveReply:
    """What one push or the final flush gave: ``audio`` (n,) float32 output samples
    ``start_sample .. start_sample + n - 1`` of the stream, and the timings."""

    audio: np.ndarray
    start_sample: int
    received: int
    compute_ms: float
    latency_ms: float

    def header(self) -> dict[str, Any]:
        """Everything but the samples, for a JSON message."""
        return {"start_sample": self.start_sample, "samples": len(self.audio),
                "received": self.received, "compute_ms": round(self.compute_ms, 2),
                "latency_ms": round(self.latency_ms, 1)}


class LiveSession:
    """One live stream: float32 samples at the obfuscator's rate, at most ``max_seconds``."""

    def __init__(self, obfuscator: Obfuscator, chunk_ms: float | None = None,
                 max_seconds: float = 600.0, max_push_seconds: float = 2.0) -> None:
        # chunk: 100 ms for the paper's obfuscator, 10 ms for a causal one
        self.stream = open_stream(obfuscator, chunk_ms=chunk_ms,
                                  phase=default_phase(obfuscator))
        self.rate = obfuscator.features.sample_rate
        self.max_samples = int(max_seconds * self.rate)
        self.max_push = int(max_push_seconds * self.rate)
        self.received = 0

    @property
    def latency_ms(self) -> float:
        return self.stream.latency_ms

    def describe(self) -> dict[str, Any]:
        return {"sample_rate": self.rate, "chunk_ms": self.stream.chunk_ms,
                "lookahead_ms": self.stream.lookahead_ms,
                "latency_ms": round(self.stream.latency_ms, 1)}

    def push(self, data: bytes) -> LiveReply:
        """Feed raw little-endian float32 samples; return what became final."""
        if len(data) % 4:
            raise LiveError("Live audio must arrive as 32-bit float samples.")
        samples = np.frombuffer(data, dtype="<f4")
        if len(samples) > self.max_push:
            raise LiveError(f"A live message may hold at most {self.max_push} samples.")
        if self.received + len(samples) > self.max_samples:
            raise LiveError(f"The live stream reached its limit of "
                            f"{self.max_samples // self.rate // 60} minutes.")
        if not np.isfinite(samples).all():
            raise LiveError("Live audio holds samples that are not numbers.")
        self.received += len(samples)
        start = time.perf_counter()
        out = self.stream.push(np.clip(samples, -1.0, 1.0))
        return self._reply(out, start)

    def flush(self) -> LiveReply:
        """End the stream: the rest of the protected audio (as long as what came in)."""
        start = time.perf_counter()
        if self.received <= self.stream.features.n_fft // 2:
            raise LiveError("The live stream was too short to protect.")
        return self._reply(self.stream.flush(), start)

    def _reply(self, out: StreamOutput, start: float) -> LiveReply:
        return LiveReply(out.audio.astype(np.float32), out.start_sample, self.received,
                         1000.0 * (time.perf_counter() - start), self.stream.latency_ms)

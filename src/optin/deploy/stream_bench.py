"""``optin bench --streaming``: the cost and latency of a stream, chunk by chunk.

A speech-like waveform (:func:`~optin.deploy.export.probe_input`) of ``seconds`` seconds is
pushed ``chunk_ms`` at a time through the stream that suits the obfuscator
(:func:`~optin.deploy.causal_stream.open_stream`: stateful for a causal network, windowed for
the paper's), ``repeats`` times after one untimed pass. Each push is timed: it holds the
front-end STFT of the new samples, the network and the overlap-add of the audio out (the
input's phase), everything a device does per chunk. Reported per backend: compute in ms per
second of audio (total push time / audio; median over repeats), the push time's median, 99th
percentile and max (the compute part of the latency), and the algorithmic latency.

Backends for a causal obfuscator: ``torch`` (PyTorch step), ``onnx`` (the step graph of
``optin export --streaming`` in ONNX Runtime) and ``onnx-int8`` (its static int8 version,
calibrated on the checkpoint's training manifest or, for an untrained model, on the probe
waveform's features). The paper's obfuscator streams in PyTorch only.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optin.audio.features import FeatureConfig
from optin.deploy.bench import cpu_name, torch_threads
from optin.deploy.budgets import STREAM_MEMORY_BYTES, check_bench_audio
from optin.deploy.causal_stream import Stepper, open_stream
from optin.deploy.export import probe_input
from optin.deploy.stream_graph import OnnxStepper, export_streaming
from optin.errors import ConfigError
from optin.models.causal_obfuscator import CausalObfuscator, CausalObfuscatorConfig
from optin.privacy.obfuscator import Obfuscator

STREAM_BACKENDS = ("torch", "onnx", "onnx-int8")
UNTRAINED_CAUSAL = "untrained causal obfuscator of the default size (H=128, 4 blocks): speed only"


def _stepper(obfuscator: Obfuscator, backend: str, threads: int | None, tmp: Path,
             calibration: str | os.PathLike | None, probe: np.ndarray) -> Stepper | None:
    if backend == "torch":
        return None  # the stream's own PyTorch stepper
    path = tmp / f"{backend}.onnx"
    int8 = backend == "onnx-int8"
    if int8 and calibration is None and not (obfuscator.config.get("provenance") or {}).get(
            "manifest"):
        with torch.no_grad():  # an untrained model names no manifest: calibrate on the probe
            spec = obfuscator.spectrogram(probe)
        calibration = [spec.features[None].numpy()]  # type: ignore[assignment]
    export_streaming(obfuscator, path, int8=int8, calibration=calibration)
    return OnnxStepper.load(path, threads=threads)


def _time_stream(stream: Any, wave: np.ndarray, piece: int) -> list[float]:
    """Seconds of each push of one pass (flush included as the last)."""
    stream.reset()
    times = []
    for i in range(0, len(wave), piece):
        tick = time.perf_counter()
        stream.push(wave[i:i + piece])
        times.append(time.perf_counter() - tick)
    tick = time.perf_counter()
    stream.flush()
    times.append(time.perf_counter() - tick)
    return times


def bench_streaming(model: str | os.PathLike | Obfuscator | None = None, *,
                    backend: str = "all", threads: int | None = 1, seconds: float = 10.0,
                    chunk_ms: float | None = None, repeats: int = 5,
                    calibration: str | os.PathLike | None = None) -> dict[str, Any]:
    """Time a stream; returns a flat dict per backend under ``backends`` (see the module
    docstring) with the machine, the model and the stream's description."""
    if model is None:
        obfuscator = Obfuscator(CausalObfuscator(CausalObfuscatorConfig()), FeatureConfig())
        name = UNTRAINED_CAUSAL
    elif isinstance(model, Obfuscator):
        obfuscator, name = model, "given Obfuscator"
    else:
        obfuscator, name = Obfuscator.load(model), str(model)
    chosen = list(STREAM_BACKENDS) if backend == "all" else [backend]
    if any(b not in STREAM_BACKENDS for b in chosen):
        raise ConfigError(f"unknown backend '{backend}' (one of "
                          f"{', '.join(STREAM_BACKENDS)}, all)")
    if not obfuscator.streaming_native:
        if chosen != ["torch"] and backend != "all":
            raise ConfigError("the paper's obfuscator streams in PyTorch only (--backend torch)")
        if calibration is not None:
            raise ConfigError("--calibration: applies to a causal obfuscator's int8 stream; "
                              "the paper's obfuscator streams in PyTorch only, float32")
        chosen = ["torch"]
    if repeats < 1 or seconds <= 0:
        raise ConfigError(f"need repeats >= 1 and seconds > 0, got {repeats}, {seconds}")
    cfg = obfuscator.features
    check_bench_audio(round(seconds * cfg.sample_rate), 0, 0, STREAM_MEMORY_BYTES, "--seconds")
    wave = probe_input("wave", cfg, 1, cfg.frames(round(seconds * cfg.sample_rate)))[0]
    audio = len(wave) / cfg.sample_rate
    results: dict[str, dict[str, float]] = {}
    with torch_threads(threads), tempfile.TemporaryDirectory() as tmp:
        described = ""
        for name_b in chosen:
            stepper = _stepper(obfuscator, name_b, threads, Path(tmp), calibration, wave)
            stream = open_stream(obfuscator, chunk_ms=chunk_ms, phase="input",
                                 stepper=stepper)
            described = stream.describe()
            piece = max(1, round(stream.chunk_ms * cfg.sample_rate / 1000))
            with torch.inference_mode():
                _time_stream(stream, wave, piece)  # untimed
                passes = [_time_stream(stream, wave, piece) for _ in range(repeats)]
            totals = sorted(1000.0 * sum(p) / audio for p in passes)
            pushes = 1000.0 * np.concatenate([np.asarray(p[:-1]) for p in passes])
            results[name_b] = {
                "ms_per_audio_second": float(np.median(totals)),
                "ms_per_audio_second_min": totals[0], "ms_per_audio_second_max": totals[-1],
                "push_ms_median": float(np.median(pushes)),
                "push_ms_p99": float(np.quantile(pushes, 0.99)),
                "push_ms_max": float(pushes.max()),
                "algorithmic_latency_ms": stream.latency_ms,
                "latency_ms_p99": stream.latency_ms + float(np.quantile(pushes, 0.99)),
                "real_time_factor": float(np.median(totals)) / 1000.0}
    return {"model": name, "streaming_native": obfuscator.streaming_native,
            "stream": described,
            "threads": threads, "seconds": audio, "repeats": repeats,
            "cpu": cpu_name(), "machine": platform.machine(), "torch": torch.__version__,
            "backends": results}


def format_stream_bench(result: dict[str, Any]) -> str:
    """A few lines for people."""
    lines = [f"streaming bench: {result['model']}", f"  {result['stream']}",
             f"  {result['seconds']:.1f} s of audio x {result['repeats']}, "
             f"{result['threads'] or 'all'} thread(s), {result['cpu']}"]
    for name, r in result["backends"].items():
        lines.append(
            f"  {name:10s} {r['ms_per_audio_second']:8.2f} ms per second of audio "
            f"(RTF {r['real_time_factor']:.4f}); push median {r['push_ms_median']:.3f} ms, "
            f"p99 {r['push_ms_p99']:.3f} ms; latency {r['algorithmic_latency_ms']:.1f} ms "
            f"algorithmic, {r['latency_ms_p99']:.1f} ms with p99 compute")
    return "\n".join(lines)

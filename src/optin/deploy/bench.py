"""How fast the obfuscator runs: ``bench(model_dir)`` -> milliseconds per second of audio.

Each backend gets a batch of ``batch`` waveforms of ``seconds`` seconds (speech-like tones) and
is timed two ways: the obfuscator network alone on precomputed features (what the paper's
Table 1 times) and wave -> obfuscated features including the spectrogram front-end. After
``warmup`` untimed calls, ``repeats`` timed calls run round-robin over every (backend, mode)
pair, so that variants compared in one run see the same machine load; with several backends
each timed call follows an untimed one of its own, because ONNX Runtime's and OpenMP's worker
threads keep spinning a while after a call and slowed the next backend's first call up to 30x
at 16 threads. Each call's time is divided by the audio it processed (``batch * seconds``).

Backends: ``torch`` (eager PyTorch under ``torch.inference_mode``, running the same
:class:`~optin.deploy.graphs.FeatureGraph` as the export, output conv folded; CPU or CUDA), ``onnx``
(ONNX Runtime, float32, all graph optimisations), ``onnx-int8`` (ONNX Runtime, static int8
QDQ; see :mod:`optin.deploy.quantize`), or ``all`` to compare them and report the fastest.

The FLOPs are counted from the conv shapes (:mod:`optin.deploy.flops`): multiply-adds of the
convolutions, two FLOPs each; the front-end's are those of its DFT as a conv (what the ONNX
graphs compute; PyTorch's FFT needs fewer). ``peak_gflops`` is a float32 matmul on the same
device and threads, so ``floor_ms_per_audio_second`` = FLOPs / peak is what this hardware could
reach at matmul efficiency.
"""

from __future__ import annotations

import contextlib
import copy
import os
import platform
import resource
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from optin.audio.features import FeatureConfig, SpectrogramFrontEnd
from optin.deploy.budgets import BENCH_MEMORY_BYTES, check_bench_audio, frame_bytes
from optin.deploy.export import attach_frontend, feature_graph_model, frontend_model, probe_input
from optin.deploy.flops import conv_flops
from optin.deploy.graphs import FeatureGraph, FrontEndGraph
from optin.deploy.quantize import calibration_inputs, quantize_features_model
from optin.deploy.runtime import make_session
from optin.errors import ConfigError
from optin.models.cyclegan_vc2 import Generator, GeneratorConfig
from optin.privacy.obfuscator import Obfuscator

# Table 1 of the paper: milliseconds to obfuscate one second of audio.
PAPER_TABLE1: tuple[tuple[str, float], ...] = (
    ("Raspberry Pi 2B (Cortex-A7 CPU)", 1923.0),
    ("NVIDIA Jetson TX1 (Maxwell GPU)", 34.0),
    ("Server (GTX 1080 Ti GPU)", 1.0),
)
BACKENDS = ("torch", "onnx", "onnx-int8")
MODES = ("model", "with_frontend")
UNTRAINED = "untrained obfuscator of the paper's size (C=16, 3 residual blocks): speed only"


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` PyTorch intra-op threads, restoring the previous number."""
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device: str = "cpu", size: int = 1024, repeats: int = 5,
                  dtype: torch.dtype = torch.float32) -> float:
    """Achieved GFLOP/s of a ``size x size`` matmul in ``dtype`` (best of ``repeats``), at the
    current thread setting."""
    dev = torch.device(device)
    a = torch.randn(size, size, device=dev, dtype=dtype)
    b = torch.randn(size, size, device=dev, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        _sync(dev)
        start = time.perf_counter()
        a @ b
        _sync(dev)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def audio_flops(network: Generator, config: FeatureConfig, seconds: float = 1.0
                ) -> dict[str, float]:
    """Conv FLOPs per second of audio: ``model`` (the obfuscator on the features of a
    ``seconds``-long clip) and ``frontend`` (its DFT as a conv)."""
    samples = round(seconds * config.sample_rate)
    wave = torch.zeros(1, samples)
    features = torch.zeros(1, config.n_freq, config.frames(samples))
    net = copy.deepcopy(network).cpu().float().eval()
    return {"model": conv_flops(FeatureGraph(net), features)["total"] / seconds,
            "frontend": conv_flops(FrontEndGraph(config), wave)["total"] / seconds}


def _torch_runners(obfuscator: Obfuscator, wave: np.ndarray, device: torch.device
                   ) -> dict[str, Callable[[], None]]:
    net = FeatureGraph(obfuscator.network.to(device)).to(device)
    frontend = SpectrogramFrontEnd(obfuscator.features).to(device)
    wave_t = torch.from_numpy(wave).to(device)
    with torch.inference_mode():
        features = frontend(wave_t)[0]

    def model() -> None:
        with torch.inference_mode():
            net(features)
        _sync(device)

    def with_frontend() -> None:
        with torch.inference_mode():
            net(frontend(wave_t)[0])
        _sync(device)

    return {"model": model, "with_frontend": with_frontend}


def _calibration(obfuscator: Obfuscator, calibration: str | os.PathLike | None
                 ) -> tuple[str | os.PathLike | list[np.ndarray], str]:
    """A manifest if one is given or named by the checkpoint, else synthetic features."""
    named = (obfuscator.config.get("provenance") or {}).get("manifest")
    if calibration is None and named and os.path.isfile(named):
        calibration = named
    if calibration is not None:
        return calibration, str(calibration)
    arrays = [probe_input("features", obfuscator.features, 1, 300, seed=s) for s in range(8)]
    return arrays, "synthetic tones (no manifest given): fine for speed, not for accuracy"


def _onnx_runners(obfuscator: Obfuscator, backends: list[str], wave: np.ndarray,
                  device: str, threads: int | None, calibration: str | os.PathLike | None
                  ) -> tuple[dict[str, dict[str, Callable[[], None]]], str | None]:
    plain = feature_graph_model(obfuscator.network)
    front = frontend_model(obfuscator.features)
    with torch.no_grad():
        features = FrontEndGraph(obfuscator.features)(torch.from_numpy(wave))[0].numpy()
    runners, described = {}, None
    for backend in backends:
        graph = plain
        if backend == "onnx-int8":
            source, described = _calibration(obfuscator, calibration)
            arrays, _ = calibration_inputs(source, obfuscator)
            graph = quantize_features_model(plain, arrays)
        sessions = {"model": make_session(graph.SerializeToString(), threads, device),
                    "with_frontend": make_session(attach_frontend(front, graph)
                                                  .SerializeToString(), threads, device)}
        inputs = {"model": {"features": features}, "with_frontend": {"wave": wave}}
        runners[backend] = {
            mode: (lambda s=sessions[mode], x=inputs[mode]: s.run(None, x)) for mode in MODES
        }
    return runners, described


def _stats(seconds_per_call: list[float], audio_seconds: float) -> dict[str, float]:
    ms = np.asarray(seconds_per_call) * 1000 / audio_seconds
    return {"": float(np.median(ms)), "_q1": float(np.percentile(ms, 25)),
            "_q3": float(np.percentile(ms, 75)), "_min": float(ms.min()),
            "_max": float(ms.max())}


def _peak_memory(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "torch.cuda.max_memory_allocated"
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak RSS of the whole process (ru_maxrss), libraries included")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench(
    model: str | os.PathLike | Obfuscator | None = None,
    *,
    backend: str = "torch",
    device: str = "cpu",
    threads: int | None = None,
    batch: int = 1,
    seconds: float = 1.0,
    repeats: int = 20,
    warmup: int = 3,
    calibration: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Time the obfuscator; returns one flat dict (see the module docstring).

    Args:
        model: run folder, checkpoint folder or Obfuscator; None: an untrained obfuscator of
            the paper's size (the result says so).
        backend: "torch", "onnx", "onnx-int8" or "all".
        device: "cpu" or "cuda" (onnx backends need onnxruntime's CUDAExecutionProvider).
        threads: intra-op threads (None: the library default, all cores).
        batch, seconds: waveforms per call (> 1: throughput) and the length of each.
        calibration: manifest for onnx-int8 (default: the checkpoint's training manifest, or
            synthetic tones).

    Returns:
        ``ms_per_audio_second`` (median, network alone; ``_q1``, ``_q3``, ``_min``, ``_max``),
        the same ``with_frontend_*``, the numbers of :func:`_speed`, ``peak_memory_mb``; with
        ``backend="all"``, ``backends`` and ``best_backend`` (the headline's).
    """
    chosen, dev = _checked_settings(backend, device, batch, repeats, warmup, seconds)
    obfuscator, name = _bench_model(model)
    cfg = obfuscator.features
    audio = batch * seconds
    wave = _bench_wave(obfuscator, batch, seconds)
    with torch_threads(threads):
        runners, described = _runners(obfuscator, chosen, wave, device, threads, calibration)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        times = _timed(runners, warmup, repeats)
        memory, measure = _peak_memory(dev)
        peak = matmul_gflops(device, size=4096 if dev.type == "cuda" else 1024)
        used_threads = torch.get_num_threads()

    flops = audio_flops(obfuscator.network, cfg, seconds)
    per_backend = {b: {**{f"ms_per_audio_second{k}": v
                          for k, v in _stats(times[b, "model"], audio).items()},
                       **{f"with_frontend_ms_per_audio_second{k}": v
                          for k, v in _stats(times[b, "with_frontend"], audio).items()}}
                   for b in runners}
    best = min(per_backend, key=lambda b: per_backend[b]["ms_per_audio_second"])
    head = per_backend[best]
    ms, ms_full = head["ms_per_audio_second"], head["with_frontend_ms_per_audio_second"]
    result: dict[str, Any] = {
        "model": name,
        "untrained": model is None,
        "parameters": obfuscator.network.num_parameters(),
        "backend": best,
        "device": str(dev),
        "threads": threads if threads is not None else f"default ({used_threads})",
        "batch": batch,
        "seconds": seconds,
        "repeats": repeats,
        "warmup": warmup,
        "frames": cfg.frames(round(seconds * cfg.sample_rate)),
        **head,
        **_speed(ms, ms_full, flops, peak),
        "peak_memory_mb": memory,
        "memory_measure": measure,
        "cpu": cpu_name(),
        "torch_version": torch.__version__,
    }
    if described is not None:
        result["calibration"] = described
    if len(per_backend) > 1:
        result["backends"] = per_backend
        result["best_backend"] = best
    return result


def _bench_wave(obfuscator: Obfuscator, batch: int, seconds: float) -> np.ndarray:
    """(batch, samples) speech-like waveforms of ``seconds``, refused before they are made when
    too short for the front-end or over the bench's memory budget."""
    cfg = obfuscator.features
    samples = round(seconds * cfg.sample_rate)
    if samples <= cfg.n_fft // 2:
        raise ConfigError(f"seconds={seconds} is too short for the front-end")
    check_bench_audio(batch * samples, batch * cfg.frames(samples),
                      frame_bytes(obfuscator.network, cfg.n_freq), BENCH_MEMORY_BYTES)
    return probe_input("wave", cfg, batch, cfg.frames(samples))


def _checked_settings(backend: str, device: str, batch: int, repeats: int, warmup: int,
                      seconds: float) -> tuple[list[str], torch.device]:
    """The backends to time and the device, or a ConfigError naming the bad setting."""
    chosen = list(BACKENDS) if backend == "all" else [backend]
    if any(b not in BACKENDS for b in chosen):
        raise ConfigError(f"unknown backend '{backend}' (one of {', '.join(BACKENDS)}, all)")
    for name, value in (("batch", batch), ("repeats", repeats)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if warmup < 0 or seconds <= 0:
        raise ConfigError(f"need warmup >= 0 and seconds > 0, got {warmup}, {seconds}")
    if device.split(":")[0] not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device '{device}' (cpu or cuda)")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: PyTorch sees no CUDA GPU here")
    return chosen, dev


def _bench_model(model: str | os.PathLike | Obfuscator | None) -> tuple[Obfuscator, str]:
    """The obfuscator to time and how the result names it (an untrained one of the paper's
    size for None); a causal obfuscator is refused (it is timed as a stream)."""
    if model is None:
        obfuscator, name = Obfuscator(Generator(GeneratorConfig.obfuscator()),
                                      FeatureConfig()), UNTRAINED
    elif isinstance(model, Obfuscator):
        obfuscator, name = model, "given Obfuscator"
    else:
        obfuscator, name = Obfuscator.load(model), str(model)
    if obfuscator.streaming_native:
        raise ConfigError("this is a causal obfuscator: time it with --streaming "
                          "(optin.deploy.stream_bench.bench_streaming)")
    return obfuscator, name


def _timed(runners: dict[str, dict[str, Callable[[], None]]], warmup: int, repeats: int
           ) -> dict[tuple[str, str], list[float]]:
    """Seconds of each (backend, mode) call over ``repeats`` rounds, after ``warmup`` calls
    each; with several backends an untimed call first lets the last one's threads go idle."""
    calls = [(b, m, fn) for b, modes in runners.items() for m, fn in modes.items()]
    for _, _, fn in calls:
        for _ in range(warmup):
            fn()
    times: dict[tuple[str, str], list[float]] = {(b, m): [] for b, m, _ in calls}
    for _ in range(repeats):
        for b, m, fn in calls:
            if len(runners) > 1:
                fn()  # untimed: lets the last backend's spinning worker threads go idle
            start = time.perf_counter()
            fn()
            times[b, m].append(time.perf_counter() - start)
    return times


def _runners(obfuscator: Obfuscator, chosen: list[str], wave: Tensor, device: str,
             threads: int | None, calibration: str | os.PathLike | None
             ) -> tuple[dict[str, dict[str, Callable[[], None]]], Any]:
    """{backend: {"model", "with_frontend": call}} and the int8 calibration's description."""
    runners: dict[str, dict[str, Callable[[], None]]] = {}
    described = None
    if "torch" in chosen:
        runners["torch"] = _torch_runners(obfuscator, wave, torch.device(device))
    onnx_backends = [b for b in chosen if b != "torch"]
    if onnx_backends:
        more, described = _onnx_runners(obfuscator, onnx_backends, wave, device, threads,
                                        calibration)
        runners.update(more)
    return runners, described


def _speed(ms: float, ms_full: float, flops: dict[str, int], peak: float) -> dict[str, Any]:
    """Real-time factor, throughput, FLOPs and GFLOP/s against the peak, and the paper's
    Table 1 beside ``ms`` (milliseconds per second of audio, network alone)."""
    return {
        "real_time_factor": ms_full / 1000,
        "throughput_audio_seconds_per_second": 1000 / ms_full,
        "flops_per_audio_second": flops["model"],
        "frontend_flops_per_audio_second": flops["frontend"],
        "achieved_gflops": flops["model"] / ms / 1e6,
        "peak_gflops": peak,
        "floor_ms_per_audio_second": flops["model"] / peak / 1e6,
        "paper_table1": [{"device": d, "ms_per_audio_second": v, "ratio": v / ms}
                         for d, v in PAPER_TABLE1],
    }


def format_bench(result: dict[str, Any]) -> str:
    """The result as a few lines of text beside the paper's Table 1."""
    def spread(prefix: str) -> str:
        return (f"{result[prefix]:8.2f} ms  (IQR {result[prefix + '_q1']:.2f}-"
                f"{result[prefix + '_q3']:.2f}, min {result[prefix + '_min']:.2f})")

    lines = [
        f"obfuscator: {result['model']} ({result['parameters']:,} parameters)",
        f"backend {result['backend']} on {result['device']} ({result['cpu']}), threads "
        f"{result['threads']}, batch {result['batch']} x {result['seconds']:g} s, "
        f"{result['repeats']} repeats after {result['warmup']} warm-up",
        "per second of audio:",
        f"  network only        {spread('ms_per_audio_second')}",
        f"  with the front-end  {spread('with_frontend_ms_per_audio_second')}",
        f"  real-time factor {result['real_time_factor']:.4f}, throughput "
        f"{result['throughput_audio_seconds_per_second']:.1f} s of audio per second",
        f"  {result['flops_per_audio_second'] / 1e9:.3f} GFLOP (+ front-end "
        f"{result['frontend_flops_per_audio_second'] / 1e9:.3f}), achieved "
        f"{result['achieved_gflops']:.1f} GFLOP/s; matmul peak {result['peak_gflops']:.1f} "
        f"GFLOP/s -> floor {result['floor_ms_per_audio_second']:.2f} ms",
        f"  peak memory {result['peak_memory_mb']:.0f} MB ({result['memory_measure']})",
    ]
    if "backends" in result:
        lines.append("backends (network only / with front-end, median ms per audio second):")
        for name, row in result["backends"].items():
            lines.append(f"  {name:10s} {row['ms_per_audio_second']:8.2f} "
                         f"{row['with_frontend_ms_per_audio_second']:8.2f}"
                         + ("  <- best" if name == result["best_backend"] else ""))
    lines.append("paper Table 1 (ms per second of audio; ratio = paper / this run):")
    for row in result["paper_table1"]:
        lines.append(f"  {row['device']:34s} {row['ms_per_audio_second']:7.0f} ms  "
                     f"x{row['ratio']:.2f}")
    if "calibration" in result:
        lines.append(f"int8 calibration: {result['calibration']}")
    return "\n".join(lines)

"""How fast a decision-template protector runs (``optin bench --model runs/limit``).

A protector's cost on the device is its deciders' (the app's model T, or its student), plus a
rendering that copies templates. Timed two ways on speech-like audio, each call divided by the
audio it processed: ``decide`` (the deciders on the input: the front-end where one reads
features, then the deciders) and ``protect`` (the whole path, audio in, protected output out:
what ``optin obfuscate`` runs per file). Median over ``repeats`` calls after ``warmup``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from optin.deploy.bench import cpu_name, torch_threads
from optin.deploy.export import probe_input
from optin.errors import ConfigError
from optin.models.decision_template import DEEPSPEECH2, DecisionTemplateProtector
from optin.privacy.obfuscator import Obfuscator


def _median_ms(fn: Any, repeats: int, warmup: int, audio_seconds: float) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    ms = sorted(1000 * t / audio_seconds for t in times)
    return {"median": ms[len(ms) // 2], "q1": ms[len(ms) // 4], "q3": ms[(3 * len(ms)) // 4],
            "min": ms[0]}


def decider_parameters(protector: DecisionTemplateProtector) -> int:
    """Parameters of every decider (a DeepSpeech2 copy's, or an attached module's)."""
    total = 0
    for i in range(len(protector.tasks)):
        module = protector.decider_of(i)
        if isinstance(module, torch.nn.Module):
            total += sum(p.numel() for p in module.parameters())
    return total


def bench_protector(obfuscator: Obfuscator, name: str, *, threads: int | None = None,
                    seconds: float = 3.0, repeats: int = 20, warmup: int = 3
                    ) -> dict[str, Any]:
    """Time a protector on ``seconds`` of audio (batch 1); returns one flat dict."""
    protector = obfuscator.network
    if not isinstance(protector, DecisionTemplateProtector):
        raise ConfigError("bench_protector times decision-template protectors")
    if repeats < 1 or warmup < 0 or seconds <= 0:
        raise ConfigError(f"need repeats >= 1, warmup >= 0, seconds > 0; got {repeats}, "
                          f"{warmup}, {seconds}")
    cfg = obfuscator.features
    wave = torch.from_numpy(np.asarray(probe_input("wave", cfg, 1, cfg.frames(round(
        seconds * cfg.sample_rate)))[0]))
    with torch_threads(threads), torch.inference_mode():
        def decide() -> None:
            spec = obfuscator.spectrogram(wave)
            protector.decide(spec.features[None], None, wave[None])

        def protect() -> None:
            obfuscator.protect(wave)

        decide_ms = _median_ms(decide, repeats, warmup, seconds)
        protect_ms = _median_ms(protect, repeats, warmup, seconds)
        used = torch.get_num_threads()
    kinds = sorted({t.family if t.family != DEEPSPEECH2 else "deepspeech2"
                    for t in protector.tasks})
    return {
        "model": name, "protector": True, "domain": protector.config.domain,
        "tasks": [t.name for t in protector.tasks], "decider_families": kinds,
        "decider_parameters": decider_parameters(protector),
        "template_values": int(protector.templates.numel()),
        "threads": threads if threads is not None else f"default ({used})",
        "seconds": seconds, "repeats": repeats, "warmup": warmup,
        **{f"decide_ms_per_audio_second{'' if k == 'median' else '_' + k}": v
           for k, v in decide_ms.items()},
        **{f"protect_ms_per_audio_second{'' if k == 'median' else '_' + k}": v
           for k, v in protect_ms.items()},
        "cpu": cpu_name(), "torch_version": torch.__version__,
    }


def format_protector_bench(result: dict[str, Any]) -> str:
    return "\n".join([
        f"protector: {result['model']} ({', '.join(result['tasks'])}; deciders "
        f"{', '.join(result['decider_families'])}, {result['decider_parameters']:,} parameters; "
        f"{result['template_values']:,} template values, {result['domain']} domain)",
        f"threads {result['threads']}, {result['seconds']:g} s of audio, {result['repeats']} "
        f"repeats after {result['warmup']} warm-up, on {result['cpu']}",
        "per second of audio (median, IQR):",
        f"  decide  {result['decide_ms_per_audio_second']:8.2f} ms  "
        f"({result['decide_ms_per_audio_second_q1']:.2f}-"
        f"{result['decide_ms_per_audio_second_q3']:.2f})",
        f"  protect {result['protect_ms_per_audio_second']:8.2f} ms  "
        f"({result['protect_ms_per_audio_second_q1']:.2f}-"
        f"{result['protect_ms_per_audio_second_q3']:.2f})",
    ])

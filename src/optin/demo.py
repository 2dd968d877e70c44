"""``optin demo``: the main job, end to end, offline, on the built-in synthetic corpus.

Stages (each resumable: rerunning skips what is done):
1. synthesize the quick built-in corpus (eSpeak NG; synthetic speech, a stand-in for real corpora);
2. compute the spectrogram cache;
3. train the target model T for gender and a speaker-identity classifier (quick preset);
4. evaluate both on the test split and print a summary table;
5. write example WAVs: each original beside its resynthesis from the spectrogram features
   (Griffin-Lim, as the obfuscated stream will be decoded), so a person can listen.

Later stages (obfuscator, attackers, report) extend this list.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from optin.audio.features import to_waveform
from optin.audio.io import write_audio
from optin.corpora.feature_cache import FeatureCache
from optin.corpora.manifest import Manifest
from optin.corpora.synth import synthesize_corpus
from optin.training.classifier import evaluate_classifier, preset_config, train_classifier

DEMO_ATTRIBUTES = ("gender", "speaker")


def _stage(name: str, start: float) -> None:
    print(f"[{time.perf_counter() - start:7.1f} s] {name}", file=sys.stderr, flush=True)


def run_demo(out: str | os.PathLike = "optin-demo", progress: bool = True,
             seed: int = 0) -> dict[str, Any]:
    """Run the demo into ``out``; returns the summary (also written to ``out/summary.json``)."""
    out = Path(out)
    start = time.perf_counter()
    _stage("synthesizing the built-in quick corpus", start)
    report = synthesize_corpus(out / "corpus", quick=True, seed=seed, progress=progress)
    manifest = Manifest.read(report.out)

    _stage("computing spectrogram features", start)
    cache = FeatureCache.for_manifest(manifest)
    cache_report = cache.fill(manifest, progress=progress)
    if cache_report.failed:
        print(cache_report.summary(), file=sys.stderr)

    results: dict[str, Any] = {}
    for attribute in DEMO_ATTRIBUTES:
        _stage(f"training the {attribute} classifier (quick preset)", start)
        run_dir = out / "models" / f"target-{attribute}"
        config = preset_config(attribute, "quick", seed=seed)
        train_classifier(manifest, config, run_dir, progress=progress)
        _stage(f"evaluating the {attribute} classifier on the test split", start)
        results[attribute] = evaluate_classifier(run_dir, manifest, "test", progress=progress)

    _stage("writing example audio", start)
    examples = write_examples(manifest, cache, out / "examples")

    summary = {
        "corpus": str(report.out),
        "utterances": len(manifest),
        "classifiers": {
            a: {k: r[k] for k in ("utterance_accuracy", "segment_accuracy",
                                  "balanced_accuracy", "chance", "utterances")}
            for a, r in results.items()
        },
        "examples": [str(p) for p in examples],
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(format_summary(summary))
    _stage(f"done; summary in {out / 'summary.json'}", start)
    return summary


def write_examples(manifest: Manifest, cache: FeatureCache, folder: Path, count: int = 3
                   ) -> list[Path]:
    """Copy a few test utterances and their Griffin-Lim resynthesis from the features."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = manifest.split("test").rows
    chosen = [rows[i * len(rows) // count] for i in range(min(count, len(rows)))]
    written = []
    for row in chosen:
        path = manifest.audio_path(row)
        spec = cache.load(path)
        original = folder / f"{row['id']}.original.wav"
        original.write_bytes(path.read_bytes())
        resynth = folder / f"{row['id']}.resynthesized.wav"
        wave = to_waveform(spec.features, spec.mean, spec.std, config=cache.config,
                           n_samples=spec.n_samples)
        write_audio(resynth, wave, cache.config.sample_rate)
        written += [original, resynth]
    return written


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a small text table."""
    lines = [
        f"built-in corpus (synthetic eSpeak speech): {summary['utterances']} utterances",
        f"{'classifier':<12} {'utterance acc':>13} {'segment acc':>11} {'balanced':>8} "
        f"{'chance':>6} {'test utts':>9}",
    ]
    for name, r in summary["classifiers"].items():
        lines.append(f"{name:<12} {r['utterance_accuracy']:>13.3f} {r['segment_accuracy']:>11.3f}"
                     f" {r['balanced_accuracy']:>8.3f} {r['chance']:>6.3f} {r['utterances']:>9}")
    lines.append(f"examples to listen to: {Path(summary['examples'][0]).parent}"
                 if summary["examples"] else "no examples written")
    lines.append(f"wall time: {summary['seconds']:.0f} s")
    return "\n".join(lines)

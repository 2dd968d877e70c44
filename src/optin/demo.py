"""``optin demo``: the main job, end to end, offline, on the built-in synthetic corpus.

Stages (each resumable: rerunning skips what is done):
1. synthesize the quick built-in corpus (eSpeak NG; synthetic speech, a stand-in for real corpora);
2. compute the spectrogram cache;
3. train the target model T for gender and a speaker-identity classifier (quick preset);
4. train the opt-in obfuscator that permits gender only (quick preset);
5. evaluate on the test split: T on original and obfuscated input (and their agreement), and the
   speaker classifier as an ignorant attacker on original and obfuscated input;
6. write example WAVs: each original beside its resynthesis from the features and its obfuscated
   version (both Griffin-Lim), so a person can listen.

Later stages (informed attackers, the paper's figures) extend this list.
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
from optin.privacy.obfuscator import Obfuscator
from optin.training.classifier import evaluate_classifier, preset_config, train_classifier
from optin.training.obfuscator import obfuscator_preset, train_obfuscator

DEMO_ATTRIBUTES = ("gender", "speaker")  # classifiers trained on original data


def _stage(name: str, start: float) -> None:
    print(f"[{time.perf_counter() - start:7.1f} s] {name}", file=sys.stderr, flush=True)


def run_demo(out: str | os.PathLike = "optin-demo", progress: bool = True, seed: int = 0,
             corpus: dict[str, Any] | None = None,
             classifier_options: dict[str, Any] | None = None,
             obfuscator_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the demo into ``out``; returns the summary (also written to ``out/summary.json``).

    ``corpus`` (``speakers``, ``sentences``), ``classifier_options`` and ``obfuscator_options``
    override the quick presets (the integration test uses them to run small).
    """
    out = Path(out)
    start = time.perf_counter()
    _stage("synthesizing the built-in quick corpus", start)
    report = synthesize_corpus(out / "corpus", quick=True, seed=seed, progress=progress,
                               **(corpus or {}))
    manifest = Manifest.read(report.out)

    _stage("computing spectrogram features", start)
    cache = FeatureCache.for_manifest(manifest)
    cache_report = cache.fill(manifest, progress=progress)
    if cache_report.failed:
        print(cache_report.summary(), file=sys.stderr)

    models = out / "models"
    for attribute in DEMO_ATTRIBUTES:
        _stage(f"training the {attribute} classifier (quick preset)", start)
        config = preset_config(attribute, "quick", seed=seed, **(classifier_options or {}))
        train_classifier(manifest, config, models / f"classifier-{attribute}", progress=progress)

    _stage("training the obfuscator that permits gender only (quick preset)", start)
    obf_dir = models / "obfuscator-gender"
    train_obfuscator(manifest, models / "classifier-gender", obf_dir,
                     obfuscator_preset("quick", seed=seed, **(obfuscator_options or {})),
                     progress=progress)
    obfuscator = Obfuscator.load(obf_dir)

    _stage("evaluating on the test split, original and obfuscated", start)
    keep = ("utterance_accuracy", "segment_accuracy", "balanced_accuracy", "chance",
            "utterances")
    rows: dict[str, Any] = {}
    for attribute, role in (("gender", "target T (permitted)"),
                            ("speaker", "ignorant attacker")):
        model_dir = models / f"classifier-{attribute}"
        original = evaluate_classifier(model_dir, manifest, "test", progress=False,
                                       return_predictions=True)
        obfuscated = evaluate_classifier(model_dir, manifest, "test", progress=False,
                                         transform=obfuscator.obfuscate_features,
                                         return_predictions=True)
        same = [a == b for a, b in zip(original["predictions"], obfuscated["predictions"],
                                       strict=True)]
        rows[attribute] = {"role": role,
                           "original": {k: original[k] for k in keep},
                           "obfuscated": {k: obfuscated[k] for k in keep},
                           "agreement": sum(same) / len(same)}

    _stage("writing example audio", start)
    examples = write_examples(manifest, cache, out / "examples", obfuscator)

    summary = {
        "corpus": str(report.out),
        "utterances": len(manifest),
        "permitted": "gender",
        "results": rows,
        "obfuscator": str(obf_dir),
        "examples": [str(p) for p in examples],
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(format_summary(summary))
    _stage(f"done; summary in {out / 'summary.json'}", start)
    return summary


def write_examples(manifest: Manifest, cache: FeatureCache, folder: Path,
                   obfuscator: Obfuscator | None = None, count: int = 3) -> list[Path]:
    """Copy a few test utterances beside their Griffin-Lim resynthesis from the features and,
    with an obfuscator, their obfuscated audio."""
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
        if obfuscator is not None:
            obfuscated = folder / f"{row['id']}.obfuscated.wav"
            write_audio(obfuscated, obfuscator.to_waveform(obfuscator(spec)),
                        cache.config.sample_rate)
            written.append(obfuscated)
    return written


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a small text table."""
    lines = [
        f"built-in corpus (synthetic eSpeak speech): {summary['utterances']} utterances; "
        f"permitted task: {summary['permitted']}",
        f"{'classifier':<8} {'role':<21} {'original':>8} {'obfuscated':>10} {'agreement':>9} "
        f"{'chance':>6}",
    ]
    for name, r in summary["results"].items():
        lines.append(f"{name:<8} {r['role']:<21} {r['original']['utterance_accuracy']:>8.3f} "
                     f"{r['obfuscated']['utterance_accuracy']:>10.3f} {r['agreement']:>9.3f} "
                     f"{r['original']['chance']:>6.3f}")
    lines.append("(utterance accuracy on the test split)")
    if summary["examples"]:
        lines.append(f"examples to listen to: {Path(summary['examples'][0]).parent}")
    lines.append(f"wall time: {summary['seconds']:.0f} s")
    return "\n".join(lines)

"""``optin demo``: the main job, end to end, offline, on the built-in synthetic corpus.

It runs the paper's Figure-3a experiment (permit speaker identity, attack gender) and Figure-4
experiment (permit speaker identity, attack gender and the unspecified emotion) on the quick
built-in corpus with the quick preset and one seed, through the same experiment harness as
``optin experiment``: target model, original classifiers (= ignorant attackers), the opt-in
obfuscator, informed and output-only attackers. Both experiments share what they have in common
(the corpus, T, the gender classifier, the obfuscator). It prints a summary table, writes
``results.json``, ``report.md`` and figures, and example WAVs: a few test utterances beside
their obfuscated audio (Griffin-Lim), so a person can listen. Every stage resumes.

The built-in corpus is synthetic eSpeak NG speech; the numbers are not results on human speech.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from optin.audio.io import write_audio
from optin.corpora.feature_cache import FeatureCache
from optin.corpora.manifest import Manifest
from optin.evaluation.experiment import ExperimentConfig, run_experiment

DEMO_FIGURES = ("3a", "4")


def demo_configs(corpus: dict[str, Any] | None = None,
                 classifier: dict[str, Any] | None = None,
                 obfuscator: dict[str, Any] | None = None) -> list[ExperimentConfig]:
    """The two experiments of the demo (quick preset, one seed, the quick built-in corpus)."""
    data = {"synth": {"quick": True, **(corpus or {})}}
    common = {"corpus": "builtin", "data": data, "protocol": "manifest", "permitted": "speaker",
              "systems": ["opt-in"], "preset": "quick", "seeds": [0],
              "classifier": classifier or {}, "obfuscator": obfuscator or {}}
    return [
        ExperimentConfig.from_dict({**common, "name": "demo-fig3a", "figure": "3a",
                                    "title": "Built-in corpus: permit speaker, attack gender",
                                    "attacked": ["gender"]}),
        ExperimentConfig.from_dict({**common, "name": "demo-fig4", "figure": "4",
                                    "title": "Built-in corpus: permit speaker, attack gender "
                                             "and the unspecified emotion",
                                    "attacked": ["gender", "emotion"]}),
    ]


def run_demo(out: str | os.PathLike = "optin-demo", progress: bool = True,
             corpus: dict[str, Any] | None = None,
             classifier_options: dict[str, Any] | None = None,
             obfuscator_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the demo into ``out``; returns the summary (also written to ``out/summary.json``).

    ``corpus`` (``speakers``, ``sentences``), ``classifier_options`` and ``obfuscator_options``
    override the quick presets (the integration test uses them to run small).
    """
    from optin.evaluation.report import build_report

    out = Path(out)
    start = time.perf_counter()
    experiments = [run_experiment(config, out, progress=progress, report=False)
                   for config in demo_configs(corpus, classifier_options, obfuscator_options)]
    report = build_report([out], out)
    obfuscator_dir = Path(experiments[0]["systems"]["opt-in"]["models"][0])
    manifest = Manifest.read(experiments[0]["manifest"])
    examples = write_examples(manifest, obfuscator_dir, out / "examples")
    summary = {
        "experiments": experiments,
        "results": str(out / "results.json"),
        "report": str(report),
        "figures": sorted(str(p) for p in (out / "figures").glob("*.png")),
        "examples": [str(p) for p in examples],
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(format_summary(summary))
    print(f"[demo {summary['seconds']:7.1f} s] done", file=sys.stderr)
    return summary


def write_examples(manifest: Manifest, obfuscator_dir: Path, folder: Path, count: int = 3
                   ) -> list[Path]:
    """Copy a few test utterances beside their obfuscated audio (Griffin-Lim)."""
    from optin.privacy.obfuscator import Obfuscator

    obfuscator = Obfuscator.load(obfuscator_dir)
    cache = FeatureCache.for_manifest(manifest, obfuscator.features)
    folder.mkdir(parents=True, exist_ok=True)
    rows = manifest.split("test").rows
    chosen = [rows[i * len(rows) // count] for i in range(min(count, len(rows)))]
    written = []
    for row in chosen:
        path = manifest.audio_path(row)
        original = folder / f"{row['id']}.original.wav"
        original.write_bytes(path.read_bytes())
        obfuscated = folder / f"{row['id']}.obfuscated.wav"
        spec = obfuscator(cache.load(path))
        write_audio(obfuscated, obfuscator.to_waveform(spec), obfuscator.features.sample_rate)
        written += [original, obfuscated]
    return written


def _fmt(stat: dict[str, Any] | None) -> str:
    return "n/a" if stat is None else f"{stat['mean']:.3f}"


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a small text table (test-split utterance accuracy)."""
    lines = ["built-in corpus (synthetic eSpeak speech), opt-in obfuscator permitting speaker "
             "identity; test-split utterance accuracy"]
    header = (f"{'experiment':<11} {'attribute':<9} {'chance':>6} {'original':>8} "
              f"{'ignorant':>8} {'informed':>8} {'output-only':>11}")
    for experiment in summary["experiments"]:
        system = experiment["systems"]["opt-in"]
        target = system["target"]
        lines.append("")
        lines.append(f"{experiment['name']}: target T ({experiment['permitted']}) original "
                     f"{_fmt(target['original'])}, obfuscated {_fmt(target['obfuscated'])}, "
                     f"agreement {_fmt(target['agreement'])}")
        lines.append(header)
        for attribute, attack in system["attacks"].items():
            lines.append(f"{experiment['name']:<11} {attribute:<9} {_fmt(attack['chance']):>6} "
                         f"{_fmt(attack['original']):>8} {_fmt(attack['ignorant']):>8} "
                         f"{_fmt(attack['informed']):>8} {_fmt(attack['output_only']):>11}")
    lines.append("")
    lines.append(f"report:   {summary['report']}")
    for fig in summary["figures"]:
        lines.append(f"figure:   {fig}")
    if summary["examples"]:
        lines.append(f"listen:   {Path(summary['examples'][0]).parent}")
    lines.append(f"wall time: {summary['seconds']:.0f} s")
    return "\n".join(lines)

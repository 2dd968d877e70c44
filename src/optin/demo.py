"""``optin demo``: the main job, end to end, offline, on the built-in synthetic corpus.

It runs the paper's Figure-3a experiment (permit speaker identity, attack gender; opt-in and
ADR) and Figure-4 experiment (permit speaker identity, attack gender and the unspecified
emotion; opt-in, the opt-out ADR protecting gender, McAdams anonymization, and the templates of
T's answers chosen by a student of T, ``opt-in-templates``) on the quick
built-in corpus with the quick preset and one seed, through the same experiment harness as
``optin experiment``: target model, original classifiers (= ignorant attackers), the
protection systems, informed and output-only attackers, and speaker verification (EER) for
every system. Both experiments share what they have in common (the corpus, T, the gender
classifier, the obfuscator, the x-vector extractor, ADR). It prints a summary table, writes
``results.json``, ``report.md`` and figures, and example WAVs: a few test utterances beside
their obfuscated audio (Griffin-Lim), so a person can listen. Every stage resumes.

The built-in corpus is synthetic eSpeak NG speech; the numbers are not results on human speech.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from optin.audio.io import write_audio
from optin.corpora.feature_cache import FeatureCache
from optin.corpora.manifest import Manifest
from optin.evaluation.experiment import ExperimentConfig, run_experiment
from optin.evaluation.report import build_report
from optin.files import write_bytes, write_json
from optin.privacy.obfuscator import Obfuscator

DEMO_FIGURES = ("3a", "4")
DEMO_SYSTEMS = {"3a": ["opt-in", "adr"], "4": ["opt-in", "adr", "mcadams", "opt-in-templates"]}
# The demo's attackers: the DeepSpeech2 family with the quick classifier's budget (12 epochs,
# patience 4), so the main job stays within its time on a 2-core CPU; on the built-in voices
# every attacker reaches its ceiling in the first epochs. ``optin experiment`` configs train
# both families (x-vector too) to their best (``optin.evaluation.attacker_families``).
DEMO_ATTACKERS: dict[str, Any] = {"families": ["deepspeech2"], "epochs": 12, "patience": 4}


def demo_configs(corpus: dict[str, Any] | None = None,
                 options: dict[str, dict[str, Any]] | None = None) -> list[ExperimentConfig]:
    """The two experiments of the demo (quick preset, one seed, the quick built-in corpus).

    ``options`` maps config sections (classifier, obfuscator, xvector, adr, mcadams) to
    overrides of their quick presets.
    """
    data = {"synth": {"quick": True, **(corpus or {})}}
    common = {"corpus": "builtin", "data": data, "protocol": "manifest", "permitted": "speaker",
              "preset": "quick", "seeds": [0], "attackers": DEMO_ATTACKERS, **(options or {})}
    return [
        ExperimentConfig.from_dict({**common, "name": "demo-fig3a", "figure": "3a",
                                    "title": "Built-in corpus: permit speaker, attack gender",
                                    "attacked": ["gender"], "systems": DEMO_SYSTEMS["3a"]}),
        ExperimentConfig.from_dict({**common, "name": "demo-fig4", "figure": "4",
                                    "title": "Built-in corpus: permit speaker, attack gender "
                                             "and the unspecified emotion",
                                    "attacked": ["gender", "emotion"],
                                    "systems": DEMO_SYSTEMS["4"]}),
    ]


def run_demo(out: str | os.PathLike = "optin-demo", progress: bool = True,
             corpus: dict[str, Any] | None = None,
             options: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run the demo into ``out``; returns the summary (also written to ``out/summary.json``).

    ``corpus`` (``speakers``, ``sentences``) and ``options`` (per config section) override the
    quick presets (the integration test uses them to run small).
    """
    out = Path(out)
    start = time.perf_counter()
    experiments = [run_experiment(config, out, progress=progress, report=False)
                   for config in demo_configs(corpus, options)]
    report = build_report([out], out)
    obfuscator_dir = Path(experiments[0]["systems"]["opt-in"]["models"][0])
    manifest = Manifest.read(experiments[0]["manifest"])
    examples = write_examples(manifest, obfuscator_dir, out / "examples",
                              mcadams_dir=_first_model(experiments, "mcadams"),
                              templates_dir=_first_model(experiments, "opt-in-templates"))
    summary = {
        "experiments": experiments,
        "results": str(out / "results.json"),
        "report": str(report),
        "figures": sorted(str(p) for p in (out / "figures").glob("*.png")),
        "examples": [str(p) for p in examples],
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_json(out / "summary.json", summary)
    print(format_summary(summary))
    print(f"[demo {summary['seconds']:7.1f} s] done", file=sys.stderr)
    return summary


def _first_model(experiments: list[dict[str, Any]], system: str) -> Path | None:
    """The model folder of ``system``'s first seed in the first experiment that has it."""
    folders = [Path(d) for e in experiments
               for d in (e["systems"].get(system) or {}).get("models", [])[:1]]
    return folders[0] if folders else None


def write_examples(manifest: Manifest, obfuscator_dir: Path, folder: Path, count: int = 3,
                   mcadams_dir: Path | None = None, templates_dir: Path | None = None
                   ) -> list[Path]:
    """Copy a few test utterances beside their obfuscated audio (Griffin-Lim) and, given the
    McAdams system's folder, their McAdams-anonymized audio, and given the templates
    protector's folder, what it emits (``.templates.wav``)."""
    obfuscator = Obfuscator.load(obfuscator_dir)
    templates = Obfuscator.load(templates_dir) if templates_dir is not None else None
    cache = FeatureCache.for_manifest(manifest, obfuscator.features)
    folder.mkdir(parents=True, exist_ok=True)
    rows = manifest.split("test").rows
    chosen = [rows[i * len(rows) // count] for i in range(min(count, len(rows)))]
    written = []
    for row in chosen:
        path = manifest.audio_path(row)
        original = folder / f"{row['id']}.original.wav"
        write_bytes(original, path.read_bytes())
        obfuscated = folder / f"{row['id']}.obfuscated.wav"
        spec = obfuscator(cache.load(path))
        write_audio(obfuscated, obfuscator.to_waveform(spec), obfuscator.features.sample_rate)
        written += [original, obfuscated]
        if templates is not None:
            emitted = folder / f"{row['id']}.templates.wav"
            spec = templates(cache.load(path))
            write_audio(emitted, templates.to_waveform(spec), templates.features.sample_rate)
            written.append(emitted)
        if mcadams_dir is not None:
            protected = Manifest.read(mcadams_dir / "manifest.csv")
            by_id = {r["id"]: r for r in protected.rows}
            if row["id"] in by_id:
                anonymized = folder / f"{row['id']}.mcadams.wav"
                write_bytes(anonymized, protected.audio_path(by_id[row["id"]]).read_bytes())
                written.append(anonymized)
    return written


def _fmt(stat: dict[str, Any] | None) -> str:
    return "n/a" if stat is None else f"{stat['mean']:.3f}"


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a small text table (test-split utterance accuracy)."""
    lines = ["built-in corpus (synthetic eSpeak speech), permitting speaker identity; "
             "test-split utterance accuracy (ADR: classifiers on x-vectors); speaker "
             "verification EER, original / ignorant / lazy-informed / semi-informed"]
    header = (f"{'system':<8} {'attribute':<9} {'chance':>6} {'original':>8} "
              f"{'ignorant':>8} {'informed':>8} {'output-only':>11}")
    for experiment in summary["experiments"]:
        lines.append("")
        lines.append(f"{experiment['name']}")
        for key, system in experiment["systems"].items():
            target = system["target"]
            transfer = [f"{k[len('transfer_'):-len('_agreement')]} {_fmt(v)}"
                        for k, v in target.items()
                        if k.startswith("transfer_") and k.endswith("_agreement")]
            lines.append(f"  {key}: target T ({experiment['permitted']}) original "
                         f"{_fmt(target['original'])}, protected {_fmt(target['obfuscated'])}, "
                         f"agreement {_fmt(target['agreement'])}"
                         + (f"; a second model agrees: {', '.join(transfer)}" if transfer
                            else ""))
            verification = system.get("verification") or {}
            if verification:
                eers = [_fmt((verification.get(p) or {}).get("eer"))
                        for p in ("original/original", "original/protected",
                                  "protected/protected", "semi-informed")]
                lines.append(f"  {key}: EER " + " / ".join(eers))
        lines.append(header)
        for key, system in experiment["systems"].items():
            for attribute, attack in system["attacks"].items():
                lines.append(f"{key:<8} {attribute:<9} {_fmt(attack['chance']):>6} "
                             f"{_fmt(attack['original']):>8} {_fmt(attack['ignorant']):>8} "
                             f"{_fmt(attack['informed']):>8} {_fmt(attack['output_only']):>11}")
    lines.append("")
    lines.append("where the time went (s; a stage lasts until the next begins; models the "
                 "experiments share are trained once)")
    for experiment in summary["experiments"]:
        for row in experiment.get("stages", []):
            lines.append(f"  {experiment['name']:<11} {row['seconds']:7.1f}  {row['stage']}")
    lines.append("")
    lines.append(f"report:   {summary['report']}")
    for fig in summary["figures"]:
        lines.append(f"figure:   {fig}")
    if summary["examples"]:
        lines.append(f"listen:   {Path(summary['examples'][0]).parent}")
    lines.append(f"wall time: {summary['seconds']:.0f} s")
    return "\n".join(lines)

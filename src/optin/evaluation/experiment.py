"""Experiments declared in YAML: train what they need, attack, aggregate over seeds, report.

A config (see ``configs/``)::

    name: builtin-fig3a                 # unique; names the results
    title: "Built-in corpus: permit speaker, attack gender"
    figure: 3a
    corpus: builtin
    data:                               # exactly one of:
      synth: {quick: true}              #   the built-in corpus, synthesized into OUT/data/
      # import: {corpus: ravdess, src: "."}   #   a real corpus under --data-root
      # manifest: path/to/manifest.csv        #   an existing manifest (relative to --data-root)
    protocol: same-speakers             # split protocol, or "manifest" to keep the manifest's
    split_seed: 0
    permitted: speaker                  # the target task T
    attacked: [gender]                  # one to three attributes
    systems: [opt-in, adr, mcadams]     # protection systems (see optin.evaluation.systems)
    preset: quick                       # quick | paper, for every model
    seeds: [0]
    verification: true                  # speaker-verification EER/minDCF for every system
    classifier: {}                      # overrides of the classifier preset (optional)
    obfuscator: {}                      # overrides of the obfuscator preset (optional)
    xvector: {}                         # overrides of the x-vector extractor preset (optional)
    adr: {protect: gender}              # ADR: the attribute it hides, preset overrides
    mcadams: {alpha: 0.8}               # McAdams: fixed alpha, or alpha_range: [0.5, 0.9]
    attackers: {families: [deepspeech2, xvector]}   # attacker families, each trained to its
                                        # best (optin.evaluation.attacker_families); the report
                                        # gives the strongest per attribute
    sweep: {lambda_p: [0.3, 3.0]}       # optional: extra opt-in systems, one per value of an
                                        # obfuscator option (the privacy-utility frontier)

The whole config is checked when it is read, before anything is written: every key known, every
value of its annotated type and range, ``name`` a plain file name, a key given twice in the YAML
refused, and each section checked against the class it configures (derived from its fields, so
a new field is checked without a change here); errors are ``ExperimentError("<file>: <field
path>: <what>")``.

Every trained model lives under ``OUT/models/<kind>-<key>`` where the key hashes its settings,
its data fingerprint and what it depends on (e.g. the target's weights), so a rerun skips what is
done, another experiment reuses what it shares, and a killed run resumes inside the model it was
training. Results go to ``OUT/results.json`` (schema in ``optin.evaluation.results``), with the
report and figures beside it.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from optin import __version__
from optin.audio.features import FeatureConfig
from optin.checkpoint import write_json
from optin.corpora.feature_cache import FeatureCache
from optin.corpora.manifest import Manifest
from optin.corpora.registry import import_corpus
from optin.corpora.splits import assign_split
from optin.corpora.synth import synthesize_corpus
from optin.errors import OptinError
from optin.evaluation.attacker_families import (
    LoadedAttacker,
    ProtectedData,
    strongest,
    train_attacker,
)
from optin.evaluation.attackers import chance_on_test
from optin.evaluation.experiment_config import SWEPT_SYSTEM, ExperimentConfig, ExperimentError
from optin.evaluation.families import family as registered_family
from optin.evaluation.keys import key_of, key_of_dict
from optin.evaluation.report import build_report
from optin.evaluation.results import ATTACK_STATS, FAMILY_STATS
from optin.evaluation.seed_vectors import SeedVectors
from optin.evaluation.systems import SYSTEMS, FittedSystem, SystemContext
from optin.evaluation.target_judge import ClassifierJudge, TaskJudge
from optin.evaluation.transfer import second_models, transfer_numbers
from optin.privacy.pretrained import load_pretrained_target
from optin.training.classifier import (
    preset_config,
    train_classifier,
)
from optin.training.data import FeatureStore
from optin.training.obfuscator_config import obfuscator_preset
from optin.training.permitted import TargetChoice, load_tasks


def stat(values: Sequence[float | None]) -> dict[str, Any] | None:
    """{"mean", "std", "values"} over seeds (population std; 0 for one seed)."""
    clean = [float(v) for v in values if v is not None]
    if not clean:
        return None
    return {"mean": statistics.fmean(clean),
            "std": statistics.pstdev(clean) if len(clean) > 1 else 0.0, "values": clean}


class Stages:
    """One line per stage on stderr with the elapsed time since the experiment began; each
    stage lasts until the next one begins (:meth:`table`)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.start = time.perf_counter()
        self.begun: list[tuple[str, float]] = []

    def __call__(self, message: str) -> None:
        now = time.perf_counter() - self.start
        self.begun.append((message, now))
        print(f"[{self.name} {now:7.1f} s] {message}", file=sys.stderr, flush=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def table(self) -> list[dict[str, Any]]:
        """[{"stage", "seconds"}] in order, the last one lasting until now."""
        ends = [t for _, t in self.begun[1:]] + [self.elapsed]
        return [{"stage": message, "seconds": round(end - begin, 1)}
                for (message, begin), end in zip(self.begun, ends, strict=True)]


def prepare_manifest(config: ExperimentConfig, out: Path, data_root: Path | None,
                     progress: bool) -> Manifest:
    """Synthesize, import or read the corpus, then apply the split protocol."""
    spec = config.data
    data_dir = out / "data"
    if "synth" in spec:
        options = dict(spec["synth"] or {})
        report = synthesize_corpus(data_dir / f"builtin-{key_of_dict(options)}",
                                   progress=progress, **options)
        manifest = report.manifest
    elif "import" in spec:
        options = dict(spec["import"])
        corpus = options.pop("corpus")
        if data_root is None:
            raise ExperimentError(f"{config.source}: importing {corpus} needs --data-root")
        src = data_root / options.pop("src", ".")
        target = data_dir / f"{corpus}-{key_of_dict({'src': str(src.resolve()), **options})}.csv"
        if not target.is_file():
            import_corpus(corpus, src, target, progress=progress, **options)
        manifest = Manifest.read(target)
    else:
        path = Path(spec["manifest"])
        if not path.is_absolute():
            path = (data_root or Path.cwd()) / path
        manifest = Manifest.read(path)
    if config.protocol != "manifest":
        manifest = assign_split(manifest, config.protocol, seed=config.split_seed)  # type: ignore[arg-type]
        path = data_dir / f"{config.name}-split.csv"
        manifest.write(path)
        manifest = Manifest.read(path)
    trained = ([e["attribute"] for e in config.targets if "attribute" in e] if config.targets
               else [config.permitted])  # with pretrained targets 'permitted' is only a name
    for column in (*trained, *config.attacked):
        manifest.require_column(column)
    return manifest


def _train_target(manifest: Manifest, attribute: str, models: Path, preset: str, seed: int,
                  overrides: dict[str, Any], progress: bool) -> Path:
    """Train (or find) the target model T (a DeepSpeech2 classifier); returns its folder."""
    config = preset_config(attribute, preset, role="target", seed=seed, **overrides)
    out = models / f"target-{attribute}-{key_of(config.run_settings(), manifest)}"
    train_classifier(manifest, config, out, progress=progress)
    return out


def _family_overrides(config: ExperimentConfig, name: str) -> dict[str, Any]:
    """The config section a family's model overrides come from (its ``section``)."""
    return dict(getattr(config, registered_family(name).section))


def _accuracy(attacker: LoadedAttacker, manifest: Manifest,
              transform: Any, what: str) -> float:
    """An attacker's test utterance accuracy; an error when it scored nothing."""
    value = attacker.accuracy(manifest, transform)
    if not math.isfinite(value):
        raise ExperimentError(f"{what}: the evaluation produced no usable number ({value})")
    return value


def _targets(config: ExperimentConfig, manifest: Manifest, models: Path, seed: int,
             progress: bool) -> tuple[Path | None, list[TargetChoice] | None]:
    """The experiment's target folder (one DeepSpeech2 T, the paper's setting) or its list of
    permitted tasks (``targets:``: pretrained models and/or trained attributes)."""
    if not config.targets:
        return _train_target(manifest, config.permitted, models, config.preset, seed,
                             config.classifier, progress), None
    choices = []
    for entry in config.targets:
        weight = float(entry.get("weight", 1.0))
        if "attribute" in entry:
            folder = _train_target(manifest, entry["attribute"], models, config.preset, seed,
                                   config.classifier, progress)
            choices.append(TargetChoice(str(folder), weight))
        else:
            choices.append(TargetChoice(entry["model"], weight, entry.get("input", "waveform"),
                                        entry.get("adapter", "logits"), entry.get("task")))
    return None, choices


def probe_model_targets(config: ExperimentConfig) -> None:
    """Load and probe every pretrained model of ``targets:`` before anything is written, at the
    features the run will feed it (those of the DeepSpeech2 targets it trains, or the defaults)."""
    features = FeatureConfig()
    if any("attribute" in e for e in config.targets):
        features = FeatureConfig.from_dict(preset_config(
            config.permitted, config.preset, role="target", **config.classifier).features)
    for i, entry in enumerate(config.targets):
        if "model" not in entry:
            continue
        choice = TargetChoice(entry["model"], 1.0, entry.get("input", "waveform"),
                              entry.get("adapter", "logits"))
        try:
            load_pretrained_target(choice.spec(), features=features)
        except OptinError as err:
            where = f"{config.source}: " if config.source else ""
            raise ExperimentError(f"{where}targets[{i}]: {err}") from err


def run_seed(config: ExperimentConfig, manifest: Manifest, out: Path, seed: int,
             log: Stages, progress: bool) -> dict[str, Any]:
    """Every number of one seed: {system: {"target", "attacks", "verification", "info"}}."""
    models = out / "models"
    cache = FeatureCache.for_manifest(manifest)
    settings = config.attacker_settings
    log(f"seed {seed}: target model T for '{config.permitted}'")
    target_dir, choices = _targets(config, manifest, models, seed, progress)
    originals: dict[str, dict[str, LoadedAttacker]] = {}
    original_scores: dict[str, dict[str, float]] = {}
    for attribute in config.attacked:
        originals[attribute], original_scores[attribute] = {}, {}
        for family in settings.families:
            log(f"seed {seed}: original {family} classifier for '{attribute}' (also the "
                "ignorant attacker)")
            folder = train_attacker(family, manifest, attribute, models, config.preset, seed,
                                    _family_overrides(config, family), settings, progress)
            attacker = originals[attribute][family] = LoadedAttacker(family, folder)
            original_scores[attribute][family] = _accuracy(
                attacker, manifest, None, f"original '{attribute}' {family} classifier")
    judge: ClassifierJudge | TaskJudge
    if choices is None:
        judge = ClassifierJudge(target_dir, manifest)
    else:
        tasks = load_tasks(choices)
        judge = TaskJudge(tasks, manifest, {
            t.name: ClassifierJudge(t.fingerprint["path"], manifest)
            for t in tasks.tasks if t.classifier is not None})
    needs_vectors = config.verification or any(SYSTEMS[s].needs_vectors
                                               for s in config.systems)
    vectors = (SeedVectors(manifest, models, config.preset, seed, config.xvector, progress, log)
               if needs_vectors else None)
    results: dict[str, Any] = {}
    for system, name, options in config.system_runs():
        spec = SYSTEMS[name]
        ctx = SystemContext(manifest, target_dir, models, config.preset, seed, options,
                            progress, log, vectors, choices)
        log(f"seed {seed}: fitting system '{system}'")
        if spec.run is not None:  # a system of its own world scores itself
            result = spec.run(ctx, config.permitted, config.attacked)
            if not config.verification:
                result.pop("verification", None)
            results[system] = {"label": spec.label, "world": spec.world, **result}
            continue
        label = spec.label + (f" ({system.split('@', 1)[1]})" if "@" in system else "")
        assert spec.fit is not None, f"system '{name}' has neither a fit nor a run"
        fitted = spec.fit(ctx)
        data = fitted.manifest or manifest
        log(f"seed {seed}: evaluating '{system}' on the test split")
        target_numbers = judge.on_system(system, data, fitted.transform)
        if config.transfer:
            target_numbers.update(transfer_numbers(
                judge.permitted(), manifest, data, fitted.transform, cache.config,
                partial(_second_models, config, manifest, models, seed, log, progress)))
        data_cache = FeatureCache.for_manifest(data) if fitted.manifest else cache
        train_store = FeatureStore(data.split("train"), data_cache, progress=False)
        test_store = FeatureStore(data.split("test"), data_cache, progress=False)
        attacks = {attribute: _attack(
            config, manifest, models, system, attribute, fitted, originals[attribute],
            original_scores[attribute], seed, log, progress,
            partial(judge.output_only, train_store, test_store))
            for attribute in config.attacked}
        results[system] = {
            "label": label,
            "world": spec.world,
            "target": target_numbers,
            "attacks": attacks,
            "info": fitted.info,
        }
        if vectors is not None and config.verification:
            log(f"seed {seed}: speaker verification on '{system}' data")
            answers = (judge.answers(test_store, fitted.transform)
                       if isinstance(judge, ClassifierJudge) else None)
            results[system]["verification"] = vectors.verification(
                fitted.manifest, fitted.transform, fitted.fingerprint, answers)
    return results


def _second_models(config: ExperimentConfig, manifest: Manifest, models: Path, seed: int,
                   log: Stages, progress: bool, attribute: str) -> dict[str, LoadedAttacker]:
    """Models of a permitted attribute that no protection saw (the transfer check)."""
    log(f"seed {seed}: second models of '{attribute}' (transfer check)")
    return second_models(manifest, attribute, models, config.preset, seed,
                         partial(_family_overrides, config), config.attacker_settings, progress)


def _attack(config: ExperimentConfig, manifest: Manifest, models: Path, system: str,
            attribute: str, fitted: FittedSystem, originals: dict[str, LoadedAttacker],
            original_scores: dict[str, float], seed: int, log: Stages, progress: bool,
            output_only_of: Callable[..., float]) -> dict[str, Any]:
    """One attribute's attack on a spectrogram-world system: per family the ignorant and the
    informed attacker, the strongest of them against the output-only floor (``output_only_of``,
    scored after the families, as before)."""
    settings = config.attacker_settings
    data = fitted.manifest or manifest
    protected = ProtectedData(data, fitted.transform, fitted.fingerprint, fitted.model_dir)
    per_family: dict[str, dict[str, Any]] = {}
    for name in settings.families:
        ignorant = _accuracy(originals[name], data, fitted.transform,
                             f"ignorant '{attribute}' {name} attacker on '{system}'")
        log(f"seed {seed}: informed {name} attacker for '{attribute}' on '{system}' data")
        informed = LoadedAttacker(name, train_attacker(
            name, manifest, attribute, models, config.preset, seed,
            _family_overrides(config, name), settings, progress, protected))
        per_family[name] = {
            "original": original_scores[name], "ignorant": ignorant,
            "informed": _accuracy(informed, data, fitted.transform,
                                  f"informed '{attribute}' {name} attacker on '{system}'"),
            "informed_training": informed.training,
        }
    output_only = output_only_of(attribute, fitted.transform, seed)
    best = strongest(per_family, settings.strength_margin)
    return {
        "chance": chance_on_test(manifest, attribute),
        "original": best["original"],
        "ignorant": best["ignorant"],
        "informed": best["informed"],
        "output_only": output_only,
        "excess_leakage": best["informed"] - output_only,
        "strongest_informed": best["strongest_informed"],
        "families": best["families"],
    }


def run_experiment(config: ExperimentConfig | str | os.PathLike, out: str | os.PathLike,
                   data_root: str | os.PathLike | None = None, progress: bool = True,
                   report: bool = True) -> dict[str, Any]:
    """Run one experiment into ``out`` (shared with other experiments); update results.json."""
    if not isinstance(config, ExperimentConfig):
        config = ExperimentConfig.read(config)
    out = Path(out)
    probe_model_targets(config)
    out.mkdir(parents=True, exist_ok=True)
    log = Stages(config.name)
    log("preparing the data")
    manifest = prepare_manifest(config, out, Path(data_root) if data_root else None, progress)
    per_seed = {seed: run_seed(config, manifest, out, seed, log, progress)
                for seed in config.seeds}
    experiment = aggregate(config, manifest, per_seed, log.elapsed)
    experiment["stages"] = log.table()
    results_path = out / "results.json"
    results = (json.loads(results_path.read_text()) if results_path.is_file()
               else {"schema": "optin-results/1", "experiments": [], "rows": []})
    results["experiments"] = [e for e in results["experiments"] if e["name"] != config.name]
    results["experiments"].append(experiment)
    results["rows"] = [r for r in results["rows"] if r["experiment"] != config.name]
    results["rows"] += tidy_rows(config, per_seed)
    results.update(created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                   code_version=__version__)
    write_json(results_path, results)
    log(f"results in {results_path}")
    if report:
        path = build_report([out], out)
        log(f"report in {path}")
    return experiment


def aggregate(config: ExperimentConfig, manifest: Manifest,
              per_seed: dict[int, dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Mean and spread over seeds, in the results schema."""
    seeds = list(per_seed)
    systems: dict[str, Any] = {}
    for system, _, options in config.system_runs():
        runs = [per_seed[s][system] for s in seeds]
        systems[system] = {
            "label": runs[0]["label"],
            "target": {k: stat([r["target"].get(k) for r in runs])
                       for k in runs[0]["target"]},
            "attacks": {a: _aggregate_attack([r["attacks"][a] for r in runs])
                        for a in config.attacked},
            "converged": [r["info"].get("converged") for r in runs],
            "models": [r["info"].get("model_dir") for r in runs],
        }
        systems[system]["world"] = runs[0].get("world", "spectrogram")
        if "@" in system:
            option = system.split("@", 1)[1].split("=", 1)[0]
            systems[system]["sweep"] = {option: options[option]}
        elif system == SWEPT_SYSTEM and config.sweep:  # where the base sits on the frontier
            base = obfuscator_preset(config.preset, **config.obfuscator)
            systems[system]["options"] = {k: getattr(base, k) for k in config.sweep}
        unmodified = [r["info"].get("unmodified_target_on_protected") for r in runs]
        if any(v is not None for v in unmodified):
            systems[system]["target"]["unmodified_on_protected"] = stat(unmodified)
        verification = _aggregate_verification([r.get("verification") for r in runs])
        if verification:
            systems[system]["verification"] = verification
    return {
        "name": config.name, "title": config.title or config.name, "figure": config.figure,
        "corpus": config.corpus, "manifest": str(manifest.source),
        "manifest_fingerprint": manifest.fingerprint(), "protocol": config.protocol,
        "permitted": config.permitted, "attacked": config.attacked, "preset": config.preset,
        "seeds": seeds, "wall_seconds": round(seconds, 1), "systems": systems,
    }




def _aggregate_attack(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One attribute's attack over seeds: a STAT per number, and per attacker family its
    STATs, whether it was undertrained in any seed, and how its informed training ended."""
    found: dict[str, Any] = {k: stat([r[k] for r in runs]) for k in ATTACK_STATS}
    if all("families" in r for r in runs):
        found["strongest_informed"] = [r["strongest_informed"] for r in runs]
        names = list(runs[0]["families"])
        found["families"] = {
            name: {**{k: stat([r["families"][name][k] for r in runs]) for k in FAMILY_STATS},
                   "undertrained": [bool(r["families"][name]["undertrained"]) for r in runs],
                   "informed_training": [r["families"][name].get("informed_training")
                                         for r in runs]}
            for name in names}
    return found


VERIFICATION_METRICS = ("eer", "min_dcf")


def _aggregate_verification(runs: list[dict[str, Any] | None]) -> dict[str, Any]:
    """{pairing: {"eer": STAT, "min_dcf": STAT, "trials": int}} over seeds; pairings a
    system does not have (null) are left out."""
    found: dict[str, Any] = {}
    pairings = [k for r in runs if r for k, v in r.items() if v]
    for pairing in dict.fromkeys(pairings):
        scored = [r[pairing] for r in runs if r and r.get(pairing)]
        found[pairing] = {m: stat([v[m] for v in scored]) for m in VERIFICATION_METRICS}
        found[pairing]["trials"] = scored[0].get("trials")
    return found


def tidy_rows(config: ExperimentConfig, per_seed: dict[int, dict[str, Any]]
              ) -> list[dict[str, Any]]:
    """One row per number and seed (experiment, corpus, split, system, attacker, attribute)."""
    rows = []
    for seed, systems in per_seed.items():
        for system, r in systems.items():
            base = {"experiment": config.name, "corpus": config.corpus, "split": "test",
                    "system": system, "seed": seed}
            for key, value in r["target"].items():
                metric = next((m for m in ("agreement", "f1", "share") if m in key), "accuracy")
                rows.append({**base, "attacker": f"target_{key}",
                             "attribute": config.permitted, "metric": metric, "value": value})
            for attribute, attack in r["attacks"].items():
                for attacker in ATTACK_STATS:
                    rows.append({**base, "attacker": attacker, "attribute": attribute,
                                 "metric": "accuracy", "value": attack[attacker]})
                for family, scores in (attack.get("families") or {}).items():
                    for attacker in FAMILY_STATS:
                        rows.append({**base, "attacker": f"{attacker} {family}",
                                     "attribute": attribute, "metric": "accuracy",
                                     "value": scores[attacker]})
            for pairing, scores in (r.get("verification") or {}).items():
                for metric in VERIFICATION_METRICS if scores else ():
                    rows.append({**base, "attacker": f"asv {pairing}", "attribute": "speaker",
                                 "metric": metric, "value": scores[metric]})
    return rows



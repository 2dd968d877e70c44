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
    attacked: [gender]                  # one or two attributes
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
training. Results go to ``OUT/results.json`` (schema in ``optin.evaluation.report``), with the
report and figures beside it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import yaml

from optin import __version__
from optin.corpora.feature_cache import FeatureCache
from optin.corpora.manifest import Manifest
from optin.corpora.splits import PROTOCOLS, assign_split
from optin.errors import OptinError
from optin.evaluation.attacker_families import (
    AttackerSettings,
    LoadedAttacker,
    ProtectedData,
    strongest,
    train_attacker,
)
from optin.evaluation.attackers import OutputOnlyConfig, chance_on_test, output_only_accuracy
from optin.evaluation.systems import SYSTEMS, SystemContext, key_of
from optin.evaluation.vector_world import SeedVectors, run_adr
from optin.settings import FileName, OneOf, Rule, Setting, at_least, check_options, settings_of
from optin.training.checkpoint import write_json
from optin.training.classifier import (
    PRESETS,
    Classifier,
    ClassifierTrainConfig,
    evaluate_classifier,
    preset_config,
    train_classifier,
)
from optin.training.data import FeatureStore
from optin.training.obfuscator import obfuscator_preset

SWEPT_SYSTEM = "opt-in"  # the system a sweep varies (its options section: obfuscator)


class ExperimentError(OptinError, ValueError):
    """A config that cannot run; the message names the file and the field."""


@dataclass(frozen=True)
class Section:
    """An options section of the config: the settings it accepts, derived from the class it
    configures (less what the experiment sets itself), and how to build that class from the
    options and the top-level values (so its own cross-field checks run at load time)."""

    settings: dict[str, Setting]
    build: Callable[[dict[str, Any], dict[str, Any]], object]


def _adr_section() -> Section:
    from optin.baselines.adr import ADR_PRESETS, ADRConfig, adr_preset

    extra = {"protect": Setting("protect", str),
             "preset": Setting("preset", str, OneOf(tuple(ADR_PRESETS)))}

    def build(options: dict[str, Any], top: dict[str, Any]) -> object:
        rest = {k: v for k, v in options.items() if k not in extra}
        return adr_preset(options.get("preset", top["preset"]), **rest)

    return Section({**settings_of(ADRConfig, exclude=("seed", "input_dim")), **extra}, build)


def _sections() -> dict[str, Section]:
    from optin.baselines.mcadams import McAdamsConfig
    from optin.training.obfuscator import ObfuscatorTrainConfig
    from optin.training.xvector import XVectorTrainConfig
    from optin.training.xvector import preset_config as xvector_preset

    return {
        "classifier": Section(
            settings_of(ClassifierTrainConfig, exclude=("attribute", "role", "seed")),
            lambda o, top: preset_config(top["permitted"], top["preset"], **o)),
        "obfuscator": Section(settings_of(ObfuscatorTrainConfig, exclude=("seed",)),
                              lambda o, top: obfuscator_preset(top["preset"], **o)),
        "xvector": Section(settings_of(XVectorTrainConfig, exclude=("seed",)),
                           lambda o, top: xvector_preset(top["preset"], **o)),
        "adr": _adr_section(),
        "mcadams": Section(settings_of(McAdamsConfig), lambda o, top: McAdamsConfig.from_dict(o)),
        "attackers": Section(settings_of(AttackerSettings),
                             lambda o, top: AttackerSettings.from_dict(o)),
    }


def _data_sources() -> dict[str, dict[str, Setting]]:
    """The options of ``data: synth:`` and ``data: import:``, from the functions they call."""
    from optin.corpora.registry import CORPORA, import_corpus
    from optin.corpora.synth import SYNTH_RANGES, synthesize_corpus

    imports = settings_of(import_corpus, {"corpus": OneOf(CORPORA), "protocol": OneOf(PROTOCOLS),
                                          "seed": at_least(0)}, exclude=("out", "progress"))
    imports["src"] = replace(imports["src"], required=False)  # default: --data-root itself
    return {"synth": settings_of(synthesize_corpus, SYNTH_RANGES,
                                 exclude=("out_dir", "progress")),
            "import": imports}


SECTIONS: dict[str, Section] = _sections()
DATA_SOURCES: dict[str, dict[str, Setting]] = _data_sources()


@dataclass
class ExperimentConfig:
    """A parsed experiment config; every field is checked when it is made (see
    :meth:`from_dict`), so a config that exists can run."""

    name: str
    data: dict[str, Any]
    permitted: str
    attacked: list[str]
    title: str = ""
    figure: str | None = None
    corpus: str = ""
    protocol: str = "manifest"
    split_seed: int = 0
    systems: list[str] = field(default_factory=lambda: ["opt-in"])
    preset: str = "quick"
    seeds: list[int] = field(default_factory=lambda: [0])
    verification: bool = True
    classifier: dict[str, Any] = field(default_factory=dict)
    obfuscator: dict[str, Any] = field(default_factory=dict)
    mcadams: dict[str, Any] = field(default_factory=dict)
    adr: dict[str, Any] = field(default_factory=dict)
    xvector: dict[str, Any] = field(default_factory=dict)
    attackers: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, list[Any]] = field(default_factory=dict)
    source: Path | None = None

    RANGES: ClassVar[dict[str, Rule]] = {
        "name": FileName(), "protocol": OneOf(("manifest", *PROTOCOLS)),
        "split_seed": at_least(0), "systems": OneOf(tuple(SYSTEMS)),
        "preset": OneOf(tuple(PRESETS)), "seeds": at_least(0)}

    def __post_init__(self) -> None:
        where = f"{self.source}: " if self.source else "experiment config: "
        values = {name: getattr(self, name) for name in TOP_LEVEL}
        check_options(values, TOP_LEVEL, where, ExperimentError)

        def fail(key: str, message: str) -> NoReturn:
            raise ExperimentError(f"{where}{key}: {message}")

        for key in ("seeds", "systems", "attacked"):
            items = values[key]
            if not items:
                fail(key, "expected at least one entry, got none")
            if len(set(items)) != len(items):
                fail(key, f"an entry is given twice in {items!r}")
        if len(self.attacked) > 2:
            fail("attacked", f"expected one or two attributes, got {len(self.attacked)}")
        if self.permitted in self.attacked:
            fail("attacked", f"the permitted attribute '{self.permitted}' cannot also be "
                             "attacked")
        _check_data(self.data, where)
        for name, section in SECTIONS.items():
            options = values[name]
            check_options(options, section.settings, f"{where}{name}.", ExperimentError)
            try:
                section.build(options, values)
            except OptinError as err:
                fail(name, str(err))
        for option, swept in self.sweep.items():
            if option not in SECTIONS["obfuscator"].settings:
                fail(f"sweep.{option}", "unknown obfuscator option")
            if not swept:
                fail(f"sweep.{option}", "expected at least one value, got none")
            for value in swept:
                check_options({**self.obfuscator, option: value},
                              SECTIONS["obfuscator"].settings, f"{where}sweep.",
                              ExperimentError)
        if self.sweep and SWEPT_SYSTEM not in self.systems:
            fail("sweep", f"varies the '{SWEPT_SYSTEM}' system, which is not in 'systems'")

    def system_runs(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(result key, system name, options) of every system to fit: each of ``systems``
        with its config section, then one opt-in variant per swept value, keyed
        ``opt-in@<option>=<value>``."""
        runs = [(name, name, getattr(self, SYSTEMS[name].options_key))
                for name in self.systems]
        for option, values in self.sweep.items():
            for value in values:
                runs.append((f"{SWEPT_SYSTEM}@{option}={value}", SWEPT_SYSTEM,
                             {**self.obfuscator, option: value}))
        return runs

    @property
    def attacker_settings(self) -> AttackerSettings:
        return AttackerSettings.from_dict(self.attackers)

    @classmethod
    def read(cls, path: str | os.PathLike) -> ExperimentConfig:
        path = Path(path)
        if not path.is_file():
            raise ExperimentError(f"experiment config {path} does not exist")
        try:
            data = yaml.load(path.read_text(), Loader=StrictLoader)
        except DuplicateKeyError as err:
            raise ExperimentError(f"{path}: {err}") from err
        except yaml.YAMLError as err:
            raise ExperimentError(f"{path}: not valid YAML ({err})") from err
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data: Any, source: Path | None = None) -> ExperimentConfig:
        """Check and build a config: every key known, every value of the right type and
        range, every section accepted by the class it configures; ``attacked`` may be one
        string and an empty section (``classifier:``) means no options."""
        where = f"{source}: " if source else "experiment config: "
        if not isinstance(data, dict):
            raise ExperimentError(f"{where}expected a mapping at the top level, got {data!r}")
        values = {k: ({} if k in SECTIONS and v is None else v) for k, v in data.items()}
        if isinstance(values.get("attacked"), str):
            values["attacked"] = [values["attacked"]]
        check_options(values, TOP_LEVEL, where, ExperimentError)
        return cls(**values, source=source)


TOP_LEVEL: dict[str, Setting] = settings_of(ExperimentConfig, exclude=("source",))


def _check_data(data: dict[str, Any], where: str) -> None:
    """Exactly one of ``synth``, ``import`` (checked against the function each calls) and
    ``manifest`` (a path)."""
    for key in data:
        if key not in (*DATA_SOURCES, "manifest"):
            raise ExperimentError(f"{where}data.{key}: unknown key (expected one of synth, "
                                  "import, manifest)")
    if len(data) != 1:
        raise ExperimentError(f"{where}data: expected exactly one of synth, import, manifest "
                              f"(found {', '.join(data) or 'none'})")
    ((kind, options),) = data.items()
    if kind == "manifest":
        if not isinstance(options, str) or not options:
            raise ExperimentError(f"{where}data.manifest: expected a file path, got {options!r}")
        return
    check_options({} if options is None else options, DATA_SOURCES[kind], f"{where}data.{kind}.",
                  ExperimentError)


def schema() -> dict[str, Setting]:
    """Every setting a config may hold, by its dotted path (``classifier.epochs``,
    ``data.synth.speakers``); what :class:`ExperimentConfig` checks."""
    found = {name: setting for name, setting in TOP_LEVEL.items()}
    for name, section in SECTIONS.items():
        found.update({f"{name}.{k}": v for k, v in section.settings.items()})
    for kind, settings in DATA_SOURCES.items():
        found.update({f"data.{kind}.{k}": v for k, v in settings.items()})
    found["data.manifest"] = Setting("manifest", str)
    return found


class DuplicateKeyError(yaml.YAMLError):
    """A mapping holds the same key twice (YAML would silently keep the last)."""


class StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (naming it and both lines)
    and reads ``1e-3`` as a number (YAML 1.1 wants ``1.0e-3``)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, Hashable) and key in seen:
                raise DuplicateKeyError(f"line {line}: key '{key}' given twice (first on line "
                                        f"{seen[key]})")
            if isinstance(key, Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


# ---------------------------------------------------------------------- running
def stat(values: Sequence[float | None]) -> dict[str, Any] | None:
    """{"mean", "std", "values"} over seeds (population std; 0 for one seed)."""
    clean = [float(v) for v in values if v is not None]
    if not clean:
        return None
    return {"mean": statistics.fmean(clean),
            "std": statistics.pstdev(clean) if len(clean) > 1 else 0.0, "values": clean}


class Stages:
    """One line per stage on stderr with the elapsed time since the experiment began."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        print(f"[{self.name} {time.perf_counter() - self.start:7.1f} s] {message}",
              file=sys.stderr, flush=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def prepare_manifest(config: ExperimentConfig, out: Path, data_root: Path | None,
                     progress: bool) -> Manifest:
    """Synthesize, import or read the corpus, then apply the split protocol."""
    spec = config.data
    data_dir = out / "data"
    if "synth" in spec:
        from optin.corpora.synth import synthesize_corpus

        options = dict(spec["synth"] or {})
        report = synthesize_corpus(data_dir / f"builtin-{key_of_dict(options)}",
                                   progress=progress, **options)
        manifest = report.manifest
    elif "import" in spec:
        from optin.corpora.registry import import_corpus

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
    for column in (config.permitted, *config.attacked):
        manifest.require_column(column)
    return manifest


def key_of_dict(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def _train_target(manifest: Manifest, attribute: str, models: Path, preset: str, seed: int,
                  overrides: dict[str, Any], progress: bool) -> Path:
    """Train (or find) the target model T (a DeepSpeech2 classifier); returns its folder."""
    config = preset_config(attribute, preset, role="target", seed=seed, **overrides)
    out = models / f"target-{attribute}-{key_of(config.run_settings(), manifest)}"
    train_classifier(manifest, config, out, progress=progress)
    return out


def _family_overrides(config: ExperimentConfig, family: str) -> dict[str, Any]:
    return config.classifier if family == "deepspeech2" else config.xvector


def _accuracy(attacker: LoadedAttacker, manifest: Manifest,
              transform: Any, what: str) -> float:
    """An attacker's test utterance accuracy; an error when it scored nothing."""
    value = attacker.accuracy(manifest, transform)
    if not math.isfinite(value):
        raise ExperimentError(f"{what}: the evaluation produced no usable number ({value})")
    return value


def _checked(result: dict[str, Any], what: str) -> dict[str, Any]:
    """Refuse an evaluation that scored nothing or produced a non-number."""
    value = result.get("utterance_accuracy")
    if not result.get("utterances") or value is None or not math.isfinite(value):
        raise ExperimentError(f"{what}: the evaluation produced no usable number "
                              f"({result.get('utterances', 0)} utterances, accuracy {value})")
    return result


def run_seed(config: ExperimentConfig, manifest: Manifest, out: Path, seed: int,
             log: Stages, progress: bool) -> dict[str, Any]:
    """Every number of one seed: {system: {"target", "attacks", "verification", "info"}}."""
    models = out / "models"
    cache = FeatureCache.for_manifest(manifest)
    settings = config.attacker_settings
    log(f"seed {seed}: target model T for '{config.permitted}'")
    target_dir = _train_target(manifest, config.permitted, models, config.preset, seed,
                               config.classifier, progress)
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
    target = Classifier.load(target_dir)
    t_original = _checked(evaluate_classifier(target_dir, manifest, "test", progress=False,
                                              classifier=target, return_predictions=True),
                          "target on original test data")
    needs_vectors = config.verification or any(SYSTEMS[s].world == "x-vector"
                                               for s in config.systems)
    vectors = (SeedVectors(manifest, models, config.preset, seed, config.xvector, progress, log)
               if needs_vectors else None)
    results: dict[str, Any] = {}
    for system, name, options in config.system_runs():
        spec = SYSTEMS[name]
        ctx = SystemContext(manifest, target_dir, models, config.preset, seed, options,
                            progress, log, vectors)
        log(f"seed {seed}: fitting system '{system}'")
        if spec.world == "x-vector":
            result = run_adr(ctx, config.permitted, config.attacked)
            if not config.verification:
                result.pop("verification", None)
            results[system] = {"label": spec.label, "world": spec.world, **result}
            continue
        label = spec.label + (f" ({system.split('@', 1)[1]})" if "@" in system else "")
        assert spec.fit is not None
        fitted = spec.fit(ctx)
        data = fitted.manifest or manifest
        log(f"seed {seed}: evaluating '{system}' on the test split")
        t_protected = _checked(evaluate_classifier(
            target_dir, data, "test", progress=False, classifier=target,
            transform=fitted.transform, return_predictions=True),
            f"target on '{system}' test data")
        if t_protected["ids"] != t_original["ids"]:
            raise ExperimentError(f"'{system}' protected test split does not hold the same "
                                  "utterances as the original one")
        same = [a == b for a, b in zip(t_original["predictions"], t_protected["predictions"],
                                       strict=True)]
        data_cache = FeatureCache.for_manifest(data) if fitted.manifest else cache
        train_store = FeatureStore(data.split("train"), data_cache, progress=False)
        test_store = FeatureStore(data.split("test"), data_cache, progress=False)
        protected = ProtectedData(data, fitted.transform, fitted.fingerprint, fitted.model_dir)
        attacks: dict[str, Any] = {}
        for attribute in config.attacked:
            per_family: dict[str, dict[str, Any]] = {}
            for family in settings.families:
                ignorant = _accuracy(originals[attribute][family], data, fitted.transform,
                                     f"ignorant '{attribute}' {family} attacker on '{system}'")
                log(f"seed {seed}: informed {family} attacker for '{attribute}' on '{system}' "
                    "data")
                informed = LoadedAttacker(family, train_attacker(
                    family, manifest, attribute, models, config.preset, seed,
                    _family_overrides(config, family), settings, progress, protected))
                per_family[family] = {
                    "original": original_scores[attribute][family], "ignorant": ignorant,
                    "informed": _accuracy(informed, data, fitted.transform,
                                          f"informed '{attribute}' {family} attacker on "
                                          f"'{system}'"),
                    "informed_training": informed.training,
                }
            output_only = output_only_accuracy(target, train_store, test_store, attribute,
                                               transform=fitted.transform,
                                               config=OutputOnlyConfig(seed=seed))
            best = strongest(per_family, settings.strength_margin)
            attacks[attribute] = {
                "chance": chance_on_test(manifest, attribute),
                "original": best["original"],
                "ignorant": best["ignorant"],
                "informed": best["informed"],
                "output_only": output_only,
                "excess_leakage": best["informed"] - output_only,
                "strongest_informed": best["strongest_informed"],
                "families": best["families"],
            }
        results[system] = {
            "label": label,
            "world": spec.world,
            "target": {"original": t_original["utterance_accuracy"],
                       "obfuscated": t_protected["utterance_accuracy"],
                       "agreement": sum(same) / len(same)},
            "attacks": attacks,
            "info": fitted.info,
        }
        if vectors is not None and config.verification:
            log(f"seed {seed}: speaker verification on '{system}' data")
            results[system]["verification"] = vectors.verification(
                fitted.manifest, fitted.transform, fitted.fingerprint)
    return results


def run_experiment(config: ExperimentConfig | str | os.PathLike, out: str | os.PathLike,
                   data_root: str | os.PathLike | None = None, progress: bool = True,
                   report: bool = True) -> dict[str, Any]:
    """Run one experiment into ``out`` (shared with other experiments); update results.json."""
    if not isinstance(config, ExperimentConfig):
        config = ExperimentConfig.read(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = Stages(config.name)
    log("preparing the data")
    manifest = prepare_manifest(config, out, Path(data_root) if data_root else None, progress)
    per_seed = {seed: run_seed(config, manifest, out, seed, log, progress)
                for seed in config.seeds}
    experiment = aggregate(config, manifest, per_seed, log.elapsed)
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
        from optin.evaluation.report import build_report

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
            "target": {k: stat([r["target"][k] for r in runs])
                       for k in ("original", "obfuscated", "agreement")},
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


ATTACK_STATS = ("chance", "original", "ignorant", "informed", "output_only", "excess_leakage")
FAMILY_STATS = ("original", "ignorant", "informed")


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
                rows.append({**base, "attacker": f"target_{key}",
                             "attribute": config.permitted, "metric": "accuracy"
                             if key != "agreement" else "agreement", "value": value})
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


def load_experiments(paths: Sequence[str | os.PathLike]) -> list[ExperimentConfig]:
    """Read several configs; a clear error for a duplicate name."""
    configs = [ExperimentConfig.read(p) for p in paths]
    names = [c.name for c in configs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ExperimentError(f"experiment name(s) used twice: {', '.join(dup)}")
    return configs


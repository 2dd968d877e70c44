"""Experiment configs (YAML): the settings of one experiment, checked whole when read.

:class:`ExperimentConfig` holds what an experiment trains and measures; its sections
(``classifier:``, ``obfuscator:``, ``xvector:``, ``adr:``, ``mcadams:``, ``attackers:``) are checked
against the settings classes they configure (:data:`SECTIONS`, :func:`schema`), the YAML loader
refuses a key given twice, and :func:`load_experiments` reads several configs. How an experiment
runs is :mod:`optin.evaluation.experiment`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import yaml

from optin.baselines.adr import ADR_PRESETS, ADRConfig, adr_preset
from optin.baselines.mcadams import McAdamsConfig
from optin.corpora.registry import CORPORA, import_corpus
from optin.corpora.splits import PROTOCOLS
from optin.corpora.synth import synthesize_corpus
from optin.corpora.synth_plan import SYNTH_RANGES
from optin.errors import OptinError
from optin.evaluation.attacker_families import (
    AttackerSettings,
)
from optin.evaluation.systems import SYSTEMS
from optin.files import not_a_file
from optin.privacy.pretrained import BUILTIN_TARGETS, TargetSpec
from optin.settings import FileName, OneOf, Rule, Setting, at_least, check_options, settings_of
from optin.training.classifier import (
    PRESETS,
    ClassifierTrainConfig,
    preset_config,
)
from optin.training.decision_templates import TemplateTrainConfig
from optin.training.obfuscator_config import ObfuscatorTrainConfig, obfuscator_preset
from optin.training.xvector import XVectorTrainConfig
from optin.training.xvector import preset_config as xvector_preset

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
    extra = {"protect": Setting("protect", str),
             "preset": Setting("preset", str, OneOf(tuple(ADR_PRESETS)))}

    def build(options: dict[str, Any], top: dict[str, Any]) -> object:
        rest = {k: v for k, v in options.items() if k not in extra}
        return adr_preset(options.get("preset", top["preset"]), **rest)

    return Section({**settings_of(ADRConfig, exclude=("seed", "input_dim")), **extra}, build)


def _sections() -> dict[str, Section]:
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
        "templates": Section(settings_of(TemplateTrainConfig, exclude=("seed",)),
                             lambda o, top: TemplateTrainConfig.from_dict(o)),
        "attackers": Section(settings_of(AttackerSettings),
                             lambda o, top: AttackerSettings.from_dict(o)),
    }


def _data_sources() -> dict[str, dict[str, Setting]]:
    """The options of ``data: synth:`` and ``data: import:``, from the functions they call."""
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
    transfer: bool = True
    classifier: dict[str, Any] = field(default_factory=dict)
    obfuscator: dict[str, Any] = field(default_factory=dict)
    mcadams: dict[str, Any] = field(default_factory=dict)
    templates: dict[str, Any] = field(default_factory=dict)
    adr: dict[str, Any] = field(default_factory=dict)
    xvector: dict[str, Any] = field(default_factory=dict)
    attackers: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, list[Any]] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)
    source: Path | None = None

    RANGES: ClassVar[dict[str, Rule]] = {
        "name": FileName(), "protocol": OneOf(("manifest", *PROTOCOLS)),
        "split_seed": at_least(0), "systems": OneOf(SYSTEMS.keys()),
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
        if len(self.attacked) > 3:
            fail("attacked", f"expected one to three attributes, got {len(self.attacked)}")
        for i, entry in enumerate(self.targets):
            _check_target(entry, f"{where}targets[{i}]")
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
            raise ExperimentError(not_a_file(path, "experiment config"))
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


TARGET_KEYS = {"attribute": str, "model": str, "input": str, "adapter": str,
               "weight": (int, float), "task": str}


def _check_target(entry: Any, where: str) -> None:
    """One permitted task: ``{attribute: A}`` (a DeepSpeech2 T trained on A) or ``{model: M}``
    (a pretrained file or built-in name, with ``input``, ``adapter`` and ``task``: the manifest
    attribute its answer is, for the transfer check), each with an optional ``weight``."""
    if not isinstance(entry, dict):
        raise ExperimentError(f"{where}: expected a mapping like {{model: silero-vad}} or "
                              f"{{attribute: speaker}}, got {entry!r}")
    for key, value in entry.items():
        if key not in TARGET_KEYS:
            raise ExperimentError(f"{where}.{key}: unknown key (expected one of "
                                  f"{', '.join(TARGET_KEYS)})")
        if not isinstance(value, TARGET_KEYS[key]) or isinstance(value, bool):
            raise ExperimentError(f"{where}.{key}: expected a {TARGET_KEYS[key]}, got {value!r}")
    if ("attribute" in entry) == ("model" in entry):
        raise ExperimentError(f"{where}: expected exactly one of attribute, model")
    if "attribute" in entry and ({"input", "adapter", "task"} & set(entry)):
        raise ExperimentError(f"{where}: input, adapter and task apply to a model, not an "
                              "attribute")
    if entry.get("weight", 1.0) < 0:
        raise ExperimentError(f"{where}.weight: must be >= 0, got {entry['weight']}")
    try:
        if "model" in entry and entry["model"] not in BUILTIN_TARGETS:
            TargetSpec(entry["model"], entry.get("input", "waveform"),
                       entry.get("adapter", "logits"))
    except OptinError as err:
        raise ExperimentError(f"{where}: {err}") from err


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


def load_experiments(paths: Sequence[str | os.PathLike]) -> list[ExperimentConfig]:
    """Read several configs; a clear error for a duplicate name."""
    configs = [ExperimentConfig.read(p) for p in paths]
    names = [c.name for c in configs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ExperimentError(f"experiment name(s) used twice: {', '.join(dup)}")
    return configs


"""A run folder (``optin demo`` or ``optin experiment``) opened for serving: its models, found.

``results.json`` names each experiment's protection systems and their model folders (per seed);
everything else is found under ``RUN/models/`` by what each checkpoint records about itself
(``provenance``: the manifest fingerprint, the seed, and for models trained on protected data
the folder of the protection, ``data.protected_by``):

* the target model T: the one the opt-in obfuscator was trained against (its recorded target
  weights hash), otherwise a ``target-<permitted>-*`` of the experiment's manifest and seed;
* the ignorant attackers (the original classifiers): ``attacker-<attribute>-*`` (DeepSpeech2)
  and ``xvattacker-<attribute>-*`` (x-vector TDNN) on the experiment's manifest and seed;
* each system's informed attackers: ``*attacker-<attribute>-protected-*`` trained on data
  protected by that system's folder;
* the x-vector extractor (speaker verification): ``xvector-*`` on the original data.

The first seed of the experiment is served. When two candidates fit (experiments with
different classifier settings sharing one folder), the most recently written one is taken.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optin.baselines.adr import ADR, load_adr
from optin.baselines.anonymize import STATE_FILE as MCADAMS_STATE_FILE
from optin.baselines.mcadams import McAdamsConfig
from optin.checkpoint import read_config
from optin.corpora.manifest import Manifest
from optin.errors import OptinError
from optin.evaluation.families import FAMILIES
from optin.evaluation.results import load_results
from optin.privacy.obfuscator import Obfuscator, resolve_model_dir
from optin.training.classifier import Classifier
from optin.training.xvector_extractor import XVectorExtractor


class RunFolderError(OptinError, ValueError):
    """A folder that cannot be served; the message names it and says what to do."""


@dataclass
class Attacker:
    """One trained attacker: its family (a name in ``FAMILIES``), folder and loaded model."""

    family: str
    model_dir: Path
    model: Any


@dataclass
class ServedSystem:
    """One protection system of the experiment, ready to protect a new utterance.

    Exactly one of ``obfuscator`` (opt-in: a feature transform), ``mcadams`` (a waveform
    transform, with the run's anonymized corpus for its own utterances) and ``adr`` (x-vectors
    only: it makes no audio) is set. ``informed`` maps each attacked attribute to the attackers
    trained on this system's protected data.
    """

    key: str
    label: str
    world: str
    model_dir: Path
    obfuscator: Obfuscator | None = None
    mcadams: McAdamsConfig | None = None
    mcadams_manifest: Manifest | None = None
    adr: ADR | None = None
    informed: dict[str, list[Attacker]] = field(default_factory=dict)

    @property
    def makes_audio(self) -> bool:
        return self.adr is None


@dataclass
class ServedRun:
    """What the page shows for one experiment of a run folder (its first seed)."""

    folder: Path
    experiment: dict[str, Any]
    seed: int
    target_dir: Path
    target: Classifier
    systems: dict[str, ServedSystem]
    ignorant: dict[str, list[Attacker]]
    extractor: XVectorExtractor | None
    manifest: Manifest | None
    experiments: list[str]

    @property
    def features(self) -> Any:
        """The feature settings every model of the run shares (the target's)."""
        return self.target.features

    @property
    def permitted(self) -> str:
        return str(self.experiment["permitted"])

    @property
    def attacked(self) -> list[str]:
        return list(self.experiment["attacked"])

    def test_rows(self) -> list[dict[str, str]]:
        """The experiment's test utterances (empty when its manifest is gone)."""
        return list(self.manifest.split("test").rows) if self.manifest is not None else []

    def report(self) -> Path | None:
        """``report.md``'s real path, when it is a file inside the run folder."""
        return self.real_file(self.folder / "report.md")

    def figures(self) -> list[Path]:
        """The run's figures (PNG), by name: those whose real path is inside the folder."""
        folder = self.folder / "figures"
        found = sorted(folder.glob("*.png")) if folder.is_dir() else []
        return [p for p in found if self.real_file(p) is not None]

    def real_file(self, path: Path) -> Path | None:
        """``path`` with every link followed, when that is a file inside the run folder's
        own real path; None otherwise (a link out of the folder is never served)."""
        real = path.resolve()
        return real if real.is_relative_to(self.folder.resolve()) and real.is_file() else None

    def links_outside(self) -> list[Path]:
        """The report and figures that are links leading out of the run folder."""
        candidates = [self.folder / "report.md", *sorted((self.folder / "figures").glob("*.png"))]
        return [p for p in candidates
                if p.is_file() and self.real_file(p) is None]


def _checkpoints(models: Path, prefix: str) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, config) of every finished checkpoint ``models/<prefix>-*``, newest first."""
    found = []
    for folder in models.glob(f"{prefix}-*"):
        if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
            found.append((folder, read_config(folder)))
    return sorted(found, key=lambda item: (item[0] / "model.safetensors").stat().st_mtime,
                  reverse=True)


def _provenance(config: dict[str, Any]) -> dict[str, Any]:
    return config.get("provenance") or {}


def _on_original(config: dict[str, Any], fingerprint: str, seed: int) -> bool:
    p = _provenance(config)
    return (p.get("manifest_fingerprint") == fingerprint and p.get("seed") == seed
            and not (p.get("data") or {}).get("protected_by"))


def _protected_by(config: dict[str, Any], folder: Path) -> bool:
    by = (_provenance(config).get("data") or {}).get("protected_by")
    return by is not None and Path(by).name == folder.name


def _attribute_of(config: dict[str, Any]) -> str | None:
    return (config.get("labels") or {}).get("attribute")


def _attackers(models: Path, attribute: str, families: list[str], wanted: Any
               ) -> list[Attacker]:
    """The newest attacker per family for ``attribute`` whose config satisfies ``wanted``."""
    found = []
    for family in families:
        for folder, config in _checkpoints(models, FAMILIES[family].prefix):
            if _attribute_of(config) == attribute and wanted(config, folder):
                found.append(Attacker(family, folder, FAMILIES[family].load(folder)))
                break
    return found


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise RunFolderError(f"{path}: cannot be read ({err})") from err


def _manifest(experiment: dict[str, Any], folder: Path) -> Manifest | None:
    """The experiment's manifest, also when the run folder was moved (found under data/)."""
    stored = Path(str(experiment.get("manifest") or ""))
    for path in (stored, folder / "data" / stored.parent.name / stored.name,
                 folder / "data" / stored.name):
        if path.is_file():
            return Manifest.read(path)
    return None


def _choose(experiments: list[dict[str, Any]], name: str | None, results: Path
            ) -> dict[str, Any]:
    if name is not None:
        for exp in experiments:
            if exp["name"] == name:
                return exp
        raise RunFolderError(f"{results}: no experiment named {name!r} (it has "
                             f"{', '.join(e['name'] for e in experiments)})")
    # the experiment that shows the most: systems x attacked attributes, then the latest
    return max(reversed(experiments),
               key=lambda e: len(e["systems"]) * len(e.get("attacked") or []))


def _model_dir(system: dict[str, Any], index: int, key: str, results: Path) -> Path:
    models = system.get("models") or []
    if index >= len(models) or not models[index]:
        raise RunFolderError(f"{results}: system {key!r} records no model folder")
    return Path(models[index])


def _local(path: Path, models: Path) -> Path:
    """A recorded model folder, or the folder of that name under this run's models/."""
    return path if path.exists() else models / path.name


def _target(models: Path, experiment: dict[str, Any], seed: int,
            obfuscator_dir: Path | None) -> Path:
    fingerprint = experiment["manifest_fingerprint"]
    wanted_hash = None
    if obfuscator_dir is not None:
        obf = read_config(resolve_model_dir(obfuscator_dir))
        wanted_hash = (obf.get("target") or {}).get("weights_sha256")
    for folder, config in _checkpoints(models, f"target-{experiment['permitted']}"):
        if wanted_hash is not None and config.get("weights_sha256") == wanted_hash:
            return folder
        if wanted_hash is None and _on_original(config, fingerprint, seed):
            return folder
    raise RunFolderError(f"{models}: no target model for '{experiment['permitted']}' of "
                         f"experiment {experiment['name']!r} (was the run finished?)")


def _system(key: str, spec: dict[str, Any], model_dir: Path, models: Path,
            attacked: list[str], families: list[str]) -> ServedSystem:
    system = ServedSystem(key, str(spec.get("label") or key),
                          str(spec.get("world") or "spectrogram"), model_dir)
    if (model_dir / "obfuscator" / "config.json").is_file():
        system.obfuscator = Obfuscator.load(model_dir)
    elif (model_dir / MCADAMS_STATE_FILE).is_file():
        settings = _read_json(model_dir / MCADAMS_STATE_FILE).get("config") or {}
        system.mcadams = McAdamsConfig.from_dict(settings)
        if (model_dir / "manifest.csv").is_file():
            system.mcadams_manifest = Manifest.read(model_dir / "manifest.csv",
                                                    check_files=False)
    elif system.world == "x-vector":
        system.adr = load_adr(model_dir)
        return system
    else:
        raise RunFolderError(f"{model_dir}: system {key!r} is neither an obfuscator run, a "
                             "McAdams copy nor ADR")
    for attribute in attacked:
        system.informed[attribute] = _attackers(
            models, attribute, families, lambda c, _f: _protected_by(c, model_dir))
    return system


def load_run(folder: str | os.PathLike, experiment: str | None = None) -> ServedRun:
    """Open a run folder for serving: the chosen experiment (default: the one with the most
    systems and attacked attributes) with every model of its first seed loaded.

    Raises:
        RunFolderError: no such folder, no ``results.json`` (the run has not finished), an
            unknown experiment, or a model the experiment needs is missing.
    """
    folder = Path(folder)
    results_path = folder / "results.json"
    if not folder.is_dir():
        raise RunFolderError(f"{folder}: no such run folder; run `optin demo` first (it "
                             "writes optin-demo/), or give the folder of an `optin experiment`")
    if not results_path.is_file():
        raise RunFolderError(f"{folder}: holds no results.json; run `optin demo` (or `optin "
                             "experiment`) into it first, or let it finish")
    experiments = load_results(folder)["experiments"]
    if not experiments:
        raise RunFolderError(f"{results_path}: holds no experiment")
    chosen = _choose(experiments, experiment, results_path)
    seed = int(chosen["seeds"][0])
    models = folder / "models"
    attacked = list(chosen.get("attacked") or [])
    families = [name for name, f in FAMILIES.items()
                if any(m.name.startswith(f.prefix + "-") for m in models.glob("*"))]
    dirs = {key: _local(_model_dir(spec, 0, key, results_path), models)
            for key, spec in chosen["systems"].items()}
    opt_in = next((d for d in dirs.values() if (d / "obfuscator" / "config.json").is_file()),
                  None)
    target_dir = _target(models, chosen, seed, opt_in)
    fingerprint = chosen["manifest_fingerprint"]

    def original(config: dict[str, Any], _folder: Path) -> bool:
        return _on_original(config, fingerprint, seed)

    ignorant = {a: _attackers(models, a, families, original) for a in attacked}
    systems = {key: _system(key, spec, dirs[key], models, attacked, families)
               for key, spec in chosen["systems"].items()}
    extractors = [f for f, c in _checkpoints(models, "xvector")
                  if "protected" not in f.name and original(c, f)]
    return ServedRun(
        folder=folder, experiment=chosen, seed=seed, target_dir=target_dir,
        target=Classifier.load(target_dir), systems=systems,
        ignorant=ignorant,
        extractor=XVectorExtractor.load(extractors[0]) if extractors else None,
        manifest=_manifest(chosen, folder), experiments=[e["name"] for e in experiments])

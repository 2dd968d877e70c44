"""The results interface: ``results.json``, its schema, its checks and its numbers.

This module knows nothing about training: experiments write this file, and
:mod:`optin.evaluation.figures` and :mod:`optin.evaluation.report` read it.

The results interface (``results.json``)::

    {
      "schema": "optin-results/1",
      "created": "2026-11-27T14:00:00+00:00",
      "code_version": "0.1.0",
      "experiments": [
        {
          "name": "builtin-fig3a",            # unique
          "title": "Built-in corpus: permit speaker, attack gender",
          "figure": "3a",                     # "3a" | "3b" | "4" | null (free-form label)
          "corpus": "builtin",
          "manifest": "/path/m.csv", "manifest_fingerprint": "sha256...",
          "protocol": "same-speakers",
          "permitted": "speaker",
          "attacked": ["gender"],             # one to three attributes
          "preset": "quick",
          "seeds": [0, 1, 2],
          "wall_seconds": 812.4,
          "stages": [{"stage": "seed 0: target model T for 'speaker'", "seconds": 84.0}, ...],
                                              # where the time went (optional; in order)
          "systems": {
            "opt-in": {                       # system key: "opt-in", "adr", "mcadams"
              "label": "opt-in obfuscator",
              "world": "spectrogram",         # or "x-vector": T and attackers on x-vectors (ADR)
              "target": {                     # the permitted task, T's utterance accuracy on test
                "original":   STAT,           # T on original test data
                "obfuscated": STAT,           # T on protected test data
                "agreement":  STAT,           # share of test utterances where T(X~) == T(X)
                "unmodified_on_protected": STAT  # x-vector systems only: the unmodified
              },                                 #   target model on protected x-vectors
              "attacks": {
                "gender": {
                  "chance": STAT,             # majority-class rate of the test split
                  "original": STAT,           # classifier trained+tested on original data (circle)
                  "ignorant": STAT,           # trained on original, tested on protected (square)
                  "informed": STAT,           # trained and tested on protected (star)
                  "output_only": STAT,        # trained on T's posteriors only (leakage floor)
                  "excess_leakage": STAT      # informed - output_only
                }
              },
              "verification": {               # optional: speaker verification on the test split
                "original/original":   {"eer": STAT, "min_dcf": STAT, "trials": int},
                "original/protected":  {...},  # ignorant: original enrollment, protected trials
                "protected/protected": {...},  # lazy-informed
                "semi-informed":       {...},  # extractor retrained on protected training data
                "output-only":         {...}   # T's answers on protected data as embeddings
              }                               # (a pairing a system lacks is left out)
            }
          }
        }
      ],
      "rows": [ {"experiment": "...", "corpus": "...", "split": "test", "system": "opt-in",
                 "attacker": "informed", "attribute": "gender", "metric": "accuracy",
                 "seed": 0, "value": 0.51}, ... ]          # tidy rows, one per number and seed
    }
    STAT = {"mean": float, "std": float, "values": [float per seed]}   # std = 0 for one seed

A STAT may be null when a number does not apply (e.g. a system without a target model); a
missing STAT key reads as null, and unknown extra keys are ignored. ``std`` defaults to 0 and
``values`` to none; "several seeds" means a STAT with more than one value (or, without
``values``, an experiment with more than one seed).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optin.errors import OptinError

logger = logging.getLogger(__name__)

SCHEMA = "optin-results/1"
RESULTS_FILE = "results.json"
ATTACKERS: tuple[str, ...] = ("original", "ignorant", "informed", "output_only")
TARGET_STATS: tuple[str, ...] = ("original", "obfuscated", "agreement")
FAMILY_STATS: tuple[str, ...] = ("original", "ignorant", "informed")
ATTACK_STATS: tuple[str, ...] = (
    "chance", "original", "ignorant", "informed", "output_only", "excess_leakage",
)
PathLike = str | os.PathLike[str]


class ResultsError(OptinError, ValueError):
    """A results file that cannot be used; the message names the file and the field."""


# ----------------------------------------------------------------------------- loading


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _checkstat_of(stat: Any, where: str) -> None:
    if stat is None:
        return
    if not isinstance(stat, dict):
        raise ResultsError(f"{where}: a STAT must be an object or null, got {stat!r}")
    if "mean" not in stat:
        raise ResultsError(f"{where}: STAT without 'mean'")
    if not is_number(stat["mean"]):
        raise ResultsError(f"{where}.mean: expected a number, got {stat['mean']!r}")
    if stat.get("std") is not None and not is_number(stat["std"]):
        raise ResultsError(f"{where}.std: expected a number, got {stat['std']!r}")
    values = stat.get("values")
    if values is not None and not (
        isinstance(values, list) and all(is_number(v) for v in values)
    ):
        raise ResultsError(f"{where}.values: expected a list of numbers, got {values!r}")


def _check_experiment(exp: Any, where: str) -> None:
    if not isinstance(exp, dict):
        raise ResultsError(f"{where}: an experiment must be an object")
    name = exp.get("name")
    if not isinstance(name, str) or not name:
        raise ResultsError(f"{where}.name: missing or not a non-empty string")
    where = f"{where} ({name!r})"
    attacked = exp.get("attacked")
    if (not isinstance(attacked, list) or not 1 <= len(attacked) <= 3
            or not all(isinstance(a, str) and a for a in attacked)):
        raise ResultsError(f"{where}.attacked: expected a list of one to three attribute names, "
                           f"got {attacked!r}")
    systems = exp.get("systems")
    if not isinstance(systems, dict):
        raise ResultsError(f"{where}.systems: missing or not an object")
    for key, system in systems.items():
        here = f"{where}.systems[{key!r}]"
        if not isinstance(system, dict):
            raise ResultsError(f"{here}: a system must be an object")
        target = system.get("target")
        if target is not None:
            if not isinstance(target, dict):
                raise ResultsError(f"{here}.target: expected an object or null")
            for stat in TARGET_STATS:
                _checkstat_of(target.get(stat), f"{here}.target.{stat}")
        _check_stat_groups(system.get("attacks"), f"{here}.attacks", ATTACK_STATS)
        _check_stat_groups(system.get("verification"), f"{here}.verification",
                           ("eer", "min_dcf"))


def _check_stat_groups(groups: Any, where: str, stats: Sequence[str]) -> None:
    """``{name: {stat: STAT} | null}`` (attacks per attribute, verification per pairing)."""
    groups = groups or {}
    if not isinstance(groups, dict):
        raise ResultsError(f"{where}: expected an object")
    for name, numbers in groups.items():
        if numbers is None:
            continue
        if not isinstance(numbers, dict):
            raise ResultsError(f"{where}[{name!r}]: expected an object")
        for stat in stats:
            _checkstat_of(numbers.get(stat), f"{where}[{name!r}].{stat}")


def validate_results(data: Any, source: str = "results") -> None:
    """Raise :class:`ResultsError` naming ``source`` and the field when ``data`` breaks the
    schema (wrong version, no experiments, duplicate names, a malformed STAT...)."""
    if not isinstance(data, dict):
        raise ResultsError(f"{source}: expected a JSON object at the top level")
    if data.get("schema") != SCHEMA:
        raise ResultsError(f"{source}: schema is {data.get('schema')!r}, expected {SCHEMA!r}")
    experiments = data.get("experiments")
    if not isinstance(experiments, list):
        raise ResultsError(f"{source}: 'experiments' is missing or not a list")
    seen: set[str] = set()
    for i, exp in enumerate(experiments):
        _check_experiment(exp, f"{source}: experiments[{i}]")
        if exp["name"] in seen:
            raise ResultsError(f"{source}: experiments[{i}].name: {exp['name']!r} is not unique")
        seen.add(exp["name"])
    rows = data.get("rows", [])
    if not isinstance(rows, list):
        raise ResultsError(f"{source}: 'rows' is not a list")


def _results_path(path: PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
        if not path.is_file():
            raise ResultsError(f"{path.parent}: no {RESULTS_FILE} in this folder")
    elif not path.is_file():
        raise ResultsError(f"{path}: no such file or folder")
    return path


def _read_results(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ResultsError(f"{path}: not valid JSON ({err})") from err
    validate_results(data, str(path))
    return data


def load_results(paths: Sequence[PathLike] | PathLike) -> dict[str, Any]:
    """Read one or more ``results.json`` (or folders holding one) and merge their experiments.

    Returns a results dict of the same schema plus ``sources`` (one ``{"path", "created",
    "code_version"}`` per file) and ``warnings`` (strings, also logged). Each experiment gains
    ``source`` (its file). An experiment name already taken by an earlier file is renamed
    ``"<name>@<folder>"`` (folder = the later file's folder name; ``-2``, ``-3``... if that is
    taken too), in its tidy rows as well, and a warning says so.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    if not paths:
        raise ResultsError("no results given")
    merged: dict[str, Any] = {"schema": SCHEMA, "sources": [], "experiments": [], "rows": [],
                              "warnings": []}
    taken: set[str] = set()
    for given in paths:
        path = _results_path(given)
        data = copy.deepcopy(_read_results(path))
        merged["sources"].append({"path": str(path), "created": data.get("created"),
                                  "code_version": data.get("code_version")})
        renamed: dict[str, str] = {}
        for exp in data["experiments"]:
            name = exp["name"]
            if name in taken:
                new = base = f"{name}@{path.parent.resolve().name or 'results'}"
                counter = 2
                while new in taken:
                    new, counter = f"{base}-{counter}", counter + 1
                message = (f"experiment {name!r} from {path} is also in an earlier results "
                           f"file; renamed {new!r}")
                logger.warning(message)
                merged["warnings"].append(message)
                renamed[name] = exp["name"] = new
            taken.add(exp["name"])
            exp["source"] = str(path)
            merged["experiments"].append(exp)
        for row in data.get("rows", []):
            if isinstance(row, dict) and row.get("experiment") in renamed:
                row = {**row, "experiment": renamed[row["experiment"]]}
            merged["rows"].append(row)
    return merged


# ----------------------------------------------------------------------------- numbers


def stat_of(node: Any, key: str) -> dict[str, Any] | None:
    """The STAT at ``node[key]``, None when the node or the key is missing or null."""
    return node.get(key) if isinstance(node, dict) else None


def n_values(stat: dict[str, Any] | None, default: int = 1) -> int:
    if stat is None:
        return 0
    values = stat.get("values")
    return len(values) if isinstance(values, list) else default


def n_seeds(experiment: dict[str, Any]) -> int:
    seeds = experiment.get("seeds")
    return len(seeds) if isinstance(seeds, list) and seeds else 1


def format_stat(stat: dict[str, Any] | None, seeds: int = 1, digits: int = 3) -> str:
    """``mean ± std`` when the STAT has several seeds, plain ``mean`` for one, ``n/a`` for null.

    ``seeds`` is the count to assume when the STAT has no ``values``.
    """
    if stat is None:
        return "n/a"
    mean = float(stat["mean"])
    if n_values(stat, seeds) > 1:
        return f"{mean:.{digits}f} ± {float(stat.get('std') or 0.0):.{digits}f}"
    return f"{mean:.{digits}f}"


def error_of(stat: dict[str, Any] | None, seeds: int) -> float | None:
    if stat is None or n_values(stat, seeds) <= 1:
        return None
    return float(stat.get("std") or 0.0)


def systems_of(experiment: dict[str, Any], sweeps: bool = True) -> dict[str, dict[str, Any]]:
    """The experiment's systems; without the variants of a sweep unless ``sweeps``."""
    return {k: v for k, v in (experiment.get("systems") or {}).items()
            if isinstance(v, dict) and (sweeps or not v.get("sweep"))}


def attack_of(system: dict[str, Any], attribute: str) -> dict[str, Any] | None:
    return (system.get("attacks") or {}).get(attribute)

"""The experiment report: ``results.json`` in, ``report.md`` and the paper-style figures out.

This module knows nothing about training: it reads the results interface below, checks it, and
draws and tabulates it.

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
          "attacked": ["gender"],             # one or two attributes
          "preset": "quick",
          "seeds": [0, 1, 2],
          "wall_seconds": 812.4,
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
                "semi-informed":       {...}   # extractor retrained on protected training data
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

Figures (matplotlib, explicit :class:`~matplotlib.figure.Figure` objects, no pyplot):

* one attacked attribute (paper Fig. 3): X = attacker accuracy on it, Y = target-task accuracy;
  per system (one colour per system key) a circle at (original attacker, T on original), a
  square at (ignorant attacker, T on obfuscated), a star at (informed attacker, T on
  obfuscated) and a small ``x`` at (output-only attacker, T on obfuscated): the leakage floor
  that the permitted output itself implies. Dashed lines: vertical at chance, horizontal at the
  unprotected target accuracy (T on original). A point with a null coordinate is not drawn.
* two attacked attributes (paper Fig. 4): X = accuracy on the first, Y = on the second, the
  same four markers per system from the same attacker, dashed lines at both chance levels.

Error bars (std) are drawn only where a coordinate has several seeds. Artist ids (``gid``),
for tests and for the SVG: ``"<system>/<attacker>"`` for a marker (attacker in
:data:`ATTACKERS`), ``"<system>/<attacker>/errorbar"`` for its error bars, ``"chance/<attribute>"``
and ``"target-original"`` for the dashed lines (``.../<system>`` appended when systems disagree
on the value, the line then in the system's colour).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
import textwrap
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import offset_copy

from optin.errors import OptinError
from optin.files import atomic_output, write_text

logger = logging.getLogger(__name__)

SCHEMA = "optin-results/1"
RESULTS_FILE = "results.json"
ATTACKERS: tuple[str, ...] = ("original", "ignorant", "informed", "output_only")
TARGET_STATS: tuple[str, ...] = ("original", "obfuscated", "agreement")
FAMILY_STATS: tuple[str, ...] = ("original", "ignorant", "informed")
ATTACK_STATS: tuple[str, ...] = (
    "chance", "original", "ignorant", "informed", "output_only", "excess_leakage",
)
MARKERS: dict[str, str] = {"original": "o", "ignorant": "s", "informed": "*", "output_only": "x"}
MARKER_SIZES: dict[str, float] = {"original": 7, "ignorant": 7, "informed": 11, "output_only": 6}
DODGE_POINTS = 7.0  # sideways spacing of markers that share a spot
MARKER_LABELS: dict[str, str] = {
    "original": "original (no protection)",
    "ignorant": "ignorant attacker",
    "informed": "informed attacker",
    "output_only": "output-only attacker (leakage floor)",
}
SYSTEM_COLOURS: dict[str, str] = {"opt-in": "tab:blue", "adr": "tab:orange",
                                  "mcadams": "tab:green"}
_SPARE_COLOURS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan",
                  "tab:gray")
_REFERENCE_COLOUR = "0.45"
_SAME = 1e-9  # reference values closer than this are one line

PathLike = str | os.PathLike[str]


class ResultsError(OptinError, ValueError):
    """A results file that cannot be used; the message names the file and the field."""


# ----------------------------------------------------------------------------- loading


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_stat(stat: Any, where: str) -> None:
    if stat is None:
        return
    if not isinstance(stat, dict):
        raise ResultsError(f"{where}: a STAT must be an object or null, got {stat!r}")
    if "mean" not in stat:
        raise ResultsError(f"{where}: STAT without 'mean'")
    if not _is_number(stat["mean"]):
        raise ResultsError(f"{where}.mean: expected a number, got {stat['mean']!r}")
    if stat.get("std") is not None and not _is_number(stat["std"]):
        raise ResultsError(f"{where}.std: expected a number, got {stat['std']!r}")
    values = stat.get("values")
    if values is not None and not (
        isinstance(values, list) and all(_is_number(v) for v in values)
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
    if (not isinstance(attacked, list) or not 1 <= len(attacked) <= 2
            or not all(isinstance(a, str) and a for a in attacked)):
        raise ResultsError(f"{where}.attacked: expected a list of one or two attribute names, "
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
                _check_stat(target.get(stat), f"{here}.target.{stat}")
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
            _check_stat(numbers.get(stat), f"{where}[{name!r}].{stat}")


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


def _stat(node: Any, key: str) -> dict[str, Any] | None:
    """The STAT at ``node[key]``, None when the node or the key is missing or null."""
    return node.get(key) if isinstance(node, dict) else None


def _n_values(stat: dict[str, Any] | None, default: int = 1) -> int:
    if stat is None:
        return 0
    values = stat.get("values")
    return len(values) if isinstance(values, list) else default


def _n_seeds(experiment: dict[str, Any]) -> int:
    seeds = experiment.get("seeds")
    return len(seeds) if isinstance(seeds, list) and seeds else 1


def format_stat(stat: dict[str, Any] | None, seeds: int = 1, digits: int = 3) -> str:
    """``mean ± std`` when the STAT has several seeds, plain ``mean`` for one, ``n/a`` for null.

    ``seeds`` is the count to assume when the STAT has no ``values``.
    """
    if stat is None:
        return "n/a"
    mean = float(stat["mean"])
    if _n_values(stat, seeds) > 1:
        return f"{mean:.{digits}f} ± {float(stat.get('std') or 0.0):.{digits}f}"
    return f"{mean:.{digits}f}"


def _error(stat: dict[str, Any] | None, seeds: int) -> float | None:
    if stat is None or _n_values(stat, seeds) <= 1:
        return None
    return float(stat.get("std") or 0.0)


@dataclass(frozen=True)
class Point:
    """One marker of a figure: ``attacker`` in :data:`ATTACKERS`; errors None for one seed."""

    system: str
    attacker: str
    x: float
    y: float
    xerr: float | None
    yerr: float | None


@dataclass(frozen=True)
class ReferenceLine:
    """A dashed line: ``vertical`` at x = value, else horizontal at y = value."""

    vertical: bool
    value: float
    gid: str
    colour: str


def system_colour(key: str) -> str:
    """The colour of a system key, the same in every figure."""
    if key in SYSTEM_COLOURS:
        return SYSTEM_COLOURS[key]
    return _SPARE_COLOURS[zlib.crc32(key.encode("utf-8")) % len(_SPARE_COLOURS)]


def _systems(experiment: dict[str, Any], sweeps: bool = True) -> dict[str, dict[str, Any]]:
    """The experiment's systems; without the variants of a sweep unless ``sweeps``."""
    return {k: v for k, v in (experiment.get("systems") or {}).items()
            if isinstance(v, dict) and (sweeps or not v.get("sweep"))}


def agreement_line(experiment: dict[str, Any]) -> str:
    """One line that gives every system's permitted-task agreement T(X~) = T(X), so a system
    that wrecks the signal cannot pass for a private one."""
    parts = []
    for key, system in _systems(experiment, sweeps=False).items():
        value = _stat(system.get("target"), "agreement")
        if value is not None:
            parts.append(f"{system.get('label') or key} {float(value['mean']):.2f}")
    return ("T agreement: " + " · ".join(parts)) if parts else ""


def _attack(system: dict[str, Any], attribute: str) -> dict[str, Any] | None:
    return (system.get("attacks") or {}).get(attribute)


def experiment_points(experiment: dict[str, Any]) -> list[Point]:
    """The markers of an experiment's figure (see the module docstring for the layout)."""
    attacked = experiment["attacked"]
    seeds = _n_seeds(experiment)
    points = []
    for key, system in _systems(experiment, sweeps=False).items():
        first = _attack(system, attacked[0])
        for attacker in ATTACKERS:
            xs = _stat(first, attacker)
            if len(attacked) == 1:
                target = system.get("target")
                ys = _stat(target, "original" if attacker == "original" else "obfuscated")
            else:
                ys = _stat(_attack(system, attacked[1]), attacker)
            if xs is None or ys is None:
                continue
            points.append(Point(key, attacker, float(xs["mean"]), float(ys["mean"]),
                                _error(xs, seeds), _error(ys, seeds)))
    return points


def _lines_for(values: dict[str, float], vertical: bool, gid: str) -> list[ReferenceLine]:
    if not values:
        return []
    first = next(iter(values.values()))
    if all(abs(v - first) <= _SAME for v in values.values()):
        return [ReferenceLine(vertical, first, gid, _REFERENCE_COLOUR)]
    return [ReferenceLine(vertical, v, f"{gid}/{key}", system_colour(key))
            for key, v in values.items()]


def reference_lines(experiment: dict[str, Any]) -> list[ReferenceLine]:
    """The dashed lines: chance of each attacked attribute, and for one attacked attribute the
    unprotected target accuracy."""
    attacked = experiment["attacked"]
    systems = _systems(experiment)

    def chance(attribute: str) -> dict[str, float]:
        found = {k: _stat(_attack(s, attribute), "chance") for k, s in systems.items()}
        return {k: float(v["mean"]) for k, v in found.items() if v is not None}

    lines = _lines_for(chance(attacked[0]), True, f"chance/{attacked[0]}")
    if len(attacked) == 2:
        return lines + _lines_for(chance(attacked[1]), False, f"chance/{attacked[1]}")
    target = {k: _stat(s.get("target"), "original") for k, s in systems.items()}
    unprotected = {k: float(v["mean"]) for k, v in target.items() if v is not None}
    return lines + _lines_for(unprotected, False, "target-original")


# ----------------------------------------------------------------------------- figures


def _limits(values: Iterable[float]) -> tuple[float, float] | None:
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return None
    lo, hi = min(values), max(values)
    pad = max(0.06 * (hi - lo), 0.02)
    return lo - pad, hi + pad


def _draw_experiment(ax: Axes, experiment: dict[str, Any], title: str | None = None
                     ) -> tuple[set[str], dict[str, str]]:
    """Draw one experiment on ``ax``; returns the attackers drawn and {system key: label}."""
    attacked = experiment["attacked"]
    points = experiment_points(experiment)
    xs: list[float] = []
    ys: list[float] = []
    # Markers of several systems on the same spot are spread sideways by a few points (display
    # space only: their data coordinates stay exact), so none hides another.
    spots: dict[tuple[float, float], list[Point]] = {}
    for p in points:
        spots.setdefault((round(p.x, 4), round(p.y, 4)), []).append(p)
    for p in points:
        colour = system_colour(p.system)
        group = spots[round(p.x, 4), round(p.y, 4)]
        shift = (group.index(p) - (len(group) - 1) / 2) * DODGE_POINTS
        where = (offset_copy(ax.transData, fig=ax.figure, x=shift, y=0.0, units="points")
                 if shift else ax.transData)
        if p.xerr is not None or p.yerr is not None:
            bars = ax.errorbar([p.x], [p.y], xerr=p.xerr, yerr=p.yerr, fmt="none",
                               ecolor=colour, elinewidth=1.0, capsize=2.5, alpha=0.7, zorder=2,
                               transform=where)
            for artist in (*bars.lines[1], *bars.lines[2]):
                artist.set_gid(f"{p.system}/{p.attacker}/errorbar")
        (line,) = ax.plot([p.x], [p.y], linestyle="none", marker=MARKERS[p.attacker],
                          markersize=MARKER_SIZES[p.attacker], color=colour,
                          markeredgecolor="black" if p.attacker != "output_only" else colour,
                          markeredgewidth=0.6 if p.attacker != "output_only" else 1.5,
                          zorder=3, label=f"{p.system} {p.attacker}", transform=where)
        line.set_gid(f"{p.system}/{p.attacker}")
        xs += [p.x - (p.xerr or 0.0), p.x + (p.xerr or 0.0)]
        ys += [p.y - (p.yerr or 0.0), p.y + (p.yerr or 0.0)]
    for ref in reference_lines(experiment):
        draw = ax.axvline if ref.vertical else ax.axhline
        line = draw(ref.value, linestyle="--", linewidth=1.0, color=ref.colour, zorder=1)
        line.set_gid(ref.gid)
        (xs if ref.vertical else ys).append(ref.value)
    for limits, setter in ((_limits(xs), ax.set_xlim), (_limits(ys), ax.set_ylim)):
        if limits is not None:
            setter(*limits)
    ax.set_xlabel(f"{attacked[0]} attacker accuracy")
    if len(attacked) == 1:
        ax.set_ylabel(f"{experiment.get('permitted') or 'target'} (target task) accuracy")
    else:
        ax.set_ylabel(f"{attacked[1]} attacker accuracy")
    text = textwrap.fill(title or experiment.get("title") or experiment["name"], 55)
    agreement = agreement_line(experiment)
    if agreement:  # every figure shows each system's permitted-task agreement
        text += "\n" + textwrap.fill(agreement, 70)
    ax.set_title(text, fontsize="medium")  # long titles wrap, never clip
    ax.grid(True, linewidth=0.3, alpha=0.5)
    if not points:
        ax.text(0.5, 0.5, "no numbers to plot", ha="center", va="center",
                transform=ax.transAxes, color="0.4")
    systems = {k: str(s.get("label") or k) for k, s in _systems(experiment, sweeps=False).items()}
    return {p.attacker for p in points}, systems


def _legend_handles(attackers: set[str], systems: dict[str, str], kinds: set[int]
                    ) -> list[Any]:
    """Proxy artists explaining markers (attackers), colours (systems) and dashed lines;
    ``kinds`` holds the numbers of attacked attributes of the experiments drawn."""
    grey = "0.55"
    handles: list[Any] = [
        Line2D([], [], linestyle="none", marker=MARKERS[a], markersize=MARKER_SIZES[a],
               color=grey, markeredgecolor="black" if a != "output_only" else grey,
               markeredgewidth=0.6 if a != "output_only" else 1.5, label=MARKER_LABELS[a])
        for a in ATTACKERS if a in attackers
    ]
    handles += [Patch(facecolor=system_colour(k), edgecolor="black", linewidth=0.5, label=label)
                for k, label in systems.items()]
    dashed = {1: "chance (vertical), unprotected\ntarget accuracy (horizontal)",
              2: "chance levels"}
    handles += [Line2D([], [], linestyle="--", color=_REFERENCE_COLOUR, label=dashed[k])
                for k in sorted(kinds)]
    return handles


def make_figure(experiment: dict[str, Any]) -> Figure:
    """The paper-style figure of one experiment (Fig. 3 for one attacked attribute, Fig. 4 for
    two) as a :class:`Figure`, legend on the right."""
    fig = Figure(figsize=(8.0, 4.8), layout="constrained")
    ax = fig.add_subplot()
    attackers, systems = _draw_experiment(ax, experiment)
    fig.legend(handles=_legend_handles(attackers, systems, {len(experiment["attacked"])}),
               loc="outside right upper", fontsize="small", frameon=False)
    return fig


def make_merged_figure(experiments: Sequence[dict[str, Any]],
                       titles: Sequence[str] | None = None) -> Figure:
    """Several experiments as subplots (one each, at most three a row) with one shared legend:
    e.g. the same figure over several corpora or several results folders."""
    if not experiments:
        raise ValueError("no experiments to plot")
    ncols = min(len(experiments), 3)
    nrows = math.ceil(len(experiments) / ncols)
    fig = Figure(figsize=(4.4 * ncols + 2.6, 3.8 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    attackers: set[str] = set()
    systems: dict[str, str] = {}
    for i, exp in enumerate(experiments):
        ax = axes[i // ncols][i % ncols]
        drawn, labels = _draw_experiment(ax, exp, titles[i] if titles else _subplot_title(exp))
        attackers |= drawn
        systems.update({k: v for k, v in labels.items() if k not in systems})
    for j in range(len(experiments), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    kinds = {len(exp["attacked"]) for exp in experiments}
    fig.legend(handles=_legend_handles(attackers, systems, kinds),
               loc="outside right upper", fontsize="small", frameon=False)
    return fig


def _subplot_title(experiment: dict[str, Any]) -> str:
    title = str(experiment.get("title") or experiment["name"])
    corpus = experiment.get("corpus")
    return title if not corpus or str(corpus) in title else f"{title} ({corpus})"


def save_figure(fig: Figure, out_base: Path) -> list[Path]:
    """Write ``out_base.png`` (150 dpi) and ``out_base.svg``; returns both paths."""
    out_base = Path(out_base)
    out_base.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_base.with_name(out_base.name + ".png"), out_base.with_name(out_base.name + ".svg")]
    with atomic_output(paths[0]) as tmp:
        fig.savefig(tmp, dpi=150, format="png")
    with atomic_output(paths[1]) as tmp:
        fig.savefig(tmp, metadata={"Date": None}, format="svg")
    return paths


def plot_experiment(experiment: dict[str, Any], out_base: Path) -> list[Path]:
    """Draw one experiment to ``out_base.png`` and ``out_base.svg``; returns the paths."""
    return save_figure(make_figure(experiment), out_base)


def has_sweep(experiment: dict[str, Any]) -> bool:
    """Whether the experiment holds opt-in variants of a sweep (a frontier to draw)."""
    return any(s.get("sweep") for s in _systems(experiment).values())


def _frontier_point(system: dict[str, Any], attribute: str, kind: str
                    ) -> tuple[float, float] | None:
    """(T agreement, ``kind`` attacker accuracy on ``attribute``) means, None if missing."""
    x = _stat(system.get("target"), "agreement")
    y = _stat(_attack(system, attribute), kind)
    return None if x is None or y is None else (float(x["mean"]), float(y["mean"]))


def make_frontier_figure(experiment: dict[str, Any]) -> Figure:
    """The privacy-utility frontier of a sweep: one panel per attacked attribute, X = T's
    agreement T(X~) = T(X) on the test split, Y = the strongest informed attacker's accuracy.

    The opt-in variants (and the base opt-in system) are joined by a line in the order of the
    swept value and labelled with it; their output-only attackers (the floor the permitted
    output implies) are small ``x`` joined by a dotted line; every other system is one star.
    Dashed: chance. The best place is the bottom right (full agreement, chance leakage).
    """
    attacked = experiment["attacked"]
    systems = _systems(experiment)
    variants = {k: s for k, s in systems.items() if s.get("sweep")}
    option = next(iter(next(iter(variants.values()))["sweep"])) if variants else None
    base = systems.get("opt-in")
    base_value = (base.get("options") or {}).get(option) if base else None
    chain = sorted(((s["sweep"][option], k, s) for k, s in variants.items()),
                   key=lambda item: float(item[0]))
    if base is not None:
        value = base_value if base_value is not None else "base"
        chain.append((value, "opt-in", base))
        chain.sort(key=lambda item: float(item[0]) if _is_number(item[0]) else 1.0)
    seeds = _n_seeds(experiment)
    fig = Figure(figsize=(4.6 * len(attacked) + 2.4, 4.2), layout="constrained")
    axes = fig.subplots(1, len(attacked), squeeze=False)[0]
    for ax, attribute in zip(axes, attacked, strict=True):
        line = [(v, _frontier_point(s, attribute, "informed"),
                 _frontier_point(s, attribute, "output_only")) for v, _, s in chain]
        line = [(v, a, b) for v, a, b in line if a is not None]
        if line:
            colour = system_colour("opt-in")
            ax.plot([a[0] for _, a, _ in line], [a[1] for _, a, _ in line], "-*",
                    color=colour, markersize=11, markeredgecolor="black",
                    markeredgewidth=0.6, label=f"opt-in, swept {option}", gid="frontier/opt-in")
            floor = [b for _, _, b in line if b is not None]
            ax.plot([b[0] for b in floor], [b[1] for b in floor], ":x", color=colour,
                    markersize=6, label="opt-in output-only floor", gid="frontier/output_only")
            for value, (x, y), _ in line:
                ax.annotate(f"{option}={value}", (x, y), textcoords="offset points",
                            xytext=(5, 5), fontsize="x-small")
        for key, system in systems.items():
            if key == "opt-in" or system.get("sweep"):
                continue
            point = _frontier_point(system, attribute, "informed")
            if point is None:
                continue
            xerr = _error(_stat(system.get("target"), "agreement"), seeds)
            yerr = _error(_stat(_attack(system, attribute), "informed"), seeds)
            marker = ax.errorbar([point[0]], [point[1]], xerr=xerr, yerr=yerr, fmt="*",
                                 color=system_colour(key), markersize=11,
                                 markeredgecolor="black", markeredgewidth=0.6,
                                 label=str(system.get("label") or key))
            marker.lines[0].set_gid(f"frontier/{key}")
        chance = _stat(next((_attack(s, attribute) for s in systems.values()
                             if _attack(s, attribute)), None), "chance")
        if chance is not None:
            ax.axhline(float(chance["mean"]), linestyle="--", linewidth=1.0,
                       color=_REFERENCE_COLOUR, gid=f"chance/{attribute}", label="chance")
        ax.set_xlabel(f"T agreement ({experiment.get('permitted') or 'target'}), test split")
        ax.set_ylabel(f"strongest informed {attribute} attacker accuracy")
        ax.set_title(f"{attribute}", fontsize="medium")
        ax.grid(True, linewidth=0.3, alpha=0.5)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize="small", frameon=False)
    fig.suptitle(textwrap.fill("Privacy-utility frontier: " + str(
        experiment.get("title") or experiment["name"]), 90), fontsize="medium")
    return fig


def plot_merged(experiments: Sequence[dict[str, Any]], out_base: Path) -> list[Path]:
    """Draw several experiments as subplots of one figure with a shared legend (PNG and SVG)."""
    return save_figure(make_merged_figure(experiments), out_base)


# ----------------------------------------------------------------------------- report

PREAMBLE = """\
How to read the figures. With one attacked attribute (the paper's Figure 3) the X axis is an
attacker's accuracy on the protected attribute and the Y axis the accuracy of the permitted task
(the target model T). The dashed vertical line is chance (the majority-class rate of the test
split: perfect protection) and the dashed horizontal line T's accuracy on unprotected speech:
the best place is where they cross, at the top left. With two attacked attributes (Figure 4)
both axes are attacker accuracies and the dashed lines both chance levels: the best place is
their crossing, at the bottom left. Colours are systems; markers are attackers:
circle = classifier trained and tested on original speech (what the raw signal reveals),
square = ignorant attacker (trained on original, tested on protected speech),
star = informed attacker (trained and tested on protected speech),
x = output-only attacker (trained on T's posteriors alone: what the permitted output itself
implies). Excess leakage = informed - output-only: what the protected signal reveals beyond what
the user permitted. Error bars (one standard deviation over seeds) appear with several seeds.

Numbers on the built-in corpus come from synthetic speech (eSpeak NG voices), a stand-in that
lets the pipeline run offline with ground truth: they are not results on human speech and are
not comparable with the paper's.
"""


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _duration(seconds: Any) -> str:
    if not _is_number(seconds):
        return "n/a"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "experiment"


def _figure_names(experiments: Sequence[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for exp in experiments:
        base = name = _safe_name(exp["name"])
        counter = 2
        while name in names:
            name, counter = f"{base}-{counter}", counter + 1
        names.append(name)
    return names


def _system_name(key: str, system: dict[str, Any]) -> str:
    label = system.get("label")
    return f"{label} (`{key}`)" if label and label != key else f"`{key}`"


def _experiment_section(exp: dict[str, Any], figure: str) -> list[str]:
    seeds = _n_seeds(exp)
    systems = _systems(exp)
    title = exp.get("title")
    header = f"## {exp['name']}" + (f": {title}" if title else "")
    seed_list = exp.get("seeds")
    seed_text = ", ".join(str(s) for s in seed_list) if isinstance(seed_list, list) else "n/a"

    def field(key: str) -> str:
        value = exp.get(key)
        return "n/a" if value is None else f"`{value}`"

    facts = [f"corpus {field('corpus')}", f"protocol {field('protocol')}",
             f"permitted {field('permitted')}",
             "attacked " + ", ".join(f"`{a}`" for a in exp["attacked"]),
             f"preset {field('preset')}", f"seeds {seed_text}",
             f"wall time {_duration(exp.get('wall_seconds'))}"]
    lines = [header, "", " · ".join(facts)]
    if exp.get("figure") is not None:
        lines[-1] += f" · paper figure {exp['figure']}"
    if exp.get("source"):
        lines += ["", f"From `{exp['source']}`."]
    if exp.get("corpus") == "builtin":
        lines += ["", "Synthetic speech (built-in corpus): not results on human speech."]

    permitted = exp.get("permitted") or "target task"
    lines += ["", f"Target task ({permitted}), T's utterance accuracy on the test split:", ""]
    lines += _table(
        ["system", "T original", "T obfuscated", "agreement"],
        [[_system_name(k, s)] + [format_stat(_stat(s.get("target"), key), seeds)
                                 for key in TARGET_STATS] for k, s in systems.items()],
    )
    for attribute in exp["attacked"]:
        lines += ["", f"Attacks on `{attribute}` (attacker accuracy on the test split):", ""]
        lines += _table(
            ["system", "chance", "original", "ignorant", "informed", "output-only",
             "excess leakage"],
            [[_system_name(k, s)] + [format_stat(_stat(_attack(s, attribute), key), seeds)
                                     for key in ATTACK_STATS] for k, s in systems.items()],
        )
        lines += _families_section(systems, attribute, seeds)
    lines += _world_note(systems)
    lines += _verification_section(systems, seeds)
    alt = _cell(title or exp["name"]).replace("]", ")").replace("[", "(")
    lines += ["", f"![{alt}](figures/{figure}.png)", ""]
    return lines


def _families_section(systems: dict[str, dict[str, Any]], attribute: str, seeds: int
                      ) -> list[str]:
    """Per attacker family: original / ignorant / informed accuracy, the strength check and
    how the informed attacker's training ended (systems without families are left out)."""
    rows = []
    for key, system in systems.items():
        attack = _attack(system, attribute) or {}
        families = attack.get("families") or {}
        strongest = attack.get("strongest_informed") or []
        for name, fam in families.items():
            under = fam.get("undertrained") or []
            check = (f"UNDERTRAINED ({sum(map(bool, under))}/{len(under)} seeds)"
                     if any(under) else "ok")
            stops = [t for t in fam.get("informed_training") or [] if t]
            epochs = "/".join(str(t.get("epochs_run")) for t in stops) or "n/a"
            chosen = sum(1 for s in strongest if s == name)
            rows.append([_system_name(key, system), name]
                        + [format_stat(_stat(fam, k), seeds) for k in FAMILY_STATS]
                        + [check, f"{chosen}/{len(strongest)}", epochs])
    if not rows:
        return []
    lines = ["", f"Attacker families on `{attribute}` (each trained to its best: early stop on "
             "validation accuracy; the tables above report the strongest). Strength check: on "
             "original data a family within 2 points of the best family, else undertrained.",
             ""]
    return lines + _table(["system", "family", "original", "ignorant", "informed",
                           "strength check", "strongest informed (seeds)",
                           "informed epochs run"], rows)


PAIRINGS = ("original/original", "original/protected", "protected/protected", "semi-informed")
PAIRING_NAMES = {"original/original": "orig/orig", "original/protected": "orig/prot (ignorant)",
                 "protected/protected": "prot/prot (lazy-informed)",
                 "semi-informed": "semi-informed"}


def _world_note(systems: dict[str, dict[str, Any]]) -> list[str]:
    """Say which systems are scored on x-vectors, and compare the two representations."""
    vector = [k for k, s in systems.items() if s.get("world") == "x-vector"]
    if not vector:
        return []
    names = ", ".join(_system_name(k, systems[k]) for k in vector)
    lines = ["", f"{names}: target task and attackers are classifiers on x-vectors (the "
             "paper's setting for ADR); the target model behind it is trained on protected "
             "x-vectors; its *original* column is an x-vector classifier on unprotected data, "
             "to compare with the spectrogram classifiers' *original* column (the paper's "
             "check that both representations carry about the same information)."]
    for key in vector:
        unmodified = _stat(systems[key].get("target"), "unmodified_on_protected")
        if unmodified is not None:
            lines[-1] += (f" The unmodified target model (trained on original x-vectors) scores "
                          f"{format_stat(unmodified)} on {_system_name(key, systems[key])}'s "
                          "protected test x-vectors.")
    return lines


def _verification_section(systems: dict[str, dict[str, Any]], seeds: int) -> list[str]:
    """EER and minDCF of the VoicePrivacy pairings, one row per system."""
    rows = []
    for key, system in systems.items():
        found = system.get("verification") or {}
        if not found:
            continue
        rows.append([_system_name(key, system)] + [
            (f"{format_stat(_stat(found.get(p), 'eer'), seeds)} / "
             f"{format_stat(_stat(found.get(p), 'min_dcf'), seeds)}") if found.get(p) else "n/a"
            for p in PAIRINGS])
    if not rows:
        return []
    lines = ["", "Speaker verification (x-vectors, cosine scoring, test-split trials): "
             "EER / minDCF (p_target 0.01); higher EER = better protected. ignorant: original "
             "enrollment, protected trials; lazy-informed: both protected; semi-informed: "
             "extractor retrained on protected training data.", ""]
    return lines + _table(["system", *(PAIRING_NAMES[p] for p in PAIRINGS)], rows)


def write_report(results: dict[str, Any], out_dir: Path) -> Path:
    """Write ``out_dir/report.md`` and its figures in ``out_dir/figures/`` (one PNG + SVG per
    experiment, and one merged figure per paper-figure label that several experiments share).

    ``results`` is a results dict (as read by :func:`load_results`, or a single file's
    content). Returns the report's path.
    """
    validate_results(results, "results")
    out_dir = Path(out_dir)
    figures_dir = out_dir / "figures"
    experiments = results["experiments"]
    names = _figure_names(experiments)

    lines = ["# Opt-in audio privacy: experiment report", "", PREAMBLE.rstrip(), ""]
    sources = results.get("sources") or [
        {"path": None, "created": results.get("created"),
         "code_version": results.get("code_version")}
    ]
    lines += ["Results:", ""]
    for src in sources:
        where = f"`{src['path']}`" if src.get("path") else "results"
        lines.append(f"- {where}: created {src.get('created') or 'n/a'}, "
                     f"code version {src.get('code_version') or 'n/a'}")
    for warning in results.get("warnings") or []:
        lines.append(f"- note: {warning}")
    lines.append("")

    groups: dict[str, list[dict[str, Any]]] = {}
    for exp in experiments:
        if exp.get("figure") is not None:
            groups.setdefault(str(exp["figure"]), []).append(exp)
    merged = {label: group for label, group in groups.items() if len(group) > 1}
    if merged:
        lines += ["## Figures across experiments", ""]
        for label, group in merged.items():
            base = f"figure-{_safe_name(label)}"
            while base in names:
                base += "-merged"
            plot_merged(group, figures_dir / base)
            lines += [f"Figure {label}: " + ", ".join(f"`{e['name']}`" for e in group), "",
                      f"![Figure {_cell(label)}](figures/{base}.png)", ""]
    if not experiments:
        lines += ["No experiments in these results.", ""]
    for exp, name in zip(experiments, names, strict=True):
        plot_experiment(exp, figures_dir / name)
        lines += _experiment_section(exp, name)
        if has_sweep(exp):
            save_figure(make_frontier_figure(exp), figures_dir / f"{name}-frontier")
            lines += [f"Privacy-utility frontier of `{exp['name']}` (T agreement against the "
                      "strongest informed attacker, per attacked attribute; other systems as "
                      "single points):", "", f"![frontier](figures/{name}-frontier.png)", ""]

    return write_text(out_dir / "report.md", "\n".join(lines).rstrip() + "\n")


def build_report(paths: Sequence[PathLike] | PathLike, out_dir: PathLike) -> Path:
    """Load results (files or folders), write the report and figures to ``out_dir``; returns
    the report's path (what ``optin report DIR... [--out DIR]`` calls)."""
    return write_report(load_results(paths), Path(out_dir))

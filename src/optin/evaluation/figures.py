"""The paper-style figures of an experiment, drawn from its results (``results.json``).

Figures (matplotlib, explicit :class:`~matplotlib.figure.Figure` objects, no pyplot):

* one attacked attribute (paper Fig. 3): X = attacker accuracy on it, Y = target-task accuracy;
  per system (one colour per system key) a circle at (original attacker, T on original), a
  square at (ignorant attacker, T on obfuscated), a star at (informed attacker, T on
  obfuscated) and a small ``x`` at (output-only attacker, T on obfuscated): the leakage floor
  that the permitted output itself implies. Dashed lines: vertical at chance, horizontal at the
  unprotected target accuracy (T on original). A point with a null coordinate is not drawn.
* two attacked attributes (paper Fig. 4): X = accuracy on the first, Y = on the second, the
  same four markers per system from the same attacker, dashed lines at both chance levels.
  With three attacked attributes the figure is drawn for the first two (the same layout); the
  third is in the report's tables.

Error bars (std) are drawn only where a coordinate has several seeds. Artist ids (``gid``),
for tests and for the SVG: ``"<system>/<attacker>"`` for a marker (attacker in
:data:`ATTACKERS`), ``"<system>/<attacker>/errorbar"`` for its error bars, ``"chance/<attribute>"``
and ``"target-original"`` for the dashed lines (``.../<system>`` appended when systems disagree
on the value, the line then in the system's colour).
"""

from __future__ import annotations

import logging
import math
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

from optin.evaluation.results import (
    ATTACKERS,
    attack_of,
    error_of,
    is_number,
    n_seeds,
    stat_of,
    systems_of,
)
from optin.evaluation.systems import SYSTEMS
from optin.files import atomic_output

logger = logging.getLogger(__name__)

MARKERS: dict[str, str] = {"original": "o", "ignorant": "s", "informed": "*", "output_only": "x"}
MARKER_SIZES: dict[str, float] = {"original": 7, "ignorant": 7, "informed": 11, "output_only": 6}
DODGE_POINTS = 7.0  # sideways spacing of markers that share a spot
MARKER_LABELS: dict[str, str] = {
    "original": "original (no protection)",
    "ignorant": "ignorant attacker",
    "informed": "informed attacker",
    "output_only": "output-only attacker (leakage floor)",
}
_SPARE_COLOURS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan",
                  "tab:gray")
_REFERENCE_COLOUR = "0.45"
_SAME = 1e-9  # reference values closer than this are one line


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
    """The colour of a system key, the same in every figure: its spec's (``SYSTEMS``), else
    one drawn from the key."""
    spec = SYSTEMS.get(key)
    if spec is not None and spec.colour is not None:
        return spec.colour
    return _SPARE_COLOURS[zlib.crc32(key.encode("utf-8")) % len(_SPARE_COLOURS)]


def agreement_line(experiment: dict[str, Any]) -> str:
    """One line that gives every system's permitted-task agreement T(X~) = T(X), so a system
    that wrecks the signal cannot pass for a private one."""
    parts = []
    for key, system in systems_of(experiment, sweeps=False).items():
        value = stat_of(system.get("target"), "agreement")
        if value is not None:
            parts.append(f"{system.get('label') or key} {float(value['mean']):.2f}")
    return ("T agreement: " + " · ".join(parts)) if parts else ""


def experiment_points(experiment: dict[str, Any]) -> list[Point]:
    """The markers of an experiment's figure (see the module docstring for the layout)."""
    attacked = experiment["attacked"]
    seeds = n_seeds(experiment)
    points = []
    for key, system in systems_of(experiment, sweeps=False).items():
        first = attack_of(system, attacked[0])
        for attacker in ATTACKERS:
            xs = stat_of(first, attacker)
            if len(attacked) == 1:
                target = system.get("target")
                ys = stat_of(target, "original" if attacker == "original" else "obfuscated")
            else:
                ys = stat_of(attack_of(system, attacked[1]), attacker)
            if xs is None or ys is None:
                continue
            points.append(Point(key, attacker, float(xs["mean"]), float(ys["mean"]),
                                error_of(xs, seeds), error_of(ys, seeds)))
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
    systems = systems_of(experiment)

    def chance(attribute: str) -> dict[str, float]:
        found = {k: stat_of(attack_of(s, attribute), "chance") for k, s in systems.items()}
        return {k: float(v["mean"]) for k, v in found.items() if v is not None}

    lines = _lines_for(chance(attacked[0]), True, f"chance/{attacked[0]}")
    if len(attacked) >= 2:  # a third attribute is in the report's tables only
        return lines + _lines_for(chance(attacked[1]), False, f"chance/{attacked[1]}")
    target = {k: stat_of(s.get("target"), "original") for k, s in systems.items()}
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
    systems = {k: str(s.get("label") or k) for k, s in systems_of(experiment, sweeps=False).items()}
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
                for k in sorted({min(k, 2) for k in kinds})]
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
    return any(s.get("sweep") for s in systems_of(experiment).values())


def has_frontier(experiment: dict[str, Any]) -> bool:
    """Whether to draw the privacy-utility frontier: a sweep, or several opt-in mechanisms
    (the paper's obfuscator, the limit, the templates...) to place against each other."""
    return has_sweep(experiment) or sum(
        key.startswith("opt-in") for key in systems_of(experiment)) > 1


def _frontier_point(system: dict[str, Any], attribute: str, kind: str
                    ) -> tuple[float, float] | None:
    """(T agreement, ``kind`` attacker accuracy on ``attribute``) means, None if missing."""
    x = stat_of(system.get("target"), "agreement")
    y = stat_of(attack_of(system, attribute), kind)
    return None if x is None or y is None else (float(x["mean"]), float(y["mean"]))


def make_frontier_figure(experiment: dict[str, Any]) -> Figure:
    """The privacy-utility frontier of a sweep: one panel per attacked attribute, X = T's
    agreement T(X~) = T(X) on the test split, Y = the strongest informed attacker's accuracy.

    The opt-in variants (and the base opt-in system) are joined by a line in the order of the
    swept value and labelled with it; their output-only attackers (the floor the permitted
    output implies) are small ``x`` joined by a dotted line; every other system is one star,
    joined by a dotted line to its own output-only floor (``x``): the length of that line is
    its excess leakage.
    Dashed: chance. The best place is the bottom right (full agreement, chance leakage).
    """
    attacked = experiment["attacked"]
    systems = systems_of(experiment)
    variants = {k: s for k, s in systems.items() if s.get("sweep")}
    option = next(iter(next(iter(variants.values()))["sweep"])) if variants else None
    base = systems.get("opt-in")
    base_value = (base.get("options") or {}).get(option) if base else None
    chain = sorted(((s["sweep"][option], k, s) for k, s in variants.items()),
                   key=lambda item: float(item[0]))
    if base is not None and variants:
        value = base_value if base_value is not None else "base"
        chain.append((value, "opt-in", base))
        chain.sort(key=lambda item: float(item[0]) if is_number(item[0]) else 1.0)
    seeds = n_seeds(experiment)
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
            if (key == "opt-in" and variants) or system.get("sweep"):
                continue
            point = _frontier_point(system, attribute, "informed")
            if point is None:
                continue
            xerr = error_of(stat_of(system.get("target"), "agreement"), seeds)
            yerr = error_of(stat_of(attack_of(system, attribute), "informed"), seeds)
            marker = ax.errorbar([point[0]], [point[1]], xerr=xerr, yerr=yerr, fmt="*",
                                 color=system_colour(key), markersize=11,
                                 markeredgecolor="black", markeredgewidth=0.6,
                                 label=str(system.get("label") or key))
            marker.lines[0].set_gid(f"frontier/{key}")
            floor = _frontier_point(system, attribute, "output_only")
            if floor is not None:  # the excess: from what T's answers give to what leaks
                ax.plot([floor[0], point[0]], [floor[1], point[1]], ":x",
                        color=system_colour(key), markersize=6,
                        gid=f"frontier/{key}/output_only")
        chance = stat_of(next((attack_of(s, attribute) for s in systems.values()
                             if attack_of(s, attribute)), None), "chance")
        if chance is not None:
            ax.axhline(float(chance["mean"]), linestyle="--", linewidth=1.0,
                       color=_REFERENCE_COLOUR, gid=f"chance/{attribute}", label="chance")
        ax.set_xlabel(f"T agreement ({experiment.get('permitted') or 'target'}), test split")
        ax.set_ylabel(f"strongest informed {attribute} attacker accuracy")
        ax.set_title(f"{attribute}", fontsize="medium")
        ax.grid(True, linewidth=0.3, alpha=0.5)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize="small", frameon=False)
    fig.suptitle(textwrap.fill("Privacy-utility frontier: " + str(
        experiment.get("title") or experiment["name"]), 90), fontsize="medium")
    return fig


def plot_merged(experiments: Sequence[dict[str, Any]], out_base: Path) -> list[Path]:
    """Draw several experiments as subplots of one figure with a shared legend (PNG and SVG)."""
    return save_figure(make_merged_figure(experiments), out_base)



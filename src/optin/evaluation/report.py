"""The experiment report: ``results.json`` in, ``report.md`` and the paper-style figures out.

The results interface is :mod:`optin.evaluation.results`, the figures
:mod:`optin.evaluation.figures`; this module writes the markdown report that shows both.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optin.evaluation.figures import (
    has_frontier,
    make_frontier_figure,
    plot_experiment,
    plot_merged,
    save_figure,
)
from optin.evaluation.results import (
    ATTACK_STATS,
    FAMILY_STATS,
    TARGET_STATS,
    PathLike,
    attack_of,
    format_stat,
    is_number,
    load_results,
    n_seeds,
    stat_of,
    systems_of,
    validate_results,
)
from optin.files import write_text

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
    if not is_number(seconds):
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
    seeds = n_seeds(exp)
    systems = systems_of(exp)
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
    extra = [k for k in dict.fromkeys(k for s in systems.values()
                                 for k in (s.get("target") or {}))
             if k not in TARGET_STATS and k != "unmodified_on_protected"]
    if extra:  # pretrained or several permitted tasks: more than T's accuracy
        lines += ["", f"Target task ({permitted}) on the test split. A pretrained target is "
                  "scored against its own answers on the original audio (T original = 1 by "
                  "definition), per frame for a frame-level task; protected audio as an app "
                  "hears it (obfuscated features through Griffin-Lim; `*_input_phase`: with "
                  "the input's phase, as in training):", ""]
    else:
        lines += ["", f"Target task ({permitted}), T's utterance accuracy on the test split:",
                  ""]
    if any(k.startswith("transfer_") for k in extra):
        lines += ["", "`transfer_<model>_agreement`: a second model of the permitted task that "
                  "no protection saw (another seed of a family, or another family: x-vector "
                  "TDNN, the WebRTC VAD), its answers on protected audio against its own on "
                  "the original; `_accuracy`: against the labels.", ""]
    lines += _table(
        ["system", "T original", "T obfuscated", "agreement", *extra],
        [[_system_name(k, s)] + [format_stat(stat_of(s.get("target"), key), seeds)
                                 for key in (*TARGET_STATS, *extra)]
         for k, s in systems.items()],
    )
    for attribute in exp["attacked"]:
        lines += ["", f"Attacks on `{attribute}` (attacker accuracy on the test split):", ""]
        lines += _table(
            ["system", "chance", "original", "ignorant", "informed", "output-only",
             "excess leakage"],
            [[_system_name(k, s)] + [format_stat(stat_of(attack_of(s, attribute), key), seeds)
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
        attack = attack_of(system, attribute) or {}
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
                        + [format_stat(stat_of(fam, k), seeds) for k in FAMILY_STATS]
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


PAIRINGS = ("original/original", "original/protected", "protected/protected", "semi-informed",
            "output-only")
PAIRING_NAMES = {"original/original": "orig/orig", "original/protected": "orig/prot (ignorant)",
                 "protected/protected": "prot/prot (lazy-informed)",
                 "semi-informed": "semi-informed", "output-only": "output-only (T's answers)"}


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
        unmodified = stat_of(systems[key].get("target"), "unmodified_on_protected")
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
            (f"{format_stat(stat_of(found.get(p), 'eer'), seeds)} / "
             f"{format_stat(stat_of(found.get(p), 'min_dcf'), seeds)}") if found.get(p) else "n/a"
            for p in PAIRINGS])
    if not rows:
        return []
    lines = ["", "Speaker verification (x-vectors, cosine scoring, test-split trials): "
             "EER / minDCF (p_target 0.01); higher EER = better protected. ignorant: original "
             "enrollment, protected trials; lazy-informed: both protected; semi-informed: "
             "extractor retrained on protected training data; output-only: T's answers on the "
             "protected test split scored as embeddings, the verification the permitted task "
             "allows by itself (the floor of any opt-in system).", ""]
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
        if has_frontier(exp):
            save_figure(make_frontier_figure(exp), figures_dir / f"{name}-frontier")
            lines += [f"Privacy-utility frontier of `{exp['name']}` (T agreement against the "
                      "strongest informed attacker, per attacked attribute; other systems as "
                      "single points):", "", f"![frontier](figures/{name}-frontier.png)", ""]

    return write_text(out_dir / "report.md", "\n".join(lines).rstrip() + "\n")


def build_report(paths: Sequence[PathLike] | PathLike, out_dir: PathLike) -> Path:
    """Load results (files or folders), write the report and figures to ``out_dir``; returns
    the report's path (what ``optin report DIR... [--out DIR]`` calls)."""
    return write_report(load_results(paths), Path(out_dir))

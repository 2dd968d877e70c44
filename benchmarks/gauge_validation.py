"""Validate the leakage gauge against the full attacker families on finished experiments.

    python benchmarks/gauge_validation.py RUN_DIR [RUN_DIR ...] [--json OUT]

For every experiment in each ``RUN_DIR/results.json`` and every spectrogram-world system (plus
the unprotected original), the gauge (``optin.evaluation.gauge``) is run on the same protected
data (the system's model folder: an obfuscator or decision-template protector as a feature
transform, or McAdams' protected copy) and set beside the strongest informed attacker of the
families the experiment trained (for the original: the strongest original classifier). Prints a
markdown table, the Spearman rank correlation of gauge and families over all (system,
attribute) points, and the largest amount by which the gauge reads below the families.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from optin.corpora.manifest import Manifest
from optin.evaluation.gauge import leakage_gauge
from optin.privacy.obfuscator import Obfuscator


def ranks(values: list[float]) -> list[float]:
    """Average ranks (1-based), ties sharing their mean rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = torch.tensor(ranks(a)), torch.tensor(ranks(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp_min(1e-12))


def protected_data(experiment: dict[str, Any], key: str, system: dict[str, Any]
                   ) -> tuple[Manifest, Any] | None:
    """(manifest, transform) of a system's protected data; None for the x-vector world."""
    manifest = Manifest.read(experiment["manifest"])
    if system.get("world") == "x-vector":
        return None
    folder = Path(system["models"][0])
    if (folder / "manifest.csv").is_file() and not (folder / "obfuscator").is_dir():
        return Manifest.read(folder / "manifest.csv"), None  # a protected audio copy
    return manifest, Obfuscator.load(folder).obfuscate_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    points: list[dict[str, Any]] = []
    for run in args.runs:
        results = json.loads((run / "results.json").read_text())
        for exp in results["experiments"]:
            attributes = exp["attacked"]
            first = next(iter(exp["systems"].values()))
            for key, system in [*exp["systems"].items(), ("original", None)]:
                if system is None:
                    data = (Manifest.read(exp["manifest"]), None)
                else:
                    data = protected_data(exp, key, system)
                if data is None:
                    continue
                start = time.perf_counter()
                report = leakage_gauge(data[0], attributes, transform=data[1])
                seconds = time.perf_counter() - start
                for attribute in attributes:
                    source = first if system is None else system
                    attack = source["attacks"][attribute]
                    kind = "original" if system is None else "informed"
                    families = {name: f[kind]["mean"]
                                for name, f in (attack.get("families") or {}).items()}
                    best = attack[kind]["mean"]
                    points.append({"experiment": exp["name"], "system": key,
                                   "attribute": attribute, "chance": attack["chance"]["mean"],
                                   "families": families, "strongest": best,
                                   "gauge": report[attribute].informed,
                                   "gauge_seconds": round(seconds, 1)})
    names = sorted({f for p in points for f in p["families"]})
    print("| experiment | system | attribute | chance | " + " | ".join(names)
          + " | strongest | gauge | gauge - strongest |")
    print("|" + "---|" * (6 + len(names)))
    for p in points:
        fams = " | ".join(f"{p['families'].get(n, float('nan')):.3f}" for n in names)
        print(f"| {p['experiment']} | {p['system']} | {p['attribute']} | {p['chance']:.3f} | "
              f"{fams} | {p['strongest']:.3f} | {p['gauge']:.3f} | "
              f"{p['gauge'] - p['strongest']:+.3f} |")
    rho = spearman([p["gauge"] for p in points], [p["strongest"] for p in points])
    shortfall = max(p["strongest"] - p["gauge"] for p in points)
    print(f"\n{len(points)} points; Spearman {rho:.3f}; largest shortfall {shortfall:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"points": points, "spearman": rho,
                                         "largest_shortfall": shortfall}, indent=1))


if __name__ == "__main__":
    main()

"""The commands over run folders of experiments: ``optin experiment`` (run YAML-declared
experiments), ``optin report`` (rebuild the report from stored results) and ``optin demo`` (the
main job)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from optin.cli.common import NON_NEGATIVE, Subcommands, add_command
from optin.files import check_out_dir, prepare_out_dir


def add_experiment(sub: Subcommands) -> None:
    p = add_command(sub, "experiment", _experiment,
            "run experiments declared in YAML: train, attack, aggregate seeds, report")
    p.add_argument("configs", type=Path, nargs="+", help="experiment YAML file(s)")
    p.add_argument("--out", type=Path, required=True, help="run folder (shared, resumable)")
    p.add_argument("--data-root", type=Path, help="folder the configs' corpus paths are under")
    p.add_argument("--seeds", type=NON_NEGATIVE, nargs="+", metavar="SEED",
                   help="run these seeds instead of the configs' (e.g. --seeds 0 first; a "
                        "later run with more seeds reuses every finished model)")


def _experiment(args: argparse.Namespace) -> int:
    from optin.evaluation.experiment import run_experiment
    from optin.evaluation.experiment_config import load_experiments

    configs = load_experiments(args.configs)
    if args.seeds:
        configs = [dataclasses.replace(c, seeds=sorted(set(args.seeds))) for c in configs]
    prepare_out_dir(args.out, "--out")
    for config in configs:
        run_experiment(config, args.out, data_root=args.data_root, progress=not args.quiet,
                       report=False)
    from optin.evaluation.report import build_report

    print(f"results: {args.out / 'results.json'}")
    print(f"report:  {build_report([args.out], args.out)}")
    return 0


def add_report(sub: Subcommands) -> None:
    p = add_command(sub, "report", _report, "rebuild report.md and figures from stored results")
    p.add_argument("dirs", type=Path, nargs="+", help="run folders (results.json) to merge")
    p.add_argument("--out", type=Path, help="where to write (default: the first folder)")


def _report(args: argparse.Namespace) -> int:
    from optin.evaluation.report import write_report
    from optin.evaluation.results import load_results

    check_out_dir(args.out or args.dirs[0], "--out")
    results = load_results(args.dirs)  # every folder read and checked before --out is made
    out = prepare_out_dir(args.out or args.dirs[0], "--out")
    print(f"report: {write_report(results, out)}")
    return 0


def add_demo(sub: Subcommands) -> None:
    p = add_command(sub, "demo", _demo, "run the main job end to end on the built-in corpus")
    p.add_argument("--out", type=Path, default=Path("optin-demo"), help="output folder")


def _demo(args: argparse.Namespace) -> int:
    from optin.demo import run_demo

    prepare_out_dir(args.out, "--out")
    run_demo(args.out, progress=not args.quiet)
    return 0

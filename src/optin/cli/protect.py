"""The commands that write protected audio: ``optin obfuscate`` (a trained obfuscator) and
``optin anonymize`` (a signal-processing baseline)."""

from __future__ import annotations

import argparse
from pathlib import Path

from optin.cli.common import COUNT, Subcommands, add_command
from optin.files import prepare_out_dir


def add_obfuscate(sub: Subcommands) -> None:
    p = add_command(sub, "obfuscate", _obfuscate,
            "obfuscate audio files, or a whole manifest, with a trained obfuscator")
    p.add_argument("--model", type=Path, required=True, help="obfuscator run or checkpoint")
    p.add_argument("inputs", type=Path, nargs="+", help="audio files or one manifest .csv")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--griffin-lim-iters", type=COUNT, default=64)
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail")


def _obfuscate(args: argparse.Namespace) -> int:
    from optin.privacy.corpus import obfuscate_inputs

    prepare_out_dir(args.out_dir)
    report = obfuscate_inputs(args.model, args.inputs, args.out_dir, progress=not args.quiet,
                              griffin_lim_iters=args.griffin_lim_iters,
                              on_error=args.on_error)
    print(report.summary())
    return 0


def add_anonymize(sub: Subcommands) -> None:
    p = add_command(sub, "anonymize", _anonymize,
            "anonymize audio files, or a whole manifest, with a signal-processing baseline")
    p.add_argument("--method", choices=["mcadams"], default="mcadams",
                   help="McAdams pole-angle warping (VoicePrivacy Challenge B2)")
    p.add_argument("inputs", type=Path, nargs="+", help="audio files or one manifest .csv")
    p.add_argument("--out-dir", type=Path, required=True)
    alpha = p.add_mutually_exclusive_group()
    alpha.add_argument("--alpha", type=float, help="fixed McAdams coefficient (default 0.8)")
    alpha.add_argument("--alpha-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                       help="draw alpha from U(LOW, HIGH), e.g. 0.5 0.9 as in the challenge")
    p.add_argument("--per", choices=["speaker", "utterance"], default="utterance",
                   help="with --alpha-range: one draw per speaker or per utterance")
    p.add_argument("--seed", type=int, default=0, help="seed of the alpha draws")
    p.add_argument("--lpc-order", type=int, default=20)
    p.add_argument("--workers", type=COUNT, default=1, help="parallel processes")
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail")


def _anonymize(args: argparse.Namespace) -> int:
    from optin.baselines.anonymize import anonymize_inputs
    from optin.baselines.mcadams import McAdamsConfig

    config = McAdamsConfig(
        alpha=0.8 if args.alpha is None else args.alpha,
        alpha_range=tuple(args.alpha_range) if args.alpha_range else None,
        per=args.per, seed=args.seed, lpc_order=args.lpc_order,
    )
    prepare_out_dir(args.out_dir)
    report = anonymize_inputs(args.inputs, args.out_dir, config, method=args.method,
                              progress=not args.quiet, on_error=args.on_error,
                              workers=args.workers)
    print(report.summary())
    print(f"settings: {config.describe()}")
    return 0

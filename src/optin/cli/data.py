"""``optin data``: import a corpus into a manifest, synthesize the built-in one, split it, fill
its feature cache, summarise it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from optin.cli.common import COUNT, NON_NEGATIVE, SHARE, Subcommands, add_command
from optin.files import prepare_out_dir, prepare_out_file


def add_data_commands(sub: Subcommands) -> None:
    """The ``data`` group and its commands."""
    data = sub.add_parser("data", help="import, synthesize, split and cache corpora")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    _add_import(dsub)
    _add_synth(dsub)
    _add_split(dsub)
    _add_features(dsub)
    _add_info(dsub)


def _add_import(dsub: Subcommands) -> None:
    p = add_command(dsub, "import", _data_import, "import a corpus tree into a manifest CSV")
    p.add_argument("corpus", choices=["ravdess", "emovdb", "emodb", "librispeech", "voxceleb2",
                                      "csv"])
    p.add_argument("src", type=Path, help="corpus root folder (or the CSV file for 'csv')")
    p.add_argument("--out", type=Path, required=True, help="manifest CSV to write")
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail",
                   help="unreadable or empty audio: stop (default) or skip and report")
    p.add_argument("--seed", type=NON_NEGATIVE, default=0, help="seed of the default split")
    p.add_argument("--map", action="append", metavar="COL=SRC_COL",
                   help="csv only: manifest column from a source column (repeatable)")
    p.add_argument("--audio-root", type=Path, help="csv only: folder the audio paths are under")
    p.add_argument("--protocol", choices=["speaker-disjoint", "same-speakers"],
                   help="csv only: split protocol to apply")


def _data_import(args: argparse.Namespace) -> int:
    from optin.corpora.registry import import_corpus

    columns = dict(_pair(item) for item in args.map or [])
    # the csv importer's source table (a corpus tree's audio is checked as it is found)
    prepare_out_file(args.out, inputs=[args.src] if args.src.is_file() else [])
    report = import_corpus(
        args.corpus, args.src, args.out, on_error=args.on_error, seed=args.seed,
        columns=columns or None, audio_root=args.audio_root, protocol=args.protocol,
        progress=not args.quiet,
    )
    print(report.summary())
    return 0


def _pair(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected MANIFEST_COLUMN=SOURCE_COLUMN, got '{text}'")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def _add_synth(dsub: Subcommands) -> None:
    p = add_command(dsub, "synth", _data_synth, "synthesize the built-in eSpeak NG voice corpus")
    p.add_argument("out", type=Path, help="output folder (audio + manifest.csv)")
    p.add_argument("--speakers", type=int,
                   help="number of speakers, alternating female/male (default 24; 8 with --quick)")
    p.add_argument("--sentences", type=int,
                   help="sentences per speaker and emotion (default 10; 6 with --quick)")
    p.add_argument("--workers", type=COUNT,
                   help="synthesis processes (default: by corpus size)")
    p.add_argument("--seed", type=NON_NEGATIVE, default=0)
    p.add_argument("--quick", action="store_true", help="small version for tests and demos")


def _data_synth(args: argparse.Namespace) -> int:
    from optin.corpora.synth import synthesize_corpus

    kwargs = {k: v for k, v in (("speakers", args.speakers), ("sentences", args.sentences))
              if v is not None}
    prepare_out_dir(args.out, "output folder")
    report = synthesize_corpus(args.out, seed=args.seed, quick=args.quick,
                               progress=not args.quiet, workers=args.workers, **kwargs)
    print(report.summary())
    return 0


def _add_split(dsub: Subcommands) -> None:
    p = add_command(dsub, "split", _data_split, "assign train/valid/test with a split protocol")
    p.add_argument("manifest", type=Path)
    p.add_argument("--protocol", required=True, choices=["speaker-disjoint", "same-speakers"])
    p.add_argument("--test-fraction", type=SHARE, default=0.2)
    p.add_argument("--valid-fraction", type=SHARE, default=0.1)
    p.add_argument("--seed", type=NON_NEGATIVE, default=0)
    p.add_argument("--keep-test", action="store_true",
                   help="keep rows already marked test; divide the rest into train/valid")
    p.add_argument("--out", type=Path, help="write here instead of over the manifest")


def _data_split(args: argparse.Namespace) -> int:
    from optin.corpora import Manifest, assign_split, split_summary

    manifest = Manifest.read(args.manifest, check_files=False)
    result = assign_split(
        manifest, args.protocol, test_fraction=args.test_fraction,
        valid_fraction=args.valid_fraction, seed=args.seed, keep_test=args.keep_test,
    )
    # writing over the manifest is the default: --out only moves the result elsewhere
    out = result.write(prepare_out_file(args.out, inputs=()) if args.out else args.manifest)
    for name, info in split_summary(result).items():
        print(f"{name}: {info['rows']} utterances, {info['speakers']} speakers")
    print(f"written to {out}")
    return 0


def _add_features(dsub: Subcommands) -> None:
    p = add_command(dsub, "features", _data_features, "compute (or resume) the spectrogram cache")
    p.add_argument("manifest", type=Path)
    p.add_argument("--cache-dir", type=Path, help="default: .optin_cache beside the manifest")
    p.add_argument("--workers", type=COUNT, help="parallel processes (default: CPU count)")
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail")


def _data_features(args: argparse.Namespace) -> int:
    from optin.corpora import Manifest
    from optin.corpora.feature_cache import FeatureCache
    from optin.errors import refuse_all_failed

    manifest = Manifest.read(args.manifest)
    cache = FeatureCache.for_manifest(manifest, root=args.cache_dir)
    report = cache.fill(manifest, workers=args.workers, progress=not args.quiet)
    print(report.summary())
    print(f"cache: {cache.dir}")
    refuse_all_failed(report.failed, report.computed + report.reused, "rows",
                      "no features were computed")
    if report.failed and args.on_error == "fail":
        print(f"error: {len(report.failed)} file(s) failed (use --on-error skip to go on)",
              file=sys.stderr)
        return 1
    return 0


def _add_info(dsub: Subcommands) -> None:
    p = add_command(dsub, "info", _data_info, "summarise a manifest")
    p.add_argument("manifest", type=Path)
    p.add_argument("--no-check", action="store_true", help="do not check the audio files exist")


def _data_info(args: argparse.Namespace) -> int:
    from optin.corpora import Manifest, split_summary

    manifest = Manifest.read(args.manifest, check_files=not args.no_check)
    print(f"{manifest.source}: {len(manifest)} utterances, columns: {', '.join(manifest.columns)}")
    for col in ("speaker", "gender", "emotion"):
        if col in manifest.columns:
            counts = manifest.counts(col)
            shown = ", ".join(f"{k or '?'}={v}" for k, v in sorted(counts.items())[:12])
            more = f" ... ({len(counts)} values)" if len(counts) > 12 else ""
            print(f"  {col}: {shown}{more}")
    if "split" in manifest.columns:
        for name, info in split_summary(manifest).items():
            print(f"  {name}: {info['rows']} utterances, {info['speakers']} speakers")
    return 0

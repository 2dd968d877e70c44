"""The commands that measure what a model or an attacker gets: ``optin eval`` (a classifier on a
split), ``optin content`` (the content attack, a word error rate) and ``optin gauge`` (the
leakage gauge's fast informed attackers)."""

from __future__ import annotations

import argparse
from pathlib import Path

from optin.cli.common import COUNT, NON_NEGATIVE, Subcommands, add_command
from optin.files import prepare_out_file


def add_eval(sub: Subcommands) -> None:
    p = add_command(sub, "eval", _eval, "evaluate a classifier on a split of a manifest")
    p.add_argument("--obfuscator", type=Path, help="evaluate on input obfuscated by this model")
    p.add_argument("--model", type=Path, required=True, help="checkpoint folder")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir", type=Path)


def _eval(args: argparse.Namespace) -> int:
    import json

    from optin.training.classifier import evaluate_classifier

    transform = None
    if args.obfuscator is not None:
        from optin.privacy.obfuscator import Obfuscator
        from optin.training.classifier import Classifier

        obfuscator = Obfuscator.load(args.obfuscator)
        Classifier.load(args.model, features=obfuscator.features)  # same features, or refuse
        transform = obfuscator.obfuscate_features
    result = evaluate_classifier(args.model, args.manifest, split=args.split,
                                 progress=not args.quiet, cache_root=args.cache_dir,
                                 device=args.device, transform=transform)
    result["obfuscator"] = str(args.obfuscator) if args.obfuscator else None
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"model {result['model']} on split '{result['split']}' "
          f"({result['utterances']} utterances, {result['segments']} segments), "
          f"attribute '{result['attribute']}'"
          + (f", input obfuscated by {args.obfuscator}" if args.obfuscator else ""))
    print(f"  segment accuracy   {result['segment_accuracy']:.4f}")
    print(f"  utterance accuracy {result['utterance_accuracy']:.4f}")
    print(f"  balanced accuracy  {result['balanced_accuracy']:.4f}")
    print(f"  chance (majority)  {result['chance']:.4f}")
    classes = result["classes"]
    width = max(8, *(len(c) for c in classes))
    print("  confusion (rows: true, columns: predicted)")
    print("  " + " " * width + " " + " ".join(f"{c[:width]:>{width}}" for c in classes))
    for name, row in zip(classes, result["confusion"], strict=True):
        print(f"  {name:>{width}} " + " ".join(f"{v:>{width}}" for v in row))
    return 0


def add_content(sub: Subcommands) -> None:
    p = add_command(sub, "content", _content,
            "content attack: word error rate of an offline recognizer (pocketsphinx, US "
            "English) on original and protected audio")
    p.add_argument("original", type=Path, help="manifest of the original corpus")
    p.add_argument("--protected", type=Path,
                   help="manifest of its protected copy, with the same ids (e.g. written by "
                        "optin obfuscate or optin anonymize)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--limit", type=COUNT, help="attack only the first N rows of the split")
    p.add_argument("--json", type=Path, metavar="OUT.json", help="also write the report here")


def _content(args: argparse.Namespace) -> int:
    from optin.corpora.manifest import Manifest
    from optin.evaluation.content import content_attack
    from optin.files import write_json

    original = Manifest.read(args.original, check_files=False)
    protected = Manifest.read(args.protected, check_files=False) if args.protected else None
    if args.json:
        prepare_out_file(args.json, "--json", inputs=[*original.files(),
                                                      *(protected.files() if protected else [])])
    report = content_attack(original, protected, split=args.split, limit=args.limit,
                            progress=not args.quiet)
    if args.json:
        write_json(args.json, report.to_dict())
    print(report.format())
    return 0


def add_gauge(sub: Subcommands) -> None:
    p = add_command(sub, "gauge", _gauge,
            "leakage gauge: fast informed attackers (logistic and one-hidden-layer heads on "
            "utterance statistics) per attribute, on a manifest or through an obfuscator")
    p.add_argument("manifest", type=Path,
                   help="manifest with train/test (and valid) splits; a protected copy works too")
    p.add_argument("--attribute", action="append", required=True,
                   help="manifest column to attack (repeat for several)")
    p.add_argument("--obfuscator", type=Path,
                   help="gauge the features obfuscated by this model, beside the original ones")
    p.add_argument("--seed", type=NON_NEGATIVE, default=0, help="seed of the MLP heads")
    p.add_argument("--cache-dir", type=Path, help="default: .optin_cache beside the manifest")
    p.add_argument("--json", type=Path, metavar="OUT.json", help="also write the report here")


def _gauge(args: argparse.Namespace) -> int:
    from optin.checkpoint import checkpoint_files
    from optin.evaluation.gauge import leakage_gauge
    from optin.files import write_json

    if args.json:
        read = [args.manifest, *(checkpoint_files(args.obfuscator) if args.obfuscator else [])]
        prepare_out_file(args.json, "--json", inputs=read)
    transform = features = None
    if args.obfuscator is not None:
        from optin.privacy.obfuscator import Obfuscator

        obfuscator = Obfuscator.load(args.obfuscator)
        transform, features = obfuscator.obfuscate_features, obfuscator.features
    report = leakage_gauge(args.manifest, args.attribute, transform=transform, seed=args.seed,
                           cache=args.cache_dir, features=features, progress=not args.quiet)
    if args.json:
        write_json(args.json, {**report.to_dict(), "obfuscator":
                               str(args.obfuscator) if args.obfuscator else None})
    print(report.format())
    return 0

"""The ``optin`` command line: argument parsing only; every command is one call into the API.

Logs and progress go to stderr; results that scripts read go to stdout. Exit status:

* 0: done.
* 2: an error about the user's input, files or settings (:class:`optin.errors.OptinError`) or
  the file system (``OSError``: no space, no permission...): one line on stderr,
  ``error: <path or field>: <cause>``. Any other exception is a bug and keeps its traceback;
  ``OPTIN_DEBUG=1`` shows the traceback for every error.
* 130: interrupted (Ctrl-C); rerunning the same command resumes.
* 143: terminated (SIGTERM, e.g. ``kill``) while writing: cleaned up as for Ctrl-C, the
  partial file removed (:func:`optin.files.sigterm_as_interrupt`).
* 141: stdout was closed early (``optin data info m.csv | head``): the output stops quietly,
  as for a program killed by SIGPIPE (128 + 13), which is what shells report for them.

Every command that writes checks its output folder first (:func:`optin.files.prepare_out_dir`),
so a path under a file, a read-only or special file system fails at once, naming the path; one
that writes a single file names all it reads (:func:`optin.files.prepare_out_file`), so its
output never replaces one of its inputs. Options that do not apply to what was asked are
refused, not ignored.

Each command imports its modules when it runs (the one place where optin imports inside
functions): ``optin --help`` and a mistyped option answer at once instead of loading torch,
onnx and scipy first (about 5 s). The training commands' options are generated from their
config classes (:func:`add_settings`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path

from optin import __version__
from optin.errors import ConfigError, OptinError
from optin.files import Terminated, check_out_dir, prepare_out_dir, prepare_out_file
from optin.settings import SAMPLE_RATES, Rule, Setting, above, at_least, between, settings_of


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


def _data_synth(args: argparse.Namespace) -> int:
    from optin.corpora.synth import synthesize_corpus

    kwargs = {k: v for k, v in (("speakers", args.speakers), ("sentences", args.sentences))
              if v is not None}
    prepare_out_dir(args.out, "output folder")
    report = synthesize_corpus(args.out, seed=args.seed, quick=args.quick,
                               progress=not args.quiet, workers=args.workers, **kwargs)
    print(report.summary())
    return 0


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


def _train_classifier(args: argparse.Namespace) -> int:
    from optin.training.classifier import ClassifierTrainConfig, preset_config, train_classifier

    config = preset_config(args.attribute, args.preset, role=args.role,
                           **settings_given(args, ClassifierTrainConfig, CLASSIFIER_OWN_OPTIONS))
    prepare_out_dir(args.out, "--out")
    final = train_classifier(args.manifest, config, args.out, progress=not args.quiet,
                             cache_root=args.cache_dir)
    valid = final["metrics"]["valid"]
    print(f"{args.out}: {config.role} for '{args.attribute}', selected epoch "
          f"{final['training']['best_epoch']}, valid utterance accuracy "
          f"{valid['utterance_accuracy']:.3f} (chance {valid['chance']:.3f}); "
          f"{final['training']['stopped']}")
    return 0


def _train_obfuscator(args: argparse.Namespace) -> int:
    from optin.training.obfuscator import train_obfuscator
    from optin.training.obfuscator_config import ObfuscatorTrainConfig, obfuscator_preset
    from optin.training.permitted import load_tasks

    config = obfuscator_preset(args.preset, **settings_given(args, ObfuscatorTrainConfig))
    targets = target_choices_of(args)
    check_out_dir(args.out, "--out")
    load_tasks(targets)  # every target loaded and probed once before --out is touched
    prepare_out_dir(args.out, "--out")
    train_obfuscator(args.manifest, targets, args.out, config, progress=not args.quiet,
                     cache_root=args.cache_dir)
    return 0


def _train_templates(args: argparse.Namespace) -> int:
    from optin.training.decision_templates import TemplateTrainConfig, fit_decision_templates

    config = TemplateTrainConfig(**settings_given(args, TemplateTrainConfig))
    prepare_out_dir(args.out, "--out")
    final = fit_decision_templates(args.manifest, args.target, args.out, config,
                                   progress=not args.quiet)
    student = final["decider"]["student"]
    print(f"{args.out}: templates of {len(final['target_decisions'])} classes, T agrees on "
          f"{final['training']['grid_agreement']:.3f} of the grid; decider "
          f"{final['decider']['kind']} ({final['decider']['parameters']:,} parameters"
          + (f", agreement with T on held-out audio {student['agreement']:.3f}" if student
             else "") + ")")
    return 0


def _per_item(values: list | None, count: int, default: object, flag: str) -> list:
    """One value per item from a repeated option: none (default), one for all, or one each."""
    if not values:
        return [default] * count
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise ConfigError(f"{flag}: give it once for all or once per target ({count}), got "
                          f"{len(values)}")
    return values


def target_choices_of(args: argparse.Namespace) -> list:
    """The permitted tasks of ``optin train obfuscator`` from its --target* options."""
    from optin.training.permitted import TargetChoice

    sources = list(args.target)
    files = [s for s in sources if not Path(s).is_dir()]
    weights = _per_item(args.target_weight, len(sources), 1.0, "--target-weight")
    inputs = iter(_per_item(args.target_input, len(files), "waveform", "--target-input"))
    adapters = iter(_per_item(args.target_adapter, len(files), "logits", "--target-adapter"))
    return [TargetChoice(s, w) if Path(s).is_dir() else
            TargetChoice(s, w, next(inputs), next(adapters))
            for s, w in zip(sources, weights, strict=True)]


def _obfuscate(args: argparse.Namespace) -> int:
    from optin.privacy.corpus import obfuscate_inputs

    prepare_out_dir(args.out_dir)
    report = obfuscate_inputs(args.model, args.inputs, args.out_dir, progress=not args.quiet,
                              griffin_lim_iters=args.griffin_lim_iters,
                              on_error=args.on_error)
    print(report.summary())
    return 0


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


def _report(args: argparse.Namespace) -> int:
    from optin.evaluation.report import build_report

    out = prepare_out_dir(args.out or args.dirs[0], "--out")
    print(f"report: {build_report(args.dirs, out)}")
    return 0


def _stream(args: argparse.Namespace) -> int:
    from optin.deploy.stream_io import stream_command

    stream_command(args.model, source=args.input, output=args.output, chunk_ms=args.chunk_ms,
                   rate=args.rate, window_ms=args.window_ms, phase=args.phase,
                   seconds=args.seconds)
    return 0


def _export(args: argparse.Namespace) -> int:
    import json

    from optin.checkpoint import checkpoint_files
    from optin.deploy.export import export_onnx

    if (args.check_target is None) != (args.manifest is None):
        raise ConfigError("--check-target and --manifest go together")
    read = [args.model, args.check_target, args.calibration, args.manifest]
    prepare_out_file(args.out, inputs=[f for p in read if p for f in checkpoint_files(p)])
    if args.streaming:
        from optin.deploy.stream_graph import export_streaming

        meta = export_streaming(args.model, args.out, int8=args.int8,
                                calibration=args.calibration)
        print(json.dumps({"export": meta}) if args.json else
              f"wrote {args.out}: {meta['graph']} graph, {meta['quantization']}; inputs "
              f"{meta['input']}; look-ahead {meta['lookahead']} frames")
        return 0
    report = export_onnx(args.model, args.out, int8=args.int8, calibration=args.calibration,
                         include_frontend=not args.features_only, int8_layers=args.int8_layers)
    result: dict = {"export": report.to_dict()}
    if args.check_target is not None:
        from optin.deploy.agreement import int8_agreement

        result["int8_agreement"] = int8_agreement(
            args.model, args.check_target, args.manifest, split=args.split,
            calibration=args.calibration, cache_root=args.cache_dir, layers=args.int8_layers)
    if args.json:
        print(json.dumps(result))
        return 0
    print(report.summary())
    if "int8_agreement" in result:
        check = result["int8_agreement"]
        print(f"target '{check['attribute']}' on {check['utterances']} {check['split']} "
              f"utterances: int8 agrees with float32 on "
              f"{check['agreement_int8_vs_float32']:.2%}, float32 ONNX with PyTorch on "
              f"{check['agreement_onnx_vs_torch']:.2%}; accuracy torch "
              f"{check['target_accuracy_torch']:.3f}, float32 "
              f"{check['target_accuracy_float32']:.3f}, int8 {check['target_accuracy_int8']:.3f}"
              f"; int8 feature error {check['int8_rel_rms_error']:.3f} (relative RMS)")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import json

    if args.streaming:
        from optin.deploy.stream_bench import bench_streaming, format_stream_bench

        result = bench_streaming(args.model, backend=args.backend or "all",
                                 threads=args.threads or 1, seconds=args.seconds or 10.0,
                                 chunk_ms=args.chunk_ms, repeats=args.repeats or 5,
                                 calibration=args.calibration)
        print(json.dumps(result) if args.json else format_stream_bench(result))
        return 0
    from optin.deploy.bench import bench, format_bench

    result = bench(args.model, backend=args.backend or "torch", device=args.device,
                   threads=args.threads, batch=args.batch, seconds=args.seconds or 1.0,
                   repeats=args.repeats or 20, warmup=args.warmup, calibration=args.calibration)
    print(json.dumps(result) if args.json else format_bench(result))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from optin.demo import run_demo

    prepare_out_dir(args.out, "--out")
    run_demo(args.out, progress=not args.quiet)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from optin.serve.web import serve_folder

    serve_folder(args.run_dir, host=args.host, port=args.port, experiment=args.experiment)
    return 0


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


def _pair(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected MANIFEST_COLUMN=SOURCE_COLUMN, got '{text}'")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def _ranged(kind: type, rule: Rule) -> Callable[[str], object]:
    """An argparse type: a ``kind`` within ``rule``; argparse's error names the option. (Options
    that set a training or McAdams config are checked by the config: a ConfigError.)"""
    setting = Setting("value", kind, rule)

    def parse(text: str) -> object:
        try:
            value: object = kind(text)
        except ValueError:
            value = text
        problem = setting.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = kind.__name__
    return parse


COUNT = _ranged(int, at_least(1))  # processes, threads, repetitions, iterations
SAMPLE_RATE = _ranged(int, SAMPLE_RATES)  # Hz: the one accepted range (4 kHz to 384 kHz)
NON_NEGATIVE = _ranged(int, at_least(0))  # seeds, warm-up runs
POSITIVE = _ranged(float, above(0))  # durations
SHARE = _ranged(float, between(0, 1, high_open=True))  # split fractions
WEIGHT = _ranged(float, at_least(0))  # loss weights


# ClassifierTrainConfig fields set otherwise: --attribute (required) and the sub-command (role)
CLASSIFIER_OWN_OPTIONS = ("attribute", "role")


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")
    return text == "on"


def add_settings(parser: argparse.ArgumentParser, cls: type, exclude: Sequence[str] = (),
                 aliases: dict[str, tuple[str, ...]] | None = None) -> None:
    """One option per setting of the dataclass ``cls``: ``--field-name``, typed by the field's
    annotation (a Literal gives choices; a bool that defaults to False a switch, one that
    defaults to True ``on``/``off``), help from ``cls.HELP``. Every option defaults to None (the
    preset's value); the config checks the ranges. A new field is a new option, with no edit
    here. Fields of other types (the feature settings) are left to the config."""
    helps = getattr(cls, "HELP", {})
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for name, setting in settings_of(cls, exclude=exclude).items():
        flags = [f"--{name.replace('_', '-')}", *(aliases or {}).get(name, ())]
        common: dict[str, object] = {"dest": name, "help": helps.get(name)}
        kinds = [k for k in typing.get_args(setting.type) if k is not type(None)] or [
            setting.type]
        if typing.get_origin(setting.type) is typing.Literal:
            parser.add_argument(*flags, choices=list(typing.get_args(setting.type)), **common)
        elif setting.type is bool and defaults[name] is False:
            parser.add_argument(*flags, action="store_const", const=True, **common)
        elif setting.type is bool:
            parser.add_argument(*flags, type=_on_off, metavar="{on,off}", **common)
        elif len(kinds) == 1 and kinds[0] in (int, float, str):
            parser.add_argument(*flags, type=kinds[0], **common)


def settings_given(args: argparse.Namespace, cls: type, exclude: Sequence[str] = ()
                   ) -> dict[str, object]:
    """The settings of ``cls`` given on the command line (the options :func:`add_settings`
    made, with the same ``exclude``, that were used)."""
    return {name: getattr(args, name) for name in settings_of(cls, exclude=exclude)
            if getattr(args, name, None) is not None}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser (one sub-parser per command).

    The training commands' options come from their config classes (:func:`add_settings`),
    whose modules load torch; given the ``argv`` about to be parsed, they are added only when
    the command is ``train``, so that ``optin --help`` and the other commands start without it.
    Without ``argv``, the full parser.
    """
    command = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    training = argv is None or command == "train"
    parser = argparse.ArgumentParser(
        prog="optin", description="Opt-in privacy protection for audio."
    )
    parser.add_argument("--version", action="version", version=f"optin {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(parent, name: str, func: Callable, help: str) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help, description=help)
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        p.set_defaults(func=func)
        return p

    data = sub.add_parser("data", help="import, synthesize, split and cache corpora")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")

    p = add(dsub, "import", _data_import, "import a corpus tree into a manifest CSV")
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

    p = add(dsub, "synth", _data_synth, "synthesize the built-in eSpeak NG voice corpus")
    p.add_argument("out", type=Path, help="output folder (audio + manifest.csv)")
    p.add_argument("--speakers", type=int,
                   help="number of speakers, alternating female/male (default 24; 8 with --quick)")
    p.add_argument("--sentences", type=int,
                   help="sentences per speaker and emotion (default 10; 6 with --quick)")
    p.add_argument("--workers", type=COUNT,
                   help="synthesis processes (default: by corpus size)")
    p.add_argument("--seed", type=NON_NEGATIVE, default=0)
    p.add_argument("--quick", action="store_true", help="small version for tests and demos")

    p = add(dsub, "split", _data_split, "assign train/valid/test with a split protocol")
    p.add_argument("manifest", type=Path)
    p.add_argument("--protocol", required=True, choices=["speaker-disjoint", "same-speakers"])
    p.add_argument("--test-fraction", type=SHARE, default=0.2)
    p.add_argument("--valid-fraction", type=SHARE, default=0.1)
    p.add_argument("--seed", type=NON_NEGATIVE, default=0)
    p.add_argument("--keep-test", action="store_true",
                   help="keep rows already marked test; divide the rest into train/valid")
    p.add_argument("--out", type=Path, help="write here instead of over the manifest")

    p = add(dsub, "features", _data_features, "compute (or resume) the spectrogram cache")
    p.add_argument("manifest", type=Path)
    p.add_argument("--cache-dir", type=Path, help="default: .optin_cache beside the manifest")
    p.add_argument("--workers", type=COUNT, help="parallel processes (default: CPU count)")
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail")

    p = add(dsub, "info", _data_info, "summarise a manifest")
    p.add_argument("manifest", type=Path)
    p.add_argument("--no-check", action="store_true", help="do not check the audio files exist")

    train = sub.add_parser("train", help="train a model")
    tsub = train.add_subparsers(dest="train_command", required=True, metavar="MODEL")
    for role, text in (("target", "train the target model T (a DeepSpeech2 classifier)"),
                       ("attacker", "train an attacker (the same classifier on other data)")):
        p = add(tsub, role, _train_classifier, text)
        p.set_defaults(role=role)
        p.add_argument("--manifest", type=Path, required=True)
        p.add_argument("--attribute", required=True, help="manifest column to classify")
        p.add_argument("--out", type=Path, required=True, help="run / checkpoint folder")
        p.add_argument("--preset", choices=["quick", "paper"], default="quick")
        if training:
            from optin.training.classifier import ClassifierTrainConfig

            add_settings(p, ClassifierTrainConfig, exclude=CLASSIFIER_OWN_OPTIONS)
        p.add_argument("--cache-dir", type=Path)

    p = add(tsub, "templates", _train_templates,
            "fit the decision-template protector (the opt-in limit, or its student)")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--target", type=Path, required=True,
                   help="the DeepSpeech2 target folder (optin train target)")
    p.add_argument("--out", type=Path, required=True)
    if training:
        from optin.training.decision_templates import TemplateTrainConfig

        add_settings(p, TemplateTrainConfig)

    p = add(tsub, "obfuscator", _train_obfuscator,
            "train the opt-in obfuscator against a deobfuscator (works under torchrun)")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--target", "--target-model", dest="target", action="append", required=True,
                   metavar="TARGET",
                   help="a permitted task (repeat for several; L_t is their weighted sum): a "
                        "DeepSpeech2 target folder (optin train target), a TorchScript or ONNX "
                        "file (the app's own model), or silero-vad (Silero VAD from its wheel)")
    p.add_argument("--target-input", action="append", choices=["waveform", "spectrogram"],
                   help="what a file target reads (default waveform; once for all, or once per "
                        "file target)")
    p.add_argument("--target-adapter", action="append",
                   choices=["logits", "frame-logits", "frame-probability", "silero-vad"],
                   help="how a file target's output becomes class scores (default logits: "
                        "(B, K) per utterance; once for all, or once per file target)")
    p.add_argument("--target-weight", action="append", type=WEIGHT,
                   help="w_i of each target in L_t (default 1; once for all, or once per target)")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--preset", choices=["quick", "paper"], default="quick")
    if training:
        from optin.training.obfuscator_config import ObfuscatorTrainConfig

        add_settings(p, ObfuscatorTrainConfig, aliases={"obfuscator_residual": ("--residual",)})
    p.add_argument("--cache-dir", type=Path)

    p = add(sub, "obfuscate", _obfuscate,
            "obfuscate audio files, or a whole manifest, with a trained obfuscator")
    p.add_argument("--model", type=Path, required=True, help="obfuscator run or checkpoint")
    p.add_argument("inputs", type=Path, nargs="+", help="audio files or one manifest .csv")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--griffin-lim-iters", type=COUNT, default=64)
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail")

    p = add(sub, "eval", _eval, "evaluate a classifier on a split of a manifest")
    p.add_argument("--obfuscator", type=Path, help="evaluate on input obfuscated by this model")
    p.add_argument("--model", type=Path, required=True, help="checkpoint folder")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir", type=Path)

    p = add(sub, "experiment", _experiment,
            "run experiments declared in YAML: train, attack, aggregate seeds, report")
    p.add_argument("configs", type=Path, nargs="+", help="experiment YAML file(s)")
    p.add_argument("--out", type=Path, required=True, help="run folder (shared, resumable)")
    p.add_argument("--data-root", type=Path, help="folder the configs' corpus paths are under")
    p.add_argument("--seeds", type=NON_NEGATIVE, nargs="+", metavar="SEED",
                   help="run these seeds instead of the configs' (e.g. --seeds 0 first; a "
                        "later run with more seeds reuses every finished model)")

    p = add(sub, "report", _report, "rebuild report.md and figures from stored results")
    p.add_argument("dirs", type=Path, nargs="+", help="run folders (results.json) to merge")
    p.add_argument("--out", type=Path, help="where to write (default: the first folder)")

    p = add(sub, "anonymize", _anonymize,
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

    p = add(sub, "stream", _stream,
            "obfuscate a stream chunk by chunk: a file, raw PCM on stdin, or a microphone")
    p.add_argument("--model", type=Path, required=True, help="obfuscator run or checkpoint")
    p.add_argument("--input", default="-",
                   help="audio file, '-' for raw 16-bit mono PCM on stdin (default), or 'mic'")
    p.add_argument("--output", default="-",
                   help="audio file (.wav, .flac, .ogg, .mp3, .aiff or .au: the format follows "
                        "the suffix), or '-' for raw 16-bit PCM on stdout (default)")
    p.add_argument("--chunk-ms", type=POSITIVE,
                   help="audio per network run: the paper's obfuscator 100 (rounded up to 40 ms "
                        "steps), a causal one 10 (any multiple of 10 ms)")
    p.add_argument("--rate", type=SAMPLE_RATE, metavar="HZ",
                   help="sample rate of raw PCM / microphone input and raw PCM output, "
                        "4000 to 384000 (default 16000; refused when input and output are "
                        "files)")
    p.add_argument("--window-ms", type=POSITIVE,
                   help="frames per network run (default: the least that covers the "
                        "receptive field)")
    p.add_argument("--phase", choices=["input", "griffin-lim"],
                   help="resynthesis phase: the input's own, or per-chunk Griffin-Lim (default: "
                        "the input's only when the permitted task is speaker identity)")
    p.add_argument("--seconds", type=POSITIVE, help="with --input mic: stop after this long")

    p = add(sub, "export", _export,
            "export an obfuscator to ONNX (float32 or int8) for on-device use")
    p.add_argument("--model", type=Path, required=True, help="obfuscator run or checkpoint")
    p.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--int8", action="store_true",
                   help="static int8 quantization, calibrated on --calibration")
    p.add_argument("--int8-layers", choices=["spatial", "all"], default="spatial",
                   help="quantize the heavy 2-D convs only (default; keeps the target's "
                        "answers) or every conv (faster)")
    p.add_argument("--calibration", type=Path,
                   help="manifest whose train rows calibrate int8 (default: the obfuscator's "
                        "training manifest)")
    p.add_argument("--streaming", action="store_true",
                   help="a causal obfuscator's stream step: one chunk + the state in, the "
                        "obfuscated frames + the new state out")
    p.add_argument("--features-only", action="store_true",
                   help="graph from normalised features (B, 161, T) instead of the waveform")
    p.add_argument("--check-target", type=Path, metavar="TARGET",
                   help="also measure how often the target's predictions on int8-obfuscated "
                        "input match float32 (needs --manifest)")
    p.add_argument("--manifest", type=Path, help="manifest for --check-target")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--cache-dir", type=Path, help="feature cache for --check-target")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")

    p = add(sub, "bench", _bench,
            "time the obfuscator per second of audio, beside the paper's Table 1")
    p.add_argument("--model", type=Path,
                   help="obfuscator run or checkpoint (default: untrained, paper size)")
    p.add_argument("--backend", choices=["torch", "onnx", "onnx-int8", "all"],
                   help="'all' compares them and reports the fastest (default torch; "
                        "with --streaming all)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=COUNT, help="intra-op threads (default: all cores)")
    p.add_argument("--batch", type=COUNT, default=1, help="waveforms per call (throughput)")
    p.add_argument("--seconds", type=POSITIVE,
                   help="length of each waveform (default 1; with --streaming 10)")
    p.add_argument("--repeats", type=COUNT, help="timed calls (default 20; --streaming 5)")
    p.add_argument("--warmup", type=NON_NEGATIVE, default=3)
    p.add_argument("--calibration", type=Path, help="manifest for onnx-int8 calibration")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--streaming", action="store_true",
                   help="time a stream chunk by chunk (compute per second of audio, push "
                        "latency; default 10 s of audio, 1 thread, 5 repeats)")
    p.add_argument("--chunk-ms", type=POSITIVE, help="with --streaming: the chunk (default: "
                   "10 for a causal obfuscator, 100 for the paper's)")

    p = add(sub, "demo", _demo, "run the main job end to end on the built-in corpus")
    p.add_argument("--out", type=Path, default=Path("optin-demo"), help="output folder")

    p = add(sub, "serve", _serve, "a local web page to hear, see and test a run's protection")
    p.add_argument("run_dir", nargs="?", type=Path, default=Path("optin-demo"), metavar="RUN_DIR",
                   help="an `optin demo` or `optin experiment` folder (default: optin-demo)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    p.add_argument("--port", type=_ranged(int, between(1, 65535)), default=8000)
    p.add_argument("--experiment", help="which experiment of the run (default: the largest)")

    p = add(sub, "content", _content,
            "content attack: word error rate of an offline recognizer (pocketsphinx, US "
            "English) on original and protected audio")
    p.add_argument("original", type=Path, help="manifest of the original corpus")
    p.add_argument("--protected", type=Path,
                   help="manifest of its protected copy, with the same ids (e.g. written by "
                        "optin obfuscate or optin anonymize)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--limit", type=COUNT, help="attack only the first N rows of the split")
    p.add_argument("--json", type=Path, metavar="OUT.json", help="also write the report here")

    p = add(sub, "gauge", _gauge,
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
    return parser


def error_line(err: OptinError | OSError) -> str:
    """One line for an error: the message, or for an OSError the file(s) and the cause."""
    if isinstance(err, OSError) and not isinstance(err, OptinError):
        cause = err.strerror or str(err) or type(err).__name__
        names = [str(n) for n in (err.filename, err.filename2) if n is not None]
        text = f"{' -> '.join(names)}: {cause}" if names else cause
    else:
        text = str(err) or type(err).__name__
    return "error: " + " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``optin`` program (exit statuses in the module docstring)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    debug = bool(os.environ.get("OPTIN_DEBUG"))
    try:
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return status
    except BrokenPipeError:
        _silence_stdout()
        return 141
    except (OptinError, OSError) as err:
        if debug:
            raise
        print(error_line(err), file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        how = "terminated" if isinstance(err, Terminated) else "interrupted"
        print(f"{how}; rerun the same command to resume", file=sys.stderr)
        return 143 if isinstance(err, Terminated) else 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the flush at exit does not fail on the closed pipe."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # replaced by a test harness
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())

"""``optin train``: the target and attacker classifiers, the decision-template protector and the
opt-in obfuscator. Their settings' options are generated from the config classes
(:func:`optin.cli.common.add_settings`), whose modules load torch: ``training`` False leaves
them out, for a parser that is not about to parse a ``train`` command."""

from __future__ import annotations

import argparse
from pathlib import Path

from optin.cli.common import WEIGHT, Subcommands, add_command, add_settings, settings_given
from optin.errors import ConfigError
from optin.files import check_out_dir, prepare_out_dir

# ClassifierTrainConfig fields set otherwise: --attribute (required) and the sub-command (role)
CLASSIFIER_OWN_OPTIONS = ("attribute", "role")


def add_train_commands(sub: Subcommands, training: bool = True) -> None:
    """The ``train`` group and its commands (with their settings' options when ``training``)."""
    train = sub.add_parser("train", help="train a model")
    tsub = train.add_subparsers(dest="train_command", required=True, metavar="MODEL")
    _add_classifiers(tsub, training)
    _add_templates(tsub, training)
    _add_obfuscator(tsub, training)


def _add_classifiers(tsub: Subcommands, training: bool) -> None:
    for role, text in (("target", "train the target model T (a DeepSpeech2 classifier)"),
                       ("attacker", "train an attacker (the same classifier on other data)")):
        p = add_command(tsub, role, _train_classifier, text)
        p.set_defaults(role=role)
        p.add_argument("--manifest", type=Path, required=True)
        p.add_argument("--attribute", required=True, help="manifest column to classify")
        p.add_argument("--out", type=Path, required=True, help="run / checkpoint folder")
        p.add_argument("--preset", choices=["quick", "paper"], default="quick")
        if training:
            from optin.training.classifier import ClassifierTrainConfig

            add_settings(p, ClassifierTrainConfig, exclude=CLASSIFIER_OWN_OPTIONS)
        p.add_argument("--cache-dir", type=Path)


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


FRAME_ONLY = ("boundary_step", "crossfade", "max_frames")  # options of frame answers only


def _add_templates(tsub: Subcommands, training: bool) -> None:
    p = add_command(tsub, "templates", _train_templates,
            "fit the opt-in limit (templates of the permitted answers) or its student: the "
            "privacy to try first")
    p.add_argument("--manifest", type=Path, required=True)
    _add_targets(p, "a permitted task (repeat for several: one template per joint answer)")
    p.add_argument("--out", type=Path, required=True)
    if training:
        from optin.training.decision_templates import TemplateTrainConfig

        add_settings(p, TemplateTrainConfig)


def _train_templates(args: argparse.Namespace) -> int:
    from optin.training.decision_templates import TemplateTrainConfig, fit_decision_templates
    from optin.training.permitted import load_tasks

    given = settings_given(args, TemplateTrainConfig)
    config = TemplateTrainConfig(**given)
    targets = target_choices_of(args)
    check_out_dir(args.out, "--out")
    tasks = load_tasks(targets)  # every target loaded and probed once before --out is touched
    framed = [name for name in FRAME_ONLY if name in given]
    if framed and not any(task.level == "frame" for task in tasks.tasks):
        raise ConfigError(f"--{framed[0].replace('_', '-')}: applies only to a target with "
                          "frame answers (e.g. silero-vad); every target here answers per "
                          "utterance")
    prepare_out_dir(args.out, "--out")
    final = fit_decision_templates(args.manifest, targets, args.out, config,
                                   progress=not args.quiet)
    student = final["decider"]["student"]
    print(f"{args.out}: templates in the {final['domain']} domain, the deciders give back "
          f"{final['training']['grid_agreement']:.3f} of the checked answers; decider "
          f"{final['decider']['kind']} ({final['decider']['parameters']:,} parameters"
          + (f", agreement with T on held-out audio {student['agreement']:.3f}" if student
             else "") + ")")
    return 0


def _add_targets(p: argparse.ArgumentParser, what: str) -> None:
    """--target (repeatable) and the options that say how a file target is read."""
    p.add_argument("--target", "--target-model", dest="target", action="append", required=True,
                   metavar="TARGET",
                   help=f"{what}: a DeepSpeech2 target folder (optin train target), a "
                        "TorchScript or ONNX file (the app's own model), or silero-vad (Silero "
                        "VAD from its wheel)")
    p.add_argument("--target-input", action="append", choices=["waveform", "spectrogram"],
                   help="what a file target reads (default waveform; once for all, or once per "
                        "file target)")
    p.add_argument("--target-adapter", action="append",
                   choices=["logits", "frame-logits", "frame-probability", "silero-vad"],
                   help="how a file target's output becomes class scores (default logits: "
                        "(B, K) per utterance; once for all, or once per file target)")


def _add_obfuscator(tsub: Subcommands, training: bool) -> None:
    p = add_command(tsub, "obfuscator", _train_obfuscator,
            "train the opt-in obfuscator against a deobfuscator (works under torchrun)")
    p.add_argument("--manifest", type=Path, required=True)
    _add_targets(p, "a permitted task (repeat for several; L_t is their weighted sum)")
    p.add_argument("--target-weight", action="append", type=WEIGHT,
                   help="w_i of each target in L_t (default 1; once for all, or once per target)")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--preset", choices=["quick", "paper"], default="quick")
    if training:
        from optin.training.obfuscator_config import ObfuscatorTrainConfig

        add_settings(p, ObfuscatorTrainConfig, aliases={"obfuscator_residual": ("--residual",)})
    p.add_argument("--cache-dir", type=Path)


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


def target_choices_of(args: argparse.Namespace) -> list:
    """The permitted tasks of ``optin train obfuscator`` or ``templates`` from the --target*
    options."""
    from optin.training.permitted import TargetChoice

    sources = list(args.target)
    files = [s for s in sources if not Path(s).is_dir()]
    weights = _per_item(getattr(args, "target_weight", None), len(sources), 1.0,
                        "--target-weight")
    inputs = iter(_per_item(args.target_input, len(files), "waveform", "--target-input"))
    adapters = iter(_per_item(args.target_adapter, len(files), "logits", "--target-adapter"))
    return [TargetChoice(s, w) if Path(s).is_dir() else
            TargetChoice(s, w, next(inputs), next(adapters))
            for s, w in zip(sources, weights, strict=True)]


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

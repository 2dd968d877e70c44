"""Which options go with which mode: the one table every command's options are checked against.

Every option of every command is named in :data:`APPLIES`, under its command's path
(``("export",)``, ``("train", "obfuscator")``):

* :data:`ALWAYS`: it does something in every mode of its command;
* :class:`Only`: it does something only when its condition holds on the parsed arguments
  (``--cache-dir`` of ``export`` only with ``--check-target``); given otherwise, the command is
  refused in one line before anything runs (``error: --cache-dir: applies only with
  --check-target (the feature cache of its manifest)``);
* :class:`ByInput`: whether it applies depends on a file the command reads (a model's kind, an
  experiment config's data); the command refuses it once that file is read, naming it.

"Given" means typed on the command line (:func:`given_options` parses the arguments a second
time with every default suppressed), so ``--int8-layers spatial``, the default, is refused
without ``--int8`` too. ``tests/test_cli_options.py`` walks every option of every command: an
option missing from the table fails it, so a new option cannot be silently ignored.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from optin.errors import ConfigError

Args = argparse.Namespace


@dataclass(frozen=True)
class Only:
    """An option that applies only when ``applies(args)``; ``words`` say when, ``why`` (given
    the arguments) what was asked instead."""

    words: str
    applies: Callable[[Args], bool]
    why: Callable[[Args], str] | None = None

    def refusal(self, flag: str, args: Args) -> str:
        detail = self.why(args) if self.why else "it would do nothing here"
        return f"{flag}: applies {self.words}; {detail}"


@dataclass(frozen=True)
class ByInput:
    """An option whose use depends on a file the command reads; ``words`` say who refuses it."""

    words: str


ALWAYS = None
Rule = Only | ByInput | None

_BUILTIN_TARGETS = ("silero-vad", "silero-vad-onnx")  # optin.privacy.pretrained's names


def _file_targets(args: Args) -> bool:
    return any(not Path(t).is_dir() and t not in _BUILTIN_TARGETS for t in args.target or ())


def _calibrated_bench(args: Args) -> bool:
    if args.streaming:
        return args.backend in (None, "all", "onnx-int8")
    return args.backend in ("onnx-int8", "all")


def _stream_ends(args: Args) -> str:
    return (f"--input {args.input} and --output {args.output} are files, read and written at "
            "the model's rate")


CHECK_TARGET = Only("only with --check-target (the int8 agreement check)",
                    lambda a: a.check_target is not None,
                    lambda a: "no --check-target was given")
INT8 = Only("only with --int8 or --check-target (int8 quantization)",
            lambda a: a.int8 or a.check_target is not None,
            lambda a: "this export is float32")
NOT_STREAMING_EXPORT = Only("only without --streaming (the offline graph)",
                            lambda a: not a.streaming,
                            lambda a: "--streaming exports a causal obfuscator's stream step")
INT8_LAYERS = Only("only with --int8 or --check-target, and not with --streaming (a stream "
                   "step quantizes every conv)",
                   lambda a: (a.int8 or a.check_target is not None) and not a.streaming)
NOT_STREAMING_BENCH = Only("only without --streaming (offline timing)",
                           lambda a: not a.streaming,
                           lambda a: "--streaming times one stream on the CPU, chunk by chunk")
STUDENT = Only("only with --decider student (the student's size and teaching)",
               lambda a: a.decider == "student",
               lambda a: f"the decider is {a.decider or 'target'}")
CAUSAL = Only("only with --obfuscator-arch causal", lambda a: a.obfuscator_arch == "causal",
              lambda a: "the obfuscator is the paper's cyclegan-vc2")
PAPER_ARCH = Only("only with the paper's obfuscator (--obfuscator-arch cyclegan-vc2)",
                  lambda a: a.obfuscator_arch != "causal",
                  lambda a: "--obfuscator-arch causal sizes itself with --causal-hidden and "
                            "--causal-blocks")
FILE_TARGET = Only("only to a TorchScript or ONNX file given as --target",
                   _file_targets,
                   lambda a: "every --target here is a checkpoint folder or a built-in model")
CSV = Only("only to the csv importer", lambda a: a.corpus == "csv",
           lambda a: f"the {a.corpus} importer reads its corpus's own layout")
ALPHA_RANGE = Only("only with --alpha-range (the draws of alpha)",
                   lambda a: a.alpha_range is not None,
                   lambda a: "alpha is fixed")

_DATA = {("data", "import"): {
    "corpus": ALWAYS, "src": ALWAYS, "out": ALWAYS, "on_error": ALWAYS,
    "seed": Only("to a corpus importer, or to csv with --protocol (the split's seed)",
                 lambda a: a.corpus != "csv" or a.protocol is not None,
                 lambda a: "a csv import without --protocol keeps the source's split"),
    "map": CSV, "audio_root": CSV, "protocol": CSV},
    ("data", "synth"): dict.fromkeys(("out", "speakers", "sentences", "workers", "seed",
                                      "quick"), ALWAYS),
    ("data", "split"): dict.fromkeys(("manifest", "protocol", "test_fraction",
                                      "valid_fraction", "seed", "keep_test", "out"), ALWAYS),
    ("data", "features"): dict.fromkeys(("manifest", "cache_dir", "workers", "on_error"),
                                        ALWAYS),
    ("data", "info"): {"manifest": ALWAYS, "no_check": ALWAYS},
}
_CLASSIFIER = ("manifest", "attribute", "out", "preset", "cache_dir", "epochs", "batch_size",
               "lr", "weight_decay", "grad_clip", "patience", "balanced", "draws_per_epoch",
               "segment_length", "segment_hop", "conv_channels", "hidden_size", "rnn_layers",
               "rnn_type", "vote", "seed", "workers", "device", "amp", "checkpoint_every",
               "snapshot_seconds", "valid_fraction")
_TRAIN = {
    ("train", "target"): dict.fromkeys(_CLASSIFIER, ALWAYS),
    ("train", "attacker"): dict.fromkeys(_CLASSIFIER, ALWAYS),
    ("train", "templates"): {
        **dict.fromkeys(("manifest", "target", "out", "period", "length_quantum", "steps",
                         "batch_size", "lr", "proximity", "start_noise", "check_every", "seed",
                         "decider", "start"), ALWAYS),
        "target_input": FILE_TARGET, "target_adapter": FILE_TARGET,
        **dict.fromkeys(("boundary_step", "crossfade", "max_frames"),
                        ByInput("to frame answers only (rendered frame by frame): refused "
                                "once the targets are read, when every one answers per "
                                "utterance")),
        **dict.fromkeys(("student_channels", "student_hidden", "student_layers",
                         "student_steps", "student_lr"), STUDENT)},
    ("train", "obfuscator"): {
        **dict.fromkeys(("manifest", "target", "target_weight", "out", "preset", "cache_dir",
                         "epochs", "batch_size", "segment_length", "draws_per_epoch",
                         "optimizer", "lr", "lambda_t", "lambda_p", "privacy_layer",
                         "deobfuscator_steps", "hard_targets", "obfuscator_residual",
                         "obfuscator_arch", "privacy_warmup", "contraction",
                         "deobfuscator_width", "deobfuscator_blocks", "grad_clip",
                         "min_agreement", "window", "tolerance", "seed", "workers", "device",
                         "amp", "checkpoint_every", "snapshot_seconds"), ALWAYS),
        "target_input": FILE_TARGET, "target_adapter": FILE_TARGET,
        "obfuscator_width": PAPER_ARCH, "obfuscator_blocks": PAPER_ARCH,
        "causal_hidden": CAUSAL, "causal_blocks": CAUSAL, "lookahead": CAUSAL,
        "momentum": Only("only with --optimizer sgd", lambda a: a.optimizer in (None, "sgd"),
                         lambda a: "Adam has no momentum setting"),
        "template_momentum": Only("only with --contraction above 0 (L_c's class templates)",
                                  lambda a: bool(a.contraction),
                                  lambda a: "there is no contraction term")},
}
_PROTECT = {
    ("obfuscate",): dict.fromkeys(("model", "inputs", "out_dir", "griffin_lim_iters",
                                   "on_error"), ALWAYS),
    ("anonymize",): {**dict.fromkeys(("method", "inputs", "out_dir", "alpha", "alpha_range",
                                      "lpc_order", "workers", "on_error"), ALWAYS),
                     "per": ALPHA_RANGE, "seed": ALPHA_RANGE},
}
_EVALUATE = {
    ("eval",): dict.fromkeys(("obfuscator", "model", "manifest", "split", "json", "device",
                              "cache_dir"), ALWAYS),
    ("content",): dict.fromkeys(("original", "protected", "split", "limit", "json"), ALWAYS),
    ("gauge",): dict.fromkeys(("manifest", "attribute", "obfuscator", "seed", "cache_dir",
                               "json"), ALWAYS),
    ("experiment",): {**dict.fromkeys(("configs", "out", "seeds"), ALWAYS),
                      "data_root": ByInput("refused once the configs are read, when none "
                                           "imports a corpus or names a relative manifest")},
    ("report",): {"dirs": ALWAYS, "out": ALWAYS},
    ("demo",): {"out": ALWAYS},
    ("serve",): dict.fromkeys(("run_dir", "host", "port", "experiment"), ALWAYS),
}
_DEPLOY = {
    ("stream",): {
        **dict.fromkeys(("model", "input", "output", "phase"), ALWAYS),
        "chunk_ms": ByInput("its allowed values follow the model: refused by the stream "
                            "(optin.deploy.stream_limits) when not one of them"),
        "window_ms": ByInput("the paper's obfuscator only: a causal one's stream refuses it"),
        "rate": Only("to raw PCM (--input -, --output -) and the microphone",
                     lambda a: a.input in ("-", "mic") or a.output == "-", _stream_ends),
        "seconds": Only("to --input mic only (it ends the recording)",
                        lambda a: a.input == "mic",
                        lambda a: f"--input {a.input} ends by itself")},
    ("export",): {
        **dict.fromkeys(("model", "out", "int8", "streaming", "json"), ALWAYS),
        "int8_layers": INT8_LAYERS, "calibration": INT8,
        "features_only": NOT_STREAMING_EXPORT, "check_target": NOT_STREAMING_EXPORT,
        "manifest": CHECK_TARGET, "split": CHECK_TARGET, "cache_dir": CHECK_TARGET},
    ("bench",): {
        **dict.fromkeys(("model", "backend", "threads", "seconds", "repeats", "json",
                         "streaming"), ALWAYS),
        "device": NOT_STREAMING_BENCH, "batch": NOT_STREAMING_BENCH,
        "warmup": NOT_STREAMING_BENCH,
        "calibration": Only("only to an int8 backend (--backend onnx-int8 or all)",
                            _calibrated_bench, lambda a: f"--backend {a.backend} has no int8"),
        "chunk_ms": Only("only with --streaming", lambda a: a.streaming,
                         lambda a: "an offline bench runs whole waveforms")},
}
# every command's options (-q / --quiet, on every command, is always accepted)
APPLIES: dict[tuple[str, ...], dict[str, Rule]] = {
    path: {"quiet": ALWAYS, **rules}
    for group in (_DATA, _TRAIN, _PROTECT, _EVALUATE, _DEPLOY) for path, rules in group.items()}


def command_path(args: Args) -> tuple[str, ...]:
    """The command of parsed arguments: ``("export",)``, ``("train", "target")``."""
    path = (args.command,)
    for group in ("data_command", "train_command"):
        if getattr(args, group, None):
            path += (getattr(args, group),)
    return path


def subparsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
               ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (command path, parser) under ``parser``, the groups included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subparsers(sub, (*path, name))
    yield path, parser


def given_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The destinations of the options typed in ``argv``: ``parser`` (a fresh one: it is
    changed) parses them again with every default suppressed."""
    for _, sub in subparsers(parser):
        for action in sub._actions:
            if not isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(list(argv))))


def flag_of(parser: argparse.ArgumentParser, path: tuple[str, ...], dest: str) -> str:
    """How the user writes the option ``dest`` of ``path`` (its longest flag)."""
    sub = dict(subparsers(parser))[path]
    for action in sub._actions:
        if action.dest == dest:
            return max(action.option_strings, key=len) if action.option_strings else dest
    return "--" + dest.replace("_", "-")


def check_options(args: Args, given: set[str], parser: argparse.ArgumentParser) -> None:
    """Refuse the first given option of :data:`APPLIES` that does not apply to ``args``.

    Raises:
        ConfigError: one line, ``--option: applies only ...; what was asked instead``.
    """
    path = command_path(args)
    for dest, rule in APPLIES.get(path, {}).items():
        if dest in given and isinstance(rule, Only) and not rule.applies(args):
            raise ConfigError(rule.refusal(flag_of(parser, path, dest), args))

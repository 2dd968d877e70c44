"""Every numeric CLI argument has its valid range: checked by the parser (the error names the
option) or by the config it sets (a ConfigError naming the field); nothing reaches a
ZeroDivisionError or runs with a negative count."""

from __future__ import annotations

import argparse
import dataclasses
import inspect

import pytest

from optin.baselines.mcadams import McAdamsConfig
from optin.cli import build_parser, main
from optin.corpora.synth import synthesize_corpus
from optin.training.classifier import ClassifierTrainConfig
from optin.training.decision_templates import TemplateTrainConfig
from optin.training.obfuscator_config import ObfuscatorTrainConfig

# what checks the options the parser leaves as plain numbers (fields named like the options)
CHECKED_BY = {
    ("train", "target"): ClassifierTrainConfig, ("train", "attacker"): ClassifierTrainConfig,
    ("train", "obfuscator"): ObfuscatorTrainConfig, ("anonymize",): McAdamsConfig,
    ("train", "templates"): TemplateTrainConfig,
    ("data", "synth"): synthesize_corpus,
}


def subparsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subparsers(sub, (*path, name))
    yield path, parser


def checked_names(target) -> set[str]:
    if dataclasses.is_dataclass(target):
        names = {f.name for f in dataclasses.fields(target)}
        return names - {n for n in names if n not in getattr(target, "RANGES", {})
                        and n not in {"alpha", "alpha_range", "seed"}}
    return {"speakers", "sentences"} & set(inspect.signature(target).parameters)


def test_every_numeric_option_is_range_checked():
    plain = []
    for path, parser in subparsers(build_parser()):
        for action in parser._actions:
            if action.type in (int, float):
                checker = CHECKED_BY.get(path)
                if checker is None or action.dest not in checked_names(checker):
                    plain.append(f"{' '.join(path)} {action.option_strings[0]}")
    assert not plain, f"numeric options with no range: {plain}"


@pytest.mark.parametrize(("argv", "message"), [
    (["obfuscate", "--model", "m", "x.wav", "--out-dir", "o", "--griffin-lim-iters", "-5"],
     "argument --griffin-lim-iters: expected an integer >= 1, got -5"),
    (["data", "features", "m.csv", "--workers", "0"],
     "argument --workers: expected an integer >= 1, got 0"),
    (["data", "split", "m.csv", "--protocol", "same-speakers", "--test-fraction", "1.5"],
     r"argument --test-fraction: expected a number in [0, 1), got 1.5"),
    (["bench", "--seconds", "nan"], "argument --seconds: expected a number > 0, got nan"),
    (["bench", "--repeats", "ten"], "argument --repeats: expected an integer >= 1, got 'ten'"),
    (["stream", "--model", "m", "--rate", "0"],
     "argument --rate: expected an integer in [4000, 384000], got 0"),
    (["stream", "--model", "m", "--rate", "1"],  # 16000x upsampling: refused at parse time
     "argument --rate: expected an integer in [4000, 384000], got 1"),
    (["stream", "--model", "m", "--rate", "384001"],
     "argument --rate: expected an integer in [4000, 384000], got 384001"),
])
def test_the_parser_refuses_out_of_range_values_naming_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--epochs", "0", "ClassifierTrainConfig.epochs: expected an integer >= 1, got 0"),
    ("--batch-size", "0", "ClassifierTrainConfig.batch_size: expected an integer >= 1, got 0"),
    ("--lr", "-1", "ClassifierTrainConfig.lr: expected a number > 0, got -1.0"),
    ("--snapshot-seconds", "-1", "ClassifierTrainConfig.snapshot_seconds: expected a number "
                                 ">= 0, got -1.0"),
])
def test_training_options_are_refused_by_the_config_before_anything_runs(
        tmp_path, capsys, option, value, message):
    out = tmp_path / "run"
    argv = ["train", "target", "--manifest", str(tmp_path / "none.csv"), "--attribute",
            "gender", "--out", str(out), option, value]
    assert main(argv) == 2
    assert f"error: {message}" in capsys.readouterr().err
    assert not out.exists()

"""What the command groups share: the typed option values (an argparse type per accepted range),
the options generated from a config class, and the sub-command every command is made with."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable, Sequence

from optin.settings import SAMPLE_RATES, Rule, Setting, above, at_least, between, settings_of

# what ``add_subparsers`` returns: a command group's commands are added to one
Subcommands = argparse._SubParsersAction
Handler = Callable[[argparse.Namespace], int]


def add_command(parent: Subcommands, name: str, func: Handler, help: str
                ) -> argparse.ArgumentParser:
    """The sub-command ``name`` of ``parent``, run by ``func``, with ``-q``/``--quiet``."""
    p = parent.add_parser(name, help=help, description=help)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=func)
    return p


def ranged(kind: type, rule: Rule) -> Callable[[str], object]:
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


COUNT = ranged(int, at_least(1))  # processes, threads, repetitions, iterations
SAMPLE_RATE = ranged(int, SAMPLE_RATES)  # Hz: the one accepted range (4 kHz to 384 kHz)
NON_NEGATIVE = ranged(int, at_least(0))  # seeds, warm-up runs
POSITIVE = ranged(float, above(0))  # durations
SHARE = ranged(float, between(0, 1, high_open=True))  # split fractions
WEIGHT = ranged(float, at_least(0))  # loss weights


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

"""Typed settings: check values against their annotations and a small table of valid ranges.

One generic check serves every settings dataclass (training configs, McAdams, ADR, vector
classifiers, the experiment config) and the keyword options of a function (e.g. the
``data: synth:`` options of an experiment). A class lists its rules in a ``RANGES`` class
variable, ``{field: rule}``; the field's annotation gives its type. The supported annotations
are ``int``, ``float`` (finite; an int is accepted), ``bool`` (only a real bool), ``str``,
``Literal[...]``, ``X | None``, ``list[X]``, ``tuple[X, ...]`` / ``tuple[X, Y]`` and
``dict[str, X]``; a rule of a list or tuple applies to every item. Nothing is converted.

Settings that are stored (checkpoint architectures, feature settings, baselines' configs)
derive from :class:`StrictConfig`: one ``to_dict`` / ``from_dict`` pair that refuses unknown
keys by name.

A class calls :func:`check_fields` from ``__post_init__``; the message names the class and the
field: ``ConfigError("ClassifierTrainConfig.epochs: expected an integer >= 1, got 0")``.
:func:`settings_of` gives the same schema as data (used by the experiment config and its fuzz
test), :func:`check_options` checks a mapping of options against it.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any, ClassVar, Literal, Protocol, Self

from optin.errors import ConfigError, OptinError


class Rule(Protocol):
    """A constraint on a value beyond its type."""

    def allows(self, value: Any) -> bool: ...

    def describe(self) -> str: ...

    def outside(self) -> list[Any]:
        """Example values the rule refuses (for tests)."""
        ...


@dataclass(frozen=True)
class Range:
    """``low <= value <= high`` (either end may be open or absent)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def allows(self, value: Any) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return (f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                f"{')' if self.high_open else ']'}")

    def outside(self) -> list[Any]:
        values = []
        if self.low is not None:
            values.append(self.low if self.low_open else self.low - 1)
        if self.high is not None:
            values.append(self.high if self.high_open else self.high + 1)
        return values


def at_least(low: float) -> Range:
    return Range(low=low)


def above(low: float) -> Range:
    return Range(low=low, low_open=True)


def between(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Range:
    return Range(low, high, low_open, high_open)


# The one range of sample rates accepted wherever audio enters (file headers, raw PCM pipes,
# microphones, command-line rates, feature settings): telephone 4 kHz to studio 384 kHz.
MIN_SAMPLE_RATE = 4_000
MAX_SAMPLE_RATE = 384_000
SAMPLE_RATES = between(MIN_SAMPLE_RATE, MAX_SAMPLE_RATE)


@dataclass(frozen=True)
class OneOf:
    """One of a set of values (for choices known only at run time, e.g. registries: give the
    registry's live ``keys()`` so that a name registered later is allowed too)."""

    values: Collection[Any]

    def allows(self, value: Any) -> bool:
        return value in self.values

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)

    def outside(self) -> list[Any]:
        return ["no-such-choice"]


@dataclass(frozen=True)
class FileName:
    """A plain file name: not empty, no folder separator, not ``.`` or ``..``, not absolute."""

    def allows(self, value: Any) -> bool:
        return (bool(value) and value not in (".", "..") and "/" not in value
                and "\\" not in value and "\0" not in value
                and not PureWindowsPath(value).drive and not PurePosixPath(value).is_absolute())

    def describe(self) -> str:
        return "a plain file name (no '/', '\\', '..', not absolute, not empty)"

    def outside(self) -> list[Any]:
        return ["../../x", "/tmp/x", "a/b", "a\\b", "..", "", "C:x"]


@dataclass(frozen=True)
class Setting:
    """One setting: its name, annotation, optional rule and whether it must be given."""

    name: str
    type: Any
    rule: Rule | None = None
    required: bool = False

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not valid here (None when it is)."""
        if not _fits(value, self.type, self.rule):
            return f"expected {self.expected()}, got {value!r}"
        return None

    def expected(self) -> str:
        return _describe(self.type, self.rule)


class StrictConfig:
    """Base of the settings dataclasses that are stored in checkpoints and run folders.

    ``to_dict`` gives the fields as a plain dict; ``from_dict`` rebuilds from it, refusing
    unknown keys by name (with :attr:`UNKNOWN_ERROR`, :class:`ConfigError` unless a class
    names its own) and turning JSON lists back into tuples where a field is a tuple.
    """

    UNKNOWN_ERROR: ClassVar[type[Exception]] = ConfigError

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON friendly)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Rebuild from :meth:`to_dict` output (or its JSON); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise cls.UNKNOWN_ERROR(f"unknown {cls.__name__} setting(s): {', '.join(unknown)}")
        hints = typing.get_type_hints(cls)
        values = {key: tuple(value) if isinstance(value, list) and _is_tuple(hints.get(key))
                  else value for key, value in data.items()}
        return cls(**values)


def _is_tuple(annotation: Any) -> bool:
    origin, args = _parts(annotation)
    if _is_union(origin):
        return any(_is_tuple(a) for a in args)
    return origin is tuple or annotation is tuple


def settings_of(target: type | Callable[..., Any], ranges: Mapping[str, Rule] | None = None,
                exclude: Iterable[str] = ()) -> dict[str, Setting]:
    """The settings of a dataclass (its init fields) or of a function (its keyword
    parameters), typed by their annotations, with the rules of ``target.RANGES`` and
    ``ranges``; ``exclude`` leaves some out."""
    hints = typing.get_type_hints(target)
    rules = {**getattr(target, "RANGES", {}), **(ranges or {})}
    skip = set(exclude)
    if dataclasses.is_dataclass(target):
        params = [(f.name, f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING)
                  for f in dataclasses.fields(target) if f.init]
    else:
        params = [(p.name, p.default is inspect.Parameter.empty)
                  for p in inspect.signature(target).parameters.values()
                  if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return {name: Setting(name, hints.get(name, Any), rules.get(name), required)
            for name, required in params if name not in skip}


def check_fields(obj: Any, error: type[OptinError] = ConfigError) -> None:
    """Check every field of a dataclass instance; raise ``error("<Class>.<field>: ...")``."""
    cls = type(obj)
    for setting in settings_of(cls).values():
        problem = setting.problem(getattr(obj, setting.name))
        if problem:
            raise error(f"{cls.__name__}.{setting.name}: {problem}")


def check_options(options: Any, settings: Mapping[str, Setting], prefix: str,
                  error: type[OptinError] = ConfigError) -> None:
    """Check a mapping of options: a mapping, no unknown key, every required key present and
    every value valid. Messages start with ``prefix`` + the key."""
    if not isinstance(options, Mapping):
        raise error(f"{prefix.rstrip('.: ')}: expected a mapping of options, got {options!r}")
    for key in options:
        if key not in settings:
            close = difflib.get_close_matches(str(key), list(settings), n=1)
            hint = (f"did you mean '{close[0]}'?" if close
                    else f"known: {', '.join(settings) or 'none'}")
            raise error(f"{prefix}{key}: unknown key ({hint})")
    for name, setting in settings.items():
        if name not in options:
            if setting.required:
                raise error(f"{prefix}{name}: missing (expected {setting.expected()})")
            continue
        problem = setting.problem(options[name])
        if problem:
            raise error(f"{prefix}{name}: {problem}")


def wrong_types(annotation: Any) -> list[Any]:
    """Values whose type does not fit ``annotation`` (for tests)."""
    candidates = ["ten", 1.5, True, 7, ["a"], {"k": 1}, None]
    return [v for v in candidates if not _type_fits(v, annotation)]


# ---------------------------------------------------------------------- annotations
def _parts(annotation: Any) -> tuple[Any, tuple[Any, ...]]:
    return typing.get_origin(annotation), typing.get_args(annotation)


def _is_union(origin: Any) -> bool:
    return origin is typing.Union or origin is types.UnionType


def _type_fits(value: Any, annotation: Any) -> bool:
    return _fits(value, annotation, None)


def _fits(value: Any, annotation: Any, rule: Rule | None) -> bool:
    """Whether ``value`` has the annotated type and (items included) passes ``rule``."""
    origin, args = _parts(annotation)
    if annotation is Any:
        return rule is None or rule.allows(value)
    if _is_union(origin):
        if value is None and type(None) in args:
            return True
        return any(_fits(value, a, rule) for a in args if a is not type(None))
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(
                _fits(v, a, rule) for v, a in zip(value, args, strict=True))
        item = args[0] if args else Any
        return all(_fits(v, item, rule) for v in value)
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            return False
        key, item = args if args else (Any, Any)
        return all(_type_fits(k, key) and _type_fits(v, item) for k, v in value.items())
    if annotation is bool:
        ok = isinstance(value, bool)
    elif annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif annotation is float:
        ok = (isinstance(value, int | float) and not isinstance(value, bool)
              and math.isfinite(value))
    elif annotation is str:
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, annotation) if isinstance(annotation, type) else True
    return ok and (rule is None or rule.allows(value))


_NAMES = {int: ("an integer", "integers"), float: ("a number", "numbers"),
          bool: ("true or false", "true or false values"), str: ("a string", "strings")}


def _describe(annotation: Any, rule: Rule | None, plural: bool = False) -> str:
    origin, args = _parts(annotation)
    if _is_union(origin):
        kinds = [_describe(a, rule, plural) for a in args if a is not type(None)]
        kinds = [k for k in kinds if k not in ("a value", "values")] or kinds[:1]
        return " or ".join(kinds + (["null"] if type(None) in args else []))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {len(args)} " + _describe(args[0], rule, plural=True)
        return "a list of " + _describe(args[0] if args else Any, rule, plural=True)
    if origin is dict or annotation is dict:
        return "a mapping"
    if isinstance(rule, OneOf | FileName):
        return f"values, each {rule.describe()}" if plural else rule.describe()
    name = _NAMES.get(annotation, ("a value", "values"))[1 if plural else 0]
    return f"{name} {rule.describe()}" if rule is not None else name

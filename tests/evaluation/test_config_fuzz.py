"""Fuzzing the experiment config from its own schema: every field, set to a value of the wrong
type or out of its range, must be refused at load time by an ExperimentError naming the file
and the field. The cases are generated from :func:`optin.evaluation.experiment.schema`, so a
field added to a training config (or a new section) is fuzzed without touching this file."""

from __future__ import annotations

import copy
import types
import typing
from pathlib import Path
from typing import Any, Literal

import pytest

from optin.evaluation.experiment_config import (
    SECTIONS,
    TOP_LEVEL,
    ExperimentConfig,
    ExperimentError,
    schema,
)

SOURCE = Path("fuzz.yaml")
BASE: dict[str, Any] = {"name": "fuzz", "data": {"synth": {}}, "permitted": "speaker",
                        "attacked": ["gender"]}
CANDIDATES: list[Any] = ["ten", 1.5, True, 7, ["a"], {"k": 1}]
# documented conveniences: ``attacked`` may be one string (a list of one)
ONE_STRING_IS_A_LIST = {"attacked"}


def type_ok(value: Any, annotation: Any) -> bool:
    """An oracle for 'is this value of the annotated type', independent of optin.settings."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(type_ok(value, a) for a in args)
    if annotation is type(None):
        return value is None
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if origin in (list, tuple):
        return isinstance(value, list)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    exact = {int: (int,), float: (int, float), bool: (bool,), str: (str,)}
    if annotation in exact:
        return type(value) in exact[annotation]
    return isinstance(value, str)  # paths


def with_value(path: str, value: Any) -> dict[str, Any]:
    """The base config with the setting at dotted ``path`` set to ``value``."""
    config = copy.deepcopy(BASE)
    parts = path.split(".")
    if parts[:2] == ["data", "import"]:
        config["data"] = {"import": {"corpus": "ravdess"}}
    elif parts[:2] == ["data", "manifest"]:
        config["data"] = {}
    target = config
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value
    return config


def cases() -> list[tuple[str, str, Any]]:
    """(path, kind, value) for every wrong type and every out-of-range value of every field."""
    found = []
    for path, setting in schema().items():
        for value in CANDIDATES:
            if not type_ok(value, setting.type) and not (
                    path in ONE_STRING_IS_A_LIST and isinstance(value, str)):
                found.append((path, "type", value))
        bad = list(setting.rule.outside()) if setting.rule is not None else []
        literal = [a for a in typing.get_args(setting.type)
                   if typing.get_origin(a) is Literal] or (
            [setting.type] if typing.get_origin(setting.type) is Literal else [])
        if literal:
            bad.append("no-such-choice")
        origin = typing.get_origin(setting.type)
        for value in bad:
            if origin is list:
                value = [value]
            elif origin is tuple or any(typing.get_origin(a) is tuple
                                        for a in typing.get_args(setting.type)):
                value = [value, value]
            found.append((path, "value", value))
    return found


CASES = cases()


def test_the_base_config_is_valid():
    ExperimentConfig.from_dict(copy.deepcopy(BASE), SOURCE)
    ExperimentConfig.from_dict(with_value("data.import.seed", 0), SOURCE)


def test_every_field_is_fuzzed():
    fuzzed = {path for path, _, _ in CASES}
    assert fuzzed == set(schema())
    assert {path for path, kind, _ in CASES if kind == "value"} >= {
        "name", "seeds", "split_seed", "systems", "preset", "protocol", "classifier.epochs",
        "obfuscator.optimizer", "mcadams.alpha", "data.synth.speakers", "data.import.corpus"}
    assert len(CASES) > 300


def test_every_mapping_section_is_checked_against_what_it_configures():
    """A new options section of ExperimentConfig must be registered in SECTIONS."""
    mappings = {name for name, setting in TOP_LEVEL.items()
                if typing.get_origin(setting.type) is dict}
    # ``sweep`` maps obfuscator options to lists of values: checked against that section
    assert mappings - {"data", "sweep"} == set(SECTIONS)


@pytest.mark.parametrize(("sweep", "extra", "message"), [
    ({"lambda_pp": [1.0]}, {}, "sweep.lambda_pp: unknown obfuscator option"),
    ({"lambda_p": []}, {}, "sweep.lambda_p: expected at least one value"),
    ({"lambda_p": [1.0, -2.0]}, {}, "sweep.lambda_p: expected a number >= 0, got -2.0"),
    ({"lambda_p": ["x"]}, {}, "sweep.lambda_p: expected a number >= 0, got 'x'"),
    ({"lambda_p": [1.0]}, {"systems": ["mcadams"]}, "sweep: varies the 'opt-in' system"),
    ({"lambda_p": 1.0}, {}, "sweep: expected"),
])
def test_a_bad_sweep_is_refused_naming_the_option(sweep, extra, message):
    with pytest.raises(ExperimentError) as err:
        ExperimentConfig.from_dict({**BASE, "sweep": sweep, **extra}, SOURCE)
    assert str(err.value).startswith(f"{SOURCE}: {message}"), str(err.value)


def test_a_sweep_adds_one_opt_in_system_per_value():
    config = ExperimentConfig.from_dict({**BASE, "sweep": {"lambda_p": [0.3, 3.0]},
                                         "obfuscator": {"epochs": 2}}, SOURCE)
    runs = config.system_runs()
    assert [key for key, _, _ in runs] == ["opt-in", "opt-in@lambda_p=0.3", "opt-in@lambda_p=3.0"]
    assert runs[2][2] == {"epochs": 2, "lambda_p": 3.0}


@pytest.mark.parametrize(("path", "kind", "value"), CASES,
                         ids=[f"{p}-{k}-{v!r}"[:60] for p, k, v in CASES])
def test_a_wrong_setting_is_refused_naming_the_field(path, kind, value):
    with pytest.raises(ExperimentError) as err:
        ExperimentConfig.from_dict(with_value(path, value), SOURCE)
    assert str(err.value).startswith(f"{SOURCE}: {path}"), str(err.value)

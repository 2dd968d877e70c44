"""Named presets of training configs, with explicit overrides."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def from_preset(config_class: type[T], presets: dict[str, dict[str, Any]], preset: str,
                overrides: dict[str, Any], **fixed: Any) -> T:
    """``config_class(**fixed, **presets[preset], **overrides)``; None overrides are ignored.

    Raises:
        ValueError: an unknown preset or an option the config does not have (named).
    """
    if preset not in presets:
        raise ValueError(f"unknown preset '{preset}'; choose one of {', '.join(presets)}")
    values = {**presets[preset], **{k: v for k, v in overrides.items() if v is not None}}
    unknown = set(values) - {f.name for f in fields(config_class)}  # type: ignore[arg-type]
    if unknown:
        raise ValueError(f"unknown {config_class.__name__} option(s): "
                         f"{', '.join(sorted(unknown))}")
    return config_class(**fixed, **values)

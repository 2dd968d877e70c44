"""Named presets of training configs, with explicit overrides."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from optin.errors import ConfigError

T = TypeVar("T")


def from_preset(config_class: type[T], presets: dict[str, dict[str, Any]], preset: str,
                overrides: dict[str, Any], **fixed: Any) -> T:
    """``config_class(**fixed, **presets[preset], **overrides)``; None overrides are ignored.

    Raises:
        ConfigError: an unknown preset, an option the config does not have, or a value of the
            wrong type or out of range (named by the config class).
    """
    if preset not in presets:
        raise ConfigError(f"unknown preset '{preset}'; choose one of {', '.join(presets)}")
    values = {**presets[preset], **{k: v for k, v in overrides.items() if v is not None}}
    unknown = set(values) - {f.name for f in fields(config_class)}  # type: ignore[arg-type]
    if unknown:
        raise ConfigError(f"unknown {config_class.__name__} option(s): "
                         f"{', '.join(sorted(unknown))}")
    return config_class(**fixed, **values)

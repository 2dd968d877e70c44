"""The root of every error optin raises on purpose.

``optin.cli.main`` catches :class:`OptinError` (and ``OSError``), prints one line and exits
non-zero; any other exception is a bug and keeps its traceback. Each layer defines its own
subclasses next to the code that raises them (``ManifestError``, ``AudioError``,
``CheckpointError``, ``ExperimentError``, ...); the ones here are shared by several layers.
"""

from __future__ import annotations


class OptinError(Exception):
    """An error about the user's input, files or settings; the message names the file or
    field and says what to do."""


class ConfigError(OptinError, ValueError):
    """A setting with a wrong name, type or value (a training config, a CLI argument)."""

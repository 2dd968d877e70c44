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


class NothingReadError(OptinError, ValueError):
    """A batch in which every item failed: there is nothing to report or write."""


def refuse_all_failed(failed: list[tuple[str, str]], succeeded: int, items: str,
                      outcome: str = "nothing could be read") -> None:
    """Refuse a batch where every item failed (``failed`` holds ``(name, why)`` and none
    ``succeeded``): one line with ``outcome``, the count and the first reason, instead of a
    report of nothing. The batch commands (obfuscate, anonymize, content, data features)
    call it.

    Raises:
        NothingReadError: when ``failed`` is not empty and ``succeeded`` is 0.
    """
    if not failed or succeeded:
        return
    name, why = failed[0]
    more = f"; and {len(failed) - 1} more" if len(failed) > 1 else ""
    raise NothingReadError(f"{outcome}: all {len(failed)} {items} failed ({name}: {why}{more})")

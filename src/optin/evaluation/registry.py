"""Registries by name (attacker families, protection systems): undoable registration."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


@contextmanager
def registered(registry: dict[str, T], name: str, item: T) -> Iterator[T]:
    """Add ``item`` to ``registry`` under ``name`` for the ``with`` block, then remove it.

    Raises:
        ValueError: ``name`` is already registered.
    """
    if name in registry:
        raise ValueError(f"'{name}' is already registered")
    registry[name] = item
    try:
        yield item
    finally:
        registry.pop(name, None)

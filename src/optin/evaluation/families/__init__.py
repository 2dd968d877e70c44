"""The attacker families, by name: one module per family, registered here.

To add a family, write a module that builds an :class:`AttackerFamily` (see
:mod:`optin.evaluation.families.deepspeech2`) and add it to :data:`FAMILIES` below; a test can
register one for a ``with`` block with :func:`register_family`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from optin.evaluation.families import deepspeech2, xvector
from optin.evaluation.families.base import AttackerFamily, ProtectedData
from optin.evaluation.registry import registered

FAMILIES: dict[str, AttackerFamily] = {f.name: f for f in (deepspeech2.FAMILY, xvector.FAMILY)}

# The families every attribute is attacked with unless the config says otherwise.
ATTACKER_FAMILIES: tuple[str, ...] = tuple(FAMILIES)


def register_family(family: AttackerFamily) -> AbstractContextManager[AttackerFamily]:
    """Register ``family`` for a ``with`` block (removed after it)."""
    return registered(FAMILIES, family.name, family)


def family(name: str) -> AttackerFamily:
    """The registered family ``name``; a ValueError naming the choices otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"unknown attacker family '{name}'; choose from "
                         f"{', '.join(FAMILIES)}")
    return FAMILIES[name]


__all__ = ["ATTACKER_FAMILIES", "FAMILIES", "AttackerFamily", "ProtectedData", "family",
           "register_family"]

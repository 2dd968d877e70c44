"""Corpora: the manifest interface, split protocols, importers and the built-in corpus."""

from optin.corpora.manifest import (
    KNOWN_COLUMNS,
    REQUIRED_COLUMNS,
    LabelEncoder,
    Manifest,
    ManifestError,
)
from optin.corpora.splits import PROTOCOLS, assign_split, split_summary

__all__ = [
    "KNOWN_COLUMNS",
    "PROTOCOLS",
    "REQUIRED_COLUMNS",
    "LabelEncoder",
    "Manifest",
    "ManifestError",
    "assign_split",
    "split_summary",
]

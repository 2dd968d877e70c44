"""Model keys: the short hash that names a cached model by its settings, data and inputs."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from optin.corpora.manifest import Manifest


def key_of(settings: dict[str, Any], manifest: Manifest, *depends: str) -> str:
    """12 hex digits identifying a model: its settings, its data and what it builds on."""
    blob = json.dumps({"settings": settings, "data": manifest.fingerprint(),
                       "depends": list(depends)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def key_of_dict(data: dict[str, Any]) -> str:
    """12 hex digits identifying a plain settings dictionary."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]

"""What every training run writes beside its checkpoints: run settings and per-epoch metrics."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from optin.checkpoint import write_json
from optin.corpora.manifest import ManifestError
from optin.files import write_text


def check_run_settings(out_dir: Path, settings: dict[str, Any], write: bool = True) -> None:
    """Record ``settings`` in ``out_dir/run.json``, or refuse when a different run is there.

    Resuming needs the same settings and data; anything else must go to another folder.
    """
    path = out_dir / "run.json"
    normalised = json.loads(json.dumps(settings))
    if path.is_file():
        if json.loads(path.read_text()) != normalised:
            raise ManifestError(
                f"{out_dir} holds a run with other settings or data; use another --out "
                "(or delete the folder to start over)"
            )
    elif write:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(path, normalised)


def write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.csv`` from the whole history (atomically), one row per epoch."""
    if not history:
        return
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(path, text.getvalue())

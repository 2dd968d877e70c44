"""One entry point over every corpus importer, for the CLI and for scripts."""

from __future__ import annotations

import os
from pathlib import Path

from optin.corpora.csv_import import prepare_csv
from optin.corpora.emodb import prepare_emodb
from optin.corpora.emovdb import prepare_emovdb
from optin.corpora.importing import ImportReport, OnError
from optin.corpora.librispeech import prepare_librispeech
from optin.corpora.ravdess import prepare_ravdess
from optin.corpora.voxceleb2 import prepare_voxceleb2
from optin.errors import ConfigError

# the importers of the named corpora (the generic csv importer takes more options)
IMPORTERS = {"ravdess": prepare_ravdess, "emovdb": prepare_emovdb, "emodb": prepare_emodb,
             "librispeech": prepare_librispeech, "voxceleb2": prepare_voxceleb2}
CORPORA: tuple[str, ...] = (*IMPORTERS, "csv")


def import_corpus(
    corpus: str,
    src: str | os.PathLike,
    out: str | os.PathLike | None,
    on_error: OnError = "fail",
    seed: int = 0,
    columns: dict[str, str] | None = None,
    audio_root: str | os.PathLike | None = None,
    protocol: str | None = None,
    progress: bool = True,
) -> ImportReport:
    """Import ``src`` with the named corpus's importer and write the manifest to ``out``.

    ``columns``, ``audio_root`` and ``protocol`` apply to the generic ``csv`` importer only.
    """
    src = Path(src)
    common = {"out": out, "on_error": on_error, "seed": seed, "progress": progress}
    if corpus != "csv" and (columns or audio_root or protocol):
        raise ConfigError("--map, --audio-root and --protocol apply to the csv importer only")
    if corpus in IMPORTERS:
        return IMPORTERS[corpus](src, **common)
    if corpus == "csv":
        return prepare_csv(src, columns=columns, audio_root=audio_root, protocol=protocol,
                           **common)
    raise ConfigError(f"unknown corpus '{corpus}'; choose one of {', '.join(CORPORA)}")

"""Generic importer: any CSV that lists audio files and their labels, with a column mapping.

``columns`` maps a manifest column to the CSV column that holds it, e.g.
``{"path": "file", "speaker": "spk", "gender": "sex"}``; CSV columns already named like manifest
columns need no mapping. ``id`` is made from the path (without its suffix) when the CSV has none.
Every other CSV column is kept under its own name. Paths are relative to ``audio_root`` (default:
the CSV's folder) or absolute. Gender values m/f/male/female (any case) become male/female.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath

from optin.corpora.importing import ImportReport, OnError, finish_import
from optin.corpora.manifest import Manifest, ManifestError, read_csv_table
from optin.corpora.splits import Protocol, assign_split
from optin.files import not_a_file

GENDERS: dict[str, str] = {"f": "female", "female": "female", "m": "male", "male": "male"}


def read_mapped_csv(src_csv: str | os.PathLike, columns: dict[str, str] | None = None
                    ) -> list[dict[str, str]]:
    """Rows of ``src_csv`` renamed to manifest columns (values stripped, ids made if absent).

    Raises:
        ManifestError: the file is missing, empty or not UTF-8, a column name repeats, a mapped
            column is not in it, it has no path or speaker column, a kept column clashes with a
            mapped one, or a row has more or fewer fields than the header or an empty path or
            speaker.
    """
    src_csv = Path(src_csv)
    if not src_csv.is_file():
        raise ManifestError(not_a_file(src_csv, "CSV file"))
    header, numbered = read_csv_table(src_csv, "CSV file")
    if not header:
        raise ManifestError(f"CSV file {src_csv} is empty: expected a header row")

    mapping = dict(columns or {})
    for target, source in mapping.items():
        if source not in header:
            raise ManifestError(f"{src_csv}: column '{source}' (mapped to '{target}') is not "
                                f"in the CSV; its columns are: {', '.join(header)}")
    for target in ("path", "speaker", "id"):
        if target not in mapping and target in header:
            mapping[target] = target
    for target in ("path", "speaker"):
        if target not in mapping:
            raise ManifestError(f"{src_csv}: no '{target}' column; name the CSV column that "
                                f"holds it, e.g. columns={{'{target}': ...}}; its columns are: "
                                f"{', '.join(header)}")
    used = set(mapping.values())
    kept = [h for h in header if h not in used]
    clashes = [h for h in kept if h in mapping]
    if clashes:
        raise ManifestError(f"{src_csv}: column(s) {', '.join(clashes)} would be overwritten by "
                            f"the mapped column(s) {', '.join(mapping[c] for c in clashes)}; "
                            "rename them in the CSV or map them too")

    rows: list[dict[str, str]] = []
    for number, line in numbered:
        values = dict(zip(header, line, strict=True))
        row = {target: values[source] for target, source in mapping.items()}
        row.update({h: values[h] for h in kept})
        for target in ("path", "speaker"):
            if not row[target]:
                raise ManifestError(f"{src_csv}, line {number}: empty '{target}' "
                                    f"(CSV column '{mapping[target]}')")
        if not row.get("id"):
            row["id"] = PurePath(row["path"]).with_suffix("").as_posix().lstrip("/")
        if "gender" in row:
            row["gender"] = GENDERS.get(row["gender"].lower(), row["gender"])
        rows.append(row)
    if not rows:
        raise ManifestError(f"CSV file {src_csv} has a header but no rows")
    return rows


def prepare_csv(
    src_csv: str | os.PathLike,
    out: str | os.PathLike | None = None,
    columns: dict[str, str] | None = None,
    audio_root: str | os.PathLike | None = None,
    on_error: OnError = "fail",
    protocol: Protocol | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    valid_fraction: float = 0.1,
    keep_test: bool = False,
    progress: bool = True,
) -> ImportReport:
    """Import the audio files listed in a CSV.

    Args:
        src_csv: the CSV with a header row.
        out: manifest CSV to write (None: only return it; paths then relative to ``audio_root``).
        columns: manifest column -> CSV column (see the module docstring).
        audio_root: folder the CSV's relative paths are relative to (default: the CSV's folder).
        on_error: ``"fail"`` raises AudioError on an unreadable file, ``"skip"`` reports it.
        protocol: ``"speaker-disjoint"`` or ``"same-speakers"`` to assign a split; None keeps
            the CSV's ``split`` column, if any.
        seed, test_fraction, valid_fraction, keep_test: passed to ``assign_split``.

    Raises:
        ManifestError: see ``read_mapped_csv``; also duplicate ids or bad split values.
        AudioError: a missing, unreadable or empty file with ``on_error="fail"``.
    """
    src_csv = Path(src_csv)
    root = Path(audio_root if audio_root is not None else src_csv.parent).resolve()
    manifest = Manifest(rows=read_mapped_csv(src_csv, columns), root=root, source=src_csv)
    manifest.validate(check_files=False)
    if protocol is not None:
        manifest = assign_split(manifest, protocol, test_fraction=test_fraction,
                                valid_fraction=valid_fraction, seed=seed, keep_test=keep_test)
    return finish_import(manifest.rows, root, out, on_error=on_error, progress=progress)

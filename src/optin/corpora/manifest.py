"""The manifest: one CSV row per utterance, the interface every command reads.

Columns ``id, path, speaker`` are required; ``gender, emotion, utterance, text, split, duration``
are known optional columns; any other column is kept as it is. ``path`` is relative to the
manifest's folder (absolute paths are accepted and kept). Every value is a string; an empty
string means "unknown".
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from optin.errors import OptinError
from optin.files import atomic_output, not_a_file

REQUIRED_COLUMNS: tuple[str, ...] = ("id", "path", "speaker")
KNOWN_COLUMNS: tuple[str, ...] = (
    "id",
    "path",
    "speaker",
    "gender",
    "emotion",
    "utterance",
    "text",
    "split",
    "duration",
)
SPLITS: tuple[str, ...] = ("train", "valid", "test")


class ManifestError(OptinError, ValueError):
    """A manifest that cannot be used; the message names the file, row or column."""


@dataclass
class Manifest:
    """Rows of a manifest plus the folder its relative paths are resolved against.

    Attributes:
        rows: one dict per utterance, every key a column name, every value a string.
        columns: column order for writing (required first, then known, then extra).
        root: folder that relative ``path`` values are relative to.
        source: the CSV file it was read from, if any (used in error messages).
    """

    rows: list[dict[str, str]]
    columns: list[str] = field(default_factory=list)
    root: Path = field(default_factory=Path.cwd)
    source: Path | None = None

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        seen = list(self.columns)
        for row in self.rows:
            for key in row:
                if key not in seen:
                    seen.append(key)
        self.columns = order_columns(seen)
        for row in self.rows:
            for col in self.columns:
                row.setdefault(col, "")
                if row[col] is None:
                    row[col] = ""
                row[col] = str(row[col])

    # ------------------------------------------------------------------ reading / writing
    @classmethod
    def read(cls, path: str | os.PathLike, check_files: bool = True) -> Manifest:
        """Read and validate a manifest CSV.

        Raises:
            ManifestError: missing file, missing required column, empty id/path/speaker,
                duplicate id, or (with ``check_files``) an audio file that does not exist.
        """
        path = Path(path)
        if not path.is_file():
            raise ManifestError(not_a_file(path, "manifest"))
        header, lines = read_csv_table(path, "manifest")
        if not header:
            raise ManifestError(f"manifest {path} is empty: expected a header row with "
                                f"columns {', '.join(REQUIRED_COLUMNS)}")
        rows = [dict(zip(header, fields, strict=True)) for _, fields in lines]
        manifest = cls(rows=rows, columns=header, root=path.parent.resolve(), source=path)
        manifest.validate(check_files=check_files)
        return manifest

    def write(self, path: str | os.PathLike) -> Path:
        """Write the manifest as CSV; relative paths are rewritten relative to the new folder.

        The file is written atomically (temporary file, then rename).
        """
        path = Path(path)
        new_root = path.parent.resolve()
        with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns, lineterminator="\n")
            writer.writeheader()
            for row in self.rows:
                out = dict(row)
                out["path"] = relative_path(self.audio_path(row), new_root)
                writer.writerow(out)
        return path

    def validate(self, check_files: bool = True) -> None:
        """Check required columns, non-empty required values, unique ids and audio files."""
        where = f"manifest {self.source}" if self.source else "manifest"
        missing = [c for c in REQUIRED_COLUMNS if c not in self.columns]
        if missing:
            raise ManifestError(
                f"{where} is missing required column(s) {', '.join(missing)}; "
                f"found columns: {', '.join(self.columns) or '(none)'}"
            )
        seen: dict[str, int] = {}
        for line, row in enumerate(self.rows, start=2):
            for col in REQUIRED_COLUMNS:
                if not row[col]:
                    raise ManifestError(f"{where}, line {line}: empty value in column '{col}'")
            if row["id"] in seen:
                raise ManifestError(
                    f"{where}, line {line}: duplicate id '{row['id']}' "
                    f"(first seen on line {seen[row['id']]})"
                )
            seen[row["id"]] = line
            split = row.get("split", "")
            if split and split not in SPLITS:
                raise ManifestError(
                    f"{where}, line {line}: split '{split}' is not one of {', '.join(SPLITS)}"
                )
            if check_files and not self.audio_path(row).is_file():
                raise ManifestError(
                    f"{where}, line {line}: audio file {self.audio_path(row)} for id "
                    f"'{row['id']}' does not exist"
                )

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, str]]:
        return iter(self.rows)

    def audio_path(self, row: dict[str, str]) -> Path:
        """Absolute path of a row's audio file."""
        p = Path(row["path"])
        return p if p.is_absolute() else self.root / p

    def files(self) -> list[Path]:
        """What reading it reads: the CSV file (when it came from one) and every row's audio
        (the inputs an output must not overwrite: :func:`optin.files.refuse_overwrite`)."""
        return ([self.source] if self.source else []) + [self.audio_path(r) for r in self.rows]

    def column(self, name: str) -> list[str]:
        """All values of a column, in row order."""
        self.require_column(name)
        return [row[name] for row in self.rows]

    def require_column(self, name: str) -> None:
        """Raise a ManifestError naming the column when it is absent."""
        if name not in self.columns:
            where = f"manifest {self.source}" if self.source else "manifest"
            raise ManifestError(
                f"{where} has no column '{name}'; columns are: {', '.join(self.columns)}"
            )

    def counts(self, name: str) -> Counter[str]:
        """How many rows carry each value of a column."""
        return Counter(self.column(name))

    def fingerprint(self) -> str:
        """SHA-256 over the rows (ids, paths and labels), stable across row order of columns."""
        h = hashlib.sha256()
        for row in self.rows:
            for col in self.columns:
                h.update(col.encode())
                h.update(b"=")
                h.update(row[col].encode())
                h.update(b"\x1f")
            h.update(b"\x1e")
        return h.hexdigest()

    # ------------------------------------------------------------------ derived manifests
    def replace_rows(self, rows: list[dict[str, str]]) -> Manifest:
        """A manifest with the same columns, root and source but other rows."""
        return Manifest(rows=rows, columns=list(self.columns), root=self.root, source=self.source)

    def filter(self, predicate: Callable[[dict[str, str]], bool]) -> Manifest:
        """Rows for which ``predicate(row)`` is true."""
        return self.replace_rows([dict(r) for r in self.rows if predicate(r)])

    def where(self, **conditions: str | Iterable[str]) -> Manifest:
        """Rows whose columns match, e.g. ``where(split="train", gender=["female"])``."""
        wanted: dict[str, set[str]] = {}
        for col, value in conditions.items():
            self.require_column(col)
            wanted[col] = {value} if isinstance(value, str) else set(value)
        return self.filter(lambda r: all(r[c] in v for c, v in wanted.items()))

    def split(self, name: str) -> Manifest:
        """The rows of one split; a clear error when there is no split column or no such rows."""
        if name not in SPLITS:
            raise ManifestError(f"unknown split '{name}'; expected one of {', '.join(SPLITS)}")
        if "split" not in self.columns or not any(r["split"] for r in self.rows):
            where = f"manifest {self.source}" if self.source else "manifest"
            raise ManifestError(
                f"{where} has no split assigned; run `optin data split` first"
            )
        part = self.where(split=name)
        if len(part) == 0:
            where = f"manifest {self.source}" if self.source else "manifest"
            raise ManifestError(f"{where} has no rows in split '{name}'")
        return part

    def with_column(self, name: str, values: Sequence[str]) -> Manifest:
        """A copy with column ``name`` set to ``values`` (one per row)."""
        if len(values) != len(self.rows):
            raise ValueError(f"{len(values)} values for {len(self.rows)} rows")
        rows = [dict(r, **{name: str(v)}) for r, v in zip(self.rows, values, strict=True)]
        cols = self.columns if name in self.columns else [*self.columns, name]
        return Manifest(rows=rows, columns=cols, root=self.root, source=self.source)


def read_csv_table(path: Path, what: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the (line number, fields) of every non-blank row of a UTF-8 CSV file (a
    byte-order mark is allowed), names and fields stripped; ``([], [])`` for an empty file.

    Raises:
        ManifestError: naming ``what``, the file and the line: bytes that are not UTF-8, a
            malformed row, an empty or repeated column name, a row with more or fewer fields
            than the header (a truncated row would otherwise read as blank labels).
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ManifestError(f"{what} {path}, line {line}: byte 0x{data[err.start]:02x} is not "
                            "UTF-8 text; save the file as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] = []
    rows: list[tuple[int, list[str]]] = []
    try:
        for raw in reader:
            fields = [f.strip() for f in raw]
            if not any(fields):
                continue
            if not header:
                header = fields
                doubled = sorted({h for h in header if header.count(h) > 1})
                if doubled or not all(header):
                    problem = (f"column name(s) {', '.join(doubled)} appear twice" if doubled
                               else f"column {header.index('') + 1} has no name")
                    raise ManifestError(f"{what} {path}, line {reader.line_num}: {problem}")
            elif len(fields) != len(header):
                raise ManifestError(
                    f"{what} {path}, line {reader.line_num}: {len(fields)} fields for "
                    f"{len(header)} columns ({', '.join(header)})")
            else:
                rows.append((reader.line_num, fields))
    except csv.Error as err:
        raise ManifestError(f"{what} {path}, line {reader.line_num}: {err}") from None
    return header, rows


def order_columns(columns: Iterable[str]) -> list[str]:
    """Required columns first, then the known optional ones, then the rest in given order."""
    cols = list(dict.fromkeys(columns))
    known = [c for c in KNOWN_COLUMNS if c in cols]
    return known + [c for c in cols if c not in KNOWN_COLUMNS]


def relative_path(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with forward slashes (absolute if on another drive)."""
    try:
        return Path(os.path.relpath(Path(path).resolve(), root)).as_posix()
    except ValueError:
        return Path(path).resolve().as_posix()


@dataclass(frozen=True)
class LabelEncoder:
    """Maps the string values of one manifest column to class indices 0..K-1 (sorted names)."""

    attribute: str
    classes: tuple[str, ...]

    @classmethod
    def fit(cls, manifest: Manifest, attribute: str) -> LabelEncoder:
        """Classes from every labelled row; rows with an empty value are an error."""
        values = manifest.column(attribute)
        missing = [r["id"] for r in manifest.rows if not r[attribute]]
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise ManifestError(
                f"{len(missing)} row(s) have no '{attribute}' label (ids: {shown})"
            )
        classes = tuple(sorted(set(values)))
        if len(classes) < 2:
            raise ManifestError(
                f"column '{attribute}' has a single class ({', '.join(classes) or 'none'}); "
                "a classifier needs at least two"
            )
        return cls(attribute=attribute, classes=classes)

    def __len__(self) -> int:
        return len(self.classes)

    def encode(self, value: str) -> int:
        """Index of a class name; ManifestError for an unknown value."""
        try:
            return self.classes.index(value)
        except ValueError:
            raise ManifestError(
                f"'{value}' is not a known {self.attribute} class "
                f"({', '.join(self.classes)})"
            ) from None

    def encode_all(self, manifest: Manifest) -> list[int]:
        """Class indices for every row of a manifest."""
        return [self.encode(v) for v in manifest.column(self.attribute)]

    def decode(self, index: int) -> str:
        """Class name of an index."""
        return self.classes[index]

"""The batch loop every protection system shares: one task per audio file or manifest row.

``process_files`` and ``process_manifest`` run a task per file or row: failures stopped on or
collected (``on_error``), reuse of the finished rows of a folder made with the same settings,
refusal of outputs that would overwrite an input, optional worker processes (spawned; a worker
imports only the task's module, so this module loads no torch), and the manifest of the
protected copy. ``optin.privacy.corpus`` (the obfuscator) and ``optin.baselines.anonymize``
(McAdams) build on it.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from optin.audio.io import AudioError
from optin.corpora.manifest import Manifest, ManifestError
from optin.errors import ConfigError, refuse_all_failed
from optin.files import claim_folder, refuse_overwrite

ON_ERROR = ("fail", "skip")

# A row task: (row, its audio file, file-safe id) -> (new column values incl. "path",
# True when it wrote the row now, False when it found the row already done).
RowTask = Callable[[dict[str, str], Path, str], tuple[dict[str, str], bool]]


@dataclass
class BatchReport:
    """Files written, reused (already done) and failed (with why).

    ``verb`` names the work in the summary ("obfuscated 3, already done 1, failed 0"),
    ``doing`` labels the progress bar.
    """

    written: int = 0
    reused: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    manifest: Path | None = None
    verb: str = "processed"
    doing: str = "processing"

    def summary(self) -> str:
        lines = [f"{self.verb} {self.written}, already done {self.reused}, "
                 f"failed {len(self.failed)}"]
        lines += [f"  {name}: {why}" for name, why in self.failed[:20]]
        if len(self.failed) > 20:
            lines.append(f"  ... and {len(self.failed) - 20} more")
        if self.manifest is not None:
            lines.append(f"manifest of the {self.verb} copy: {self.manifest}")
        return "\n".join(lines)


Report = TypeVar("Report", bound=BatchReport)


def safe_name(text: str) -> str:
    """A file-name-safe version of an id."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "item"


def split_inputs(inputs: Sequence[str | os.PathLike]) -> tuple[Path | None, list[Path]]:
    """``(manifest, [])`` for one ``.csv``, else ``(None, audio files)``.

    Raises:
        ConfigError: a manifest mixed with other inputs, or two files with the same stem
            (their outputs would overwrite each other).
    """
    paths = [Path(p) for p in inputs]
    if len(paths) == 1 and paths[0].suffix.lower() == ".csv":
        return paths[0], []
    if any(p.suffix.lower() == ".csv" for p in paths):
        raise ConfigError("give either one manifest .csv or audio files, not both")
    names = [p.stem for p in paths]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"inputs share the file name(s) {', '.join(duplicates)}; process "
                         "them into separate --out-dir folders")
    return None, paths


def process_files(paths: Sequence[Path], task: Callable[[Path], Any], report: Report,
                  progress: bool = True, on_error: str = "fail", workers: int = 1, *,
                  outputs: Callable[[Path], Sequence[Path]]) -> Report:
    """Run ``task(path)`` on every file; count writes, collect or raise failures.

    ``outputs(path)`` lists the files the task writes for ``path``; none may be an input.

    Raises:
        NothingReadError: every file failed (with ``on_error="skip"``).
    """
    _check_on_error(on_error)
    refuse_overwrite(paths, [out for p in paths for out in outputs(p)])
    with tqdm(total=len(paths), desc=report.doing, unit="file", disable=not progress) as bar, \
            contextlib.closing(_outcomes(task, [(p,) for p in paths], workers)) as outcomes:
        for i, _, err in outcomes:
            bar.update()
            if err is None:
                report.written += 1
            elif on_error == "fail":
                raise err
            else:
                report.failed.append((str(paths[i]), str(err)))
    refuse_all_failed(report.failed, report.written, "files", f"nothing was {report.verb}")
    return report


def process_manifest(manifest: Manifest, out: Path, task: RowTask, new_columns: Sequence[str],
                     report: Report, progress: bool = True, on_error: str = "fail",
                     workers: int = 1, *, outputs: Callable[[str], Sequence[Path]],
                     state: tuple[str, dict[str, Any]]) -> Report:
    """Run ``task`` on every row; write ``out/manifest.csv`` of the rows that succeeded.

    The new manifest keeps every row's columns, replaces them with what the task returns
    (``path`` to the protected audio and ``new_columns``) and keeps the input's row order.
    ``outputs(name)`` lists the files the task writes for a row (by file-safe id); none may
    be an input. ``state`` is ``(file name, settings)``: the settings are recorded in ``out``
    and a folder made with other settings is refused (see :func:`optin.files.claim_folder`).
    When every row failed (``on_error="skip"``), :class:`optin.errors.NothingReadError` is
    raised and no manifest is written.
    """
    _check_on_error(on_error)
    names = [safe_name(row["id"]) for row in manifest.rows]
    seen: dict[str, str] = {}
    for row, name in zip(manifest.rows, names, strict=True):
        if name in seen:
            raise ManifestError(f"ids '{seen[name]}' and '{row['id']}' give the same file "
                                f"name '{name}'; make them differ in letters, digits, '.', "
                                "'_' or '-'")
        seen[name] = row["id"]
    items = [(row, manifest.audio_path(row), name)
             for row, name in zip(manifest.rows, names, strict=True)]
    made = [path for name in names for path in outputs(name)]
    sources = [source for _, source, _ in items]
    refuse_overwrite(sources + ([Path(manifest.source)] if manifest.source else []),
                     [*made, out / "manifest.csv"])
    claim_folder(out, state[0], state[1], made, report.verb)
    done: dict[int, dict[str, str]] = {}
    with tqdm(total=len(items), desc=report.doing, unit="utt", disable=not progress) as bar, \
            contextlib.closing(_outcomes(task, items, workers)) as outcomes:
        for i, result, err in outcomes:
            bar.update()
            row_id = manifest.rows[i]["id"]
            if err is not None:
                if on_error == "fail":
                    raise AudioError(f"row '{row_id}': {err}") from err
                report.failed.append((row_id, str(err)))
                continue
            updates, written = result
            done[i] = updates
            if written:
                report.written += 1
            else:
                report.reused += 1
    refuse_all_failed(report.failed, len(done), "rows", f"nothing was {report.verb}")
    rows = [dict(manifest.rows[i], **done[i]) for i in sorted(done)]
    result_manifest = Manifest(rows=rows, columns=[*manifest.columns, *new_columns], root=out)
    report.manifest = result_manifest.write(out / "manifest.csv")
    return report


def _check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error: expected one of {', '.join(ON_ERROR)}, got {on_error!r}")


def _outcomes(fn: Callable[..., Any], items: Sequence[tuple], workers: int
              ) -> Iterator[tuple[int, Any, ValueError | None]]:
    """``(index, fn(*item), error)`` per item; errors are the ValueErrors (AudioError...) raised.

    With ``workers > 1`` the items run in that many spawned processes (``fn`` and the items
    must pickle; a worker imports only ``fn``'s module) and come back in the order they finish;
    closing the iterator cancels the rest.
    """
    if workers <= 1 or len(items) < 2:
        for i, item in enumerate(items):
            try:
                result = fn(*item)
            except ValueError as err:
                yield i, None, err
                continue
            yield i, result, None
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
    try:
        futures = {pool.submit(fn, *item): i for i, item in enumerate(items)}
        for future in as_completed(futures):
            try:
                result = future.result()
            except ValueError as err:
                yield futures[future], None, err
                continue
            yield futures[future], result, None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

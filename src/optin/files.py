"""Writing outputs safely: one atomic-write helper, output-folder checks, resumable folders.

Every file optin writes goes through :func:`atomic_output`: the data goes to a temporary file
beside the target (``.<name>.<pid>.tmp``), which is renamed onto the target only when it is
complete. On any failure (an exception, Ctrl-C, SIGTERM, a full disk, a file-size limit) the
temporary file is removed and the target is left as it was; an ``OSError`` becomes an
:class:`OutputError` naming the target and the cause (``cannot write d/x.wav: No space left on
device``). While a temporary exists, SIGTERM is raised in the main thread as
:class:`Terminated` (a ``KeyboardInterrupt``), so ``kill`` cleans up as Ctrl-C does.

Commands check their output folder first with :func:`prepare_out_dir`; a command that writes
one file checks it with :func:`prepare_out_file`, which also refuses it when it would overwrite
one of the command's inputs (:func:`refuse_overwrite`, the one output-over-input check, which
the batch commands run on every file they will write). Folders resume only when made with the
same settings (:func:`claim_folder`). A command that is refused leaves its outputs as it found
them (:func:`restored_on_refusal`); an input file that is a folder or a pipe is named as such
(:func:`file_problem`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from optin.errors import OptinError


class OutputError(OptinError):
    """An output that cannot or must not be written; the message names the path and why."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's ``KeyboardInterrupt`` so that the same cleanup runs."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(f"terminated (signal {signum})")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` in the main thread instead of
    ending the process on the spot. Only where SIGTERM has its default action (a handler
    installed by someone else, e.g. a web server, is kept) and only in the main thread."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def removed_on_failure(tmp: Path, target: Path) -> Iterator[None]:
    """Remove ``tmp`` (a file or folder) if the block fails or the process is interrupted
    (Ctrl-C, or SIGTERM: see :func:`sigterm_as_interrupt`); an ``OSError`` becomes an
    :class:`OutputError` naming ``target``."""
    with sigterm_as_interrupt():
        try:
            yield
        except BaseException as err:
            _remove(tmp)
            if isinstance(err, OSError):
                raise OutputError(f"cannot write {target}: {_cause(err)}") from err
            raise


def _remove(tmp: Path) -> None:
    """Remove a temporary file or folder, if it is there."""
    with contextlib.suppress(OSError):
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp)
        else:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends, rename it onto ``path``.

    The parent folder is created. ``suffix`` ends the temporary name, for writers that add
    one of their own (``np.save`` adds ``.npy``). On failure nothing is left behind.

    Raises:
        OutputError: the file cannot be written (the OSError's cause, naming ``path``).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    with removed_on_failure(tmp, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, data: Any, sort_keys: bool = False) -> Path:
    """Write ``data`` as indented JSON atomically."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=sort_keys) + "\n")


def prepare_out_dir(path: str | os.PathLike, option: str = "--out-dir") -> Path:
    """Create the output folder ``path`` and check that files can be made in it.

    Raises:
        OutputError: one line naming the option, the path and the cause: a file in the
            way, no permission, a read-only or special file system...
    """
    path = Path(path)
    problem = _folder_problem(path)
    if problem:
        raise OutputError(f"{option} {path}: {problem}")
    return path


def check_out_dir(path: str | os.PathLike, option: str = "--out-dir") -> Path:
    """What :func:`prepare_out_dir` can tell without creating anything: a file in the way.

    Commands that load and check their inputs before making their output folder call this
    first, so that both problems are reported in the order a user expects.
    """
    path = Path(path)
    blocker = _file_in_the_way(path)
    if blocker is not None:
        raise OutputError(f"{option} {path}: cannot create the folder: {blocker} is a file")
    return path


def prepare_out_file(path: str | os.PathLike, option: str = "--out", *,
                     inputs: Iterable[str | os.PathLike]) -> Path:
    """Check that the file ``path`` can be written: not over one of the command's ``inputs``
    (:func:`refuse_overwrite`; checked first, before anything is made), its folder as
    :func:`prepare_out_dir`, and ``path`` itself not a folder.

    Every command that writes one file calls this, naming all it reads (``inputs=()`` when
    writing over its input is what the command is for).
    """
    path = Path(path)
    refuse_overwrite([Path(p) for p in inputs], [path], option)
    if path.is_dir():
        raise OutputError(f"{option} {path}: is a folder; give a file name")
    problem = _folder_problem(path.parent)
    if problem:
        raise OutputError(f"{option} {path}: its folder {path.parent}: {problem}")
    return path


def _file_in_the_way(path: Path) -> Path | None:
    """The first of ``path`` and its parents that exists and is not a folder, or None."""
    return next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)


def _folder_problem(path: Path) -> str | None:
    """Create the folder ``path``; what stops files being written in it, or None."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        blocker = _file_in_the_way(path)
        if blocker is not None:
            return f"cannot create the folder: {blocker} is a file"
        return f"cannot create the folder: {_cause(err)}"
    try:
        fd, probe = tempfile.mkstemp(prefix=".optin-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        return f"cannot write files in this folder: {_cause(err)}"
    return None


def refuse_overwrite(inputs: Iterable[Path], outputs: Iterable[Path],
                     option: str = "--out-dir") -> None:
    """Refuse when an output is an input: the same path after resolving links, or the same
    file under another name (a hard link). Inputs are files (a model folder is given as the
    files it is read from: :func:`optin.checkpoint.checkpoint_files`).

    Raises:
        OutputError: naming both files.
    """
    known: dict[object, Path] = {}
    for source in inputs:
        known[source.resolve()] = source
        with contextlib.suppress(OSError):
            st = source.stat()
            known[(st.st_dev, st.st_ino)] = source
    for out in outputs:
        source = known.get(out.resolve())
        if source is None:
            with contextlib.suppress(OSError):
                st = out.stat()
                source = known.get((st.st_dev, st.st_ino))
        if source is not None:
            raise OutputError(f"the output {out} would overwrite the input {source}; "
                              f"choose another {option}")


def claim_folder(out: Path, state_name: str, settings: dict[str, Any], made: Iterable[Path],
                 verb: str) -> None:
    """Let a run resume in ``out`` only if the same settings made what is there.

    The settings are recorded in ``out/state_name`` on the first run. A folder whose record
    differs, or that holds outputs (``made``, the files this run would reuse) but no record,
    is refused.

    Args:
        verb: what the outputs are ("anonymized", "obfuscated"), for the message.

    Raises:
        OutputError: naming the folder and the settings that differ.
    """
    state = out / state_name
    settings = json.loads(json.dumps(settings))  # as it reads back
    if state.is_file():
        try:
            found = json.loads(state.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise OutputError(f"{state} cannot be read ({err}); remove it or choose another "
                              "--out-dir") from err
        if found == settings:
            return
        if not isinstance(found, dict):
            raise OutputError(f"{state} holds no settings; remove it or choose another "
                              "--out-dir")
        old, new = _flatten(found), _flatten(settings)
        diff = ", ".join(f"{k}: {_short(old.get(k))} there, {_short(v)} now"
                         for k, v in new.items() if old.get(k) != v)
        raise OutputError(f"{out} holds files {verb} with other settings ({diff or found}); "
                          "use the same settings to resume, or another --out-dir")
    existing = next((p for p in made if p.exists()), None)
    if existing is not None:
        raise OutputError(f"{out} holds {existing} but no {state_name}, so the settings it "
                          "was made with are unknown; choose an empty or new --out-dir")
    write_json(state, settings, sort_keys=True)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _short(value: Any) -> str:
    """``repr`` with long strings (hashes) cut to 12 characters."""
    if isinstance(value, str) and len(value) > 16:
        return repr(value[:12] + "...")
    return repr(value)


def _cause(err: OSError) -> str:
    """The readable part of an OSError ("No space left on device")."""
    return err.strerror or str(err) or type(err).__name__


def file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be read as an input file (None when it can): it does not exist, is
    a folder, or is not a regular file (a pipe or a device, which might never end)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as err:
        return f"cannot be read ({_cause(err)})"
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a pipe, socket or device)"
    return None


def folder_holding(path: str | os.PathLike, names: Collection[str]) -> Path | None:
    """The first of ``path`` and its parents that is a folder holding every file in ``names``
    (a checkpoint folder: ``config.json`` and ``model.safetensors``), or None."""
    path = Path(path).absolute()
    return next((p for p in (path, *path.parents)
                 if p.is_dir() and all((p / n).is_file() for n in names)), None)


def _tree(path: Path) -> set[Path]:
    """Every file and folder under ``path`` (links not followed), ``path`` included."""
    found = {path}
    for root, dirs, files in os.walk(path):
        found.update(Path(root) / n for n in (*dirs, *files))
    return found


def _first_missing(path: Path) -> Path | None:
    """The topmost of ``path`` and its parents that does not exist (what creating it makes)."""
    missing = None
    for p in (path, *path.parents):
        if os.path.lexists(p):
            break
        missing = p
    return missing


@contextlib.contextmanager
def restored_on_refusal(folders: Iterable[Path], records: Collection[str]) -> Iterator[None]:
    """Put the output ``folders`` back as they were when the block is refused (an
    :class:`~optin.errors.OptinError` or ``OSError``): the folders it created and the files it
    added there are removed, as long as they are only folders and settings records (files
    named in ``records``, such as ``run.json``). Any other new file is work a rerun resumes
    from, and all is kept. An interrupt (Ctrl-C) keeps everything, for the same reason."""
    before = {}
    for folder in folders:
        missing = _first_missing(folder)
        before[folder] = (missing, None if missing or not folder.is_dir() else _tree(folder))
    try:
        yield
    except (OptinError, OSError):
        for folder, (missing, tree) in before.items():
            _undo(missing or folder, set() if missing else tree, records)
        raise


def _undo(root: Path, tree: set[Path] | None, records: Collection[str]) -> None:
    """Remove what was added under ``root`` since ``tree`` (empty: ``root`` itself was made),
    if it is only folders and records."""
    if tree is None or not root.is_dir() or root.is_symlink():
        return
    added = _tree(root) - tree
    if any(not p.is_dir() and p.name not in records for p in added):
        return
    with contextlib.suppress(OSError):
        for p in sorted(added, key=lambda q: len(q.parts), reverse=True):
            if p.is_dir() and not p.is_symlink():
                p.rmdir()
            else:
                p.unlink()


def not_a_file(path: Path, what: str) -> str:
    """Why ``path`` (given as ``what``, e.g. "manifest") cannot be read as a file: it is a
    folder, or something else that is not a regular file, or it does not exist."""
    if path.is_dir():
        return f"{what} {path} is a folder, not a file"
    if path.exists() or path.is_symlink():
        return f"{what} {path} is not a regular file"
    return f"{what} {path} does not exist"

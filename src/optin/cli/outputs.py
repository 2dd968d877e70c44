"""What each command writes, and the two rules every command keeps about it.

:data:`OUTPUTS` names, per command, the options that say where it writes: a ``FILE``, a
``FOLDER`` it fills, or a training ``RUN`` folder (which holds checkpoints of its own).

* Nothing is written into a model: an output inside a checkpoint folder (``config.json`` +
  ``model.safetensors``) or a training run folder (``run.json``) is refused before the
  command runs (:func:`refuse_model_folders`), except a training run's own ``--out``, which
  resumes there (a checkpoint folder that holds no ``run.json`` was not made by a run, and is
  refused as well).
* A refused command leaves the file system as it found it (:func:`guarded`): the folders it
  made for its outputs, and the settings records it wrote there before the refusal, are
  removed (:func:`optin.files.restored_on_refusal`). What a rerun resumes from is kept.

The names here are those of :mod:`optin.checkpoint`, :mod:`optin.training.records` and the
batch writers (``tests/test_cli_outputs.py`` checks that they agree); they are spelled out so
that this module, which every command goes through, loads no torch.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

from optin.cli.options import command_path
from optin.files import OutputError, folder_holding, restored_on_refusal

FILE, FOLDER, RUN = "file", "folder", "run"
CHECKPOINT_FILES = ("config.json", "model.safetensors")
RUN_RECORD = "run.json"
# settings records a command writes before its work (a refusal may remove them)
RECORDS = frozenset({RUN_RECORD, "obfuscation.json", "anonymization.json",
                     ".synth_state.json"})

OUTPUTS: dict[tuple[str, ...], tuple[tuple[str, str], ...]] = {
    ("data", "import"): (("out", FILE),),
    ("data", "synth"): (("out", FOLDER),),
    ("data", "split"): (("out", FILE),),
    ("data", "features"): (("cache_dir", FOLDER),),
    ("train", "target"): (("out", RUN), ("cache_dir", FOLDER)),
    ("train", "attacker"): (("out", RUN), ("cache_dir", FOLDER)),
    ("train", "templates"): (("out", RUN),),
    ("train", "obfuscator"): (("out", RUN), ("cache_dir", FOLDER)),
    ("obfuscate",): (("out_dir", FOLDER),),
    ("anonymize",): (("out_dir", FOLDER),),
    ("eval",): (("cache_dir", FOLDER),),
    ("content",): (("json", FILE),),
    ("gauge",): (("json", FILE), ("cache_dir", FOLDER)),
    ("experiment",): (("out", FOLDER),),
    ("report",): (("out", FOLDER),),
    ("demo",): (("out", FOLDER),),
    ("stream",): (("output", FILE),),
    ("export",): (("out", FILE), ("cache_dir", FOLDER)),
}


def outputs_of(args: argparse.Namespace) -> list[tuple[str, Path, str]]:
    """(option, path, kind) of every output the parsed command names (``-`` is stdout)."""
    found = []
    for dest, kind in OUTPUTS.get(command_path(args), ()):
        value = getattr(args, dest, None)
        if value is not None and str(value) != "-":
            found.append(("--" + dest.replace("_", "-"), Path(value), kind))
    return found


def refuse_model_folders(args: argparse.Namespace) -> None:
    """Refuse an output inside a checkpoint or run folder (a training run's own ``--out``
    excepted, when it is a run folder), naming the option and the folder.

    Raises:
        OutputError: one line.
    """
    for option, path, kind in outputs_of(args):
        folder = path if kind != FILE else path.parent
        if kind == RUN and (folder / RUN_RECORD).is_file():
            folder = folder.parent  # a run resuming in its own folder; not inside another
        model = folder_holding(folder, CHECKPOINT_FILES) or folder_holding(folder, (RUN_RECORD,))
        if model is not None:
            what = ("a checkpoint folder" if all((model / n).is_file() for n in CHECKPOINT_FILES)
                    else "a training run folder")
            shown = _shown(model)
            where = ("is" if model == path.absolute() and kind != FILE
                     else f"is inside {shown}, which is")
            raise OutputError(f"{option} {path}: {where} {what}; models are never written "
                              "into: choose another path")


def _shown(folder: Path) -> Path:
    """``folder`` relative to the current folder when it is under it (as a user typed it)."""
    try:
        return folder.relative_to(Path.cwd())
    except ValueError:
        return folder


@contextlib.contextmanager
def guarded(args: argparse.Namespace) -> Iterator[None]:
    """Run a command so that, refused, it leaves its outputs as it found them."""
    refuse_model_folders(args)
    folders = [path if kind != FILE else path.parent for _, path, kind in outputs_of(args)]
    if command_path(args) == ("report",) and args.out is None:
        folders.append(Path(args.dirs[0]))  # where the report goes by default
    with restored_on_refusal(folders, RECORDS):
        yield

"""The ``optin`` command line: argument parsing only; every command is one call into the API.

Logs and progress go to stderr; results that scripts read go to stdout. Exit status:

* 0: done.
* 2: an error about the user's input, files or settings (:class:`optin.errors.OptinError`) or
  the file system (``OSError``: no space, no permission...): one line on stderr,
  ``error: <path or field>: <cause>``. Any other exception is a bug and keeps its traceback;
  ``OPTIN_DEBUG=1`` shows the traceback for every error.
* 130: interrupted (Ctrl-C); rerunning the same command resumes.
* 143: terminated (SIGTERM, e.g. ``kill``) while writing: cleaned up as for Ctrl-C, the
  partial file removed (:func:`optin.files.sigterm_as_interrupt`).
* 141: stdout was closed early (``optin data info m.csv | head``): the output stops quietly,
  as for a program killed by SIGPIPE (128 + 13), which is what shells report for them.

Every command that writes checks its output folder first (:func:`optin.files.prepare_out_dir`),
so a path under a file, a read-only or special file system fails at once, naming the path; one
that writes a single file names all it reads (:func:`optin.files.prepare_out_file`), so its
output never replaces one of its inputs. Options that do not apply to what was asked are
refused, not ignored: every command's options are checked against one table
(:mod:`~optin.cli.options`) before it runs. A refused command leaves the file system as it found
it, and nothing is written into a model's folder (:mod:`~optin.cli.outputs`).

Each command imports its modules when it runs (the one place where optin imports inside
functions): ``optin --help`` and a mistyped option answer at once instead of loading torch,
onnx and scipy first (about 5 s). The training commands' options are generated from their
config classes (:func:`add_settings`).

One module per command group, each with its commands' options beside what they call:
:mod:`~optin.cli.data`, :mod:`~optin.cli.train`, :mod:`~optin.cli.protect` (obfuscate,
anonymize), :mod:`~optin.cli.evaluate` (eval, content, gauge), :mod:`~optin.cli.experiments`
(experiment, report, demo), :mod:`~optin.cli.deploy` (stream, export, bench) and
:mod:`~optin.cli.serve`; the option types they share in :mod:`~optin.cli.common`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from optin import __version__
from optin.cli.common import add_settings, settings_given
from optin.cli.data import add_data_commands
from optin.cli.deploy import add_bench, add_export, add_stream
from optin.cli.evaluate import add_content, add_eval, add_gauge
from optin.cli.experiments import add_demo, add_experiment, add_report
from optin.cli.options import check_options, given_options
from optin.cli.outputs import guarded
from optin.cli.protect import add_anonymize, add_obfuscate
from optin.cli.serve import add_serve
from optin.cli.train import add_train_commands, target_choices_of
from optin.errors import OptinError
from optin.files import Terminated

__all__ = ["add_settings", "build_parser", "error_line", "main", "settings_given",
           "target_choices_of"]


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser (one sub-parser per command).

    The training commands' options come from their config classes (:func:`add_settings`),
    whose modules load torch; given the ``argv`` about to be parsed, they are added only when
    the command is ``train``, so that ``optin --help`` and the other commands start without it.
    Without ``argv``, the full parser.
    """
    command = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    training = argv is None or command == "train"
    parser = argparse.ArgumentParser(
        prog="optin", description="Opt-in privacy protection for audio."
    )
    parser.add_argument("--version", action="version", version=f"optin {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # the commands, in the order ``optin --help`` lists them
    add_data_commands(sub)
    add_train_commands(sub, training=training)
    add_obfuscate(sub)
    add_eval(sub)
    add_experiment(sub)
    add_report(sub)
    add_anonymize(sub)
    add_stream(sub)
    add_export(sub)
    add_bench(sub)
    add_demo(sub)
    add_serve(sub)
    add_content(sub)
    add_gauge(sub)
    return parser


def error_line(err: OptinError | OSError) -> str:
    """One line for an error: the message, or for an OSError the file(s) and the cause."""
    if isinstance(err, OSError) and not isinstance(err, OptinError):
        cause = err.strerror or str(err) or type(err).__name__
        names = [str(n) for n in (err.filename, err.filename2) if n is not None]
        text = f"{' -> '.join(names)}: {cause}" if names else cause
    else:
        text = str(err) or type(err).__name__
    return "error: " + " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``optin`` program (exit statuses in the module docstring)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    debug = bool(os.environ.get("OPTIN_DEBUG"))
    try:
        check_options(args, given_options(build_parser(argv), argv), parser)
        with guarded(args):
            status = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return status
    except BrokenPipeError:
        _silence_stdout()
        return 141
    except (OptinError, OSError) as err:
        if debug:
            raise
        print(error_line(err), file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        how = "terminated" if isinstance(err, Terminated) else "interrupted"
        print(f"{how}; rerun the same command to resume", file=sys.stderr)
        return 143 if isinstance(err, Terminated) else 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the flush at exit does not fail on the closed pipe."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # replaced by a test harness
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)

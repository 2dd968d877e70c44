"""``optin serve``: a local web page over a run folder (:mod:`optin.serve`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from optin.cli.common import Subcommands, add_command, ranged
from optin.settings import between


def add_serve(sub: Subcommands) -> None:
    p = add_command(sub, "serve", _serve,
                    "a local web page to hear, see and test a run's protection")
    p.add_argument("run_dir", nargs="?", type=Path, default=Path("optin-demo"), metavar="RUN_DIR",
                   help="an `optin demo` or `optin experiment` folder (default: optin-demo)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    p.add_argument("--port", type=ranged(int, between(1, 65535)), default=8000)
    p.add_argument("--experiment", help="which experiment of the run (default: the largest)")


def _serve(args: argparse.Namespace) -> int:
    from optin.serve.web import serve_folder

    serve_folder(args.run_dir, host=args.host, port=args.port, experiment=args.experiment)
    return 0

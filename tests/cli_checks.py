"""What the hostile-input tests share: file digests and the one-error-line check (their
working folder is the ``work`` fixture of ``tests/conftest.py``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from optin.cli import main


def digests(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(args: list[str], capsys, *names: str) -> str:
    """Run ``optin args``; check for one error line naming ``names``; return it."""
    assert main([*args, "-q"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]

"""Files and functions stay short enough to read (issue 25): no file over 500 lines and no
function over 80 (the argument parser included), checked on the source. Scoped to the CLI
package for now; the other packages join as they are split."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "optin"
CHECKED = [SRC / "cli"]
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80


def _files() -> list[Path]:
    return sorted(p for folder in CHECKED for p in folder.rglob("*.py"))


def _long_functions(source: str, limit: int) -> list[tuple[str, int, int]]:
    """(name, first line, length) of every function or method longer than ``limit`` lines,
    nested ones included; a function's length runs from its ``def`` to its last line."""
    return [(node.name, node.lineno, node.end_lineno - node.lineno + 1)
            for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > limit]


def test_the_checked_folders_hold_the_code() -> None:
    assert len(_files()) > 2, CHECKED  # a moved folder fails here rather than passing empty


def test_no_file_over_500_lines() -> None:
    rel = SRC.parent
    long = [f"{p.relative_to(rel)}: {n} lines" for p in _files()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES]
    assert not long, "files over 500 lines:\n" + "\n".join(long)


def test_no_function_over_80_lines() -> None:
    rel = SRC.parent
    long = [f"{p.relative_to(rel)}:{line} {name}: {n} lines" for p in _files()
            for name, line, n in _long_functions(p.read_text(encoding="utf-8"),
                                                 MAX_FUNCTION_LINES)]
    assert not long, "functions over 80 lines:\n" + "\n".join(long)


def test_the_function_finder_counts_from_def_to_the_last_line() -> None:
    def function(name: str, body_lines: int, indent: str = "") -> str:
        return f"{indent}def {name}():\n" + "".join(f"{indent}    x = {i}\n"
                                                   for i in range(body_lines))

    source = (function("just_80", 79) + "async " + function("too_long", 80)
              + "class C:\n" + function("method", 80, indent="    "))
    assert {name: n for name, _, n in _long_functions(source, 80)} == {"too_long": 81,
                                                                      "method": 81}

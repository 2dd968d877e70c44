"""The package's layer order, checked on the source (every import, at any depth).

Layers, lowest first; a module may import its own layer and those below, never above:

    optin (version), errors, files, settings
    audio
    corpora
    models
    checkpoint, metrics
    privacy             (the Obfuscator wrapper, losses, the deobfuscator adversary)
    training
    baselines
    evaluation
    deploy
    demo
    serve               (the local web page over a run: optin serve)
    cli, __main__, testing (test helpers: nothing imports them)

Also: no import cycle between modules (within a layer too), and no ``optin`` import inside a
function, except in the CLI, which imports a command's modules when the command runs so that
``optin --help`` does not load torch, onnx and scipy (about 5 s).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
LAYERS = [
    {"optin", "errors", "files", "settings"},
    {"audio"},
    {"corpora"},
    {"models"},
    {"checkpoint", "metrics"},
    {"privacy"},
    {"training"},
    {"baselines"},
    {"evaluation"},
    {"deploy"},
    {"demo"},
    {"serve"},
    {"cli", "__main__", "testing"},
]
LAZY_ALLOWED = "optin.cli"  # the CLI package, every module of it


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / "optin").rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """The module an imported name lives in (``optin.a.b.func`` -> ``optin.a.b``)."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function?) for every ``optin`` import of a file."""
    return _imports_in(path.read_text(encoding="utf-8"), modules)


def _imports_in(source: str, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    tree = ast.parse(source)
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0 \
                    and child.module.split(".")[0] == "optin":
                for alias in child.names:
                    found.append((_resolve(f"{child.module}.{alias.name}", modules),
                                  child.lineno, nested))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "optin":
                        found.append((_resolve(alias.name, modules), child.lineno, nested))
            visit(child, inner)

    visit(tree, False)
    return found


def _layer(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "optin"
    for index, names in enumerate(LAYERS):
        if key in names:
            return index
    raise AssertionError(f"{module}: not in any layer of tests/test_layers.py")


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: {t for t, _, _ in _imports(p, modules) if t != m} for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_every_module_has_a_layer() -> None:
    for module in _modules():
        _layer(module)


def test_no_import_reaches_up_a_layer() -> None:
    modules = _modules()
    upward = sorted({f"{m} (line {line}) -> {t}" for m, p in modules.items()
                     for t, line, _ in _imports(p, modules) if _layer(t) > _layer(m)})
    assert not upward, "imports up the layer order:\n" + "\n".join(upward)


def test_no_import_cycle_between_modules() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_optin_import_inside_a_function() -> None:
    modules = _modules()
    lazy = sorted({f"{m} (line {line}) -> {t}" for m, p in modules.items()
                   if m != LAZY_ALLOWED and not m.startswith(LAZY_ALLOWED + ".")
                   for t, line, nested in _imports(p, modules) if nested})
    assert not lazy, "imports inside functions:\n" + "\n".join(lazy)


@pytest.mark.parametrize("source, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_cycle_finder_finds_cycles(source: dict[str, set[str]],
                                       expected: list[list[str]]) -> None:
    assert _cycles(source) == expected


def test_the_import_finder_sees_nested_and_from_imports() -> None:
    modules = _modules()
    source = ("import os\nfrom optin.files import write_json\n\n"
              "def f():\n    from optin.evaluation.report import build_report\n"
              "    import optin.training.runs\n")
    assert _imports_in(source, modules) == [("optin.files", 2, False),
                                            ("optin.evaluation.report", 5, True),
                                            ("optin.training.runs", 6, True)]
    assert _layer("optin.evaluation.report") > _layer("optin.training.runs")

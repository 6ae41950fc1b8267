"""The package's layering, as the ``hiveloop_async`` docstring draws it, checked on the source.

A module may import (at module level, outside ``if TYPE_CHECKING:``) only modules of lower
layers; no module imports a sibling of the package inside a function, which is how a cycle
would hide. The docstring's table must list exactly these layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import hiveloop_async

PACKAGE = Path(hiveloop_async.__file__).parent

#: Bottom to top; a module imports only from lower layers. Subpackages count as one module.
LAYERS: list[list[str]] = [
    ["_exceptions", "_internal", "_version", "_ids", "_wire", "_context", "_payloads", "_forward"],
    ["_tracecontext", "_queue", "_scrub", "_hooks", "_spool"],
    ["_track", "_otlp"],
    ["_recording"],
    ["_task"],
    ["_agent"],
    ["_config", "_serialize", "_delivery", "_resolve", "_sampling"],
    ["_otlp_sender", "_spooler"],
    ["_transport"],
    ["_runner"],
    ["_client"],
    ["_api"],
    ["__init__", "testing", "contrib"],
    ["_server", "_render"],
    ["_cli"],
    ["__main__"],
]
LAYER = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _unit(path: Path) -> str:
    """The layering unit of a source file: its top-level module or subpackage name."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _target(node: ast.ImportFrom, path: Path) -> list[str]:
    """The package units a ``from ... import`` names (empty for other packages)."""
    rel = path.relative_to(PACKAGE)
    if node.level == 0:
        mod = node.module or ""
        if not mod.startswith("hiveloop_async"):
            return []
        parts = mod.split(".")[1:]
    else:
        base = list(rel.parts[:-1])
        up = node.level - 1
        if up > len(base):
            return []
        base = base[: len(base) - up]
        parts = base + (node.module.split(".") if node.module else [])
    if parts:
        return [parts[0]]
    return [alias.name for alias in node.names]  # "from . import _x"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module, path: Path) -> tuple[set[str], list[int]]:
    """Package units imported at run time, and the lines of function-local package imports."""
    top: set[str] = set()
    local: list[int] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for orelse in child.orelse:
                    visit(orelse, in_function)
                continue
            if isinstance(child, ast.ImportFrom):
                targets = [t for t in _target(child, path) if t != _unit(path)]
                if targets and in_function:
                    local.append(child.lineno)
                top.update(targets)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("hiveloop_async."):
                        part = alias.name.split(".")[1]
                        if in_function:
                            local.append(child.lineno)
                        top.add(part)
            nested = in_function or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            visit(child, nested)

    visit(tree, False)
    return top, local


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    units = {_unit(p) for p in _sources()}
    assert units - LAYER.keys() == set(), "add new modules to LAYERS and the docstring"
    assert LAYER.keys() - units == set(), "LAYERS names a module that does not exist"


def test_modules_import_only_from_lower_layers() -> None:
    wrong = []
    for path in _sources():
        unit = _unit(path)
        imported, _ = _imports(ast.parse(path.read_text()), path)
        for target in imported:
            if target in LAYER and LAYER[target] >= LAYER[unit] and target != unit:
                rel = path.relative_to(PACKAGE)
                wrong.append(f"{rel} imports {target} (layer {LAYER[target]} ≥ {LAYER[unit]})")
    assert wrong == []


def test_no_function_local_imports_of_the_package() -> None:
    found = []
    for path in _sources():
        _, local = _imports(ast.parse(path.read_text()), path)
        found += [f"{path.relative_to(PACKAGE)}:{line}" for line in local]
    assert found == []


def test_the_package_docstring_draws_these_layers() -> None:
    doc = hiveloop_async.__doc__ or ""
    table = [line for line in doc.splitlines() if line.startswith("    ") and line.strip()]
    drawn = [line.strip().split("  ")[0].replace(",", " ").split() for line in table]
    assert [sorted(layer) for layer in drawn] == [sorted(layer) for layer in LAYERS]

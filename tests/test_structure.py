"""The package's shape, checked on its source (ast, no import of labkit): the floors of DESIGN.md's picture, no
import circle, one shell-out module, labs that stand alone and do not plot, thin notebooks.

Floors, from the ground up: ``labkit.errors``/``labkit.paths`` → ``labkit.instruments`` → ``labkit.core`` →
``labkit.labs`` → ``labkit.app`` (→ ``labkit.__main__``). A module imports only from its own floor or below.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "labkit"
FLOORS = ("ground", "instruments", "core", "labs", "app", "main")
MAX_CELL_LINES = 10  # non-blank lines in a notebook's code cell: more is logic that belongs in the lab

# Every guard's known exceptions, in one place: work that is planned but not done yet (issue 15, section 3).
# A guard fails on anything new, and on an entry here that no longer occurs (remove it when its work lands).
KNOWN_EXCEPTIONS: dict[str, set[str]] = {
    # None left: what two labs share is an instrument or a file under labkit/assets/.
    "lab imports lab": set(),
    # None left: 07's plots are labkit.instruments.plots helpers.
    "lab imports matplotlib": set(),
    # None left: plot code is in labkit.instruments.plots helpers.
    "notebook cell over 10 lines": set(),
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imported(path: Path) -> Iterator[str]:
    """Every module name `path` imports, at the top or inside a function (a local import is still an import)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import module`


def _resolve(name: str) -> str | None:
    """The labkit module `name` refers to (a name inside a module resolves to the module), or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """labkit module → the labkit modules it imports (a package's ``__init__`` is the package's name)."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        targets = {_resolve(name) for name in _imported(path) if name.split(".")[0] == "labkit"}
        graph[module] = {t for t in targets if t and t != module and t != "labkit" and not module.startswith(t + ".")}
    return graph


GRAPH = import_graph()


def floor(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in FLOORS:
        return parts[1]
    return "main" if module == "labkit.__main__" else "ground"


def _is_lab(module: str) -> bool:
    return floor(module) == "labs" and module != "labkit.labs"


def _lab(module: str) -> str:
    """The lab a module belongs to: ``labkit.labs.<name>``, a module or a package split by the notebook's sections."""
    return ".".join(module.split(".")[:3])


def _third_party(path: Path, name: str) -> bool:
    return any(imported == name or imported.startswith(name + ".") for imported in _imported(path))


def violations(guard: str) -> set[str]:
    if guard == "lab imports lab":
        return {f"{_lab(m)} -> {_lab(t)}" for m, targets in GRAPH.items() if _is_lab(m)
                for t in targets if _is_lab(t) and _lab(t) != _lab(m)}
    if guard == "lab imports matplotlib":
        return {m for m, path in MODULES.items() if floor(m) == "labs" and _third_party(path, "matplotlib")}
    if guard == "notebook cell over 10 lines":
        return {f"{path.stem} {cell.get('id')}" for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
                for cell in nbformat.read(path, as_version=4).cells
                if cell.cell_type == "code" and "parameters" not in cell.metadata.get("tags", [])  # knobs, no logic
                and sum(1 for line in cell.source.splitlines() if line.strip()) > MAX_CELL_LINES}
    raise KeyError(guard)


@pytest.mark.parametrize("guard", sorted(KNOWN_EXCEPTIONS))
def test_nothing_new_breaks_a_guard(guard: str) -> None:
    assert violations(guard) - KNOWN_EXCEPTIONS[guard] == set()


@pytest.mark.parametrize("guard", sorted(KNOWN_EXCEPTIONS))
def test_every_known_exception_still_occurs(guard: str) -> None:
    """An exception whose work has landed leaves the list, so that the guard holds from then on."""
    assert KNOWN_EXCEPTIONS[guard] - violations(guard) == set()


@pytest.mark.parametrize("module", sorted(MODULES), ids=str)
def test_no_import_runs_up_a_floor(module: str) -> None:
    """Instruments never import core, labs or app; core never imports labs or app; labs never import app."""
    upward = {t for t in GRAPH[module] if FLOORS.index(floor(t)) > FLOORS.index(floor(module))}
    assert upward == set()


def test_only_the_application_finds_the_labs() -> None:
    """Importing every lab (the `labkit.labs` package) is the catalogue's job, in the application."""
    finders = {m for m, targets in GRAPH.items() if floor(m) != "labs" and any(floor(t) == "labs" for t in targets)}
    assert {floor(m) for m in finders} <= {"app"}, finders


def test_the_import_graph_has_no_circle() -> None:
    """Function-local imports count: hiding a circle inside a function does not remove it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(GRAPH[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while (member := stack.pop()) != module:
                component.append(member)
            if component:
                circles.append(sorted([module, *component]))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert circles == []


def test_subprocess_is_imported_only_by_the_shell_module() -> None:
    """Every shell-out goes through labkit.instruments.shell (run/spawn: logged, time-limited, one error type).
    The one exception is a program labkit hands to another machine, where labkit is not installed: notebook 15's
    probe runs inside the lab machine (and, unchanged, on the host, through shell.run)."""
    importers = {m for m, path in MODULES.items() if _third_party(path, "subprocess")}
    assert importers == {"labkit.instruments.shell", "labkit.assets.lab_machine.probe"}


def test_proc_is_parsed_in_procfs_only() -> None:
    """No module but procfs reads a file under /proc itself (existence checks are fine)."""
    readers = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "procfs.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "/proc" in line and any(call in line for call in (".read_text(", ".read_bytes(", "open(")):
                readers.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert readers == []

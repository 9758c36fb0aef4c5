"""The execution cache: `labkit run` executes a notebook again only when one of its inputs changed.

A notebook's inputs, each with a digest: the notebook file; every labkit file its code imports, followed
transitively through the import graph (its lab, the instruments and core modules the lab imports, the packages
above them, and the data files of each package reached, e.g. a C source beside an instrument); of labkit/assets/,
the folders that a string in that code names (``"compose/compose.yaml"``, ``ASSETS = "compose"``) and, of the
claims' words, the notebook's own file; every file below the folders its ``LAB`` says it reads (``reads``: notebook
06 lints every Dockerfile of the series); labkit's version; the recipe digest of each base its ``LAB`` declares;
the host's fingerprint (with the engine's); and how it runs (quick or full, live or replay). The key is the digest
of them all. The import graph, not a hash of all of labkit: an edit to one instrument, or to one lab's asset, then
executes again only the notebooks whose code reaches it. It errs on the side of executing: a function's local
import counts, a folder without ``__init__.py`` counts as data, and any string naming an asset folder counts (a
column named "compose" brings assets/compose/).

After a successful execution the runner writes the key, the inputs and why it executed into the executed copy's
metadata (``labkit.execution``) and into its results' provenance.json (``execution``). A later run with the same
key reuses that copy and its results, but only when the copy finished without an error and its results folder is
the one from that execution. Only full live runs are reused (:func:`reuse_refused`): quick runs are how the
tests and the authors check that a notebook still works, and a replay reads committed files that are not inputs
here; both are cheap enough to execute every time, and a recording always measures anew.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit import paths
from labkit.core.lab import Lab
from labkit.core.results import PROVENANCE

METADATA = "labkit"  # the executed copy's metadata section labkit writes (``metadata.labkit.execution``)
FIELD = "execution"  # ... and the field it adds to provenance.json
PACKAGE = "labkit"  # imports followed: labkit's own modules (a library's version is not an input, see the README)
ASSETS = Path("labkit/assets")  # its sub-folders are inputs only where the code reached names them
# The asset folders of one file per notebook (``<stem>.toml``): the claims' words and the host requirements. Of
# these, only the notebook's own file counts.
PER_NOTEBOOK = ("claims", "requirements")
# The kind of each input file, by the folder it is in (the first that matches); used in the reasons.
KINDS = (("notebooks/", "notebook"), ("labkit/labs/", "lab"), ("labkit/instruments/", "instrument"),
         ("labkit/core/", "core"), ("labkit/assets/", "asset"), ("labkit/", "labkit"))
# papermill's record of an execution that raised (``metadata.papermill.exception``).
PAPERMILL = "papermill"
# Notebooks are read here as the JSON they are: importing nbformat costs 4–7 s on our machines (jsonschema compiles
# rfc3987-syntax's grammars), more than all else a run that reuses every notebook does.


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass(frozen=True)
class Host:
    """What every notebook of a run shares: labkit's version and the host's fingerprint (with the engine's when
    one answers), as :func:`labkit.instruments.measure.fingerprint` records it in the provenance."""

    labkit_version: str
    fingerprint: Mapping[str, Any]

    @classmethod
    def current(cls) -> Host:
        import labkit
        from labkit.instruments import engine, measure

        try:
            client = engine.connect()
        except engine.EngineUnavailable:
            client = None  # then the fingerprint has no engine, differs, and the notebook runs (and says why)
        return cls(labkit.__version__, measure.fingerprint(client))


def import_closure(sources: Iterable[str], root: Path) -> list[Path]:
    """Every file under `root`/labkit that code `sources` (Python text) import, transitively, sorted.

    Followed: ``import labkit.x``, ``from labkit.x import y`` (y a module or a name in x) and relative imports,
    at any depth in a module (a function's local import counts). Each module brings its parent packages'
    ``__init__.py`` (importing ``labkit.a.b`` runs them) and each package reached brings its data files: the
    files in its folder that are not Python and not in a sub-package (labkit/assets/greeter/Dockerfile.*).
    """
    found: set[Path] = set()
    pending = [name for text in sources for name in _imports(text, package="")]
    followed: set[str] = set()
    while pending:
        name = pending.pop()
        if name in followed:
            continue
        followed.add(name)
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # the packages above it, then the module itself
            path = _module_file(root, parts[:depth])
            if path is None or path in found:
                continue
            found.add(path)
            if path.name == "__init__.py":
                found.update(_package_data(path.parent))
            package = ".".join(parts[:depth] if path.name == "__init__.py" else parts[:depth - 1])
            pending += _imports(path.read_text(), package)
    return sorted(found)


def _module_file(root: Path, parts: list[str]) -> Path | None:
    """The file of module `parts` (``["labkit", "core", "lab"]``) under `root`, or None (not a module there)."""
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _package_data(folder: Path) -> list[Path]:
    """The files in package `folder` that are not Python, without those of sub-packages and caches."""
    found = []
    for path in folder.iterdir():
        if path.is_dir() and path.name != "__pycache__" and not (path / "__init__.py").exists():
            found += [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        elif path.is_file() and path.suffix not in (".py", ".pyc"):
            found.append(path)
    return found


@functools.lru_cache(maxsize=1024)  # by text: the notebooks of a run share most modules, and parsing is the cost
def _imports(text: str, package: str) -> tuple[str, ...]:
    """The dotted names `text` (a module of `package`, "" for a notebook) imports, each also as a possible
    module for ``from x import y`` (``x.y``); relative imports resolved against `package`."""
    try:
        tree = ast.parse(text)
    except SyntaxError:  # a notebook cell with IPython syntax: its imports are in the cells that parse
        return ()
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)] if package else []
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
    return tuple(name for name in names if name.split(".")[0] == PACKAGE)


def notebook_code(notebook: Path) -> list[str]:
    """The code cells of `notebook`, without IPython's magics and shell escapes (lines starting % or !)."""
    cells = json.loads(notebook.read_text())["cells"]
    return ["\n".join(line for line in _text(cell["source"]).splitlines() if not line.lstrip().startswith(("%", "!")))
            for cell in cells if cell["cell_type"] == "code"]


def _text(source: str | list[str]) -> str:
    """A cell's source as one string (an .ipynb file may hold it as a list of lines)."""
    return source if isinstance(source, str) else "".join(source)


def _kind(relative: str) -> str:
    return next((kind for prefix, kind in KINDS if relative.startswith(prefix)), "file")


def inputs(notebook: Path, lab: Lab | None, host: Host, *, quick: bool, mode: str,
           root: Path | None = None) -> dict[str, str]:
    """Each input of executing `notebook` (its `lab` from the catalogue, None when it has none) → its digest or
    value; names say what the input is (``instrument labkit/instruments/measure.py``, ``base busybox``)."""
    from labkit.instruments import images

    root = root or paths.project_root()
    found = {f"notebook {_shown(notebook, root)}": _digest(notebook.read_bytes())}
    code = notebook_code(notebook)
    closure = import_closure(code, root)
    read = [path for folder in (lab.reads if lab is not None else ()) for path in sorted((root / folder).rglob("*"))
            if path.is_file() and "__pycache__" not in path.parts]
    for path in dict.fromkeys([*_assets_named(closure, code, root, notebook.stem), *read]):
        relative = _shown(path, root)
        found[f"{_kind(relative)} {relative}"] = _digest(path.read_bytes())
    found["labkit version"] = host.labkit_version
    for base in lab.bases if lab is not None else ():
        found[f"base {base}"] = images.recipe(base).digest
    found["host fingerprint"] = _digest(json.dumps(host.fingerprint, sort_keys=True, default=str).encode())
    found["mode"] = f"{'quick' if quick else 'full'}, {mode}"
    return found


def _assets_named(closure: list[Path], code: list[str], root: Path, stem: str) -> list[Path]:
    """`closure` without the files of asset folders that no string in `code` or in the closure's Python names, and
    without the other notebooks' claims and requirements."""
    assets = root / ASSETS
    folders = {path.name for path in assets.iterdir() if path.is_dir()} if assets.is_dir() else set()
    # The assets package's own helpers do not count: a folder they read is named by the code that calls them.
    named = {folder for text in [*code, *(p.read_text() for p in closure
                                          if p.suffix == ".py" and not p.is_relative_to(assets))]
             for folder in _strings_heads(text) if folder in folders}

    def kept(path: Path) -> bool:
        if not path.is_relative_to(assets) or path.parent == assets:
            return True
        folder = path.relative_to(assets).parts[0]
        return folder in named and (folder not in PER_NOTEBOOK or path.name == f"{stem}.toml")

    return [path for path in closure if kept(path)]


@functools.lru_cache(maxsize=1024)  # by text, as _imports
def _strings_heads(text: str) -> frozenset[str]:
    """The first path component of every string constant in `text` (Python), f-strings' literal parts included."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return frozenset()
    return frozenset(node.value.split("/", 1)[0] for node in ast.walk(tree)
                     if isinstance(node, ast.Constant) and isinstance(node.value, str))


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def key(found: Mapping[str, str]) -> str:
    """The execution key: sha256 of every input and its digest, 16 hex digits."""
    return _digest(json.dumps(dict(sorted(found.items()))).encode())


def changes(before: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    """What differs between two sets of inputs, in words: ``lab labkit/labs/x.py changed``, ``… added``."""
    said = [f"{name} changed" + (f" ({before[name]} → {now[name]})" if name in ("labkit version", "mode") else "")
            for name in now if name in before and before[name] != now[name]]
    said += [f"{name} added" for name in now if name not in before]
    said += [f"{name} removed" for name in before if name not in now]
    return said


@dataclass(frozen=True)
class Decision:
    """Whether to execute a notebook, and why: `reason` is what `labkit run` prints and the provenance keeps."""

    execute: bool
    key: str
    inputs: dict[str, str]
    reason: str


def previous(executed: Path) -> dict[str, Any] | None:
    """The execution record in the executed copy at `executed` (None: no copy, or one labkit did not finish)."""
    if not executed.exists():
        return None
    try:
        metadata = json.loads(executed.read_text()).get("metadata", {})
    except (OSError, ValueError):  # half-written by a run that was killed
        return None
    record = metadata.get(METADATA, {}).get(FIELD)
    if record is None or metadata.get(PAPERMILL, {}).get("exception"):
        return None
    return dict(record)


def decide(found: dict[str, str], executed: Path, results_root: Path, *, refused: str) -> Decision:
    """Execute `executed`'s notebook again unless its last execution had the same inputs `found`, finished, and
    left its results in `results_root`. `refused` is "" when reusing is allowed, else why not
    (:func:`reuse_refused`)."""
    now = key(found)
    if refused:
        return Decision(True, now, found, refused)
    record = previous(executed)
    if record is None:
        return Decision(True, now, found, "no finished earlier execution to reuse")
    if record.get("key") != now:
        said = changes(record.get("inputs", {}), found)
        return Decision(True, now, found, "; ".join(said) or "the inputs changed")
    provenance = _provenance(results_root / executed.stem)
    run_id = record.get("run_id")
    if provenance is not None and provenance.get("run_id") != run_id:
        return Decision(True, now, found, f"{results_root / executed.stem} holds results of another run "
                                          f"({provenance.get('run_id')}, not {run_id})")
    if provenance is None and record.get("results"):
        return Decision(True, now, found, f"its results ({record['results']}) are gone")
    when = f", measured {provenance.get('started_utc')} → {provenance.get('ended_utc')}" if provenance else ""
    return Decision(False, now, found, f"inputs unchanged since run {run_id}{when}")


def reuse_refused(*, quick: bool, mode: str) -> str:
    """Why a run in this mode does not reuse earlier executions, "" when it may (see the module's docstring)."""
    if quick:
        return "quick mode: only full live runs reuse an earlier execution"
    if mode != "live":
        return f"mode={mode}: only full live runs reuse an earlier execution"
    return ""


def _provenance(folder: Path) -> dict[str, Any] | None:
    path = folder / PROVENANCE
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def remember(decision: Decision, executed: Path, results_root: Path, run_id: str, executed_utc: str) -> None:
    """After a successful execution: write its record into the executed copy's metadata and, when the notebook
    published results in this run (`run_id`), into their provenance.json (field ``execution``)."""
    import nbformat  # imported by papermill already, when a notebook was executed

    from labkit.core.results import ResultStore

    store = ResultStore(results_root / executed.stem)
    provenance = _provenance(store.folder)
    ours = provenance is not None and provenance.get("run_id") == run_id
    record = {"key": decision.key, "reason": decision.reason, "inputs": decision.inputs, "run_id": run_id,
              "executed_utc": executed_utc, "results": _shown(store.folder, paths.project_root()) if ours else ""}
    notebook = nbformat.read(executed, as_version=4)
    notebook.metadata.setdefault(METADATA, {})[FIELD] = record
    paths.atomic_write(executed, nbformat.writes(notebook))
    if ours and provenance is not None:
        store.write_provenance({**provenance, FIELD: record})

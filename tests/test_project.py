"""The project's own files: dependencies agree, notebooks are stored clean, the CLI answers."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import tomllib
from datetime import datetime
from pathlib import Path

import nbformat
import pytest

from labkit.app import catalog
from labkit.core.lab import Lab, Requirement

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CONDA_NAMES = {"docker-py": "docker"}  # conda-forge names that differ from PyPI's


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~ \[]", r, maxsplit=1)[0].strip().lower() for r in requirements}


def _conda_names(path: Path) -> set[str]:
    names = set()
    dependencies = path.read_text().split("\ndependencies:\n", 1)[1]
    for line in dependencies.splitlines():
        match = re.match(r"^ +- ([A-Za-z0-9_.][A-Za-z0-9_.-]*)", line)  # conda's entries and pip's below them
        if match and match.group(1) not in ("python", "pip"):
            names.add(CONDA_NAMES.get(match.group(1), match.group(1)).lower())
    return names


def test_environment_yml_lists_the_same_dependencies_as_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"]) | _names(project["optional-dependencies"]["dev"])
    assert _conda_names(ROOT / "environment.yml") == wanted


def _recorded_full_run_s(stem: str) -> float:
    provenance = json.loads((ROOT / "data" / "results" / stem / "provenance.json").read_text())
    started, ended = (datetime.fromisoformat(provenance[key]) for key in ("started_utc", "ended_utc"))
    return (ended - started).total_seconds()


def test_the_readme_quotes_the_notebook_times_the_data_holds() -> None:
    """The README's quick times come from data/bench/ and its full ones from the recorded run's provenance: a new
    bench or recording that moves one by a second or more must bring the README along."""
    text = " ".join((ROOT / "README.md").read_text().split())
    quoted = re.search(r"notebook 01 took (\d+) s quick in `data/bench/` and (\d+) s in its recorded full run, "
                       r"notebook 07 (\d+) s and (\d+) s", text)
    assert quoted, "the README no longer quotes 01's and 07's times: update this test with it"
    with (ROOT / "data" / "bench" / "bench.csv").open() as rows:
        quick = {row["item"]: float(row["value"]) for row in csv.DictReader(rows)
                 if row["group"] == "notebook" and row["condition"] == "quick"}
    measured = [quick["01-what-a-container-is"], _recorded_full_run_s("01-what-a-container-is"),
                quick["07-cgroups-and-limits"], _recorded_full_run_s("07-cgroups-and-limits")]
    assert [int(n) for n in quoted.groups()] == [round(s) for s in measured]


def test_every_environment_variable_labkit_reads_is_in_the_readme() -> None:
    """A setting a reader cannot find is one they cannot use: each LABKIT_* name in the code, and DOCKER_HOST, is
    in the README's settings (those labkit sets for its own processes are named there too)."""
    code = "\n".join(path.read_text() for path in (ROOT / "labkit").rglob("*.py"))
    names = set(re.findall(r"\bLABKIT_[A-Z_]+\b", code)) | {"DOCKER_HOST"}
    settings = (ROOT / "README.md").read_text().split("## Settings", 1)[1].split("\n## ", 1)[0]
    assert sorted(name for name in names if f"`{name}`" not in settings) == []


# How a notebook's "What you need" table may name a requirement of each kind (a program: by its name or a package).
NAMED_AS = {"engine": ["Docker Engine"], "root": ["root"], "kvm": ["KVM"], "registry": ["registry"],
            "binfmt": ["binfmt_misc"]}


def _ways_to_name(requirement: Requirement) -> list[str]:
    if requirement.kind == "program":
        return [requirement.name, *requirement.packages]
    if requirement.kind == "cgroup":
        return [requirement.name]
    return NAMED_AS[requirement.kind] + requirement.name.split()  # an engine's cgroup drivers: each by name


@pytest.mark.parametrize("lab", catalog.all_labs(), ids=lambda lab: lab.stem)
def test_what_you_need_names_every_requirement_of_its_lab(lab: Lab) -> None:
    """The table a reader reads first is written by hand; `labkit doctor` checks the lab's declared requirements.
    Each of those must be in the table (a program by its name or its Debian package), so the two cannot drift."""
    cells = nbformat.read(ROOT / "notebooks" / f"{lab.stem}.ipynb", as_version=4).cells
    table = next(cell.source for cell in cells if cell.cell_type == "markdown" and "## What you need" in cell.source)
    unnamed = [f"{r.kind} {r.name}".strip() for r in lab.requirements
               if not any(re.search(rf"(?<![\w-]){re.escape(way)}(?![\w-])", table) for way in _ways_to_name(r))]
    assert unnamed == []


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_overview_lists_every_numbered_section_in_order(notebook: Path) -> None:
    """The overview's numbered list is the notebook's table of contents: one item per `## N · ` section."""
    markdown = [cell.source for cell in nbformat.read(notebook, as_version=4).cells if cell.cell_type == "markdown"]
    sections = [int(m.group(1)) for text in markdown if (m := re.match(r"## (\d+) · ", text))]
    items = [int(n) for n in re.findall(r"^(\d+)\. \*\*", markdown[0].split("## Overview", 1)[1], re.M)]
    assert sections == items == list(range(1, len(sections) + 1))


@pytest.mark.parametrize("notebook", NOTEBOOKS[:-1], ids=lambda p: p.stem)
def test_what_s_next_links_the_following_notebook(notebook: Path) -> None:
    """A reader who finishes a notebook is sent to the one after it (07 once pointed at 11, and 11 called itself
    the last, from before 08-10 and 12-15 existed)."""
    cells = nbformat.read(notebook, as_version=4).cells
    following = NOTEBOOKS[NOTEBOOKS.index(notebook) + 1].name
    whats_next = [c.source for c in cells if c.cell_type == "markdown" and c.source.startswith("## What's next")]
    assert len(whats_next) == 1 and f"]({following})" in whats_next[0]


@pytest.mark.parametrize("floor", ["instruments", "core", "app"])
def test_the_readme_s_layout_names_every_module_of_a_floor(floor: str) -> None:
    """The README's layout is a reader's map of the package: each module and subpackage of a floor is on it."""
    layout = (ROOT / "README.md").read_text().split("## Layout", 1)[1]
    entry = layout.split(f"- `labkit/{floor}/`", 1)[1].split("\n- ", 1)[0]
    folder = ROOT / "labkit" / floor
    modules = [p.stem for p in folder.glob("*.py") if p.stem != "__init__"]
    packages = [f"{p.parent.name}/" for p in folder.glob("*/__init__.py")]
    assert sorted(name for name in modules + packages if f"`{name}`" not in entry) == []


def test_binder_has_every_runtime_dependency_but_the_book() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _names(project["dependencies"]) - {"jupyter-book"}
    assert runtime <= _conda_names(ROOT / "binder" / "environment.yml")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_stored_without_outputs(notebook: Path) -> None:
    nb = nbformat.read(notebook, as_version=4)
    dirty = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert dirty == [], f"{notebook.name}: cells {dirty} have outputs; clear them before committing"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_have_a_typed_parameters_cell(notebook: Path) -> None:
    nb = nbformat.read(notebook, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    assert "quick: bool = False" in tagged[0].source and "mode: str" in tagged[0].source


def test_python_dash_m_labkit_matches_the_labkit_command() -> None:
    module = subprocess.run([sys.executable, "-m", "labkit", "--help"], capture_output=True, text=True, check=True)
    command = subprocess.run([str(Path(sys.executable).with_name("labkit")), "--help"], capture_output=True,
                             text=True, check=True)
    assert module.stdout.replace("__main__.py", "labkit") == command.stdout
    for verb in ("doctor", "run", "book", "clean"):
        assert verb in module.stdout


def test_unknown_notebook_is_refused_naming_the_choices() -> None:
    done = subprocess.run([sys.executable, "-m", "labkit", "run", "99"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "notebook '99' not found" in done.stderr and "01-what-a-container-is" in done.stderr


def test_every_program_a_lab_requires_names_a_debian_package_apt_knows() -> None:
    """`labkit setup` installs a missing requirement by its Debian package: a wrong name (``losetup`` is in
    ``mount``, ``fincore`` in ``util-linux-extra``) stops setup for every notebook, so each is checked against apt."""
    from labkit.app.catalog import all_labs

    if not Path("/etc/debian_version").exists():
        pytest.skip("needs a Debian host's package index")
    packages = {p for lab in all_labs() for r in lab.requirements for p in r.packages}
    unknown = [p for p in sorted(packages)
               if subprocess.run(["apt-cache", "show", p], capture_output=True, check=False).returncode != 0]
    assert not unknown, f"not a Debian package: {unknown}"

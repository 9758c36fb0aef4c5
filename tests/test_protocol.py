"""The map from notebooks to labs to recorded results (the package's layering: test_structure.py)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pandas as pd
import pytest

import labkit.labs
from labkit.app import catalog
from labkit.core.lab import ENGINE, Requirement, read_requirements, requirements_file
from labkit.core.lab import ROOT as ROOT_USER
from labkit.errors import BadParameter

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
LABS = {lab.stem: lab for lab in catalog.all_labs()}
GUEST = ROOT / "data" / "results" / "guest"  # the lab machine's recordings (`labkit guest run --record`): a 2nd host
RECORDED = [ROOT / "data" / "results" / stem for stem in NOTEBOOKS] + sorted(p for p in GUEST.iterdir() if p.is_dir())


def test_every_notebook_has_exactly_one_lab_and_one_results_folder() -> None:
    assert sorted(LABS) == NOTEBOOKS
    stems = [lab.stem for lab in catalog.all_labs()]
    assert len(stems) == len(set(stems))
    folders = sorted(p.name for p in (ROOT / "data" / "results").iterdir() if p.is_dir() and p != GUEST)
    assert folders == NOTEBOOKS
    assert {p.name for p in GUEST.iterdir()} <= set(NOTEBOOKS) - {"15-the-lab-machine"}  # 15 boots the guest


@pytest.mark.parametrize("folder", RECORDED, ids=lambda folder: folder.relative_to(ROOT / "data").as_posix())
def test_recorded_tables_carry_the_columns_the_lab_declares(folder: Path) -> None:
    # Everything recorded is declared, columns in the declared order — on this host and in the lab machine. A
    # recording made before a section existed lacks its tables or columns: the section replays saying so
    # (test_replay); the claims table is always there.
    lab = LABS[folder.name]
    recorded = sorted(p.stem for p in folder.glob("*.csv"))
    assert set(recorded) <= set(lab.tables) and "claims" in recorded
    for table in recorded:
        columns = list(pd.read_csv(folder / f"{table}.csv", nrows=0).columns)
        assert columns == [c for c in lab.tables[table] if c in columns], table


def lab_module_name(stem: str) -> str:
    """The lab module a notebook's stem names: its words without the number, `-` → `_`
    (``07-cgroups-and-limits`` → ``cgroups_and_limits``)."""
    return stem.split("-", 1)[1].replace("-", "_")


def test_every_notebook_has_the_lab_module_its_name_gives_and_no_lab_is_without_one() -> None:
    modules = {module.name for module in pkgutil.iter_modules(labkit.labs.__path__)}
    assert modules == {lab_module_name(stem) for stem in NOTEBOOKS}


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_the_lab_module_declares_its_notebook(stem: str) -> None:
    module = importlib.import_module(f"labkit.labs.{lab_module_name(stem)}")
    assert module.LAB.stem == module.STEM == stem


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_the_notebook_uses_its_own_lab(stem: str) -> None:
    notebook = (ROOT / "notebooks" / f"{stem}.ipynb").read_text()
    assert f"from labkit.labs import {lab_module_name(stem)}" in notebook


def test_selecting_labs_by_number_and_refusing_unknown_ones() -> None:
    assert [lab.stem for lab in catalog.select(["01"])] == ["01-what-a-container-is"]
    with pytest.raises(ValueError, match="notebook 'nothing' not found"):
        catalog.select(["nothing"])


def test_requirements_name_the_debian_package_that_provides_them() -> None:
    assert Requirement("program", "qemu-system-x86_64").packages == ("qemu-system-x86",)
    assert ENGINE.packages == ("docker.io",)
    with pytest.raises(ValueError, match="kind='gpu'"):
        Requirement("gpu")


def test_a_requirements_file_is_read_in_order_with_engine_and_root_shared(tmp_path: Path) -> None:
    listed = tmp_path / "99-listed.toml"
    listed.write_text('requirements = [\n  {kind = "engine"},\n  {kind = "root"},\n'
                      '  {kind = "program", name = "ip", purpose = "a veth pair"},\n'
                      '  {kind = "kvm", purpose = "speed", required = false},\n]\n')
    assert read_requirements(listed) == (ENGINE, ROOT_USER, Requirement("program", "ip", "a veth pair"),
                                         Requirement("kvm", purpose="speed", required=False))
    assert read_requirements(tmp_path / "missing.toml") == ()
    listed.write_text('requirements = [{kind = "program", name = "ip", why = "a veth pair"}]\n')
    with pytest.raises(BadParameter, match=r"99-listed\.toml.*'why'"):
        read_requirements(listed)


def test_every_lab_lists_its_requirements_in_a_file_and_engine_labs_need_the_engine_first() -> None:
    """Each notebook's requirements file exists, names no program twice, and where the lab needs the engine it
    comes first (doctor checks it before the rest)."""
    for stem, lab in LABS.items():
        listed = read_requirements(requirements_file(stem))
        assert listed and lab.requirements[:len(listed)] == listed, stem
        programs = [r.name for r in lab.requirements if r.kind == "program"]
        assert len(programs) == len(set(programs)), stem
        assert lab.requirements[0] == ENGINE, stem
    assert sorted(p.stem for p in requirements_file(NOTEBOOKS[0]).parent.glob("*.toml")) == NOTEBOOKS

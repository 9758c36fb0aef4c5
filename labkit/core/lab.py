"""A lab's declaration: what each notebook needs and makes, declared once, in its lab module and its requirements file.

Every lab (``labkit/labs/<topic>``, a module or a package) defines ``LAB = Lab(...)``: the notebook stem, the base
images it uses, the tables it records (with their columns), a ``prepare(client)`` that makes its other assets, and
its host requirements: those listed in ``labkit/assets/requirements/<stem>.toml`` and those its code computes.
The notebook opens its session with its lab's ``LAB``; only the application (:mod:`labkit.app.catalog`) finds
every lab.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit import assets
from labkit.core.claims import CLAIM_COLUMNS, CLAIMS_TABLE
from labkit.errors import BadParameter
from labkit.instruments.shell import DEBIAN_PACKAGE

# The Debian packages behind the requirements that are not a single program.
_PACKAGES_OF_KIND = {
    "engine": ("docker.io",),
    "binfmt": ("qemu-user-static", "binfmt-support"),
    "registry": ("docker-registry",),
    "cgroup": (),
    "root": (),
    "kvm": (),
}


@dataclass(frozen=True)
class Requirement:
    """One thing a live run needs from the host.

    `kind`: engine, root, cgroup (`name` = a controller), program (`name` = the executable), binfmt (`name` = the
    interpreter entry, e.g. qemu-aarch64), registry or kvm. `purpose` says what for; an unmet optional
    requirement (`required=False`) makes the run slower or poorer, not impossible.
    """

    kind: str
    name: str = ""
    purpose: str = ""
    required: bool = True

    def __post_init__(self) -> None:
        if self.kind not in {*_PACKAGES_OF_KIND, "program"}:
            raise BadParameter(f"Requirement kind={self.kind!r} is unknown.",
                               f"Use one of {sorted({*_PACKAGES_OF_KIND, 'program'})}.")

    @property
    def packages(self) -> tuple[str, ...]:
        """Debian packages that provide it (installed by `labkit setup` on Debian as root)."""
        if self.kind == "program":
            return tuple(DEBIAN_PACKAGE.get(self.name, self.name).split())
        return _PACKAGES_OF_KIND[self.kind]


ENGINE = Requirement("engine", purpose="every docker experiment")
ROOT = Requirement("root", purpose="reading other processes' /proc, cgroup writes, unshare")
_SHARED = {"engine": ENGINE, "root": ROOT}  # what a requirements file's bare {kind = "engine"} or "root" means

REQUIREMENTS_FOLDER = assets.FOLDER / "requirements"


def requirements_file(stem: str) -> Path:
    """The file that lists what notebook `stem` needs from the host."""
    return REQUIREMENTS_FOLDER / f"{stem}.toml"


def read_requirements(path: Path) -> tuple[Requirement, ...]:
    """The requirements a file lists, in order (() when there is no such file): each an inline table of
    :class:`Requirement`'s fields; a bare ``{kind = "engine"}`` or ``{kind = "root"}`` is :data:`ENGINE` or
    :data:`ROOT`. BadParameter naming the file for an entry with unknown fields."""
    if not path.exists():
        return ()
    found = []
    for entry in tomllib.loads(path.read_text()).get("requirements", []):
        if entry.keys() == {"kind"} and entry["kind"] in _SHARED:
            found.append(_SHARED[entry["kind"]])
            continue
        try:
            found.append(Requirement(**entry))
        except TypeError as exc:
            raise BadParameter(f"{path}: the requirement {entry} has a field Requirement does not know ({exc}).",
                               "Use kind, name, purpose and required.") from exc
    return tuple(found)


def _nothing_to_prepare(client: Any) -> list[str]:
    return []


@dataclass(frozen=True)
class Lab:
    """What one notebook needs and makes.

    `stem`: the notebook's file stem (``01-what-a-container-is``), also its results folder; `topic`: its title;
    `requirements`: what a live run needs from the host that the code computes (named by the host's architecture,
    or by constants the lab uses too), after those its requirements file lists (:func:`requirements_file`);
    `bases`: labkit base images it uses (made by setup);
    `tables`: each recorded table's name and the columns it must carry (the claims table, which every notebook
    records, is added here); `prepare(client)`: makes the other assets (rootfs trees, kernels…) and returns one
    line per asset for the setup log; `headline`: the id of the chapter claim (``source = chapter``) whose
    measurement the book's landing page shows for this notebook; `reads`: folders of the project (``labkit``) it
    reads beyond what its code imports and names, each file below them an input of its execution
    (:mod:`labkit.app.execution_cache`).
    """

    stem: str
    topic: str
    bases: tuple[str, ...]
    tables: Mapping[str, tuple[str, ...]]
    requirements: tuple[Requirement, ...] = ()
    prepare: Callable[[Any], list[str]] = field(default=_nothing_to_prepare)
    headline: str = ""  # the chapter claim the book's landing page quotes (default: its first chapter claim)
    reads: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "tables", {**self.tables, CLAIMS_TABLE: CLAIM_COLUMNS})
        object.__setattr__(self, "requirements", (*read_requirements(requirements_file(self.stem)),
                                                  *self.requirements))

    @property
    def number(self) -> str:
        return self.stem[:2]

    @property
    def packages(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p for r in self.requirements for p in r.packages))

    @property
    def needs_engine(self) -> bool:
        return any(r.kind == "engine" for r in self.requirements)

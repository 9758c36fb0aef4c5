"""The catalogue of labs: the one place that finds every lab module's ``LAB``.

``labkit setup``, ``labkit doctor``, the runner, the book, the bench and the tests loop over :func:`all_labs`; a lab
itself and the core it stands on never look another lab up.
"""

from __future__ import annotations

import importlib
import pkgutil

import labkit.labs
from labkit.core.lab import Lab
from labkit.errors import BadParameter


def all_labs() -> list[Lab]:
    """Every lab module's ``LAB``, in notebook order."""
    found = []
    for module in pkgutil.iter_modules(labkit.labs.__path__):
        lab = getattr(importlib.import_module(f"labkit.labs.{module.name}"), "LAB", None)
        if isinstance(lab, Lab):
            found.append(lab)
    return sorted(found, key=lambda lab: lab.stem)


def select(names: list[str] | None) -> list[Lab]:
    """The labs named by number (``01``) or stem; all of them when `names` is empty."""
    labs = all_labs()
    if not names:
        return labs
    chosen = []
    for wanted in names:
        matches = [lab for lab in labs if wanted in (lab.stem, lab.number)]
        if not matches:
            raise BadParameter(f"notebook {wanted!r} not found.",
                               f"Choose from: {', '.join(lab.stem for lab in labs)}.")
        chosen += matches
    return chosen

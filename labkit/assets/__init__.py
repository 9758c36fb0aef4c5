"""Files the labs build from, and the words of their claims, kept as files so that hadolint, a reader and ``git diff``
see them as they are.

``image_layers/``: notebook 02's Dockerfiles (the layered image, its one-RUN variant, the two builds
compared for reproducibility).
``greeter/``: a tiny Flask app (``source/``, its build context's sources), the two Dockerfiles of notebook 03
(dependencies first, everything first) and the multi-stage one of notebook 04; notebook 03 now builds the
``venv-*`` twins of the first two on its pip base (``Dockerfile.pip-base``), its dev-dependency build
(``requirements-dev.txt``) and its scratch copy of a context. ``pitfalls/``: notebook 10's probe
program (one action per pitfall) and its Dockerfiles (the probe image, a secret as a build ARG and as a BuildKit
secret mount). ``quick_check/``: notebook 14's Node service (``app/``: an Express app in TypeScript with
its package.json and package-lock.json; ``dependency-change/``: the same manifests with one dependency added)
and its steps (``steps/``: one Dockerfile per fix and the .dockerignore). ``arm64_vs_amd64/``: notebook 11's
C program built in its image and cross-built. ``claims/``: each notebook's claims in
words (``<stem>.toml``, read by :mod:`labkit.core.claims`). ``{base}`` and ``{runtime}`` in a
Dockerfile are filled by the lab with the image it builds on. This module only reads them: it imports nothing of labkit.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent
# The greeter's wheels are for the python-runtime base: CPython 3.11 on x86_64 (pip download's platform arguments).
GREETER_WHEEL_PLATFORM = ("--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
                          "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64")


def text(relative: str) -> str:
    """One asset file's text; `relative` to this folder, e.g. ``greeter/Dockerfile.dependencies-first``."""
    return (FOLDER / relative).read_text()


def tree(relative: str) -> dict[str, str]:
    """Every file below one asset folder, by its path inside that folder (``app/main.py``), with its text."""
    folder = FOLDER / relative
    return {path.relative_to(folder).as_posix(): path.read_text() for path in sorted(folder.rglob("*"))
            if path.is_file() and "__pycache__" not in path.parts}


def pins(relative: str) -> tuple[str, ...]:
    """The pinned requirements (``name==version``) of one requirements file, in its order."""
    return tuple(text(relative).split())


def greeter_wheel_pins() -> tuple[str, ...]:
    """Every pin the greeter's wheelhouse holds: its requirements and the ones notebook 03's dependency edit adds."""
    return (*pins("greeter/source/requirements.txt"), *pins("greeter/added-requirements.txt"))

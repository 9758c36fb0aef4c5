"""Python wheels for a pinned set of requirements, downloaded once on the host with pip and cached, so that an
image build installs them with ``--no-index`` and never reaches the network."""

from __future__ import annotations

import hashlib
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from labkit.instruments.shell import run
from labkit.paths import cache_dir

COMPLETE = ".labkit-complete"  # written last: a folder without it is a download that did not finish


def folder(pins: Sequence[str], platform: Sequence[str]) -> Path:
    """Where the wheels of `pins` for `platform` (pip download's platform arguments) are cached."""
    key = hashlib.sha256("\n".join((*pins, *platform)).encode()).hexdigest()
    return cache_dir() / "wheelhouse" / key[:16]


def download(pins: Sequence[str], platform: Sequence[str]) -> Path:
    """The folder holding one wheel per pin (no dependencies resolved: every one is pinned), downloaded the
    first time and reused after; a copy into a build context leaves out the :data:`COMPLETE` mark."""
    target = folder(pins, platform)
    if (target / COMPLETE).exists():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", *platform,
         "-d", str(partial), *pins], 600,
        hint="The wheelhouse is downloaded once from PyPI on the host; check that pip can reach it.")
    (partial / COMPLETE).write_text("\n".join(pins) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target

"""Where labkit keeps things: the project checkout, results, caches and its own state."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def project_root() -> Path:
    """The checkout that holds notebooks/ and data/ (LABKIT_ROOT overrides)."""
    override = os.environ.get("LABKIT_ROOT")
    return Path(override).resolve() if override else Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Downloads and rootfs tarballs, keyed by recipe hash (LABKIT_CACHE overrides; ~/.cache/labkit)."""
    override = os.environ.get("LABKIT_CACHE")
    base = Path(override) if override else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "labkit"
    return base.resolve()


def state_dir() -> Path:
    """labkit's own daemon config and logs (LABKIT_STATE overrides; ~/.local/state/labkit)."""
    override = os.environ.get("LABKIT_STATE")
    default = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "labkit"
    return (Path(override) if override else default).resolve()


def recorded_results_dir() -> Path:
    """Committed results (data/results/), read back in replay mode."""
    return project_root() / "data" / "results"


def notebooks_dir() -> Path:
    """The tracked notebooks (notebooks/NN-*.ipynb), stored without outputs."""
    return project_root() / "notebooks"


def bench_dir() -> Path:
    """The newest `make bench` (data/bench/bench.csv and its provenance.json)."""
    return project_root() / "data" / "bench"


def build_dir() -> Path:
    """Executed notebooks, fresh results and the book (build/)."""
    return project_root() / "build"


def run_dir(quick: bool = False) -> Path:
    """Where `labkit run` keeps executed copies (``notebooks/``) and fresh results (``results/``): build/ for full
    runs, build/quick/ for quick ones, so that `make test` leaves `make lab`'s executions (and its cache) alone."""
    return build_dir() / "quick" if quick else build_dir()


def atomic_write(path: Path, content: str | bytes) -> None:
    """Write `content` to `path` so a reader sees the old file or the new one, never half of one.

    The text goes to a temporary file in the same folder, is flushed to disk and renamed over `path`; the file
    is readable by all (mode 0644), like one written the ordinary way.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o644)
            handle.write(content.encode() if isinstance(content, str) else content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise

"""What was measured, where and when: tidy CSV tables plus provenance.json, written atomically.

A live run writes into ``<root>/<topic>.partial-<run id>/`` as each experiment finishes (so nothing measured
is lost if a later one fails) and :meth:`ResultStore.publish` swaps the folder into ``<root>/<topic>/``
in one rename. Replay mode reads a published folder back.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

PROVENANCE = "provenance.json"


def utc_now() -> str:
    """Current UTC time, ISO 8601 with seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class ResultStore:
    """One topic's result folder: tables by name (``<name>.csv``) and one provenance.json."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def partial(cls, root: Path, topic: str, run_id: str) -> ResultStore:
        return cls(root / f"{topic}.partial-{run_id}")

    def write_table(self, name: str, frame: pd.DataFrame) -> Path:
        path = self.folder / f"{name}.csv"
        _atomic_write(path, frame.to_csv(index=False))
        return path

    def read_table(self, name: str) -> pd.DataFrame:
        path = self.folder / f"{name}.csv"
        if not path.exists():
            raise FileNotFoundError(f"no recorded table {name!r} in {self.folder}: record it with a live run "
                                    "(`labkit run --record`).")
        return pd.read_csv(path)

    def tables(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.csv"))

    def write_provenance(self, provenance: dict[str, Any]) -> None:
        _atomic_write(self.folder / PROVENANCE, json.dumps(provenance, indent=2, sort_keys=True, default=str) + "\n")

    def read_provenance(self) -> dict[str, Any]:
        path = self.folder / PROVENANCE
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: these results say nothing of where they were measured.")
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def publish(self, root: Path, topic: str) -> ResultStore:
        """Replace ``<root>/<topic>/`` with this folder in one rename; return the published store."""
        target = root / topic
        retired = root / f".{topic}.retired"
        if retired.exists():
            shutil.rmtree(retired)
        if target.exists():
            target.rename(retired)
        self.folder.rename(target)
        if retired.exists():
            shutil.rmtree(retired)
        self.folder = target
        return self

"""What was measured, where and when: tidy CSV tables plus provenance.json, written atomically.

A live run writes into ``<root>/<topic>.partial-<run id>/`` as each experiment finishes (so nothing measured
is lost if a later one fails) and :meth:`ResultStore.publish` swaps the folder into ``<root>/<topic>/``
in one rename. Replay mode reads a published folder back.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from labkit.errors import NotPrepared
from labkit.paths import atomic_write

PROVENANCE = "provenance.json"


def utc_now() -> str:
    """Current UTC time, ISO 8601 with seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_recorded(path: Path) -> pd.DataFrame:
    """A recorded table. Its column types are inferred from the whole file, not chunk by chunk: 13's 150,000-row
    requests table, whose error column is empty in most rows, otherwise reads as mixed types with a DtypeWarning
    that a replayed notebook would show the reader."""
    return pd.read_csv(path, low_memory=False)


def rows_where(table: pd.DataFrame, /, **values: object) -> pd.DataFrame:
    """The rows of `table` whose columns hold all the given values, by column name:
    ``rows_where(places, way=ENV, place=HISTORY)``. No rows when none does."""
    matches = pd.Series(True, index=table.index)
    for column, value in values.items():
        matches &= table[column] == value
    return table[matches]


class ResultStore:
    """One topic's result folder: tables by name (``<name>.csv``) and one provenance.json."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def partial(cls, root: Path, topic: str, run_id: str) -> ResultStore:
        return cls(root / f"{topic}.partial-{run_id}")

    def write_table(self, name: str, frame: pd.DataFrame) -> Path:
        path = self.folder / f"{name}.csv"
        atomic_write(path, frame.to_csv(index=False))
        return path

    def read_table(self, name: str) -> pd.DataFrame:
        path = self.folder / f"{name}.csv"
        if not path.exists():
            raise NotPrepared(f"no recorded table {name!r} in {self.folder}.",
                              "Record it with a live run (`labkit run --record`).")
        return read_recorded(path)

    def tables(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.csv"))

    def write_provenance(self, provenance: dict[str, Any]) -> None:
        atomic_write(self.folder / PROVENANCE, json.dumps(provenance, indent=2, sort_keys=True, default=str) + "\n")

    def read_provenance(self) -> dict[str, Any]:
        path = self.folder / PROVENANCE
        if not path.exists():
            raise NotPrepared(f"{path} is missing: these results say nothing of where they were measured.",
                              "Record them with a live run (`labkit run --record`), or run live.")
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


def prune_partials(root: Path, keep: int) -> list[Path]:
    """Remove the result folders of unfinished runs (``<stem>.partial-<run id>``) under `root`, keeping the
    newest `keep` per notebook; return what was removed."""
    by_stem: dict[str, list[Path]] = {}
    for folder in root.glob("*.partial-*"):
        by_stem.setdefault(folder.name.split(".partial-", 1)[0], []).append(folder)
    removed = []
    for folders in by_stem.values():
        for folder in sorted(folders, key=lambda f: f.stat().st_mtime, reverse=True)[keep:]:
            shutil.rmtree(folder)
            removed.append(folder)
    return removed

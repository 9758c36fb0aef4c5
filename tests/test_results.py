from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from labkit.core.results import ResultStore, rows_where
from labkit.errors import NotPrepared


def test_tables_and_provenance_round_trip(tmp_path: Path) -> None:
    store = ResultStore.partial(tmp_path, "01-topic", "run1")
    frame = pd.DataFrame({"method": ["a", "b"], "wall_s": [0.5, 1.25]})
    store.write_table("startup", frame)
    store.write_provenance({"run_id": "run1"})
    published = store.publish(tmp_path, "01-topic")
    assert published.folder == tmp_path / "01-topic"
    assert not (tmp_path / "01-topic.partial-run1").exists()
    pd.testing.assert_frame_equal(published.read_table("startup"), frame)
    assert published.read_provenance() == {"run_id": "run1"}
    assert [p.name for p in published.folder.iterdir() if p.name.startswith(".")] == []


def test_publish_replaces_the_previous_results_whole(tmp_path: Path) -> None:
    old = ResultStore.partial(tmp_path, "t", "old")
    old.write_table("stale", pd.DataFrame({"x": [1]}))
    old.write_provenance({"run_id": "old"})
    old.publish(tmp_path, "t")
    new = ResultStore.partial(tmp_path, "t", "new")
    new.write_provenance({"run_id": "new"})
    new.publish(tmp_path, "t")
    assert ResultStore(tmp_path / "t").tables() == []
    assert json.loads((tmp_path / "t" / "provenance.json").read_text())["run_id"] == "new"


def test_missing_table_says_how_to_record_it(tmp_path: Path) -> None:
    with pytest.raises(NotPrepared, match="labkit run --record"):
        ResultStore(tmp_path).read_table("nothing")


def test_rows_where_keeps_the_rows_that_hold_every_value() -> None:
    table = pd.DataFrame({"way": ["env", "env", "secret"], "place": ["history", "layer", "history"],
                          "found": [True, False, False]}, index=[4, 7, 9])
    pd.testing.assert_frame_equal(rows_where(table, way="env", place="history"), table.loc[[4]])
    pd.testing.assert_frame_equal(rows_where(table, place="history"), table.loc[[4, 9]])
    assert rows_where(table, way="env", place="nowhere").empty
    assert rows_where(pd.DataFrame(columns=["way", "place"]), way="env").empty

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from labkit.app.session import LabSession


def test_what_was_measured_survives_a_later_failure(tmp_path: Path) -> None:
    lab = LabSession("99-topic", quick=True, results_root=tmp_path, client=None, replay=None)
    lab.measure("first", lambda: pd.DataFrame({"wall_s": [0.25]}), repeats=1)

    def broken() -> pd.DataFrame:
        raise RuntimeError("the second experiment failed")

    with pytest.raises(RuntimeError, match="second"):
        lab.measure("second", broken)
    partial = tmp_path / f"99-topic.partial-{lab.run_id}"
    assert pd.read_csv(partial / "first.csv")["wall_s"].tolist() == [0.25]
    provenance = json.loads((partial / "provenance.json").read_text())
    assert list(provenance["experiments"]) == ["first"]
    assert provenance["experiments"]["first"]["parameters"] == {"repeats": 1}
    assert not (tmp_path / "99-topic").exists(), "an unfinished run is never published"


def test_finish_publishes_tables_claims_and_end_time(tmp_path: Path) -> None:
    lab = LabSession("99-topic", quick=False, results_root=tmp_path, client=None, replay=None)
    lab.measure("only", lambda: pd.DataFrame({"x": [1, 2]}))
    folder = lab.finish()
    assert folder == tmp_path / "99-topic"
    assert sorted(p.name for p in folder.iterdir()) == ["claims.csv", "only.csv", "provenance.json"]
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["started_utc"] <= provenance["ended_utc"]
    assert provenance["fingerprint"]["kernel"]


def test_live_experiments_that_need_root_say_so_before_starting(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    lab = LabSession("99-topic", quick=True, results_root=tmp_path, client=None, replay=None)
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(PermissionError, match=r"from-scratch container needs root.*sudo make lab.*replay"):
        lab.require_root("the from-scratch container")

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from labkit.app import runner
from labkit.app.results import prune_partials
from labkit.app.session import LabSession
from labkit.errors import EngineLost, NeedsRoot


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


def test_one_experiment_records_several_tables_each_with_its_parameters(tmp_path: Path) -> None:
    lab = LabSession("99-topic", quick=True, results_root=tmp_path, client=None, replay=None)
    tables = lab.record("both", ("a", "b"), lambda: {"a": pd.DataFrame({"x": [1]}), "b": pd.DataFrame({"y": [2, 3]})},
                        memory_limit_bytes=64)
    assert list(tables["b"]["y"]) == [2, 3]
    experiments = json.loads((tmp_path / f"99-topic.partial-{lab.run_id}" / "provenance.json").read_text())[
        "experiments"]
    assert {name: (e["experiment"], e["parameters"], e["rows"]) for name, e in experiments.items()} == {
        "a": ("both", {"memory_limit_bytes": 64}, 1), "b": ("both", {"memory_limit_bytes": 64}, 2)}
    assert all(e["started_utc"] <= e["ended_utc"] for e in experiments.values())


def test_finish_publishes_tables_claims_and_end_time(tmp_path: Path) -> None:
    lab = LabSession("99-topic", quick=False, results_root=tmp_path, client=None, replay=None)
    lab.measure("only", lambda: pd.DataFrame({"x": [1, 2]}))
    folder = lab.finish()
    assert folder == tmp_path / "99-topic"
    assert sorted(p.name for p in folder.iterdir()) == ["claims.csv", "only.csv", "provenance.json"]
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["started_utc"] <= provenance["ended_utc"]
    assert provenance["fingerprint"]["kernel"] == os.uname().release


class _DeadEngine:
    """Stands in for a client whose engine has died: every call fails, a ping too."""

    def ping(self) -> Any:
        raise ConnectionError("connection refused")


def test_an_engine_dying_mid_experiment_is_named_with_where_the_results_are(tmp_path: Path) -> None:
    lab = LabSession("99-topic", quick=True, results_root=tmp_path, client=None, replay=None)
    lab.measure("first", lambda: pd.DataFrame({"x": [1]}))
    lab.client = _DeadEngine()

    def experiment() -> pd.DataFrame:
        raise ConnectionError("('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))")

    with pytest.raises(EngineLost, match="stopped answering during the experiment 'second'") as lost:
        lab.measure("second", experiment)
    assert str(tmp_path / f"99-topic.partial-{lab.run_id}") in lost.value.hint


def test_live_experiments_that_need_root_say_so_before_starting(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    lab = LabSession("99-topic", quick=True, results_root=tmp_path, client=None, replay=None)
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(NeedsRoot, match=r"(?s)from-scratch container needs root.*sudo make lab.*replay"):
        lab.require_root("the from-scratch container")


def test_a_runs_environment_is_restored_after_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LABKIT_RUN_ID", raising=False)
    monkeypatch.setenv("LABKIT_RESULTS_DIR", "/elsewhere")
    with runner._run_environment("r1", tmp_path):
        assert (os.environ["LABKIT_RUN_ID"], os.environ["LABKIT_RESULTS_DIR"]) == ("r1", str(tmp_path))
    assert "LABKIT_RUN_ID" not in os.environ and os.environ["LABKIT_RESULTS_DIR"] == "/elsewhere"


def test_unfinished_runs_are_pruned_to_the_newest_few(tmp_path: Path) -> None:
    for age, run in enumerate(["r5", "r4", "r3", "r2", "r1"]):
        folder = tmp_path / f"01-x.partial-{run}"
        folder.mkdir()
        os.utime(folder, (1_000_000 - age, 1_000_000 - age))
    (tmp_path / "02-y.partial-r9").mkdir()
    (tmp_path / "01-x").mkdir()  # a published run is never touched
    removed = prune_partials(tmp_path, keep=3)
    assert sorted(p.name for p in removed) == ["01-x.partial-r1", "01-x.partial-r2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "01-x", "01-x.partial-r3", "01-x.partial-r4", "01-x.partial-r5", "02-y.partial-r9"]


def test_a_table_the_lab_did_not_declare_is_refused(tmp_path: Path) -> None:
    lab = LabSession("99-topic", quick=True, results_root=tmp_path, client=None, replay=None,
                     tables={"starts": ("method", "wall_s")})
    lab.measure("starts", lambda: pd.DataFrame({"method": ["a"], "wall_s": [0.1]}))
    with pytest.raises(RuntimeError, match=r"'starts' with columns \['wall_s', 'method'\]"):
        lab.measure("starts", lambda: pd.DataFrame({"wall_s": [0.1], "method": ["a"]}))
    with pytest.raises(RuntimeError, match="no such table"):
        lab.measure("other", lambda: pd.DataFrame({"x": [1]}))

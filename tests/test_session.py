from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from labkit.app import runner
from labkit.core import session
from labkit.core.results import prune_partials
from labkit.core.session import LabSession
from labkit.errors import EngineLost, NeedsRoot, NotPrepared
from labkit.instruments import shell


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


def _git(repo: Path, *argv: str) -> None:
    shell.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *argv], 30)


@pytest.fixture
def committed(tmp_path: Path) -> Path:
    """A checkout with one commit: a lab module, a notebook, a recorded result and the README."""
    for name in ("labkit/labs/a.py", "notebooks/01-a.ipynb", "data/results/01-a/t.csv", "README.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "one")
    return tmp_path


def test_a_committed_tree_records_and_its_results_folder_may_change(committed: Path) -> None:
    (committed / "data" / "results" / "01-a" / "t.csv").write_text("2\n")  # what a recording writes
    (committed / "data" / "results" / "02-b").mkdir()
    (committed / "data" / "results" / "02-b" / "t.csv").write_text("new\n")
    (committed / "scratch.txt").write_text("a note beside the code\n")
    assert session.uncommitted(committed) == []
    assert re.fullmatch(r"[0-9a-f]{40}", session.git_commit(committed))
    session.require_committed(committed)


@pytest.mark.parametrize("change", ["labkit/labs/b.py", "notebooks/02-b.ipynb", "tests/test_b.py", "README.md",
                                    "labkit/labs/a.py"])
def test_an_untracked_file_where_code_lives_or_any_changed_file_makes_the_tree_dirty(committed: Path,
                                                                                  change: str) -> None:
    # `git describe --dirty` says nothing of an untracked lab: a recording from it named a commit without its code.
    (committed / change).parent.mkdir(parents=True, exist_ok=True)
    (committed / change).write_text("changed\n")
    assert session.uncommitted(committed) == [change]
    assert session.git_commit(committed).endswith("-dirty")
    with pytest.raises(NotPrepared, match=rf"(?s)only from a committed tree; not committed: {change}\..*Commit first"):
        session.require_committed(committed)


def _bench(root: Path, rows: list[tuple[str, str, str, float, str]]) -> None:
    """A data/bench/ under `root`: rows of (group, item, condition, seconds, note) and its provenance."""
    folder = root / "data" / "bench"
    folder.mkdir(parents=True)
    pd.DataFrame([{"group": g, "item": i, "condition": c, "value": v, "unit": "s", "note": n}
                  for g, i, c, v, n in rows]).to_csv(folder / "bench.csv", index=False)
    (folder / "provenance.json").write_text(json.dumps(
        {"started_utc": "2026-12-08T03:20:00+00:00", "fingerprint": {"cores": 2, "cgroup_version": "v1"}}))


def test_the_banner_says_how_long_the_newest_bench_took_to_run_the_notebook(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABKIT_ROOT", str(tmp_path))
    _bench(tmp_path, [("notebook", "99-topic", "quick", 23.4, "ok"), ("notebook", "99-topic", "full", 1271.6, "ok"),
                      ("notebook", "98-other", "quick", 5.0, "ok"), ("make lab", "99-topic", "cold", 7.0, "ok")])
    lab = LabSession("99-topic", quick=True, results_root=tmp_path / "results", client=None, replay=None)
    assert lab.banner().endswith(" `make bench` on 2026-12-08 (2 cores, cgroup v1) executed this notebook in 23 s "
                                 "quick and 1,272 s full.")


def test_a_notebook_the_bench_did_not_time_or_that_failed_there_gets_no_bench_sentence(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABKIT_ROOT", str(tmp_path))
    assert session.bench_times("99-topic") == "", "no data/bench/ at all"
    _bench(tmp_path, [("notebook", "99-topic", "quick", 23.4, "failed (exit 1)"),
                      ("notebook", "99-topic", "full", 61.0, "ok"), ("notebook", "98-other", "quick", 5.0, "ok")])
    assert session.bench_times("99-topic").endswith("executed this notebook in 61 s full.")
    assert session.bench_times("97-untimed") == ""

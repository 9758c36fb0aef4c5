"""Notebook 03's lab: edit histories and parameters refused before any build; results replay into the same claims;
live, A's source edit executes fewer steps than B's and the secret is found only without .dockerignore."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import docker
import pandas as pd
import pytest

from labkit.core.claims import ClaimLedger, Verdict
from labkit.core.session import LabSession, open_session
from labkit.errors import BadParameter
from labkit.instruments import engine
from labkit.labs import build_cache
from labkit.labs.build_cache import Edit
from tests.conftest import leftovers

LAB = build_cache.LAB  # what the `replay` fixture (conftest.py) replays


@pytest.mark.parametrize(("call", "message"), [
    (lambda lab: build_cache.run_rebuilds(lab, history=[Edit("typo", "source", "app/missing.py", "a", "b")]),
     r"(?s)'app/missing.py', which the app does not have.*app/greeting.py"),
    (lambda lab: build_cache.run_rebuilds(lab, history=[Edit("x", "source", "README.md", "no such text", "b")]),
     r"(?s)occurs 0 times in 'README.md'.*exactly once"),
    (lambda lab: build_cache.run_rebuilds(lab, history=[Edit("x", "refactor")]), r"kind='refactor'"),
    (lambda lab: build_cache.run_rebuilds(lab, history=[]), r"history is empty"),
    (lambda lab: build_cache.run_rebuilds(lab, builders=["kaniko"]), r"(?s)builder='kaniko'.*buildkit"),
    (lambda lab: build_cache.run_context(lab, repeats=0), r"repeats=0"),
    (lambda lab: build_cache.run_context(lab, repeats=-2), r"repeats=-2"),
    (lambda lab: build_cache.run_context(lab, local_data_mib=0), r"local_data_mib=0"),
])
def test_bad_input_is_refused_before_any_build(replay: LabSession, call: Callable[[LabSession], object],
                                               message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        call(replay)


def test_an_edit_is_checked_against_the_state_the_edits_before_it_left() -> None:
    snapshots = build_cache.validate_history(build_cache.HISTORY[:1])
    assert 'GREETING = "Hello there"' in snapshots[1]["app/greeting.py"]
    # The first edit replaced the text this one looks for.
    again = Edit("again", "source", "app/greeting.py", 'GREETING = "Hello"', 'GREETING = "Hi"')
    with pytest.raises(BadParameter, match=r"edit 2 \('again'\).*occurs 0 times"):
        build_cache.validate_history([build_cache.HISTORY[0], again])
    doubled = Edit("doubled", "source", "app/greeting.py", "\n\ndef", "\n# Hello there\n\ndef")
    ambiguous = Edit("ambiguous", "source", "app/greeting.py", "Hello there", "Hi")
    with pytest.raises(BadParameter, match=r"edit 3 \('ambiguous'\).*occurs 2 times"):
        build_cache.validate_history([build_cache.HISTORY[0], doubled, ambiguous])


def test_the_full_history_applies_and_covers_every_kind_of_edit() -> None:
    snapshots = build_cache.validate_history(build_cache.HISTORY)
    assert len(build_cache.HISTORY) >= 10 and len(snapshots) == len(build_cache.HISTORY) + 1
    assert {e.kind for e in build_cache.HISTORY} == set(build_cache.EDIT_KINDS)
    # The first four (quick mode) hold one of each kind.
    assert [e.kind for e in build_cache.HISTORY[:4]] == ["source", "dependency", "docs", "no change"]
    assert snapshots[4] == snapshots[3]


def test_rebuild_arithmetic_on_known_rows() -> None:
    rows = pd.DataFrame([
        {"builder": "buildkit", "dockerfile": d, "edit_index": i, "edit": "e", "kind": k, "wall_s": w,
         "cached": 0, "executed": x, "install_ran": r, "first_executed": "", "context_bytes": 1, "image_bytes": 1}
        for d, i, k, w, x, r in [("A", 0, "cold", 9.0, 6, True), ("B", 0, "cold", 8.0, 4, True),
                                 ("A", 1, "source", 1.0, 2, False), ("B", 1, "source", 6.0, 3, True),
                                 ("A", 2, "no change", 0.2, 0, False), ("B", 2, "no change", 0.2, 0, False)]])
    result = build_cache.RebuildResult(rows, pd.DataFrame())
    assert result.total_s("buildkit", "A") == pytest.approx(1.2)  # the cold build is not a rebuild
    assert result.ratio("buildkit") == pytest.approx(6.2 / 1.2)
    assert result.install_reran("buildkit", "B") == (1, 1)
    assert result.executed("buildkit", "A", "source") == [2]
    assert result.cold_s("buildkit", "B") == 8.0
    assert list(result.per_edit("buildkit").index) == ["1 source", "2 no change"]


@pytest.mark.parametrize(("b_source_s", "verdict"), [
    ({"buildkit": 12.0, "legacy": 11.0}, Verdict.HOLDS),
    ({"buildkit": 12.0, "legacy": 6.0}, Verdict.CAVEAT),  # 10× with one builder only (as recorded)
    ({"buildkit": 6.0, "legacy": 3.0}, Verdict.FAILS),  # below 10× with every builder
])
def test_the_chapter_s_ten_times_is_the_criterion(b_source_s: dict[str, float], verdict: Verdict) -> None:
    rows = pd.DataFrame([
        {"builder": b, "dockerfile": d, "edit_index": i, "edit": "e", "kind": k, "wall_s": w, "cached": 0,
         "executed": x, "install_ran": r, "first_executed": "", "context_bytes": 1, "image_bytes": 1}
        for b, source_b in b_source_s.items()
        for d, i, k, w, x, r in [("A", 0, "cold", 9.0, 6, True), ("B", 0, "cold", 8.0, 4, True),
                                 ("A", 1, "source", 1.0, 2, False), ("B", 1, "source", source_b, 3, True)]])
    context = pd.DataFrame([{"builder": "buildkit", "dockerignore": ignored, "repeat": 0, "context_bytes": 1,
                             "context_s": 0.1, "wall_s": 1.0, "image_bytes": 1, "secret_found": not ignored,
                             "secret_layer": 1, "secret_path": "app/.env"} for ignored in (False, True)])
    ledger = ClaimLedger(build_cache.STEM)
    build_cache.check_claims(ledger, build_cache.RebuildResult(rows, pd.DataFrame()),
                             build_cache.ContextResult(context))
    assert ledger.verdict("cache.thirty_seconds_to_five_minutes") == verdict


def test_recorded_results_replay_into_what_the_notebook_shows(replay: LabSession) -> None:
    rebuilds = build_cache.run_rebuilds(replay)
    context = build_cache.run_context(replay)
    for sentence in (rebuilds.conclusion(), context.conclusion()):
        assert sentence.startswith("**What we measured.**")
    assert len(rebuilds.per_edit("legacy")) == len(build_cache.HISTORY) and not context.summary().empty


def test_recorded_rebuilds_keep_the_promised_properties(replay: LabSession) -> None:
    rebuilds = build_cache.run_rebuilds(replay)
    for builder in rebuilds.builders:
        a, b = (rebuilds.executed(builder, d, "source") for d in "AB")
        assert all(x < y for x, y in zip(a, b, strict=True)), builder
        reran, edits = rebuilds.install_reran(builder, "B")
        assert reran == edits > 0
    steps = pd.read_csv(replay.results_root / build_cache.STEM / "steps.csv")
    executed = steps[steps["status"] == "executed"].groupby(["builder", "dockerfile", "edit_index"]).size()
    table = rebuilds.rebuilds.set_index(["builder", "dockerfile", "edit_index"])["executed"]
    assert executed.reindex(table.index, fill_value=0).tolist() == table.tolist()


# ---------------------------------------------------------------- live


@pytest.fixture
def live(docker_client: docker.DockerClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LabSession:
    monkeypatch.setenv("LABKIT_RESULTS_DIR", str(tmp_path))
    return open_session(build_cache.LAB, mode="live", quick=True)


def _labelled_images(client: docker.DockerClient, run_id: str) -> list[str]:
    return [i.short_id for i in client.images.list(all=True, filters={"label": f"{engine.LABEL_RUN}={run_id}"})]


@pytest.mark.docker
def test_live_a_source_edit_runs_fewer_steps_with_dependencies_first(
        live: LabSession, docker_client: docker.DockerClient) -> None:
    result = build_cache.run_rebuilds(live, history=build_cache.HISTORY[:1], builders=["buildkit"])
    a, b = result.executed("buildkit", "A", "source"), result.executed("buildkit", "B", "source")
    assert a[0] < b[0]
    assert result.install_reran("buildkit", "B") == (1, 1) and result.install_reran("buildkit", "A") == (0, 1)
    assert leftovers(docker_client, live.run_id) == {"containers": [], "networks": [], "volumes": []}
    assert _labelled_images(docker_client, live.run_id) == []


@pytest.mark.docker
def test_live_the_secret_is_in_a_layer_only_without_dockerignore(
        live: LabSession, docker_client: docker.DockerClient) -> None:
    result = build_cache.run_context(live, local_data_mib=1, repeats=1, builders=["legacy"])
    assert result.secret_found(False) and not result.secret_found(True)
    assert result.median("context_bytes", "legacy", True) < result.median("context_bytes", "legacy", False)
    assert leftovers(docker_client, live.run_id) == {"containers": [], "networks": [], "volumes": []}
    assert _labelled_images(docker_client, live.run_id) == []

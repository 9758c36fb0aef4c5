"""Notebook 03's lab: edit histories and parameters refused before any build; the summaries and verdicts of
hand-made tables of rebuilds, dev-dependency builds and ignore patterns (expected values worked out by hand in the
comments); the packages pip installed, read from recorded logs; a recording made before sections 4 and 5 replays
saying so; live, A's source edit executes fewer steps than B's, no build carries a LABEL step of labkit's, the
secret is found only without .dockerignore, the nested folder .gitignore excludes lands in the layer, and the dev
dependencies add their packages to the image."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import docker
import pandas as pd
import pytest

from labkit.core.claims import ClaimLedger, Verdict
from labkit.core.results import ResultStore
from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import engine
from labkit.labs import build_cache
from labkit.labs.build_cache import Edit
from labkit.labs.build_cache import claims as build_cache_claims
from tests.conftest import leftovers, open_live

LAB = build_cache.LAB  # what the `replay` fixture (conftest.py) replays


@pytest.mark.parametrize(("call", "message"), [
    (lambda lab: build_cache.run_rebuilds(lab, history=[Edit("typo", "source", "app/missing.py", "a", "b")]),
     r"(?s)'app/missing.py', which the app does not have.*app/greeting.py"),
    (lambda lab: build_cache.run_rebuilds(lab, history=[Edit("x", "source", "README.md", "no such text", "b")]),
     r"(?s)occurs 0 times in 'README.md'.*exactly once"),
    (lambda lab: build_cache.run_rebuilds(lab, history=[Edit("x", "refactor")]), r"kind='refactor'"),
    (lambda lab: build_cache.run_rebuilds(lab, history=[]), r"history is empty"),
    (lambda lab: build_cache.run_rebuilds(lab, builders=["kaniko"]), r"(?s)builder='kaniko'.*buildkit"),
    (lambda lab: build_cache.run_rebuilds(lab, repeats=0), r"repeats=0"),
    (lambda lab: build_cache.run_context(lab, repeats=0), r"repeats=0"),
    (lambda lab: build_cache.run_context(lab, repeats=-2), r"repeats=-2"),
    (lambda lab: build_cache.run_context(lab, local_data_mib=0), r"local_data_mib=0"),
    (lambda lab: build_cache.run_dev_dependencies(lab, repeats=0), r"repeats=0"),
    (lambda lab: build_cache.run_dev_dependencies(lab, builders=["kaniko"]), r"builder='kaniko'"),
    (lambda lab: build_cache.run_ignore_patterns(lab, builders=[]), r"builders is empty"),
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


FIXTURES = Path(__file__).parent / "fixtures" / "buildlog"


@pytest.mark.parametrize(("log", "packages"), [
    # `grep 'Successfully installed' <log> | wc -w`, less the words that are not packages: 11 - 4 ("#9 6.917
    # Successfully installed") = 7 for the cold build, 13 - 4 = 9 after the dependency edit added two pins;
    # legacy lines carry no "#N t" prefix: 9 - 2 = 7, 11 - 2 = 9. A build whose install was cached installs none.
    ("buildkit-A-0.log", 7), ("buildkit-B-2.log", 9), ("legacy-B-1.log", 7), ("legacy-A-2.log", 9),
    ("buildkit-A-1.log", 0), ("legacy-B-4.log", 0),
])
def test_packages_installed_are_read_from_pip_s_last_line(log: str, packages: int) -> None:
    assert build_cache.packages_installed((FIXTURES / log).read_text()) == packages


def test_the_builds_of_an_edit_rotate_through_every_place() -> None:
    pairs = [("buildkit", "A"), ("buildkit", "B"), ("legacy", "A"), ("legacy", "B")]
    assert build_cache.build_order(0, ["buildkit", "legacy"]) == pairs
    assert build_cache.build_order(1, ["buildkit", "legacy"]) == pairs[1:] + pairs[:1]
    assert build_cache.build_order(5, ["buildkit", "legacy"]) == pairs[1:] + pairs[:1]  # 5 mod 4 = 1
    # Over four edits each build takes each place once.
    places = {p: {build_cache.build_order(i, ["buildkit", "legacy"]).index(p) for i in range(4)} for p in pairs}
    assert all(found == {0, 1, 2, 3} for found in places.values())


# A hand-made history: two passes (repeat 0, 1) of cold, two source edits, a docs edit and no change, with one
# builder. Columns: dockerfile, edit_index, kind, wall_s, executed, install_ran, packages_installed.
Row = tuple[str, int, str, float, int, bool, int]
KNOWN: list[Row] = [
    ("A", 0, "cold", 9.0, 6, True, 7), ("B", 0, "cold", 8.0, 4, True, 7),
    ("A", 1, "source", 1.0, 2, False, 0), ("B", 1, "source", 12.0, 3, True, 7),
    ("A", 2, "source", 0.5, 2, False, 0), ("B", 2, "source", 4.0, 3, True, 9),
    ("A", 3, "docs", 1.0, 2, False, 0), ("B", 3, "docs", 6.0, 3, True, 9),
    ("A", 4, "no change", 0.2, 0, False, 0), ("B", 4, "no change", 0.2, 0, False, 0),
]


def _rows(builder: str, passes: list[list[Row]]) -> list[dict[str, object]]:
    return [{"repeat": repeat, "order": 0, "builder": builder, "dockerfile": d, "edit_index": i, "edit": "e",
             "kind": k, "wall_s": w, "cached": 0, "executed": x, "install_ran": r, "packages_installed": n,
             "first_executed": "", "context_bytes": 1, "image_bytes": 1}
            for repeat, rows in enumerate(passes) for d, i, k, w, x, r, n in rows]


def _known(second_pass_scale: float = 2.0) -> build_cache.RebuildResult:
    """Pass 0 as KNOWN, pass 1 with every wall time × `second_pass_scale`."""
    again = [(d, i, k, w * second_pass_scale, x, r, n) for d, i, k, w, x, r, n in KNOWN]
    return build_cache.RebuildResult(pd.DataFrame(_rows("buildkit", [KNOWN, again])), pd.DataFrame())


def test_rebuild_summaries_of_a_hand_made_table() -> None:
    result = _known()
    assert result.repeats == 2
    # Per pass, the cold build not counted: A 1 + 0.5 + 1 + 0.2 = 2.7 s, pass 1 twice that: (2.7 + 5.4) / 2 = 4.05.
    assert result.total_s("buildkit", "A") == pytest.approx(4.05)
    # B: 12 + 4 + 6 + 0.2 = 22.2 s, then 44.4: mean 33.3 s; 33.3 / 4.05 = 8.222…
    assert result.ratio("buildkit") == pytest.approx(33.3 / 4.05)
    # Per source edit B over A: 12/1 = 12, 4/0.5 = 8, and the same in pass 1 (both doubled): median of
    # {8, 8, 12, 12} = 10; n = 4 gives only [min, max] = [8, 12], coverage 1 - 2/16 = 87.5 %.
    summary = result.ratio_summary("buildkit")
    assert (summary.n, summary.median, summary.ci_low, summary.ci_high) == (4, 10.0, 8.0, 12.0)
    assert summary.coverage == pytest.approx(0.875)
    # Median source rebuild of A: {1, 0.5, 2, 1} → 1.0 s; cold of B: {8, 16} → 12 s.
    assert result.median_s("buildkit", "A", "source") == 1.0 and result.cold_s("buildkit", "B") == 12.0
    # B re-ran the install on 2 source + 1 docs edit per pass: 6 of 6; A on none.
    assert result.install_reran("buildkit", "B") == (6, 6) and result.install_reran("buildkit", "A") == (0, 6)
    assert result.packages_text("buildkit") == "packages installed: 7 in 2 and 9 in 2 of the 4 source rebuilds"
    times = result.times()
    assert times.loc[("buildkit", "B", "source"), "packages_installed"] == "7–9"
    assert times.loc[("buildkit", "A", "source"), "packages_installed"] == "(not run)"
    assert times.loc[("buildkit", "B", "docs"), "median"] == pytest.approx(9.0)  # {6, 12}
    # The plot's table: the median over the passes per edit, e.g. edit 1 of B: {12, 24} → 18.
    assert result.per_edit("buildkit").loc["1 source", "B: everything first"] == pytest.approx(18.0)
    assert result.executed("buildkit", "A", "source") == [2, 2, 2, 2]
    assert result.fewer_steps("buildkit") == (4, 4)  # B executes 3 on each


CONTEXT = pd.DataFrame([{"builder": "buildkit", "dockerignore": ignored, "repeat": 0, "context_bytes": 1,
                         "context_s": 0.1, "wall_s": 1.0, "image_bytes": 1, "secret_found": not ignored,
                         "secret_layer": 1, "secret_path": "app/.env"} for ignored in (False, True)])
# Sections 4 and 5 as a recording made before them replays them: no rows, so no claims from them.
NOT_RECORDED = (build_cache.DevResult(pd.DataFrame(columns=list(build_cache.LAB.tables["dev"]))),
                build_cache.IgnoreResult(pd.DataFrame(columns=list(build_cache.LAB.tables["ignore"]))))


@pytest.mark.parametrize(("legacy_b", "expected"), [
    # legacy B per source edit 25 and 12.5 (×2 in pass 1): ratios 25, 25, 25, 25 → median 25, interval [25, 25]:
    # both builders' medians ≥ 10 but BuildKit's interval [8, 12] reaches below 10 → holds with caveat.
    ((25.0, 12.5), Verdict.CAVEAT),
    # legacy ratios 6 and 6 (6/1, 3/0.5): median 6 < 10; BuildKit's median 10 ≥ 10 → holds with caveat.
    ((6.0, 3.0), Verdict.CAVEAT),
])
def test_the_chapter_s_ten_times_on_a_hand_made_table(legacy_b: tuple[float, float], expected: Verdict) -> None:
    legacy = [(d, i, k, (legacy_b[0] if i == 1 else legacy_b[1]) if (d, k) == ("B", "source") else w, x, r, n)
              for d, i, k, w, x, r, n in KNOWN]
    again = [(d, i, k, w * 2, x, r, n) for d, i, k, w, x, r, n in legacy]
    rows = pd.concat([_known().rebuilds, pd.DataFrame(_rows("legacy", [legacy, again]))], ignore_index=True)
    ledger = ClaimLedger(build_cache.STEM)
    build_cache.check_claims(ledger, build_cache.RebuildResult(rows, pd.DataFrame()),
                             build_cache.ContextResult(CONTEXT), *NOT_RECORDED)
    claim = next(c for c in ledger if c.id == "cache.thirty_seconds_to_five_minutes")
    assert claim.verdict == expected
    assert claim.value == pytest.approx(min(10.0, legacy_b[0] / 1.0))  # the lowest builder's median
    # A executes 2 steps against B's 3 on every source edit, and spends less time: holds.
    assert ledger.verdict("cache.least_changing_first") == Verdict.HOLDS
    first = next(c for c in ledger if c.id == "cache.least_changing_first")
    assert first.measured.startswith("buildkit: on the 4 source edits A executed 2 steps, B 3; A fewer on 4 of 4, ")
    assert "against 33.3 s per pass of the history; legacy: on the 4 source edits" in first.measured  # 4.05 s for A
    assert build_cache_claims._steps([2, 3, 2]) == "2–3"  # the steps of edits that did not all execute as many
    assert ledger.verdict("cache.copy_all_invalidates") == Verdict.HOLDS  # B: 6 of 6 with each builder
    # The hand-made table has no steps: the caveat speaks of the pip base's venv.
    assert "into the venv of the base" in claim.caveat


@pytest.mark.parametrize(("instructions", "made"), [
    # Recordings before the pip base (2026-12-05): the install step made the venv first.
    (["COPY . .", "RUN python3 -m venv /venv && /venv/bin/pip install --no-index --find-links wheels -r "
      "requirements.txt"], True),
    (["COPY . .", "RUN /venv/bin/pip install --no-cache-dir --no-index --find-links wheels -r requirements.txt"],
     False),
    (["RUN python3 -m venv /venv", "RUN /venv/bin/pip install -r requirements.txt"], False),  # not the install step
])
def test_whether_the_install_made_the_venv_is_read_from_its_instruction(instructions: list[str], made: bool) -> None:
    steps = pd.DataFrame({"instruction": instructions})
    assert build_cache.RebuildResult(pd.DataFrame(), steps).install_makes_venv == made


@pytest.mark.parametrize(("a_source_s", "expected"), [
    # A's source edits 0.5 s: B over A 12/0.5 = 24, 4/0.5 = 8 per pass → {8, 8, 24, 24}, median 16, [8, 24]: the
    # interval reaches below 10 → holds with caveat.
    (0.5, Verdict.CAVEAT),
    # A's 0.2 s: 60, 20 → {20, 20, 60, 60}, median 40, interval [20, 60] ≥ 10 → holds.
    (0.2, Verdict.HOLDS),
    # A's 2 s: 6 and 2 → median 4 < 10 with the only builder → does not hold.
    (2.0, Verdict.FAILS),
])
def test_the_ten_times_verdict_follows_the_interval(a_source_s: float, expected: Verdict) -> None:
    rows = [(d, i, k, a_source_s if (d, k) == ("A", "source") else w, x, r, n) for d, i, k, w, x, r, n in KNOWN]
    again = [(d, i, k, w * 2, x, r, n) for d, i, k, w, x, r, n in rows]
    ledger = ClaimLedger(build_cache.STEM)
    build_cache.check_claims(ledger, build_cache.RebuildResult(pd.DataFrame(_rows("buildkit", [rows, again])),
                                                               pd.DataFrame()), build_cache.ContextResult(CONTEXT),
                             *NOT_RECORDED)
    assert ledger.verdict("cache.thirty_seconds_to_five_minutes") == expected


def _dev(walls: dict[bool, list[float]], extra_bytes: int = 6_000_000) -> build_cache.DevResult:
    """One builder: cold builds without (False) and with (True) the dev set, 7 and 12 packages, 199 MB + extra."""
    return build_cache.DevResult(pd.DataFrame([
        {"repeat": i, "order": 0, "builder": "buildkit", "dev": dev, "wall_s": wall, "install_s": wall - 2,
         "packages_installed": 12 if dev else 7, "image_bytes": 199_000_000 + (extra_bytes if dev else 0)}
        for dev, times in walls.items() for i, wall in enumerate(times)]))


@pytest.mark.parametrize(("walls", "extra_bytes", "expected"), [
    # Without: 5, 6 s; with: 7, 8 s: max without 6 < min with 7, n = 2 each, and 6 MB smaller → holds.
    ({False: [5.0, 6.0], True: [7.0, 8.0]}, 6_000_000, Verdict.HOLDS),
    # Without 5, 7.5; with 7, 8: 7.5 ≥ 7, the times overlap → smaller only: holds with caveat.
    ({False: [5.0, 7.5], True: [7.0, 8.0]}, 6_000_000, Verdict.CAVEAT),
    # One build each (quick mode): faster, but not beyond doubt → holds with caveat.
    ({False: [5.0], True: [9.0]}, 6_000_000, Verdict.CAVEAT),
    # The same size with and without → does not hold, whatever the times.
    ({False: [5.0, 6.0], True: [7.0, 8.0]}, 0, Verdict.FAILS),
])
def test_the_dev_dependencies_verdict_on_a_hand_made_table(walls: dict[bool, list[float]], extra_bytes: int,
                                                           expected: Verdict) -> None:
    result = _dev(walls, extra_bytes)
    ledger = ClaimLedger(build_cache.STEM)
    build_cache.check_claims(ledger, _known(), build_cache.ContextResult(CONTEXT), result, NOT_RECORDED[1])
    assert ledger.verdict("deps.omit_dev") == expected
    claim = next(c for c in ledger if c.id == "deps.omit_dev")
    assert claim.value == pytest.approx(extra_bytes / 1e6)  # MB the dev set adds
    assert (result.packages("buildkit", False), result.packages("buildkit", True)) == (7, 12)


def _ignore(in_layer: dict[str, set[str]]) -> build_cache.IgnoreResult:
    """Both builders alike: every planted path ignored by git; in the layer, per variant, the paths given."""
    return build_cache.IgnoreResult(pd.DataFrame([
        {"builder": builder, "variant": variant, "pattern": pattern, "path": path, "git_ignored": True,
         "in_layer": path in in_layer[variant]}
        for builder in ("buildkit", "legacy") for variant in (build_cache.SAME, build_cache.ANY_DEPTH)
        for pattern, pair in build_cache.IGNORED.items() for path in pair]))


# What the pattern languages give (found by hand): git ignores all 8 paths; the same lines in .dockerignore keep
# out the 4 at the root only; with **/ none is left in.
NESTED = {"app/node_modules/left-pad/index.js", "app/__pycache__/main.cpython-311.pyc", "app/debug.log", "app/.env"}


@pytest.mark.parametrize(("in_layer", "mirrors", "any_depth"), [
    ({build_cache.SAME: NESTED, build_cache.ANY_DEPTH: set()}, Verdict.FAILS, Verdict.HOLDS),
    # A builder matching like git would leave nothing in with the same lines.
    ({build_cache.SAME: set(), build_cache.ANY_DEPTH: set()}, Verdict.HOLDS, Verdict.HOLDS),
    # One nested path still in with **/ (say a builder without ** support) → the finding does not hold.
    ({build_cache.SAME: NESTED, build_cache.ANY_DEPTH: {"app/.env"}}, Verdict.FAILS, Verdict.FAILS),
])
def test_the_ignore_verdicts_on_a_hand_made_table(in_layer: dict[str, set[str]], mirrors: Verdict,
                                                  any_depth: Verdict) -> None:
    result = _ignore(in_layer)
    ledger = ClaimLedger(build_cache.STEM)
    build_cache.check_claims(ledger, _known(), build_cache.ContextResult(CONTEXT), NOT_RECORDED[0], result)
    assert (ledger.verdict("ignore.mirrors_gitignore"), ledger.verdict("ignore.any_depth")) == (mirrors, any_depth)
    assert result.leaked_paths(build_cache.SAME) == sorted(in_layer[build_cache.SAME])
    assert result.git_ignored() == 8
    matrix = result.matrix()
    assert matrix.shape == (8, 4)  # 4 patterns × 2 paths; 2 builders × 2 variants


def test_a_recording_made_before_sections_4_and_5_replays_saying_so(replay: LabSession, tmp_path: Path) -> None:
    assert replay.replay is not None
    older = tmp_path / build_cache.STEM
    shutil.copytree(replay.replay.folder, older)
    for table in ("dev", "ignore"):  # what a recording made before these sections lacks
        (older / f"{table}.csv").unlink(missing_ok=True)
    session = LabSession.replaying(build_cache.LAB, ResultStore(older))
    dev, ignore = build_cache.run_dev_dependencies(session), build_cache.run_ignore_patterns(session)
    assert not dev.recorded and not ignore.recorded
    assert "predates this section" in dev.conclusion() and "predates this section" in ignore.conclusion()
    ledger = ClaimLedger(build_cache.STEM)
    build_cache.check_claims(ledger, build_cache.run_rebuilds(session), build_cache.run_context(session), dev, ignore)
    ids = {claim.id for claim in ledger}
    assert "cache.thirty_seconds_to_five_minutes" in ids and not ids & {"deps.omit_dev", "ignore.mirrors_gitignore"}


# ---------------------------------------------------------------- live


@pytest.fixture
def live(docker_client: docker.DockerClient, tmp_path: Path) -> LabSession:
    return open_live(build_cache.LAB, tmp_path)


def _labelled_images(client: docker.DockerClient, run_id: str) -> list[str]:
    return [i.short_id for i in client.images.list(all=True, filters={"label": f"{engine.LABEL_RUN}={run_id}"})]


@pytest.mark.docker
def test_live_a_source_edit_runs_fewer_steps_with_dependencies_first(
        live: LabSession, docker_client: docker.DockerClient) -> None:
    result = build_cache.run_rebuilds(live, history=build_cache.HISTORY[:1])
    for builder in ("buildkit", "legacy"):
        a, b = result.executed(builder, "A", "source"), result.executed(builder, "B", "source")
        assert a[0] < b[0], builder
        assert result.install_reran(builder, "B") == (1, 1) and result.install_reran(builder, "A") == (0, 1)
    # No build passed --label, so the legacy builder numbered only the Dockerfile's instructions ("Step i/n"): A has
    # 8 (FROM, WORKDIR, COPY ×2, RUN, COPY . ., RUN, CMD) and B 6, not 8 + 3 and 6 + 3 with labkit's three labels;
    # the images still carried the run's labels (inherited from the base): the scope found and removed them below.
    legacy = result.steps[result.steps["builder"] == "legacy"]
    assert legacy.groupby("dockerfile")["total"].unique().map(list).to_dict() == {"A": [8], "B": [6]}
    assert set(result.rebuilds["packages_installed"]) == {0, 7}  # the cold builds and B's rebuild: 7 pins
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


@pytest.mark.docker
def test_live_the_nested_folder_gitignore_excludes_lands_in_the_layer(
        live: LabSession, docker_client: docker.DockerClient) -> None:
    result = build_cache.run_ignore_patterns(live)
    # git ignores all 8 planted paths; the same lines as .dockerignore keep out the 4 at the root only, with both
    # builders; with **/ none lands.
    assert result.git_ignored() == 8
    table = result.ignore
    for builder in ("buildkit", "legacy"):
        same = table[(table["builder"] == builder) & (table["variant"] == build_cache.SAME)]
        assert set(same.loc[same["in_layer"], "path"]) == NESTED, builder
    assert result.leaked_paths(build_cache.ANY_DEPTH) == []
    assert leftovers(docker_client, live.run_id) == {"containers": [], "networks": [], "volumes": []}
    assert _labelled_images(docker_client, live.run_id) == []


@pytest.mark.docker
def test_live_the_dev_dependencies_add_their_packages_to_the_image(
        live: LabSession, docker_client: docker.DockerClient) -> None:
    result = build_cache.run_dev_dependencies(live, repeats=1)
    # requirements.txt pins 7 packages; requirements-dev.txt 5 more (pytest, iniconfig, packaging, pluggy, coverage).
    assert (result.packages("buildkit", False), result.packages("buildkit", True)) == (7, 12)
    assert result.smaller_without("buildkit")
    assert leftovers(docker_client, live.run_id) == {"containers": [], "networks": [], "volumes": []}
    assert _labelled_images(docker_client, live.run_id) == []

"""Notebook 14's lab against known answers: each step's Dockerfile differs from the one before only by its fix
(the expected lines written out here by hand), install steps found in a hand-made BuildKit log, verdicts on
hand-made tables, bad input refused before anything is built, and one live run of three steps."""

from __future__ import annotations

import difflib
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path

import docker
import pandas as pd
import pytest

from labkit.core.claims import Claim, ClaimLedger, Source, Verdict
from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import buildlog, builds, engine, npmcache
from labkit.labs import the_quick_check
from labkit.labs.the_quick_check import LAB, STEPS, waterfall
from labkit.labs.the_quick_check.declaration import APP, FULL, RUNTIME, SLIM, fill, ignore_text
from labkit.labs.the_quick_check.lint import LintResult
from labkit.labs.the_quick_check.node_env import NODE_ENV, OMIT_DEV, PLAIN, VARIANTS, NodeEnvResult
from tests.conftest import interrupted_run_leaves_nothing, leftovers

ROOT = Path(__file__).resolve().parent.parent

MOUNT = "RUN --mount=type=bind,from={npm_cache},target=/npm-cache,rw"
# Per step: the Dockerfile lines it removes and adds against the step before (by hand, from the chapter's answer).
EXPECTED_CHANGES: dict[str, tuple[set[str], set[str]]] = {
    "cache-deps": ({f"{MOUNT} npm install --offline --cache /npm-cache"},
                   {"COPY package.json package-lock.json ./", f"{MOUNT} npm ci --offline --cache /npm-cache"}),
    "slim-base": ({"FROM {node_full_npm}"}, {"FROM {node_slim_npm}"}),
    "multi-stage": ({"FROM {node_slim_npm}"},
                    {"FROM {node_slim_npm} AS build", "", "FROM {node_slim_npm} AS dependencies", "WORKDIR /app",
                     "COPY package.json package-lock.json ./",
                     f"{MOUNT} npm ci --offline --cache /npm-cache --omit=dev", "FROM {node_slim}",
                     "COPY --from=dependencies /app/node_modules ./node_modules",
                     "COPY --from=build /app/dist ./dist"}),
    "dockerignore": (set(), set()),  # the fix is the build context's .dockerignore, not a Dockerfile line
    "non-root": (set(), {"USER 1000:1000"}),
    "exec-form": ({"CMD node dist/server.js"}, {'CMD ["node", "dist/server.js"]'}),
}


def _changes(before: str, after: str) -> tuple[set[str], set[str]]:
    removed, added = set(), set()
    for line in difflib.ndiff(before.splitlines(), after.splitlines()):
        if line.startswith("- "):
            removed.add(line[2:])
        elif line.startswith("+ "):
            added.add(line[2:])
    return removed, added


@pytest.mark.parametrize("index", range(1, len(STEPS)))
def test_each_step_changes_only_its_fix(index: int) -> None:
    before, after = STEPS[index - 1], STEPS[index]
    assert _changes(before.template, after.template) == EXPECTED_CHANGES[after.name]
    shown = the_quick_check.fix_diff(before, after)
    for line in EXPECTED_CHANGES[after.name][1] - {""}:
        assert f"+{line}" in shown


def test_the_teammate_s_dockerfile_is_the_chapter_s_bad_one() -> None:
    teammate = STEPS[0].template.splitlines()
    assert teammate.index("COPY . .") < next(i for i, line in enumerate(teammate) if "npm install" in line)
    assert "USER" not in STEPS[0].template and teammate[-1] == "CMD node dist/server.js"
    assert not STEPS[0].ignores and all(step.ignores for step in STEPS[4:])


def test_the_dockerignore_keeps_out_what_the_chapter_names() -> None:
    assert {"node_modules", ".git", ".env"} <= set(ignore_text().split())
    assert ".dockerignore" in the_quick_check.fix_diff(STEPS[3], STEPS[4])


# Per step, by hand from its Dockerfile: the base of its image's stage, and whether that stage runs COPY . .
IMAGE_STAGES = {"teammate": (FULL, True), "cache-deps": (FULL, True), "slim-base": (SLIM, True),
                "multi-stage": (RUNTIME, False), "dockerignore": (RUNTIME, False), "non-root": (RUNTIME, False),
                "exec-form": (RUNTIME, False)}


def test_each_step_s_image_stage_is_read_from_its_dockerfile() -> None:
    assert {step.name: (step.runtime_base, step.ships_context) for step in STEPS} == IMAGE_STAGES


def test_the_bases_tags_fill_their_own_placeholders() -> None:
    filled = fill(STEPS[3].template, "cache:1", {FULL: "full:1", SLIM: "slim:1", RUNTIME: "runtime:1"})
    froms = [line for line in filled.splitlines() if line.startswith("FROM ")]
    assert froms == ["FROM slim:1 AS build", "FROM slim:1 AS dependencies", "FROM runtime:1"]
    assert "from=cache:1," in filled and "{" not in filled


def test_the_service_stops_on_sigterm_by_its_own_handler() -> None:
    # mnemonic.exec_form's caveat and the notebook's section 2 say the prompt stop rests on this handler.
    assert 'process.on("SIGTERM"' in (APP / "src" / "server.ts").read_text()


# A BuildKit log of a code-only rebuild after the first fix: the install cached, the source copied and compiled.
CODE_ONLY_LOG = """\
#5 [1/5] FROM docker.io/labkit/node-full-npm:abc
#5 CACHED

#6 [2/5] WORKDIR /app
#6 CACHED

#7 [3/5] COPY package.json package-lock.json ./
#7 CACHED

#8 [4/5] RUN --mount=type=bind,from=cache:1,target=/npm-cache,rw npm ci --offline --cache /npm-cache
#8 CACHED

#9 [5/5] COPY . .
#9 DONE 0.4s

#10 [6/6] RUN node_modules/.bin/tsc
#10 DONE 2.1s
"""


def _build(text: str) -> builds.Build:
    return builds.Build("t", buildlog.BUILDKIT, "sha256:0", 1.0, buildlog.parse(text), text)


def test_a_cached_install_is_not_an_install_and_an_executed_one_is() -> None:
    assert not waterfall.installs(_build(CODE_ONLY_LOG))
    executed = CODE_ONLY_LOG.replace("#8 CACHED", "#8 DONE 5.0s")
    assert waterfall.installs(_build(executed))
    teammate = CODE_ONLY_LOG.replace("npm ci", "npm install").replace("#8 CACHED", "#8 DONE 5.0s")
    assert waterfall.installs(_build(teammate))


def test_an_edit_changes_the_greeting_line_only(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    original = (the_quick_check.declaration.APP / "src" / "server.ts").read_text()
    (tmp_path / "src" / "server.ts").write_text(original)
    waterfall.edit_source(tmp_path, 3, "abc")
    removed, added = _changes(original, (tmp_path / "src" / "server.ts").read_text())
    assert added == {'export const GREETING = "hello from the quick check (edit 3 of abc)";'}
    assert removed == {'export const GREETING = "hello from the quick check";'}


def test_the_dependency_change_adds_one_runtime_dependency() -> None:
    import json

    before = json.loads((the_quick_check.declaration.APP / "package.json").read_text())
    after = json.loads((the_quick_check.declaration.DEPENDENCY_CHANGE / "package.json").read_text())
    assert set(after["dependencies"]) - set(before["dependencies"]) == {"compression"}
    assert after["devDependencies"] == before["devDependencies"]


def test_the_npm_cache_is_keyed_by_the_manifests_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for manifest in npmcache.MANIFESTS:
            (tmp_path / name / manifest).write_text("{}\n")
    first = npmcache.key([tmp_path / "a"])
    assert npmcache.key([tmp_path / "b"]) == first  # the same bytes: the same key
    (tmp_path / "b" / "package-lock.json").write_text('{"lockfileVersion": 3}\n')
    assert npmcache.key([tmp_path / "b"]) != first
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    done = npmcache.folder([tmp_path / "a"])
    done.mkdir(parents=True)
    (done / npmcache.COMPLETE).write_text("a\n")
    monkeypatch.setenv("PATH", "")  # a fetch that ran npm would fail: a complete folder is reused as it is
    assert npmcache.fetch([tmp_path / "a"], "labkit/no-such-image:0", []) == done


# ---------------------------------------------------------------------------------------------- bad input


@pytest.fixture
def unstarted(tmp_path: Path) -> LabSession:
    """A live session with no engine: every call below must be refused before it would need one."""
    return LabSession(the_quick_check.STEM, True, tmp_path, None, None, tables=dict(LAB.tables))


@pytest.mark.parametrize(("call", "message"), [
    (lambda lab: the_quick_check.run_waterfall(lab, steps=("teammate", "distroless")), r"distroless"),
    (lambda lab: the_quick_check.run_waterfall(lab, steps=()), r"non-empty"),
    (lambda lab: the_quick_check.run_waterfall(lab, steps=("slim-base", "teammate")), r"order"),
    (lambda lab: the_quick_check.run_waterfall(lab, steps=("teammate", "teammate")), r"once"),
    (lambda lab: the_quick_check.run_waterfall(lab, code_repeats=0), r"code_repeats=0"),
    (lambda lab: the_quick_check.run_waterfall(lab, stop_timeout_s=0), r"stop_timeout_s=0"),
    (lambda lab: the_quick_check.run_lint(lab, steps=("exec form",)), r"exec form"),
])
def test_bad_parameters_are_refused_naming_the_parameter(
        unstarted: LabSession, call: Callable[[LabSession], object], message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        call(unstarted)


# ---------------------------------------------------------------------------------------------- known answers

# Hand-made: three steps, sizes in MB, code-only rebuild times (s), installs on code edits, uid, stop, .env layers.
HAND_MADE = {
    "teammate": (900, [40.0, 42.0, 41.0], True, 0, 10.1, 137, True),
    "cache-deps": (950, [8.0, 9.0, 10.0], False, 0, 10.1, 137, True),
    "slim-base": (400, [7.0, 8.0, 9.0], False, 0, 10.1, 137, True),
    "multi-stage": (190, [6.0, 7.0, 8.0], False, 0, 10.1, 137, False),
    "exec-form": (190, [6.0, 7.0, 8.0], False, 1000, 0.2, 0, False),
}


# Hand-made base sizes (MB): the teammate's full base, the slim one and the runtime stage's, as the engine holds them.
HAND_BASES = {FULL: 800, SLIM: 300, RUNTIME: 150}


def _result(table: dict[str, tuple[int, list[float], bool, int, float, int, bool]],
            bases: dict[str, int] | None = HAND_BASES) -> waterfall.WaterfallResult:
    """`bases` None: a recording made before the bases' sizes were measured."""
    builds_rows, image_rows = [], []
    for step, (size_mb, code_s, code_installs, uid, stop_s, exit_code, secret) in table.items():
        for repeat, seconds in enumerate(code_s):
            builds_rows.append({"step": step, "kind": waterfall.CODE, "repeat": repeat, "position": 0,
                                "wall_s": seconds, "executed": 2, "cached": 3, "installs": code_installs,
                                "first_executed": "COPY . .", "context_bytes": 1000})
        builds_rows.append({"step": step, "kind": waterfall.DEPENDENCY, "repeat": 0, "position": 0, "wall_s": 30.0,
                            "executed": 4, "cached": 1, "installs": True, "first_executed": "COPY", "context_bytes": 1})
        image_rows.append({"step": step, "size_bytes": size_mb * 1_000_000, "layers": 4, "context_bytes": 1000,
                           "cold_s": 50.0, "user": "", "uid": uid, "secret_file": secret,
                           "dev_dependency_files": 0, "stop_timeout_s": 10, "stop_s": stop_s, "exit_code": exit_code,
                           "pid1": "node dist/server.js"})
    base_rows = [{"base": base, "tag": f"labkit/{base}:0", "size_bytes": size_mb * 1_000_000}
                 for base, size_mb in (bases or {}).items()]
    return waterfall.WaterfallResult(pd.DataFrame(builds_rows), pd.DataFrame(image_rows),
                                     pd.DataFrame(base_rows, columns=list(LAB.tables["bases"])))


def _lint(codes: dict[str, list[str]]) -> LintResult:
    rows = [{"step": step, "line": 1, "code": code, "level": "warning", "message": "m"}
            for step, found in codes.items() for code in found]
    return LintResult(pd.DataFrame(rows, columns=["step", "line", "code", "level", "message"]), tuple(codes))


def _ledger(result: waterfall.WaterfallResult, lint: LintResult | None = None) -> ClaimLedger:
    ledger = ClaimLedger(the_quick_check.STEM)
    the_quick_check.check_claims(ledger, result, lint or _lint({"teammate": ["DL3025"], "exec-form": []}))
    return ledger


def _verdicts(result: waterfall.WaterfallResult, lint: LintResult) -> dict[str, Verdict]:
    return {claim.id: claim.verdict for claim in _ledger(result, lint)}


def _claim(result: waterfall.WaterfallResult, claim_id: str) -> Claim:
    return next(claim for claim in _ledger(result) if claim.id == claim_id)


def _node_env(plain: int, under_node_env: int, omit_dev: int) -> NodeEnvResult:
    files = {PLAIN: plain, NODE_ENV: under_node_env, OMIT_DEV: omit_dev}
    return NodeEnvResult(pd.DataFrame([{"variant": v, "dockerfile_env": VARIANTS[v][0].strip(),
                                        "npm_flags": VARIANTS[v][1].strip(), "npm_version": "9.2.0",
                                        "dev_dependency_files": n, "node_modules_files": 500 + n}
                                       for v, n in files.items()]))


def test_the_node_env_claim_follows_the_counts() -> None:
    def verdict(found: NodeEnvResult) -> Verdict | None:
        ledger = ClaimLedger(the_quick_check.STEM)
        the_quick_check.check_claims(ledger, _result(HAND_MADE), _lint({}), found)
        return {claim.id: claim.verdict for claim in ledger}.get("quick_check.node_env_prunes_dev")

    assert verdict(_node_env(121, 0, 0)) == Verdict.HOLDS
    assert verdict(_node_env(121, 121, 0)) == Verdict.FAILS  # an npm that ignores the variable
    assert verdict(_node_env(0, 0, 0)) == Verdict.FAILS  # nothing to prune: the test shows nothing
    before_the_section = NodeEnvResult(pd.DataFrame(columns=list(the_quick_check.LAB.tables["node_env"])))
    assert verdict(before_the_section) is None


def test_verdicts_on_a_hand_made_waterfall() -> None:
    result = _result(HAND_MADE)
    assert result.code_only("cache-deps").median == 9.0  # the middle of 8, 9, 10
    assert result.code_installs("teammate") and not result.code_installs("cache-deps")
    # saved: cache-deps -50 MB and 32 s (41 → 9); slim-base 550 MB and 1 s; multi-stage 210 MB and 1 s
    verdicts = _verdicts(result, _lint({"teammate": ["DL3025"], "exec-form": []}))
    assert verdicts == {
        # 190 MB on a 150 MB base: under 200 MB by construction; the teammate's 41 s is already under 60 s
        "quick_check.under_200_mb": Verdict.INCONCLUSIVE, "quick_check.under_60_s": Verdict.INCONCLUSIVE,
        "quick_check.size_ratio": Verdict.FAILS, "quick_check.rebuild_ratio": Verdict.FAILS,  # 21 %, 17 % > 12.5 %
        "quick_check.code_only_about_10_s": Verdict.HOLDS, "quick_check.priority_order": Verdict.CAVEAT,
        "mnemonic.non_root": Verdict.HOLDS, "mnemonic.exec_form": Verdict.CAVEAT,  # the caveat: the app's handler
        "dockerignore.secret": Verdict.CAVEAT,  # multi-stage has no .env without a .dockerignore
        "lint.mnemonic_reach": Verdict.HOLDS}


def test_the_ratios_hold_from_the_chapters_starting_point() -> None:
    table = dict(HAND_MADE)
    table["teammate"] = (1600, [480.0, 480.0, 480.0], True, 0, 10.1, 137, True)  # the chapter's 1.6 GB, 8 minutes
    verdicts = _verdicts(_result(table), _lint({"teammate": ["DL3025"], "exec-form": []}))
    # 190 MB is 11.9 % of 1.6 GB; a 7 s median is 1.5 % of 480 s: both within an eighth
    assert verdicts["quick_check.size_ratio"] == verdicts["quick_check.rebuild_ratio"] == Verdict.CAVEAT


def test_verdicts_turn_when_the_data_says_otherwise() -> None:
    table = dict(HAND_MADE)
    table["exec-form"] = (210, [70.0, 71.0, 72.0], True, 0, 10.1, 137, True)  # the app takes a 150 MB base over
    table["slim-base"] = (900, [7.0, 8.0, 9.0], False, 0, 10.1, 137, False)  # COPY . . without the .env
    table["cache-deps"] = (950, [40.0, 41.0, 42.0], True, 0, 10.1, 137, True)  # still installs on a code edit
    verdicts = _verdicts(_result(table), _lint({"teammate": ["DL3025", "DL3002"], "exec-form": ["DL3025"]}))
    assert verdicts == {
        "quick_check.under_200_mb": Verdict.FAILS, "quick_check.under_60_s": Verdict.FAILS,
        "quick_check.size_ratio": Verdict.FAILS, "quick_check.rebuild_ratio": Verdict.FAILS,
        "quick_check.code_only_about_10_s": Verdict.FAILS, "quick_check.priority_order": Verdict.FAILS,
        "mnemonic.non_root": Verdict.FAILS, "mnemonic.exec_form": Verdict.FAILS, "dockerignore.secret": Verdict.FAILS,
        "lint.mnemonic_reach": Verdict.FAILS}


def test_the_size_target_is_judged_against_the_runtime_base() -> None:
    met = _claim(_result(HAND_MADE), "quick_check.under_200_mb")  # 190 MB on a 150 MB base
    assert met.verdict == Verdict.INCONCLUSIVE
    assert "node-slim alone is 150.0 MB, 79% of its 190.0 MB image (its Dockerfile adds 40.0 MB)" in met.caveat
    assert "meets the target by construction" in met.caveat
    unknown = _claim(_result(HAND_MADE, bases=None), "quick_check.under_200_mb")
    assert unknown.verdict == Verdict.INCONCLUSIVE and "no base sizes" in unknown.caveat
    table = dict(HAND_MADE)
    table["exec-form"] = (260, [6.0, 7.0, 8.0], False, 1000, 0.2, 0, False)
    over_alone = _claim(_result(table, bases={**HAND_BASES, RUNTIME: 250}), "quick_check.under_200_mb")
    assert over_alone.verdict == Verdict.INCONCLUSIVE and "missed by construction" in over_alone.caveat
    pushed_over = _claim(_result(table), "quick_check.under_200_mb")  # 260 MB on a 150 MB base: the app decides
    assert pushed_over.verdict == Verdict.FAILS and "what the app adds takes the image over it" in pushed_over.caveat


@pytest.mark.parametrize(("teammate_s", "expected"), [
    ([40.0, 42.0, 41.0], Verdict.INCONCLUSIVE),  # already under 60 s before any fix
    ([58.0, 59.0, 61.0], Verdict.CAVEAT),  # its interval reaches 60 s: the fixes have something to show
    ([480.0, 480.0, 480.0], Verdict.CAVEAT),  # the chapter's 8 minutes
])
def test_the_rebuild_target_is_inconclusive_when_the_teammate_already_meets_it(
        teammate_s: list[float], expected: Verdict) -> None:
    table = {**HAND_MADE, "teammate": (900, teammate_s, True, 0, 10.1, 137, True)}
    found = _claim(_result(table), "quick_check.under_60_s")
    assert found.verdict == expected
    assert ("meets the target by construction" in found.caveat) == (expected == Verdict.INCONCLUSIVE)


def test_the_teammate_s_rebuild_time_is_in_the_caveat() -> None:
    assert "already rebuilds in 41.0 s (interval up to 42.0 s)" in _claim(_result(HAND_MADE),
                                                                          "quick_check.under_60_s").caveat


@pytest.mark.parametrize(("teammate_s", "cached_s", "expected"), [
    ([40.0, 42.0, 41.0], [2.0, 2.1, 2.2], Verdict.HOLDS),  # five times faster than ~10 s agrees with it
    ([40.0, 42.0, 41.0], [14.0, 15.0, 15.5], Verdict.HOLDS),  # the chapter's ~10 s with its tolerance
    ([40.0, 42.0, 41.0], [15.0, 16.0, 17.0], Verdict.FAILS),
    ([3.0, 3.1, 3.2], [2.0, 2.1, 2.2], Verdict.CAVEAT),  # the teammate's install is fast too: time by construction
])
def test_the_code_only_rebuild_is_judged_one_sided(teammate_s: list[float], cached_s: list[float],
                                                   expected: Verdict) -> None:
    table = {**HAND_MADE, "teammate": (900, teammate_s, True, 0, 10.1, 137, True),
             "cache-deps": (950, cached_s, False, 0, 10.1, 137, True)}
    found = _claim(_result(table), "quick_check.code_only_about_10_s")
    assert found.verdict == expected and found.section == "Container Pitfalls"
    assert ("met by construction" in found.caveat) == (expected == Verdict.CAVEAT)


def test_the_priority_order_is_our_reading_and_a_small_base_gap_leaves_a_miss_inconclusive() -> None:
    small_gap = {**HAND_MADE, "slim-base": (900, [7.0, 8.0, 9.0], False, 0, 10.1, 137, True)}  # slim saves 50 MB
    found = _claim(_result(small_gap), "quick_check.priority_order")
    assert found.source == Source.FINDING and found.verdict == Verdict.INCONCLUSIVE
    assert "saves 50 MB here, against ~750 MB in the chapter" in found.caveat
    # A gap as large as the chapter's (the slim base saves 800 MB) and multi-stage still saves more: a real miss.
    chapter_gap = {**HAND_MADE, "teammate": (2100, [40.0, 42.0, 41.0], True, 0, 10.1, 137, True),
                   "cache-deps": (2150, [8.0, 9.0, 10.0], False, 0, 10.1, 137, True),
                   "slim-base": (1350, [7.0, 8.0, 9.0], False, 0, 10.1, 137, True)}
    assert _claim(_result(chapter_gap), "quick_check.priority_order").verdict == Verdict.FAILS


def test_the_secret_is_judged_on_the_steps_that_copy_the_context_into_the_image() -> None:
    result = _result(HAND_MADE)
    result.images["context_bytes"] = [27_070_000, 27_070_000, 27_070_000, 27_070_000, 37_620]
    found = _claim(result, "dockerignore.secret")
    assert found.value == 3 and "(teammate, cache-deps, slim-base)" in found.criterion
    assert "the image of multi-stage holds no .env either" in found.caveat
    assert "27.07 MB sent for multi-stage, 0.04 MB for exec-form" in found.caveat
    single_stage = {step: HAND_MADE[step] for step in ("teammate", "cache-deps", "slim-base")}
    plain = _claim(_result(single_stage), "dockerignore.secret")  # no multi-stage, no .dockerignore: no caveat
    assert plain.verdict == Verdict.HOLDS and plain.caveat == ""


def test_the_stand_ins_are_described_without_versions_and_with_the_bases_sizes() -> None:
    described = the_quick_check.claims.stand_ins(_result(HAND_MADE))
    assert "~1 GB and ~250 MB in the chapter's table, 800 MB and 300 MB here" in described
    assert not any(version in described for version in ("18", "npm 9", "much smaller"))
    assert "MB here" not in the_quick_check.claims.stand_ins(_result(HAND_MADE, bases=None))


def test_the_conclusion_and_table_show_the_runtime_base_s_share() -> None:
    share = "exec-form's runtime base node-slim alone is 150.0 MB, 79% of its 190.0 MB image"
    assert share in _result(HAND_MADE).conclusion()
    assert share not in _result(HAND_MADE, bases=None).conclusion()
    table = _result(HAND_MADE).table()
    assert table["runtime base"].to_dict() == {step: IMAGE_STAGES[step][0] for step in HAND_MADE}
    assert table.loc["slim-base", "base (MB)"] == 300.0


def test_the_exec_form_caveat_names_the_service_s_own_handler() -> None:
    assert "own SIGTERM handler" in _claim(_result(HAND_MADE), "mnemonic.exec_form").caveat


# The chapter's mnemonic, by hand: hadolint's DL3025 covers the last item, and a .dockerignore is not one of them.
MNEMONIC = ("slim base", "cache deps", "multi-stage", "non-root", "exec form")


def test_the_lint_finding_names_the_mnemonic_s_other_four_items() -> None:
    criterion = _claim(_result(HAND_MADE), "lint.mnemonic_reach").criterion
    named = criterion[criterion.index("no rule for"):criterion.index("(nor")]
    assert [item for item in MNEMONIC if item in named] == list(MNEMONIC[:4])


# ---------------------------------------------------------------------------------------------- live


TEMP_FOLDERS = "labkit-quick-check-*"  # the notebook's temporary folders, by name


def _temp_folders() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob(TEMP_FOLDERS)}


@pytest.mark.docker
@pytest.mark.root
def test_live_known_answers(live: LabSession, docker_client: docker.DockerClient) -> None:
    """The first step, the first fix and the last: a code-only rebuild after the first fix runs no npm install; the
    last image holds no .env and no typescript, runs as non-root, is smaller than the first but larger than its base
    and stops at once."""
    before = _temp_folders()
    result = the_quick_check.run_waterfall(live, steps=("teammate", "cache-deps", "exec-form"), code_repeats=1,
                                           stop_timeout_s=2)
    assert result.code_installs("teammate") and not result.code_installs("cache-deps")
    assert not result.code_installs("exec-form")
    final = result.image("exec-form")
    assert not final["secret_file"] and final["dev_dependency_files"] == 0 and final["uid"] != 0
    assert result.secret_shipped("teammate") and result.image("teammate")["dev_dependency_files"] > 0
    assert result.size_bytes("exec-form") < result.size_bytes("teammate")
    assert int(final["exit_code"]) == 0 and int(result.image("teammate")["exit_code"]) == 137
    assert result.base_bytes(RUNTIME) < result.size_bytes("exec-form")  # an image holds its base
    assert leftovers(docker_client, live.run_id) == {"containers": [], "networks": [], "volumes": []}
    assert docker_client.images.list(filters={"label": f"{engine.LABEL_RUN}={live.run_id}"}) == []
    assert _temp_folders() - before == set()


@pytest.mark.docker
def test_live_npm_ci_installs_the_dev_dependency_and_omit_dev_does_not(live: LabSession) -> None:
    found = the_quick_check.run_node_env(live)
    assert found.dev_files(PLAIN) > 0 and found.dev_files(OMIT_DEV) == 0
    counts = found.variants.set_index("variant")["node_modules_files"]
    assert counts[OMIT_DEV] < counts[PLAIN]
    assert found.npm_version.split(".")[0].isdigit()


@pytest.mark.docker
@pytest.mark.root
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_leaves_no_container_image_or_folder(
        signum: int, docker_client: docker.DockerClient, tmp_path: Path) -> None:
    """`labkit run --quick 14` interrupted once it has made an image (the npm cache's, or a step's)."""
    interrupted_run_leaves_nothing(docker_client, the_quick_check.STEM, "14", tmp_path, signum, "images",
                                   TEMP_FOLDERS)

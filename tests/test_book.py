"""The book's pages from executed notebooks and results, without building it: live or replayed, section links,
the landing page's headlines, the page of a chapter that failed and its claims not measured; then one book built
from a replayed chapter and a failed one. (The built book is opened in Chromium by tests/test_notebooks.py.)"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from labkit import paths
from labkit.app import book, cli, runner
from labkit.core import claims
from labkit.errors import NotPrepared

ROOT = Path(__file__).resolve().parent.parent
STEM = "01-example"


def _cell_times(start: str, end: str) -> dict[str, dict[str, str]]:
    return {"papermill": {"start_time": f"2026-01-01T10:00:{start}+00:00", "end_time": f"2026-01-01T10:00:{end}+00:00"}}


def _executed(folder: Path, banner: str) -> Path:
    """An executed notebook: a banner, then two sections whose cells ran at known times."""
    banner_cell = nbformat.v4.new_code_cell("display(Markdown(lab.banner()))", metadata=_cell_times("00.0", "01.9"))
    banner_cell.outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": banner})]
    cells = [nbformat.v4.new_markdown_cell("# 01 · An example\n\n## What you need"), banner_cell,
             nbformat.v4.new_markdown_cell("## 1 · Namespaces, read from /proc"),
             nbformat.v4.new_code_cell("ns = run()", metadata=_cell_times("02.0", "05.5")),
             nbformat.v4.new_markdown_cell("## 2 · Start-up cost"),
             nbformat.v4.new_code_cell("startup = run()", metadata=_cell_times("05.6", "09.0"))]
    notebook = nbformat.v4.new_notebook(cells=cells, metadata={"papermill": {"duration": 9.0}})
    path = folder / f"{STEM}.ipynb"
    nbformat.write(notebook, path)
    return path


def _results(root: Path, run_id: str) -> Path:
    folder = root / STEM
    folder.mkdir(parents=True)
    experiments = {"namespaces": {"started_utc": "2026-01-01T10:00:02+00:00", "ended_utc": "2026-01-01T10:00:05+00:00"},
                   "startup": {"started_utc": "2026-01-01T10:00:05+00:00", "ended_utc": "2026-01-01T10:00:08+00:00"}}
    (folder / "provenance.json").write_text(json.dumps({"run_id": run_id, "experiments": experiments}))
    return root


def test_a_live_chapter_uses_its_own_run_and_links_each_table_to_the_section_that_measured_it(tmp_path: Path) -> None:
    path = _executed(tmp_path, "**Live run** `r1` — every number below is measured now")
    chapter = book.read_chapter(path, _results(tmp_path / "results", "r1"))
    assert chapter.live and chapter.title == "An example" and chapter.wall_s == 9.0
    # The start-up experiment began in the second whole second in which namespaces ended: overlap decides.
    assert book.section_anchors(chapter) == {
        "namespaces": ("1 · Namespaces, read from /proc", "1--namespaces-read-from-proc"),
        "startup": ("2 · Start-up cost", "2--start-up-cost")}


def test_a_live_chapter_refuses_the_results_of_another_run(tmp_path: Path) -> None:
    path = _executed(tmp_path, "**Live run** `r1` — every number below is measured now")
    with pytest.raises(NotPrepared, match="r2"):
        book.read_chapter(path, _results(tmp_path / "results", "r2"))


def test_a_replayed_chapter_reads_the_recorded_results_and_links_no_section(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABKIT_ROOT", str(tmp_path))
    _results(tmp_path / "data" / "results", "recorded")
    path = _executed(tmp_path, "> ⚠️ **REPLAYED RESULTS — nothing below was measured in this execution.**")
    chapter = book.read_chapter(path, tmp_path / "empty")
    assert not chapter.live and chapter.results == tmp_path / "data" / "results" / STEM
    assert book.section_anchors(chapter) == {}


def test_the_landing_page_quotes_the_declared_headline_else_the_first_claim_of_the_chapter(tmp_path: Path) -> None:
    path = _executed(tmp_path, "**Live run** `r1` — every number below is measured now")
    chapter = book.read_chapter(path, _results(tmp_path / "results", "r1"))
    rows = [("a.found", "finding", "Found", "3 s", "holds"), ("b.first", "chapter", "First", "1 s", "holds"),
            ("c.second", "chapter", "Second", "2 ms", "does not hold")]
    ledger = pd.DataFrame([{"notebook": STEM, "id": claim_id, "source": source, "claim": claim, "measured": measured,
                            "verdict": verdict} for claim_id, source, claim, measured, verdict in rows])
    assert "| First: 1 s | **holds** |" in book.landing_page([chapter], ledger, {})
    assert "| Second: 2 ms | **does not hold** |" in book.landing_page([chapter], ledger, {STEM: "c.second"})
    assert "| Found: 3 s | **holds** |" in book.landing_page([chapter], ledger[ledger["source"] == "finding"], {})


def _failed(folder: Path) -> Path:
    """An executed notebook as papermill leaves one whose cell raised: its error banner first, an anchor before the
    failing cell, the error output in IPython's colours."""
    marker = {"tags": [runner.PAPERMILL_ERROR_MARKER]}
    failing = nbformat.v4.new_code_cell("startup = run(repeats=0)")
    failing.outputs = [nbformat.v4.new_output(
        "error", ename="ValueError", evalue="repeats=0: need at least one",
        traceback=["\x1b[0;31m----------\x1b[0m", "Cell \x1b[0;32mIn[3], line 1\x1b[0m",
                   "\x1b[0;31mValueError\x1b[0m: repeats=0: need at least one"])]
    cells = [nbformat.v4.new_markdown_cell("An Exception was encountered", metadata=marker),
             nbformat.v4.new_markdown_cell("# 01 · An example\n\n## What you need"),
             nbformat.v4.new_code_cell("lab = open_session()"),
             nbformat.v4.new_markdown_cell("## 2 · Start-up cost"),
             nbformat.v4.new_markdown_cell("Execution using papermill encountered an exception here", metadata=marker),
             failing, nbformat.v4.new_code_cell("startup.plot()")]
    path = folder / f"{STEM}.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata={"papermill": {"duration": 3.0}}), path)
    return path


def _recorded_claims(root: Path) -> None:
    """The ledger recorded for STEM in data/results/ (what a failed run can still name, but not measure): a claim of
    the chapter and a finding of ours."""
    ledger = claims.ClaimLedger(STEM, {
        "a.first": claims.ClaimText(claims.Source.CHAPTER, "What a Container Actually Is", "First", "ms",
                                    "under 100 ms", ("startup",)),
        "b.second": claims.ClaimText(claims.Source.FINDING, "Start-up", "Second", "ms", "under 100 ms", ("startup",))})
    for claim_id in ("a.first", "b.second"):
        ledger.check(claim_id, value=42.0, measured="42 ms", verdict=claims.verdict(True))
    folder = root / "data" / "results" / STEM
    folder.mkdir(parents=True)
    ledger.frame().to_csv(folder / "claims.csv", index=False)


def test_a_failed_chapter_gets_a_page_with_the_cell_the_error_and_the_command_and_its_claims_are_not_measured(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABKIT_ROOT", str(tmp_path))
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    _recorded_claims(tmp_path)
    failure = book.read_failure(_failed(tmp_path))
    assert failure is not None
    # papermill's index: its banner cells are not counted.
    assert (failure.status, failure.cell_index, failure.section) == ("failed", 3, "2 · Start-up cost")

    page = book.failure_page(failure)
    assert page.startswith("# 01 · An example (failed in this run)\n")
    assert "**This chapter failed in this run**, at cell 3 (in “2 · Start-up cost”)" in page
    assert "```text\nstartup = run(repeats=0)\n```" in page
    assert "```text\nValueError: repeats=0: need at least one\n```" in page
    assert "Cell In[3], line 1\nValueError: repeats=0: need at least one" in page and "\x1b" not in page
    assert "```sh\n.venv/bin/labkit run 01\n.venv/bin/labkit book\n```" in page

    ledger = book.not_measured([failure])
    assert ledger[["id", "verdict"]].values.tolist() == [["a.first", book.NOT_MEASURED],
                                                         ["b.second", book.NOT_MEASURED]]
    assert ledger["value"].isna().all() and (ledger[["unit", "measured", "caveat"]] == "").all().all()
    ledger_page = book.claims_page(ledger, [], [failure])
    chapter_table, found_table = ledger_page.split("## What we found beyond the chapter")
    assert "## The chapter's claims" in chapter_table and "| id | chapter section |" in chapter_table
    assert (f"| `a.first` | What a Container Actually Is | [01]({STEM}.md) | First | — |  | under 100 ms | "
            "**not measured in this run** |") in chapter_table
    assert "| id | notebook section |" in found_table and "b.second" not in chapter_table
    assert f"| `b.second` | Start-up | [01]({STEM}.md) | Second | — |" in found_table
    landing = book.landing_page([], ledger, {}, [failure])
    assert (f"| [01 · An example]({STEM}.md) | failed in this run at cell 3 (in “2 · Start-up cost”): "
            "`ValueError: repeats=0: need at least one` | **failed in this run** | 2 not measured in this run |") \
        in landing
    environment = book.environment_page([], "", [failure])
    assert f"| [01 · An example]({STEM}.md) | 3.0 | none: **failed in this run** at cell 3" in environment


def test_a_chapter_the_runner_never_finished_failed_in_the_last_cell_it_started(tmp_path: Path) -> None:
    path = _executed(tmp_path, "**Live run** `r1` — every number below is measured now")
    assert book.read_failure(path) is None  # it ran to its end: a chapter like any other
    notebook = nbformat.read(path, as_version=4)
    notebook.metadata["papermill"]["duration"] = None  # papermill records the duration only at the end
    notebook.cells[-1].metadata["papermill"] = {"start_time": None}  # the last section never started
    nbformat.write(notebook, path)
    failure = book.read_failure(path)
    assert failure is not None and (failure.cell_index, failure.section) == (3, "1 · Namespaces, read from /proc")
    assert failure.error == "the execution stopped in this cell and never finished" and failure.wall_s is None
    # The run report knows more (the runner saw the kernel die): its words and wall time win.
    reported = runner.NotebookRun(STEM, "failed", 12.5, str(path), 3, "DeadKernelError: Kernel died")
    failure = book.read_failure(path, reported)
    assert failure is not None and (failure.error, failure.wall_s) == ("DeadKernelError: Kernel died", 12.5)


def _text(page: Path) -> str:
    """A built page's text, without its tags (a highlighted command is split into spans)."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def test_the_book_publishes_the_chapter_that_ran_and_a_failure_page_for_the_one_that_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # No engine answers (02 fails live at its first engine call) and none is asked: the sweep is left out.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    monkeypatch.setattr(runner, "sweep_run", lambda run_id: None)
    monkeypatch.setattr(paths, "build_dir", lambda: tmp_path / "build")  # the book goes there, not to the checkout
    executed, results = tmp_path / "build" / "notebooks", tmp_path / "build" / "results"
    replayed, failing = runner.discover(["01", "02"])
    runner.execute([replayed], quick=True, mode="replay", output_dir=executed, results_dir=results)
    runner.execute([failing], quick=True, mode="live", output_dir=executed, results_dir=results)

    status = cli.cmd_book(argparse.Namespace(executed=str(executed), results=str(results)))
    out, err = capsys.readouterr()
    assert status == 1
    index = Path(out.strip().splitlines()[-1])
    assert index == tmp_path / "build" / "book" / "_build" / "html" / "index.html" and index.exists()
    assert f"FAILED: {failing.stem} failed in this run at cell" in err and ".venv/bin/labkit run 02" in err

    pages = index.parent
    assert "REPLAYED RESULTS" in _text(pages / f"{replayed.stem}.html")
    failure = _text(pages / f"{failing.stem}.html")
    assert "This chapter failed in this run" in failure and "open_session(" in failure
    assert "EngineUnavailable: No Docker Engine answers" in failure and ".venv/bin/labkit run 02" in failure
    recorded = pd.read_csv(ROOT / "data" / "results" / failing.stem / "claims.csv", keep_default_na=False)
    ledger = pd.read_csv(results / "claims.csv", keep_default_na=False)
    assert set(ledger.loc[ledger["notebook"] == failing.stem, "verdict"]) == {book.NOT_MEASURED}
    assert list(ledger.loc[ledger["notebook"] == failing.stem, "id"]) == list(recorded["id"])
    ledger_page = _text(pages / "claims.html")
    assert all(claim in ledger_page for claim in recorded["id"]) and book.NOT_MEASURED in ledger_page
    assert "failed in this run" in _text(pages / "intro.html") and "failed in this run" in _text(
        pages / "environment.html")


def test_the_lab_machines_recorded_claims_stand_beside_this_runs_with_the_differences_first(tmp_path: Path) -> None:
    stem = "07-cgroups-and-limits"
    ours = claims.read(paths.recorded_results_dir() / stem / "claims.csv")
    theirs = ours.copy()
    flipped = str(theirs["id"].iloc[-1])
    theirs.loc[theirs.index[-1], "verdict"] = "does not hold" if ours["verdict"].iloc[-1] != "does not hold" \
        else "holds"
    (tmp_path / stem).mkdir()
    theirs.to_csv(tmp_path / stem / "claims.csv", index=False)
    (tmp_path / stem / "provenance.json").write_text(json.dumps({
        "ended_utc": "2026-12-05T21:30:00+00:00", "git_commit": "0123456789abcdef", "quick": False,
        "fingerprint": {"kernel": "6.1.0-57-amd64", "cgroup_version": "v2", "engine_cgroup_driver": "systemd"}}))
    (tmp_path / stem / "guest-run.json").write_text(json.dumps({"accelerator": "tcg"}))
    page = book.claims_page(ours, [], guest_results=tmp_path)
    section = page.split("## On the lab machine")[1]
    assert "recorded, not measured in this run" in section
    assert "Recorded in the lab machine 2026-12-05T21:30:00+00:00 from commit `0123456789ab`: kernel 6.1.0-57-amd64" \
        in section and "the systemd driver" in section and "software emulation (TCG)" in section
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert len(rows) == len(ours) and rows[0].startswith(f"| `{flipped}`") and rows[0].endswith("| yes |")
    assert all(row.endswith("| no |") for row in rows[1:])
    assert "## On the lab machine" not in book.claims_page(ours, [], guest_results=tmp_path / "none")


def test_links_between_notebooks_point_at_the_page_each_has_in_this_book() -> None:
    said = ("Next: **[08 · Networking](08-networking.ipynb)**; back to [01 · What a container is]"
            "(01-what-a-container-is.ipynb); see [the ledger](claims.md).")
    assert book.relink(said, {"08-networking": "08-networking.ipynb", "01-what-a-container-is":
                              "01-what-a-container-is.md"}) == (
        "Next: **[08 · Networking](08-networking.ipynb)**; back to [01 · What a container is]"
        "(01-what-a-container-is.md); see [the ledger](claims.md).")  # 01 failed: its failure page
    assert book.relink(said, {}) == ("Next: **08 · Networking**; back to 01 · What a container is; "
                                     "see [the ledger](claims.md).")  # a book without them: the text, unlinked

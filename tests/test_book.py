"""The book's pages from executed notebooks and results, without building it: live or replayed, section links,
the landing page's headlines. (The built book is opened in Chromium by tests/test_notebooks.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from labkit.app import book, protocol
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


def test_the_landing_page_quotes_the_declared_headline_else_the_first_claim(tmp_path: Path) -> None:
    path = _executed(tmp_path, "**Live run** `r1` — every number below is measured now")
    chapter = book.read_chapter(path, _results(tmp_path / "results", "r1"))
    ledger = pd.DataFrame([{"notebook": STEM, "id": "a.first", "claim": "First", "measured": "1 s", "verdict": "holds"},
                           {"notebook": STEM, "id": "b.second", "claim": "Second", "measured": "2 ms",
                            "verdict": "does not hold"}])
    assert "| First: 1 s | **holds** |" in book.landing_page([chapter], ledger, {})
    assert "| Second: 2 ms | **does not hold** |" in book.landing_page([chapter], ledger, {STEM: "b.second"})


def test_every_declared_headline_names_a_recorded_claim() -> None:
    declared = {lab.stem: lab.headline for lab in protocol.all_labs() if lab.headline}
    recorded = {stem: set(pd.read_csv(ROOT / "data" / "results" / stem / "claims.csv", keep_default_na=False)["id"])
                for stem in declared}
    assert {stem: claim for stem, claim in declared.items() if claim not in recorded[stem]} == {}

"""The static book: Jupyter Book 1 over the executed notebooks, offline, nothing loaded from a CDN.

Its pages: a landing page (what the series is, how to run it, each notebook's headline measurement); one page
per executed notebook, ending with the tables behind it as CSV downloads; the claims ledger, each claim linked
to the notebook section that measured it; the environment (the machine's fingerprint, each notebook's wall
time, live or replayed, the newest `make bench`). Everything on them comes from the notebooks and their results.

A chapter that failed in this run costs only itself: it gets a failure page (where it stopped, the error, the
command to run it again), its claims are "not measured in this run", and the chapters that ran are published.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
from myst_parser.mdit_to_docutils.base import default_slugify

from labkit import paths
from labkit.app import catalog, guest_run, runner
from labkit.core import claims
from labkit.core.results import PROVENANCE, ResultStore
from labkit.errors import LabkitError, NotPrepared
from labkit.instruments.shell import run
from labkit.paths import atomic_write

BOOK_CONFIG = """\
title: Container Labs
author: Container Labs
only_build_toc_files: true
execute:
  execute_notebooks: "off"
html:
  use_repository_button: false
  use_issues_button: false
  use_edit_page_button: false
sphinx:
  config:
    html_show_sourcelink: false
    myst_heading_anchors: 3
"""

# A script or stylesheet fetched from another host would make the book depend on the network.
EXTERNAL_ASSET = re.compile(r"""<(?:script|link)[^>]+(?:src|href)=["'](?:https?:)?//""", re.IGNORECASE)
# Terminal colour codes (CSI sequences) in IPython's tracebacks.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
NOT_MEASURED = "not measured in this run"  # the ledger's verdict for the claims of a failed chapter


def _toc(chapters: list[str]) -> str:
    lines = ["format: jb-book", "root: intro", "chapters:"]
    lines += [f"- file: {stem}" for stem in chapters]
    lines += ["- file: claims", "- file: environment"]
    return "\n".join(lines) + "\n"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# The banner a live session shows first (labkit.core.session.LabSession.banner), with its run id.
LIVE_BANNER = re.compile(r"\*\*Live run\*\* `([^`]+)`")
# A Markdown link from one notebook to another ("[08 · Networking](08-networking.ipynb)").
NOTEBOOK_LINK = re.compile(r"\[([^\]]+)\]\(([0-9][0-9]-[a-z0-9-]+)\.ipynb\)")


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class Chapter:
    """One executed notebook in the book: its title, papermill's record of the execution, and the results its
    numbers came from (`live`: measured during that execution; otherwise replayed from data/results/). `reused`:
    this run did not execute it, its inputs being unchanged since that execution (labkit.app.execution_cache)."""

    path: Path
    title: str
    execution: dict[str, Any]
    live: bool
    results: Path
    provenance: dict[str, Any]
    reused: bool = False

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def wall_s(self) -> float | None:
        duration = self.execution.get("duration")
        return float(duration) if duration is not None else None

    @property
    def label(self) -> str:
        return f"{self.stem[:2]} · {self.title}"

    @property
    def page(self) -> str:
        return self.path.name

    @property
    def numbers(self) -> str:
        """Where its numbers come from, in a few words."""
        if not self.live:
            return "replayed from data/results/"
        return "live in an earlier run, reused" if self.reused else "live"

    def provenance_text(self) -> str:
        how = ("measured live in an earlier run, reused by this one" if self.reused else
               "measured live in this run" if self.live else "replayed from data/results/")
        return (f"{how}: {self.provenance.get('started_utc')} → {self.provenance.get('ended_utc')}, "
                f"quick={self.provenance.get('quick')}, run `{self.provenance.get('run_id')}`")


def read_chapter(path: Path, results_dir: Path, reused: bool = False) -> Chapter:
    """`path` (an executed notebook) with the results behind it: those of its live run in `results_dir/<stem>`,
    or the recorded ones it replayed (what its banner says); `reused` when this run reused that execution."""
    notebook = nbformat.read(path, as_version=4)
    title = _title(notebook, path.stem)
    execution = dict(notebook.metadata.get("papermill", {}))
    run_id = live_run_id(notebook)
    folder = results_dir / path.stem if run_id else paths.recorded_results_dir() / path.stem
    provenance = ResultStore(folder).read_provenance()
    if run_id and provenance.get("run_id") != run_id:
        raise NotPrepared(f"{path.name} ran live as run {run_id}, but {folder} holds run {provenance.get('run_id')}.",
                          "Pass the results of that run (`labkit book --results DIR`), or run the notebooks "
                          "again (`labkit run`).")
    return Chapter(path, title, execution, run_id is not None, folder, provenance, reused)


def reused_note(chapter: Chapter) -> str:
    """Markdown for the top of a reused chapter's page: that this run did not execute it, why, and when and where
    its numbers were measured."""
    p = chapter.provenance
    fp = p.get("fingerprint", {})
    record = p.get("execution", {})
    machine = (f"{fp.get('os', '?')}, kernel {fp.get('kernel', '?')}, {fp.get('arch', '?')}, {fp.get('cores', '?')} "
               f"cores, Docker Engine {fp.get('engine_version', '?')}")
    return (f"> ♻️ **Reused from an earlier execution.** This run did not execute the notebook again: none of its "
            f"inputs (the notebook, its lab, the labkit modules they import, labkit's version, its bases' recipes, "
            f"the host's fingerprint, the mode) changed since run `{p.get('run_id')}` (execution key "
            f"`{record.get('key', '?')}`). Every number below was measured in that run, from {p.get('started_utc')} "
            f"to {p.get('ended_utc')} UTC, on {machine}; \"now\" in its banner means then. `make lab FRESH=1` "
            "measures it again.")


def _title(notebook: nbformat.NotebookNode, stem: str) -> str:
    """The notebook's title: its first level-1 heading without the number (`# 01 · What …` → `What …`)."""
    heading = next((line for cell in notebook.cells if cell.cell_type == "markdown"
                    for line in cell.source.splitlines() if line.startswith("# ")), f"# {stem}")
    return heading.lstrip("# ").split("·", 1)[-1].strip()


def live_run_id(notebook: nbformat.NotebookNode) -> str | None:
    """The run id in the notebook's live banner (LabSession.banner), or None when it replayed recorded results."""
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            match = LIVE_BANNER.search(str(output.get("data", {}).get("text/markdown", "")))
            if match:
                return match.group(1)
    return None


def _section_heading(cell: nbformat.NotebookNode) -> str | None:
    """The last section heading (``##`` or ``###``) in a markdown cell, without its hashes; None when it has none."""
    if cell.cell_type != "markdown":
        return None
    headings = [line.lstrip("#").strip() for line in cell.source.splitlines() if re.match(r"^#{2,3} ", line)]
    return headings[-1] if headings else None


def section_anchors(chapter: Chapter) -> dict[str, tuple[str, str]]:
    """Recorded table → (heading, anchor) of the notebook section whose cell measured it.

    Found by time: the cell whose execution (papermill) overlaps most with the experiment's (provenance, whole
    seconds); the section is the last heading above that cell. Replayed chapters were measured elsewhere: none.
    """
    if not chapter.live:
        return {}
    cells: list[tuple[str, datetime, datetime]] = []
    heading = ""
    for cell in nbformat.read(chapter.path, as_version=4).cells:
        if cell.cell_type == "markdown":
            heading = _section_heading(cell) or heading
        elif heading and cell.metadata.get("papermill", {}).get("start_time"):
            timing = cell.metadata["papermill"]
            cells.append((heading, _instant(timing["start_time"]), _instant(timing["end_time"])))
    anchors = {}
    for table, experiment in chapter.provenance.get("experiments", {}).items():
        started = _instant(experiment["started_utc"])
        ended = _instant(experiment["ended_utc"]) + timedelta(seconds=1)  # the end of its last whole second
        overlaps = [((min(end, ended) - max(start, started)).total_seconds(), h) for h, start, end in cells]
        seconds, found = max(overlaps, default=(0.0, ""))
        if seconds > 0:
            anchors[table] = (found, default_slugify(found))
    return anchors


@dataclass(frozen=True)
class FailedChapter:
    """An executed notebook that did not run to its end in this run: no results, only where and why it stopped.

    `cell_index` is papermill's (as in the run report and `labkit run`'s output), None when no cell was reached;
    `error` is ``ename: evalue`` (or the run report's words when the cell recorded no error); `traceback` has its
    colour codes stripped; `wall_s` is how long it ran, in seconds, when known.
    """

    path: Path
    title: str
    status: str  # "failed" or "interrupted"
    cell_index: int | None
    cell_source: str
    section: str
    error: str
    traceback: str
    wall_s: float | None

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def label(self) -> str:
        return f"{self.stem[:2]} · {self.title}"

    @property
    def page(self) -> str:
        return f"{self.stem}.md"

    @property
    def rerun(self) -> str:
        return runner.rerun_command(self.stem)

    def where(self) -> str:
        """Where it stopped, in words: ``cell 7 (in “2 · Start-up cost”)``."""
        if self.cell_index is None:
            return "before its first cell"
        return f"cell {self.cell_index}" + (f" (in “{self.section}”)" if self.section else "")


def read_failure(path: Path, reported: runner.NotebookRun | None = None) -> FailedChapter | None:
    """`path` (an executed notebook) as a failed chapter, or None when it ran to its end.

    Failed: the run report (`reported`) says failed or interrupted, a cell holds an error, or papermill never
    recorded the end of the execution (a timeout, a dead kernel, a killed run).
    """
    notebook = nbformat.read(path, as_version=4)
    cells = runner.executed_cells(notebook)
    errors = [(index, output) for index, cell in enumerate(cells) if cell.cell_type == "code"
              for output in cell.get("outputs", []) if output.output_type == "error"]
    duration = notebook.metadata.get("papermill", {}).get("duration")
    failure = reported if reported is not None and reported.status in ("failed", "interrupted") else None
    if failure is None and not errors and duration is not None:
        return None
    if failure is not None and failure.failed_cell is not None:
        index: int | None = failure.failed_cell
    else:
        index = errors[0][0] if errors else runner.last_started_cell(path)
    output = next((output for i, output in errors if i == index), None)
    traceback = "\n".join(output.traceback) if output is not None else ""
    # The runner's words first: after a timeout the cell shows only the KeyboardInterrupt that stopped it.
    if failure is not None and failure.error:
        error = failure.error
    else:
        error = (f"{output.ename}: {output.evalue}" if output is not None
                 else "the execution stopped in this cell and never finished")
    section = ""
    for cell in cells[:index] if index is not None else []:
        section = _section_heading(cell) or section
    return FailedChapter(path, _title(notebook, path.stem), failure.status if failure else "failed", index,
                         cells[index].source if index is not None else "", section, ANSI_ESCAPE.sub("", error),
                         ANSI_ESCAPE.sub("", traceback), failure.wall_s if failure else duration)


def _code_block(text: str, language: str = "text") -> str:
    """`text` as a fenced block whose fence no run of backticks inside it can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text}\n{fence}"


def _code(text: str) -> str:
    """`text` as inline code (literal: no role, math or substitution is read in it), whatever backticks it holds."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * (longest + 1)
    return f"{ticks} {text} {ticks}" if longest else f"{ticks}{text}{ticks}"


def failure_page(chapter: FailedChapter) -> str:
    """The page that stands in for a failed chapter: that it failed in this run, the cell it stopped in (index and
    source), the error with its traceback, and the commands that run it again and rebuild the book.

    A markdown page written here, not the executed notebook: the book is built with warnings as errors, and what a
    failed execution holds (papermill's HTML banner, half-made outputs, a cell that is not even valid Python) is
    not ours to vouch for. Code and errors go in plain-text blocks, which Sphinx never tries to highlight.
    """
    shown = (chapter.path.relative_to(paths.project_root()) if chapter.path.is_relative_to(paths.project_root())
             else chapter.path)
    lines = [f"# {chapter.label} ({chapter.status} in this run)", "",
             f"**This chapter {chapter.status} in this run**, at {chapter.where()}: nothing on this page was "
             f"measured, and its claims are marked *{NOT_MEASURED}* in {{doc}}`the claims ledger <claims>`. The "
             f"chapters that ran are published as usual.", "",
             "## Where it stopped", ""]
    if chapter.cell_index is not None:
        lines += [f"Cell {chapter.cell_index} (papermill's index, from 0) of the executed copy "
                  f"{_code(str(shown))}:", "", _code_block(chapter.cell_source), ""]
    else:
        lines += [f"No cell ran; the executed copy is {_code(str(shown))}.", ""]
    lines += ["## The error", "", _code_block(chapter.error), ""]
    if chapter.traceback:
        lines += ["The traceback:", "", _code_block(chapter.traceback), ""]
    lines += ["## Run it again", "",
              f"Once the cause is fixed ({_code(f'.venv/bin/labkit doctor {chapter.stem[:2]}')} says what this "
              "host lacks), run the chapter again and rebuild the book:", "",
              _code_block(f"{chapter.rerun}\n.venv/bin/labkit book", "sh")]
    return "\n".join(lines) + "\n"


def not_measured(failed: list[FailedChapter]) -> pd.DataFrame:
    """The claims of each failed chapter as recorded in data/results/<stem>/claims.csv, each with the verdict
    "not measured in this run" and no value, unit, measurement or caveat (none for a chapter never recorded)."""
    recorded = [paths.recorded_results_dir() / chapter.stem / "claims.csv" for chapter in failed]
    frames = [claims.read(path) for path in recorded if path.exists()]
    if not frames:
        return pd.DataFrame(columns=claims.COLUMNS)
    return pd.concat(frames, ignore_index=True).assign(value=float("nan"), unit="", measured="",
                                                        verdict=NOT_MEASURED, caveat="")


# The ledger page's section column: the chapter's heading for its claims, the notebook's section for our findings.
SECTION_HEADERS = {claims.Source.CHAPTER: "chapter section", claims.Source.FINDING: "notebook section"}


def claims_page(ledger: pd.DataFrame, chapters: list[Chapter], failed: list[FailedChapter] | None = None,
                guest_results: Path | None = None) -> str:
    """The book's ledger in two tables, the chapter's claims and what we found beyond the chapter: every claim
    with its id, section, notebook, value, criterion and verdict, and a link to the notebook section that measured
    it (to the failure page of a chapter that `failed`); then the lab machine's recorded claims beside them
    (:func:`lab_machine_section`; `guest_results` defaults to data/results/guest)."""
    failed = failed or []
    counts = ledger.groupby("verdict").size()
    anchors = {chapter.stem: section_anchors(chapter) for chapter in chapters}
    pages = {chapter.stem: chapter.page for chapter in chapters} | {chapter.stem: chapter.page for chapter in failed}
    lines = ["# The claims ledger", "",
             "What the notebooks check: the chapter's own claims, each put in our words under the chapter's section "
             "it comes from, and what we found beyond the chapter. Each with the value measured in the run this "
             "book was built from, the criterion its verdict follows from, and the verdict. "
             + ", ".join(f"{n} {verdict}" for verdict, n in counts.items()) + ". "
             + (f"The claims of a chapter that failed in this run ({', '.join(c.stem[:2] for c in failed)}) are "
                f"*{NOT_MEASURED}*, as recorded with no value. " if failed else "")
             + "The ledger as CSV: {download}`claims.csv <data/claims.csv>`."]
    for source, title in claims.SOURCE_TITLES.items():
        rows = ledger[ledger["source"] == source.value]
        lines += ["", f"## {title}", "",
                  f"| id | {SECTION_HEADERS[source]} | measured in | claim | value | measured | criterion | verdict "
                  "| caveat |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for row in rows.itertuples():
            tables = [t for t in str(row.tables).split(";") if t]
            found = anchors.get(row.notebook, {})
            where = next((found[t] for t in tables if t in found), None)
            page = pages.get(row.notebook, f"{row.notebook}.ipynb")
            link = (f"[{row.notebook[:2]} § {_cell(where[0])}]({page}#{where[1]})" if where
                    else f"[{row.notebook[:2]}]({page})")
            value = "—" if pd.isna(row.value) else f"{row.value:g} {_cell(row.unit)}"
            lines.append(f"| `{row.id}` | {_cell(row.section)} | {link} | {_cell(row.claim)} | {value} | "
                         f"{_cell(row.measured)} | {_cell(row.criterion)} | **{row.verdict}** | "
                         f"{_cell(row.caveat)} |")
    lines += lab_machine_section(ledger, guest_results or paths.recorded_results_dir() / "guest")
    return "\n".join(lines) + "\n"


def _two_commands() -> str:
    """The README's code block under "The two commands"."""
    readme = (paths.project_root() / "README.md").read_text()
    section = readme.split("\n## The two commands", 1)[-1]
    match = re.search(r"```sh\n.*?```", section, re.DOTALL)
    return match.group(0) if match else ""


def landing_page(chapters: list[Chapter], ledger: pd.DataFrame, headlines: dict[str, str],
                 failed: list[FailedChapter] | None = None) -> str:
    """What the series is (the README's opening), how to run it, and each notebook's headline measurement; a
    chapter that `failed` in this run says so in its row instead.

    `headlines` maps a notebook stem to the claim id its landing row quotes (default: its first claim of the
    chapter, else its first claim).
    """
    readme = (paths.project_root() / "README.md").read_text()
    opening = readme.split("\n## ", 1)[0].split("\n|", 1)[0].rstrip()
    lines = [opening, "", "## How to run it", "",
             "On Debian 12 as root (it installs what is missing) or where Docker already runs:", "",
             _two_commands(), "",
             "`make ui` then opens the notebooks in JupyterLab. Without an engine the notebooks replay the "
             "recorded results under a banner that says where and when they were measured.", "",
             "## The notebooks", "",
             "Each notebook's headline: a claim of the chapter, what the run this book was built from measured of "
             "it, and its verdict. "
             "All claims are in {doc}`the claims ledger <claims>`; the machine and the wall times in "
             "{doc}`the environment <environment>`.", "",
             "| notebook | headline | verdict | claims checked | numbers |",
             "| --- | --- | --- | --- | --- |"]
    rows = {}
    for chapter in chapters:
        own = ledger[ledger["notebook"] == chapter.stem]
        chosen = own[own["id"] == headlines.get(chapter.stem, "")]
        of_chapter = own[own["source"] == claims.Source.CHAPTER.value]
        headline = chosen if len(chosen) else of_chapter.head(1) if len(of_chapter) else own.head(1)
        quote = (f"{_cell(headline['claim'].iloc[0])}: {_cell(headline['measured'].iloc[0])}" if len(headline)
                 else "(no claims)")
        verdict = f"**{headline['verdict'].iloc[0]}**" if len(headline) else ""
        counts = ", ".join(f"{n} {v}" for v, n in own.groupby("verdict").size().items())
        numbers = ("live" if chapter.live else "replayed") + (
            f", reused (measured {chapter.provenance.get('started_utc')})" if chapter.reused else "")
        if chapter.provenance.get("quick"):
            numbers += ", quick"
        rows[chapter.stem] = (f"| [{_cell(chapter.label)}]({chapter.page}) | {quote} | {verdict} | {counts} | "
                              f"{numbers} |")
    for failure in failed or []:
        unmeasured = len(ledger[ledger["notebook"] == failure.stem])
        rows[failure.stem] = (f"| [{_cell(failure.label)}]({failure.page}) | {failure.status} in this run at "
                              f"{_cell(failure.where())}: {_cell(_code(failure.error.splitlines()[0]))} | "
                              f"**{failure.status} in this run** | {unmeasured} {NOT_MEASURED} | none |")
    lines += [rows[stem] for stem in sorted(rows)]
    return "\n".join(lines) + "\n"


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _seconds(wall_s: float | None) -> str:
    return f"{wall_s:.1f}" if wall_s is not None else "—"


def environment_page(chapters: list[Chapter], bench: str, failed: list[FailedChapter] | None = None) -> str:
    """The machines the numbers come from (their fingerprints), each notebook's wall time and whether it ran live
    or replayed (or `failed` in this run, with no numbers), and `bench` (markdown for the newest `make bench`, or
    "")."""
    lines = ["# The environment", "",
             "Where and how the numbers in this book were measured.", "", "## Each notebook", "",
             "| notebook | wall time (s) | numbers | quick | measured (UTC) | run |",
             "| --- | --- | --- | --- | --- | --- |"]
    rows = {}
    for chapter in chapters:
        p = chapter.provenance
        rows[chapter.stem] = (f"| [{_cell(chapter.label)}]({chapter.page}) | {_seconds(chapter.wall_s)} | "
                              f"{chapter.numbers} | {p.get('quick')} | "
                              f"{p.get('started_utc')} → {p.get('ended_utc')} | `{p.get('run_id')}` |")
    for failure in failed or []:
        rows[failure.stem] = (f"| [{_cell(failure.label)}]({failure.page}) | {_seconds(failure.wall_s)} | "
                              f"none: **{failure.status} in this run** at {_cell(failure.where())} | — | — | — |")
    lines += [rows[stem] for stem in sorted(rows)]
    by_machine: dict[str, list[Chapter]] = {}
    for chapter in chapters:
        fingerprint = chapter.provenance.get("fingerprint", {})
        by_machine.setdefault(json.dumps(fingerprint, sort_keys=True, default=str), []).append(chapter)
    for index, (fingerprint, members) in enumerate(by_machine.items(), 1):
        title = "The machine" if len(by_machine) == 1 else f"Machine {index}"
        lines += ["", f"## {title}", "",
                  "Fingerprint of " + ", ".join(c.stem[:2] for c in members) + "'s run"
                  + ("s" if len(members) > 1 else "") + ":", "", "| | |", "| --- | --- |"]
        lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in _flatten(json.loads(fingerprint)).items()]
    if bench:
        lines += ["", bench]
    return "\n".join(lines) + "\n"


def bench_section(source: Path) -> str:
    """Markdown for the book's environment page: the newest bench as a figure, a table and a CSV download (files
    written into the book's `source`); "" when no bench was recorded."""
    table = paths.bench_dir() / "bench.csv"
    if not table.exists():
        return ""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from labkit.instruments import plots

    frame = pd.read_csv(table, keep_default_na=False, na_values=[""])
    provenance = json.loads((paths.bench_dir() / "provenance.json").read_text())
    (source / "data" / "bench").mkdir(parents=True, exist_ok=True)
    for name in ("bench.csv", "provenance.json"):
        (source / "data" / "bench" / name).write_bytes((paths.bench_dir() / name).read_bytes())
    seconds = frame[(frame["unit"] == "s") & frame["value"].notna()]
    plots.use_style()
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(seconds) + 1))
    labels = [f"{r.group} · {r.item} ({r.condition})" for r in seconds.itertuples()]
    ax.barh(labels, seconds["value"])
    ax.invert_yaxis()
    ax.set_xlabel("wall time (s)")
    ax.set_title(f"make bench, {provenance['started_utc']}")
    fig.savefig(source / "bench.png", bbox_inches="tight")
    plt.close(fig)
    rows = ["| group | item | condition | value | unit | note |", "| --- | --- | --- | --- | --- | --- |"]
    rows += [f"| {r.group} | {r.item} | {r.condition} | {'—' if pd.isna(r.value) else f'{r.value:.3g}'} | "
             f"{r.unit} | {r.note if isinstance(r.note, str) else ''} |" for r in frame.itertuples()]
    return "\n".join([
        "## The newest bench", "",
        f"`make bench` from {provenance['started_utc']} to {provenance['ended_utc']} (commit "
        f"`{str(provenance.get('git_commit'))[:12]}`): the README's commands by phase, each notebook's wall time, "
        "and container start-up three ways. As CSV: {download}`bench.csv <data/bench/bench.csv>`, with "
        "{download}`provenance.json <data/bench/provenance.json>`.", "",
        "![Wall time of each measured phase and notebook](bench.png)", "", *rows])


def _downloads(chapter: Chapter, data_dir: Path) -> str:
    """Markdown for the end of a chapter's page: every table behind it as a CSV download, with its provenance."""
    target = data_dir / chapter.stem
    shutil.copytree(chapter.results, target)
    lines = ["## The data behind this page", "",
             f"Every table this page's numbers come from ({chapter.provenance_text()}), as CSV:", ""]
    for table in sorted(target.glob("*.csv")):
        rows = sum(1 for _ in table.open()) - 1
        lines.append(f"- {{download}}`{table.name} <data/{chapter.stem}/{table.name}>` ({rows} rows)")
    lines.append(f"- {{download}}`{PROVENANCE} <data/{chapter.stem}/{PROVENANCE}>` (where, when, with what)")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Book:
    """A built book: the path of its index.html, and the chapters that failed in this run (a page each in it)."""

    index: Path
    failed: tuple[FailedChapter, ...]


def lab_machine_section(ledger: pd.DataFrame, guest_results: Path) -> list[str]:
    """The claims of the notebooks recorded in the lab machine (`labkit guest run --record`: cgroup v2, Docker's
    systemd driver; `guest_results`, one folder per notebook) beside this book's own, claim by claim, the ones
    whose verdict differs first; labelled with where and when the guest's were recorded. Empty without any."""
    folders = sorted(p.parent for p in guest_results.glob("*/claims.csv"))
    if not folders:
        return []
    lines = ["", "## On the lab machine: cgroup v2 and Docker's systemd driver", "",
             "Notebook 15's guest ran these notebooks too (`labkit guest run --record`). Its values are **recorded, "
             "not measured in this run**: each table says where and when. Claims whose verdict differs come first."]
    for folder in folders:
        provenance = json.loads((folder / "provenance.json").read_text())
        fingerprint = provenance.get("fingerprint", {})
        boot = json.loads((folder / guest_run.REPORT).read_text()) if (folder / guest_run.REPORT).exists() else {}
        emulated = (" It booted under software emulation (TCG): every instruction is translated, so a timing is "
                    "several times the host's and a timing claim can differ for that reason alone."
                    if boot.get("accelerator") == "tcg" else "")
        theirs = claims.read(folder / "claims.csv").set_index("id")
        ours = ledger[ledger["notebook"] == folder.name].set_index("id")
        rows = []
        for claim_id, guest_row in theirs.iterrows():
            host_row = ours.loc[claim_id] if claim_id in ours.index else None
            host = "—" if host_row is None else f"{_value(host_row)}, **{host_row['verdict']}**"
            differs = host_row is None or host_row["verdict"] != guest_row["verdict"]
            rows.append((not differs, f"| `{claim_id}` | {_cell(guest_row['claim'])} | {host} | "
                                      f"{_value(guest_row)}, **{guest_row['verdict']}** | "
                                      f"{'yes' if differs else 'no'} |"))
        lines += ["", f"### {folder.name}", "",
                  f"Recorded in the lab machine {provenance.get('ended_utc', '?')} from commit "
                  f"`{str(provenance.get('git_commit', '?'))[:12]}`: kernel {fingerprint.get('kernel', '?')}, cgroup "
                  f"{fingerprint.get('cgroup_version', '?')}, the {fingerprint.get('engine_cgroup_driver', '?')} "
                  f"driver, quick={provenance.get('quick')}.{emulated}", "",
                  "| id | claim | this book's run | the lab machine | verdict differs |",
                  "| --- | --- | --- | --- | --- |", *[row for _, row in sorted(rows, key=lambda r: r[0])]]
    return lines


def _value(row: pd.Series) -> str:
    return "—" if pd.isna(row["value"]) else f"{row['value']:g} {_cell(row['unit'])}".strip()


def relink(markdown: str, pages: dict[str, str]) -> str:
    """`markdown` with each link to another notebook pointed at the page `pages` gives that notebook's stem in this
    book (its notebook, or its failure page); a notebook the book does not hold keeps the link's text, unlinked, so
    that a book of some notebooks, or one with a failed chapter, still builds with warnings as errors."""
    def pointed(link: re.Match[str]) -> str:
        page = pages.get(link.group(2))
        return f"[{link.group(1)}]({page})" if page else link.group(1)
    return NOTEBOOK_LINK.sub(pointed, markdown)


def build(executed_dir: Path | None = None, out_dir: Path | None = None, results_dir: Path | None = None) -> Book:
    """Build the book from executed notebooks and the results behind them (`results_dir`, default
    build/results, where the ledger is also merged into claims.csv).

    A chapter that failed in this run (see :func:`read_failure`; the run report is read from `executed_dir`) gets
    a failure page instead of its notebook, and its recorded claims are "not measured in this run".
    """
    executed_dir = executed_dir or paths.build_dir() / "notebooks"
    out_dir = out_dir or paths.build_dir() / "book"
    results_dir = results_dir or paths.build_dir() / "results"
    notebooks = sorted(executed_dir.glob("[0-9][0-9]-*.ipynb"))
    if not notebooks:
        raise NotPrepared(f"no executed notebooks in {executed_dir}.", "Run `labkit run` first.")
    reported = runner.read_report(executed_dir)
    chapters: list[Chapter] = []
    failed: list[FailedChapter] = []
    for path in notebooks:
        failure = read_failure(path, reported.get(path.stem))
        if failure is None:
            reused = reported.get(path.stem)
            chapters.append(read_chapter(path, results_dir, reused is not None and reused.status == "reused"))
        else:
            failed.append(failure)
    measured = [claims.read(c.results / "claims.csv") for c in chapters]
    ledger = claims.validate(pd.concat(measured, ignore_index=True) if measured else
                             pd.DataFrame(columns=claims.COLUMNS), str(results_dir))
    unmeasured = not_measured(failed)
    if len(unmeasured):
        ledger = pd.concat([ledger, unmeasured], ignore_index=True).sort_values("notebook", kind="stable")
    atomic_write(results_dir / "claims.csv", ledger.to_csv(index=False))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    source = out_dir / "source"
    data = source / "data"
    data.mkdir(parents=True)
    pages = {chapter.path.stem: chapter.path.name for chapter in chapters} | {f.stem: f.page for f in failed}
    for chapter in chapters:
        notebook = nbformat.read(chapter.path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "markdown":
                cell.source = relink(cell.source, pages)
        notebook.cells.append(nbformat.v4.new_markdown_cell(_downloads(chapter, data)))
        if chapter.reused:  # below the title, above the banner
            notebook.cells.insert(1, nbformat.v4.new_markdown_cell(reused_note(chapter)))
        nbformat.write(notebook, source / chapter.path.name)
    for failure in failed:
        (source / failure.page).write_text(failure_page(failure))
    shutil.copy2(results_dir / "claims.csv", data / "claims.csv")
    headlines = {lab.stem: lab.headline for lab in catalog.all_labs() if lab.headline}
    (source / "_config.yml").write_text(BOOK_CONFIG)
    (source / "_toc.yml").write_text(_toc([path.stem for path in notebooks]))
    (source / "intro.md").write_text(landing_page(chapters, ledger, headlines, failed))
    (source / "claims.md").write_text(claims_page(ledger, chapters, failed))
    (source / "environment.md").write_text(environment_page(chapters, bench_section(source), failed))
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    run([str(jupyter_book), "build", str(source), "--path-output", str(out_dir), "--builder", "html",
         "-W", "-n", "--keep-going"], 900,
        hint="the book build treats warnings as errors; the output above says which.")
    index = out_dir / "_build" / "html" / "index.html"
    external = external_assets(index.parent)
    if external:
        raise LabkitError("the book would load assets from the network:\n" + "\n".join(external[:10]),
                          "Serve the asset from the book itself (Sphinx's html_static_path).")
    return Book(index, tuple(failed))


def external_assets(html_dir: Path) -> list[str]:
    """`file: tag` for every script or stylesheet the built pages load from another host."""
    found = []
    for page in html_dir.rglob("*.html"):
        found += [f"{page.name}: {m.group(0)}" for m in EXTERNAL_ASSET.finditer(page.read_text(errors="replace"))]
    return found

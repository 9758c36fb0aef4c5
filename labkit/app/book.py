"""The static book: Jupyter Book 1 over the executed notebooks, offline, nothing loaded from a CDN."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import nbformat
import pandas as pd

from labkit import paths
from labkit.app import claims
from labkit.errors import LabkitError, NotPrepared
from labkit.instruments.shell import run

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
"""

# A script or stylesheet fetched from another host would make the book depend on the network.
EXTERNAL_ASSET = re.compile(r"""<(?:script|link)[^>]+(?:src|href)=["'](?:https?:)?//""", re.IGNORECASE)


def _toc(chapters: list[str]) -> str:
    lines = ["format: jb-book", "root: intro", "chapters:"]
    lines += [f"- file: {stem}" for stem in chapters]
    lines.append("- file: claims")
    return "\n".join(lines) + "\n"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def claims_page(ledger: pd.DataFrame) -> str:
    """The book's ledger: every claim with its id, section, notebook (linked), value, criterion and verdict."""
    counts = ledger.groupby("verdict").size()
    lines = ["# The claims ledger", "",
             "Every claim of the chapter that a notebook checks, with the value measured in the run this book "
             "was built from, the criterion its verdict follows from, and the verdict. "
             + ", ".join(f"{n} {verdict}" for verdict, n in counts.items()) + ".", "",
             "| id | section | notebook | claim | measured | criterion | verdict | caveat |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in ledger.itertuples():
        lines.append(f"| `{row.id}` | {_cell(row.section)} | [{row.notebook[:2]}]({row.notebook}.ipynb) | "
                     f"{_cell(row.claim)} | {_cell(row.measured)} | {_cell(row.criterion)} | **{row.verdict}** | "
                     f"{_cell(row.caveat)} |")
    return "\n".join(lines) + "\n"


def _intro(chapters: list[Path]) -> str:
    titles = []
    for chapter in chapters:
        first = nbformat.read(chapter, as_version=4).cells[0].source.splitlines()[0]
        titles.append(f"- [{first.lstrip('# ')}]({chapter.stem}.ipynb)")
    readme = (paths.project_root() / "README.md").read_text()
    overview = readme.split("\n## ", 1)[0]
    return overview + "\n\n## Chapters\n\n" + "\n".join(titles) + "\n"


def build(executed_dir: Path | None = None, out_dir: Path | None = None, results_dir: Path | None = None) -> Path:
    """Build the book from executed notebooks and the claims in `results_dir` (their results; default
    build/results), merged there into claims.csv for the ledger page; return the path of its index.html."""
    executed_dir = executed_dir or paths.build_dir() / "notebooks"
    out_dir = out_dir or paths.build_dir() / "book"
    results_dir = results_dir or paths.build_dir() / "results"
    chapters = sorted(executed_dir.glob("[0-9][0-9]-*.ipynb"))
    if not chapters:
        raise NotPrepared(f"no executed notebooks in {executed_dir}.", "Run `labkit run` first.")
    failed = [f"{chapter.name} (cell {cell})" for chapter in chapters for cell in failed_cells(chapter)]
    if failed:
        raise LabkitError(f"a failed execution is not published: {', '.join(failed)}.",
                          "Fix it and `labkit run` again.")
    _, ledger = claims.write_merged(results_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    source = out_dir / "source"
    source.mkdir(parents=True)
    for chapter in chapters:
        shutil.copy2(chapter, source / chapter.name)
    (source / "_config.yml").write_text(BOOK_CONFIG)
    (source / "_toc.yml").write_text(_toc([c.stem for c in chapters]))
    (source / "intro.md").write_text(_intro(chapters))
    (source / "claims.md").write_text(claims_page(ledger))
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    run([str(jupyter_book), "build", str(source), "--path-output", str(out_dir), "--builder", "html",
         "-W", "-n", "--keep-going"], 900,
        hint="the book build treats warnings as errors; the output above says which.")
    index = out_dir / "_build" / "html" / "index.html"
    external = external_assets(index.parent)
    if external:
        raise LabkitError("the book would load assets from the network:\n" + "\n".join(external[:10]),
                          "Serve the asset from the book itself (Sphinx's html_static_path).")
    return index


def failed_cells(notebook: Path) -> list[int]:
    """Indexes of the cells whose execution raised, in an executed notebook."""
    nb = nbformat.read(notebook, as_version=4)
    return [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            and any(output.output_type == "error" for output in cell.get("outputs", []))]


def external_assets(html_dir: Path) -> list[str]:
    """`file: tag` for every script or stylesheet the built pages load from another host."""
    found = []
    for page in html_dir.rglob("*.html"):
        found += [f"{page.name}: {m.group(0)}" for m in EXTERNAL_ASSET.finditer(page.read_text(errors="replace"))]
    return found

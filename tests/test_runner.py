"""labkit.app.runner on tiny notebooks written into a temp folder (no engine, no lab): a failed notebook costs only
itself, an interrupt stops the run at once, and the report lists every notebook with how it went."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest

from labkit.app import runner

RAISES = 'raise ValueError("broken on purpose")'


def _notebook(folder: Path, name: str, *code: str) -> Path:
    """A notebook like the series' (a title, a `parameters` cell with `quick` and `mode`), then the `code` cells."""
    cells = [nbformat.v4.new_markdown_cell(f"# {name[:2]} · A tiny notebook"),
             nbformat.v4.new_code_cell('quick: bool = False\nmode: str = "auto"', metadata={"tags": ["parameters"]}),
             *(nbformat.v4.new_code_cell(source) for source in code)]
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / name
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": kernelspec}), path)
    return path


@pytest.fixture
def swept(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The run ids the runner swept at its end (recorded instead of asking the engine and the cgroup tree)."""
    calls: list[str] = []
    monkeypatch.setattr(runner, "sweep_run", calls.append)
    return calls


def _report(folder: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((folder / runner.REPORT).read_text())
    return report


def test_a_failed_notebook_costs_only_itself_and_is_reported_with_its_cell(tmp_path: Path, swept: list[str]) -> None:
    failing = _notebook(tmp_path, "01-fails.ipynb", "ready = True", RAISES, "never = True")
    fine = _notebook(tmp_path, "02-fine.ipynb", 'print(f"quick={quick} mode={mode}")')
    out = tmp_path / "executed"
    runs = runner.execute([failing, fine], quick=True, mode="replay", output_dir=out, results_dir=tmp_path / "results")

    assert [(run.notebook, run.status) for run in runs] == [("01-fails", "failed"), ("02-fine", "ok")]
    failed = runs[0]
    assert failed.error == "ValueError: broken on purpose" and failed.failed_cell is not None
    # The index is papermill's: it counts the parameters cell papermill injects, not the error banner it adds.
    cells = runner.executed_cells(nbformat.read(out / "01-fails.ipynb", as_version=4))
    assert cells[failed.failed_cell].source == RAISES
    # The notebook after the failure ran, with the run's parameters.
    shown = nbformat.read(out / "02-fine.ipynb", as_version=4).cells[-1].outputs[0].text
    assert shown.strip() == "quick=True mode=replay"

    report = _report(out)
    assert swept == [report["run_id"]]
    assert [(n["notebook"], n["status"], n["failed_cell"]) for n in report["notebooks"]] == [
        ("01-fails", "failed", failed.failed_cell), ("02-fine", "ok", None)]
    table = runner.format_report(runs)
    assert f"cell {failed.failed_cell}: ValueError: broken on purpose" in table and "02-fine" in table


def test_a_kernel_that_dies_fails_its_notebook_at_the_cell_it_was_in(tmp_path: Path, swept: list[str]) -> None:
    dies = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer ends a kernel"
    runs = runner.execute([_notebook(tmp_path, "01-dies.ipynb", dies), _notebook(tmp_path, "02-fine.ipynb", "1")],
                          quick=True, mode="replay", output_dir=tmp_path / "executed")

    assert [(run.notebook, run.status) for run in runs] == [("01-dies", "failed"), ("02-fine", "ok")]
    assert runs[0].error.startswith("DeadKernelError") and runs[0].failed_cell is not None
    cells = runner.executed_cells(nbformat.read(tmp_path / "executed" / "01-dies.ipynb", as_version=4))
    assert cells[runs[0].failed_cell].source == dies


def test_an_interrupt_stops_the_run_at_once_and_the_rest_is_reported_not_run(tmp_path: Path,
                                                                              swept: list[str]) -> None:
    # The kernel is a child of this process: it sends the Ctrl-C the runner would get from the terminal.
    interrupts = _notebook(tmp_path, "01-interrupts.ipynb",
                           "import os, signal, time\nos.kill(os.getppid(), signal.SIGINT)\ntime.sleep(120)")
    fine = _notebook(tmp_path, "02-fine.ipynb", "1")
    out = tmp_path / "executed"
    with pytest.raises(KeyboardInterrupt):
        runner.execute([interrupts, fine], quick=True, mode="replay", output_dir=out)

    report = _report(out)
    assert [(n["notebook"], n["status"]) for n in report["notebooks"]] == [
        ("01-interrupts", "interrupted"), ("02-fine", "not run")]
    assert not (out / "02-fine.ipynb").exists()
    assert swept == [report["run_id"]]

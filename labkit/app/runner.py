"""Execute notebooks with papermill in this one process, then sweep whatever the run left behind.

Each notebook runs with the run's id in LABKIT_RUN_ID (the kernel inherits it, so every docker object and
cgroup it makes carries that id). Whatever happens — success, a failed cell, Ctrl-C — the run ends by
removing every object and cgroup with that id.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

from labkit import paths
from labkit.app.jupyter import kernel_config
from labkit.app.results import prune_partials
from labkit.errors import BadParameter
from labkit.instruments import engine, procfs

log = logging.getLogger("labkit.runner")

DEFAULT_TIMEOUT_S = 1800.0  # per notebook; papermill would otherwise wait forever on a hung cell
KEEP_PARTIAL_RUNS = 3  # unfinished runs' result folders kept per notebook, newest first, for a look after a failure


@dataclass(frozen=True)
class NotebookRun:
    """How one notebook's execution went; `failed_cell` is papermill's cell index (0-based) or None."""

    notebook: str
    status: str  # "ok", "failed" or "interrupted"
    wall_s: float
    output: str
    failed_cell: int | None = None
    error: str = ""


def notebooks_dir() -> Path:
    return paths.project_root() / "notebooks"


def discover(selection: list[str] | None = None) -> list[Path]:
    """Notebooks to run, in order: all of notebooks/NN-*.ipynb, or those named (`01`, a stem, or a path)."""
    available = sorted(notebooks_dir().glob("[0-9][0-9]-*.ipynb"))
    if not selection:
        return available
    chosen = []
    for wanted in selection:
        as_path = Path(wanted)
        matches = [nb for nb in available if wanted in (nb.stem, nb.name, nb.stem[:2])
                   or (as_path.exists() and as_path.resolve() == nb.resolve())]
        if not matches:
            names = ", ".join(nb.stem for nb in available)
            raise BadParameter(f"notebook {wanted!r} not found.", f"Choose from: {names}.")
        chosen += matches
    return chosen


def execute(notebooks: list[Path], *, quick: bool, mode: str = "live", output_dir: Path | None = None,
            results_dir: Path | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[NotebookRun]:
    """Execute `notebooks` in order; stop at the first failure. Cleans up the run's objects at the end."""
    import papermill  # slow to import: only when notebooks are run

    if timeout_s <= 0:
        raise BadParameter(f"timeout={timeout_s}: need a positive number of seconds.", "E.g. --timeout 1800.")
    output_dir = output_dir or paths.build_dir() / "notebooks"
    output_dir.mkdir(parents=True, exist_ok=True)
    run_id = engine.new_run_id()
    runs: list[NotebookRun] = []
    try:
        with _run_environment(run_id, results_dir), _interrupts_forwarded_to_kernels() as interrupted:
            for index, notebook in enumerate(notebooks, 1):
                output = output_dir / notebook.name
                print(f"[{index}/{len(notebooks)}] {notebook.stem} (quick={quick}, mode={mode}) …", flush=True)
                started = time.perf_counter()
                try:
                    papermill.execute_notebook(
                        str(notebook), str(output), parameters={"quick": quick, "mode": mode},
                        cwd=str(notebook.parent), execution_timeout=int(timeout_s),
                        progress_bar=sys.stderr.isatty(),  # a per-cell bar in a terminal, quiet in logs
                        kernel_name="python3", config=kernel_config())
                except papermill.PapermillExecutionError as exc:
                    status = "interrupted" if interrupted.is_set() else "failed"
                    runs.append(NotebookRun(notebook.stem, status, time.perf_counter() - started, str(output),
                                            exc.cell_index, f"{exc.ename}: {exc.evalue}"))
                    break
                except KeyboardInterrupt:
                    runs.append(NotebookRun(notebook.stem, "interrupted", time.perf_counter() - started,
                                            str(output)))
                    break
                runs.append(NotebookRun(notebook.stem, "ok", time.perf_counter() - started, str(output)))
                print(f"    ok in {runs[-1].wall_s:.1f} s → {output}", flush=True)
    finally:
        sweep_run(run_id)
        prune_partials(results_dir or paths.build_dir() / "results", keep=KEEP_PARTIAL_RUNS)
        _write_report(output_dir / "run-report.json", run_id, runs)
    if interrupted.is_set():
        raise KeyboardInterrupt("interrupted; the run's containers and cgroups were removed")
    return runs


@contextmanager
def _run_environment(run_id: str, results_dir: Path | None) -> Iterator[None]:
    """LABKIT_RUN_ID (and LABKIT_RESULTS_DIR when given) for the kernels of this run; restored afterwards."""
    wanted = {"LABKIT_RUN_ID": run_id, **({"LABKIT_RESULTS_DIR": str(results_dir)} if results_dir else {})}
    before = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _interrupts_forwarded_to_kernels() -> Iterator[threading.Event]:
    """While notebooks run, Ctrl-C (SIGINT) interrupts the kernel's cell, so the lab's own cleanup runs.

    Jupyter kernels run in a session of their own, out of reach of the terminal's Ctrl-C: the first SIGINT
    is passed on to them and the notebook then fails with KeyboardInterrupt; a second one stops this
    process at once. Either way the run ends with :func:`sweep_run`.
    """
    interrupted = threading.Event()

    def forward(signum: int, frame: FrameType | None) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        print("interrupt: stopping the notebook's current cell (Ctrl-C again to stop at once) …", flush=True)
        for pid in _children(os.getpid()):
            os.kill(pid, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, forward)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def _children(parent: int) -> list[int]:
    """PIDs of the direct children of `parent` (the kernels papermill started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if procfs.read_status(int(entry.name)).ppid == parent:
                    found.append(int(entry.name))
            except (procfs.ProcessGone, OSError):
                continue
    return found


def sweep(run_id: str | None = None) -> tuple[engine.CleanupReport | None, list[str]]:
    """Remove the docker objects and cgroups of run `run_id`, or of every run when None.

    Returns what went: the engine's report (None when no engine answers, so nothing can be in it) and the
    cgroup paths removed.
    """
    from labkit.instruments import cgroups

    try:
        report: engine.CleanupReport | None = engine.cleanup(engine.connect(), engine.LABEL_RUN, run_id)
    except engine.EngineUnavailable:
        report = None
    try:
        prefix = "labkit" if run_id is None else f"labkit/{run_id}"
        removed = cgroups.sweep(cgroups.CgroupLayout.from_system(), prefix=prefix)
    except cgroups.CgroupUnavailable:
        removed = []
    return report, removed


def sweep_run(run_id: str) -> None:
    """Sweep what the notebooks' own cleanup missed in run `run_id`, and say so in the log."""
    report, removed = sweep(run_id)
    if report is not None and report.total:
        log.warning("swept objects the run left behind: %s", report)
    if removed:
        log.warning("swept cgroups the run left behind: %s", ", ".join(removed))


def _write_report(path: Path, run_id: str, runs: list[NotebookRun]) -> None:
    path.write_text(json.dumps({"run_id": run_id, "notebooks": [asdict(r) for r in runs]}, indent=2) + "\n")


def format_report(runs: list[NotebookRun]) -> str:
    lines = [f"{'notebook':40} {'status':12} {'wall s':>8}  detail"]
    for r in runs:
        detail = f"cell {r.failed_cell}: {r.error}" if r.status == "failed" else r.output
        lines.append(f"{r.notebook:40} {r.status:12} {r.wall_s:8.1f}  {detail}")
    return "\n".join(lines)

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
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from labkit import paths
from labkit.app import catalog, execution_cache
from labkit.app.kernels import kernel_config
from labkit.core import session
from labkit.core.results import prune_partials, utc_now
from labkit.errors import BadParameter, Terminated
from labkit.instruments import engine, procfs, shell, undo

if TYPE_CHECKING:
    import nbformat  # slow to import (4–7 s): only where an executed copy is read, not when every notebook is reused

log = logging.getLogger("labkit.runner")

DEFAULT_TIMEOUT_S = 1800.0  # per notebook; papermill would otherwise wait forever on a hung cell
KEEP_PARTIAL_RUNS = 3  # unfinished runs' result folders kept per notebook, newest first, for a look after a failure
REPORT = "run-report.json"  # beside the executed notebooks: how each one went
PAPERMILL_ERROR_MARKER = "papermill-error-cell-tag"  # papermill.execute.ERROR_MARKER_TAG, without its slow import


@dataclass(frozen=True)
class NotebookRun:
    """How one notebook's execution went; `failed_cell` is papermill's cell index (0-based, in the executed copy
    without papermill's error banner) or None."""

    notebook: str
    status: str  # "ok", "reused", "failed", "interrupted" or "not run" (an interrupt stopped the run before it)
    wall_s: float
    output: str
    failed_cell: int | None = None
    error: str = ""
    key: str = ""  # the execution key of its inputs (labkit.app.execution_cache)
    reason: str = ""  # why it was executed, or why its earlier execution was reused


def discover(selection: list[str] | None = None) -> list[Path]:
    """Notebooks to run, in order: all of notebooks/NN-*.ipynb, or those named (`01`, a stem, or a path)."""
    available = sorted(paths.notebooks_dir().glob("[0-9][0-9]-*.ipynb"))
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
            results_dir: Path | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
            fresh: str = "this run reuses nothing") -> list[NotebookRun]:
    """Execute `notebooks` in order and return how each went, one entry per notebook.

    A notebook whose inputs did not change since its last successful execution into `output_dir` is not
    executed again but "reused" (:mod:`labkit.app.execution_cache`), in a full live run whose `fresh` is "";
    otherwise `fresh` says why every notebook is executed (``--fresh``, ``--record``, or a caller that always
    measures, as the bench and the tests do). Each notebook's key and reason are printed and kept in the report,
    the executed copy's metadata and its provenance.json.

    A failed notebook (a cell that raised or timed out, a kernel that died) costs only itself: the run goes on
    with the next. An interrupt stops the run at once (KeyboardInterrupt; the report lists the notebooks it kept
    from starting as "not run"). Whatever happens, the run's objects are cleaned up and the report is written.
    """
    if timeout_s <= 0:
        raise BadParameter(f"timeout={timeout_s}: need a positive number of seconds.", "E.g. --timeout 1800.")
    output_dir = output_dir or paths.run_dir(quick) / "notebooks"
    if results_dir is None and quick and "LABKIT_RESULTS_DIR" not in os.environ:
        results_dir = paths.run_dir(quick) / "results"
    output_dir.mkdir(parents=True, exist_ok=True)
    run_id = engine.new_run_id()
    runs: list[NotebookRun] = []
    try:
        with _run_environment(run_id, results_dir), _interrupts_forwarded_to_kernels() as interrupted, \
                _build_cache_as_found(mode):
            decisions = _decide(notebooks, output_dir, quick=quick, mode=mode,
                                refused=fresh or execution_cache.reuse_refused(quick=quick, mode=mode))
            if any(decision.execute for decision in decisions):
                import papermill  # slow to import: only when notebooks are run
                from nbclient.exceptions import CellTimeoutError, DeadKernelError
            for index, (notebook, decision) in enumerate(zip(notebooks, decisions, strict=True), 1):
                output = output_dir / notebook.name
                if not decision.execute:
                    runs.append(NotebookRun(notebook.stem, "reused", 0.0, str(output), key=decision.key,
                                            reason=decision.reason))
                    print(f"[{index}/{len(notebooks)}] {notebook.stem}: reused (key {decision.key}), "
                          f"{decision.reason} → {output}", flush=True)
                    continue
                print(f"[{index}/{len(notebooks)}] {notebook.stem} (quick={quick}, mode={mode}) executing (key "
                      f"{decision.key}): {decision.reason} …", flush=True)
                started, started_utc = time.perf_counter(), utc_now()
                try:
                    papermill.execute_notebook(
                        str(notebook), str(output), parameters={"quick": quick, "mode": mode},
                        cwd=str(notebook.parent), execution_timeout=int(timeout_s),
                        progress_bar=sys.stderr.isatty(),  # a per-cell bar in a terminal, quiet in logs
                        kernel_name="python3", config=kernel_config())
                except papermill.PapermillExecutionError as exc:
                    cell, error = exc.cell_index, f"{exc.ename}: {exc.evalue}"
                except (CellTimeoutError, DeadKernelError) as exc:
                    # Raised past papermill, which then records no error: the cell is the last one it started.
                    cell, error = last_started_cell(output), f"{type(exc).__name__}: {_first_line(str(exc))}"
                except Exception as exc:  # e.g. a kernel that died while starting (a Ctrl-C at that moment)
                    cell, error = last_started_cell(output), f"{type(exc).__name__}: {_first_line(str(exc))}"
                except KeyboardInterrupt:  # a second Ctrl-C, or SIGTERM: stop now (its copy may be half-written)
                    runs.append(NotebookRun(notebook.stem, "interrupted", time.perf_counter() - started,
                                            str(output)))
                    raise
                else:
                    execution_cache.remember(decision, output, session.results_root(), run_id, started_utc)
                    runs.append(NotebookRun(notebook.stem, "ok", time.perf_counter() - started, str(output),
                                            key=decision.key, reason=decision.reason))
                    print(f"    ok in {runs[-1].wall_s:.1f} s → {output}", flush=True)
                    if interrupted.is_set():  # the signal came before the kernel could take it
                        break
                    continue
                # The first Ctrl-C makes the cell it interrupts fail: that notebook was interrupted, not failed.
                status = "interrupted" if interrupted.is_set() else "failed"
                runs.append(NotebookRun(notebook.stem, status, time.perf_counter() - started, str(output), cell,
                                        error, decision.key, decision.reason))
                if interrupted.is_set():
                    break
                print(f"    failed at cell {cell}: {_first_line(error)} → {output}; going on with the next notebook",
                      flush=True)
    finally:
        sweep_run(run_id)
        for line in undo.undo_orphans():  # what a kernel that was shut down mid-cell left on the host
            log.warning("host: %s", line)
        prune_partials(results_dir or session.results_root(), keep=KEEP_PARTIAL_RUNS)
        runs += [NotebookRun(notebook.stem, "not run", 0.0, "", error="the run was interrupted before it")
                 for notebook in notebooks[len(runs):]]
        _write_report(output_dir / REPORT, run_id, runs)
    if interrupted.is_set():
        raise interrupted.error()
    return runs


def _decide(notebooks: list[Path], output_dir: Path, *, quick: bool, mode: str,
            refused: str) -> list[execution_cache.Decision]:
    """Whether each notebook is executed or its earlier execution in `output_dir` reused (see `execute`)."""
    host = execution_cache.Host.current()
    try:
        labs = {lab.stem: lab for lab in catalog.all_labs()}
    except Exception as exc:  # whatever a lab's import raises: it fails its own notebook, not the run
        labs = {}
        refused = refused or (f"the labs' declarations did not import ({type(exc).__name__}: {_first_line(str(exc))})"
                              ", so no base recipe can be compared")
    return [execution_cache.decide(
        execution_cache.inputs(notebook, labs.get(notebook.stem), host, quick=quick, mode=mode),
        output_dir / notebook.name, session.results_root(), refused=refused) for notebook in notebooks]


def executed_cells(executed: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """The cells of an executed notebook as papermill ran them: without the error banner it inserts after a
    failure, so that an index in this list is papermill's cell index."""
    return [cell for cell in executed.cells if PAPERMILL_ERROR_MARKER not in cell.metadata.get("tags", [])]


def last_started_cell(executed: Path) -> int | None:
    """Index of the last cell papermill started in the executed copy at `executed` (the cell a timeout or a dead
    kernel stopped in), or None when it started none or there is no copy."""
    if not executed.exists():
        return None
    import nbformat

    cells = executed_cells(nbformat.read(executed, as_version=4))
    started = [i for i, cell in enumerate(cells) if cell.metadata.get("papermill", {}).get("start_time")]
    return started[-1] if started else None


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def rerun_command(stem: str) -> str:
    """The command that runs notebook `stem` again, by its number."""
    return f".venv/bin/labkit run {stem[:2]}"


def read_report(folder: Path) -> dict[str, NotebookRun]:
    """How each notebook of the last run into `folder` went, by stem (empty when no run wrote a report there)."""
    path = folder / REPORT
    if not path.exists():
        return {}
    return {entry["notebook"]: NotebookRun(**entry) for entry in json.loads(path.read_text())["notebooks"]}


def _build_cache_as_found(mode: str) -> AbstractContextManager[None]:
    """The build cache the run's notebooks add, removed after them (:func:`engine.build_cache_as_found`); nothing
    to do in a replay or where no engine answers."""
    if mode == "replay":
        return nullcontext()
    try:
        return engine.build_cache_as_found(engine.connect())
    except engine.EngineUnavailable:
        return nullcontext()


def _run_environment(run_id: str, results_dir: Path | None) -> AbstractContextManager[None]:
    """LABKIT_RUN_ID (and LABKIT_RESULTS_DIR when given) for the kernels of this run; restored afterwards."""
    return shell.environment(LABKIT_RUN_ID=run_id, **({"LABKIT_RESULTS_DIR": str(results_dir)} if results_dir else {}))


@dataclass
class Interrupt:
    """Whether the run was interrupted, and by which signal (SIGINT or SIGTERM)."""

    signum: int = 0

    def is_set(self) -> bool:
        return self.signum != 0

    def error(self) -> KeyboardInterrupt:
        """What the run raises once it has cleaned up: SIGTERM's own kind, so the process can end as killed by it."""
        message = "interrupted; the run's containers and cgroups were removed"
        return Terminated(message) if self.signum == signal.SIGTERM else KeyboardInterrupt(message)


@contextmanager
def _interrupts_forwarded_to_kernels() -> Iterator[Interrupt]:
    """While notebooks run, Ctrl-C (SIGINT) or SIGTERM interrupts the kernel's cell, so the lab's own cleanup runs.

    Jupyter kernels run in a session of their own, out of reach of the terminal's Ctrl-C and of a SIGTERM sent
    to this process: the first signal is passed on to them as SIGINT and the notebook then fails with
    KeyboardInterrupt; a second one stops this process at once. Either way the run ends with :func:`sweep_run`.
    """
    interrupt = Interrupt()

    def forward(signum: int, frame: FrameType | None) -> None:
        if interrupt.is_set():
            raise interrupt.error()
        interrupt.signum = signum
        print(f"{signal.Signals(signum).name}: stopping the notebook's current cell (Ctrl-C again to stop at "
              "once) …", flush=True)
        for pid in procfs.children(os.getpid()):  # the kernels papermill started
            os.kill(pid, signal.SIGINT)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield interrupt
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def sweep(run_id: str | None = None) -> tuple[engine.CleanupReport | None, list[str]]:
    """Remove the docker objects and cgroups of run `run_id`, or of every run when None.

    Returns what went: the engine's report (None when no engine answers, so nothing can be in it) and the
    systemd slices and cgroup paths, extra engines, neighbour namespaces, firewall rules, other runtimes' objects
    and lab machine runs removed.
    """
    from labkit.instruments import cgroups

    try:
        report: engine.CleanupReport | None = engine.cleanup(engine.connect(), engine.LABEL_RUN, run_id)
    except engine.EngineUnavailable:
        report = None
    from labkit.instruments import slices  # fences on the systemd driver (07 in the lab machine)

    removed = slices.sweep(run_id)
    try:
        prefix = "labkit" if run_id is None else f"labkit/{run_id}"
        removed += cgroups.sweep(cgroups.CgroupLayout.from_system(), prefix=prefix)
    except cgroups.CgroupUnavailable:
        pass
    from labkit.instruments import daemons, firewall, netns, runtimes  # neighbour hosts, rules, engines (08 on)
    from labkit.instruments.vm import guest  # the lab machine's boots (15)

    removed += daemons.sweep(run_id)  # before the namespaces: each extra daemon lives in one
    removed += guest.sweep(run_id)
    removed += [f"network namespace {name}" for name in netns.sweep(run_id)]
    removed += [f"firewall rule {rule}" for rule in firewall.sweep(run_id)]
    removed += runtimes.sweep(run_id)  # containerd namespaces and podman images (notebook 13)
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
    """One line per notebook: its status, wall time, and where it failed or where its executed copy is."""
    lines = [f"{'notebook':40} {'status':12} {'wall s':>8}  detail"]
    for r in runs:
        where = f"cell {r.failed_cell}" if r.failed_cell is not None else ""
        error = _first_line(r.error)  # the whole error (an engine's hint: several lines) is in the report
        detail = r.output if r.status == "ok" else ": ".join(part for part in (where, error) if part) or r.output
        if r.status == "reused":
            detail = f"{r.output} ({r.reason})"
        lines.append(f"{r.notebook:40} {r.status:12} {r.wall_s:8.1f}  {detail}")
    return "\n".join(lines)

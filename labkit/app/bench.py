"""`make bench` (`labkit bench`): how long the reader's commands take here, measured, written to data/bench/.

One table, ``data/bench/bench.csv`` (group, item, condition, value, unit, note), and ``provenance.json`` (where,
when, with what). Measured: the README commands split by phase (Python env, engine, bases and assets,
notebooks, book) — warm, and cold without touching the reader's state (a fresh virtual environment; a second
engine on an empty data-root, and the bases made into it from an empty cache folder); each
notebook's quick and full wall time, and the notebooks of a second run with nothing changed (reused from the
execution cache); labkit's container start against the raw `docker run` CLI and the SDK
(one interleaved run, ratios to the CLI); and the memory sampler's rate and CPU cost from the newest results
that record them. Speed is reported here and on the book's environment page, never asserted in tests.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, closing
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from labkit import paths
from labkit.app import book, catalog, runner
from labkit.core.results import read_recorded, utc_now
from labkit.core.session import git_commit
from labkit.instruments import measure, shell, undo
from labkit.labs import the_lab_machine
from labkit.paths import atomic_write

COLUMNS = ["group", "item", "condition", "value", "unit", "note"]
START_REPEATS = 5  # interleaved rounds of each container-start method (one run, so no interval is claimed)
PIP_TIMEOUT_S = 1800  # a fresh virtual environment from pip's cache takes about 2 minutes; a cold cache far longer


def _timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter_ns()
    result = action()
    return (time.perf_counter_ns() - started) / 1e9, result


class Bench:
    """Rows of the bench table, added as each measurement finishes."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, group: str, item: str, condition: str, value: float, unit: str = "s", note: str = "") -> None:
        self.rows.append(dict(zip(COLUMNS, (group, item, condition, value, unit, note), strict=True)))
        print(f"  {group} · {item} ({condition}): {value:.3g} {unit}{'  ' + note if note else ''}", flush=True)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=COLUMNS)


def python_env(bench: Bench, cold: bool) -> None:
    """`make lab`'s first phase: the virtual environment with labkit installed (warm: the project's own .venv,
    as a second `make lab` finds it; cold: a fresh one in a temporary folder)."""
    root = paths.project_root()
    install = ["-m", "pip", "install", "--quiet", "-e", f"{root}[dev]"]
    seconds, _ = _timed(lambda: shell.run([sys.executable, *install], PIP_TIMEOUT_S, cwd=root))
    bench.add("make lab", "Python env", "warm", seconds, note="pip install -e .[dev] into the existing .venv")
    if cold:
        with undo.temporary_folder("labkit-bench-venv-") as folder:
            def fresh() -> None:
                shell.run(["sh", "tools/bootstrap-python.sh", "python3", folder], PIP_TIMEOUT_S, cwd=root)
                shell.run([f"{folder}/bin/python", *install], PIP_TIMEOUT_S, cwd=root)
            seconds, _ = _timed(fresh)
        bench.add("make lab", "Python env", "cold", seconds, note="a fresh venv, packages from pip's cache")


def setup_phases(bench: Bench, labs: list[Any]) -> Any:
    """`labkit setup`, warm: the engine answering, then each lab's bases and assets. Returns the engine client."""
    from labkit.instruments import engine, images

    seconds, client = _timed(engine.ensure)
    bench.add("make lab", "engine", "warm", seconds, note="engine.ensure() with dockerd already running")
    bases = tuple(dict.fromkeys(name for lab in labs for name in lab.bases))
    seconds, _ = _timed(lambda: [images.ensure_base(client, name) for name in bases])
    bench.add("make lab", "bases", "warm", seconds, note=f"{len(bases)} bases, each found by its recipe hash")
    seconds, _ = _timed(lambda: [lab.prepare(client) for lab in labs])
    bench.add("make lab", "assets", "warm", seconds, note="every lab's prepare()")
    return client


def cold_phases(bench: Bench, bases: Sequence[str], lab_machine: bool) -> None:
    """`labkit setup` as a fresh machine runs it, without touching the reader's engine or cache: a second dockerd
    on an empty data-root of its own (:mod:`labkit.instruments.daemons`; cold engine: until it answers), then
    `bases` made into it one after another from an empty cache folder (cold bases: debootstrap and apt download
    every package from Debian's mirror again), and when `lab_machine`, notebook 15's guest made in that cache and
    booted once. The engine, its data-root and the cache folder are removed after."""
    import docker

    from labkit.instruments import daemons, engine, images

    with ExitStack() as made:
        seconds, fresh = _timed(lambda: made.enter_context(daemons.engines(engine.new_run_id(), 1)))
        node = fresh.nodes[0]
        bench.add("make lab", "engine", "cold", seconds,
                  note="a second dockerd on an empty data-root, in a network namespace of its own, until it answers")
        cache = made.enter_context(undo.temporary_folder("labkit-bench-cache-"))
        made.enter_context(shell.environment(DOCKER_HOST=f"unix://{node.socket}", LABKIT_CACHE=cache))
        client = made.enter_context(closing(docker.DockerClient(base_url=f"unix://{node.socket}")))
        seconds, done = _timed(partial(images.make_bases, client, bases, lambda line: print(f"  {line}", flush=True)))
        for group, fetched_s in done.fetched_s.items():
            bench.add("cold bases", f"packages, {group}", "cold", fetched_s,
                      note="one debootstrap --download-only of every base's packages into the empty cache")
        for name, base in done.bases.items():
            bench.add("cold bases", name, "cold", base.made_s,
                      note=f"made from the filled cache into a fresh engine, {images.BASE_WORKERS} bases at a time")
        bench.add("make lab", "bases", "cold", seconds,
                  note=f"{len(bases)} bases as `labkit setup` makes them (packages downloaded first, then "
                       f"{images.BASE_WORKERS} at a time), from an empty cache folder, into a fresh engine")
        if lab_machine:
            _lab_machine(bench)


def _lab_machine(bench: Bench) -> None:
    """Notebook 15's guest made in the cold cache folder (after the bases: the .deb files they fetched are reused;
    01's kernel is downloaded again), then booted once with nothing to do: its timeline, mark by mark."""
    from labkit.instruments import engine, vm
    from labkit.instruments.vm import guest

    seconds, made = _timed(guest.ensure_guest)
    phases = ", ".join(f"{key.removesuffix('_s')} {made.manifest[key]:.0f} s"
                       for key in ("debootstrap_s", "kernel_s", "disk_s"))
    bench.add("make lab", "lab machine", "cold", seconds,
              note=f"notebook 15's guest ({phases}; 01's kernel downloaded), from the cold cache after the bases")
    run = guest.run_job(made, "true", {}, run_id=engine.new_run_id(), accel=vm.accelerator())
    for mark, at_s in run.marks.items():
        bench.add("lab machine boot", mark, run.accelerator, at_s, note="seconds from QEMU's start, first boot")


def notebooks(bench: Bench, chosen: list[Path], work: Path, full: bool) -> Path | None:
    """Each notebook quick (and full when `full`), each in a run of its own so that one failure does not hide
    the others' times; returns the folder of the last mode's executed notebooks and results for the book
    phase, or None when one failed (a book with failure pages is not the one to time)."""
    last: Path | None = None
    for quick in (True, False) if full else (True,):
        condition = "quick" if quick else "full"
        out = work / condition
        runs = [run for notebook in chosen
                for run in runner.execute([notebook], quick=quick, mode="live", output_dir=out / "notebooks",
                                          results_dir=out / "results")]
        for run in runs:
            bench.add("notebook", run.notebook, condition, run.wall_s,
                      note=run.status if run.status == "ok" else f"{run.status}: {run.error}")
        failed = [run.notebook for run in runs if run.status != "ok"]
        bench.add("make lab", "notebooks", condition, sum(run.wall_s for run in runs),
                  note=f"{len(runs)} notebooks" + (f"; failed: {', '.join(failed)}" if failed else ""))
        last = None if failed else out
    return last


def warm_notebooks(bench: Bench, chosen: list[Path], executed: Path) -> None:
    """The notebook phase of a second `make lab` with nothing changed: `labkit run` into the folders the full
    run just filled, where every notebook should be reused from the execution cache (the note counts them)."""
    seconds, runs = _timed(lambda: runner.execute(chosen, quick=False, mode="live", output_dir=executed / "notebooks",
                                                  results_dir=executed / "results", fresh=""))
    executed_again = [run.notebook for run in runs if run.status != "reused"]
    bench.add("make lab", "notebooks", "warm", seconds,
              note=f"{len(runs) - len(executed_again)} of {len(runs)} notebooks reused"
              + (f"; executed again: {', '.join(executed_again)}" if executed_again else ""))


def book_phase(bench: Bench, executed: Path) -> None:
    seconds, _ = _timed(lambda: book.build(executed / "notebooks", executed / "book", executed / "results"))
    bench.add("make lab", "book", "warm", seconds, note="jupyter-book build -W -n")


def container_start(bench: Bench, client: Any) -> None:
    """labkit's `run_once` against the raw `docker run` CLI and the bare SDK, interleaved, one run of
    START_REPEATS rounds; medians and ratios to the CLI."""
    from labkit.instruments import containers, engine, images
    from labkit.instruments.limits import Limits

    image = images.require_base(client, "busybox").tag
    limits = Limits(memory_bytes=64 * 2**20, pids=32, cpus=0.5)
    with engine.Scope(client, engine.new_run_id(), lab="bench") as scope:
        methods = {
            "labkit run_once": lambda: containers.run_once(client, scope, image, ["true"], limits=limits),
            "docker run (CLI)": lambda: shell.run([engine.docker_cli(), "run", "--rm", "--pull=never",
                                             *scope.label_args(), image, "true"], 60),
            "SDK containers.run": lambda: client.containers.run(image, ["true"], remove=True,
                                                                labels=scope.labels),
        }
        samples = measure.compare(methods, repeats=START_REPEATS, warmup=1)
    medians = samples.groupby("method")["wall_s"].median()
    for method, median in medians.items():
        bench.add("container start", str(method), f"median of {START_REPEATS}", float(median))
        bench.add("container start", str(method), "ratio to the CLI",
                  float(median / medians["docker run (CLI)"]), unit="×", note="one run")


def sampler(bench: Bench, roots: dict[str, Path]) -> None:
    """The memory sampler's achieved rate and CPU cost, from the first of `roots` (name → results folder) with
    a notebook table that records them (columns sampler_hz and sampler_cpu_s beside wall_s)."""
    for origin, root in roots.items():
        for table in sorted(root.glob("[0-9][0-9]-*/*.csv")):
            frame = read_recorded(table)
            if not {"sampler_hz", "sampler_cpu_s", "wall_s"} <= set(frame.columns):
                continue
            for row in frame.itertuples():
                item = f"{table.parent.name[:2]} {table.stem} row {row.Index}"
                bench.add("memory sampler", item, "rate", float(row.sampler_hz), unit="Hz", note=origin)
                bench.add("memory sampler", item, "CPU cost", float(row.sampler_cpu_s) / float(row.wall_s),
                          unit="CPU s per s", note=origin)
            return


def measure_all(selection: list[str] | None = None, *, cold: bool, full: bool) -> Path:
    """Run every measurement for the notebooks in `selection` (default: all) and write data/bench/bench.csv and
    provenance.json; return the CSV's path."""
    started, commit = utc_now(), git_commit()  # before this bench writes data/bench/, which would read as dirty
    bench = Bench()
    chosen = runner.discover(selection)
    labs = [lab for lab in catalog.all_labs() if lab.stem in {nb.stem for nb in chosen}]
    python_env(bench, cold)
    client = setup_phases(bench, labs)
    if cold:
        cold_phases(bench, tuple(dict.fromkeys(name for lab in labs for name in lab.bases)),
                    lab_machine=any(lab.stem == the_lab_machine.STEM for lab in labs))
    with undo.temporary_folder("labkit-bench-") as work:
        executed = notebooks(bench, chosen, Path(work), full)
        if executed is not None:
            if full:
                warm_notebooks(bench, chosen, executed)
            book_phase(bench, executed)
        else:
            bench.add("make lab", "book", "warm", float("nan"), note="not built: a notebook failed")
        sampler(bench, {"this bench, full": Path(work) / "full" / "results",
                        "this bench, quick": Path(work) / "quick" / "results",
                        "build/results": paths.build_dir() / "results", "data/results": paths.recorded_results_dir()})
    container_start(bench, client)
    target = paths.bench_dir() / "bench.csv"
    atomic_write(target, bench.frame().to_csv(index=False))
    atomic_write(paths.bench_dir() / "provenance.json", json.dumps({
        "started_utc": started, "ended_utc": utc_now(), "fingerprint": measure.fingerprint(client),
        "git_commit": commit, "cold": cold, "full": full,
        "notebooks": [nb.stem for nb in chosen]}, indent=2, sort_keys=True, default=str) + "\n")
    return target

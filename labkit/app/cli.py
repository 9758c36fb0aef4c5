"""The `labkit` command (also `python -m labkit`): doctor, setup, run, claims, book, bench, lab, clean."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from labkit import paths
from labkit.app import catalog
from labkit.errors import LabkitError, Terminated
from labkit.instruments import engine, undo

if TYPE_CHECKING:
    import docker

    from labkit.core.lab import Lab


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(f"signal {signum}")


# Commands that start work: each first undoes the host-wide changes that a killed labkit process left behind.
UNDOES_ORPHANS = ("run", "setup", "clean", "bench")


def cmd_doctor(args: argparse.Namespace) -> int:
    from labkit.app import doctor

    labs = catalog.select(args.notebooks)
    report = doctor.diagnose(labs)
    print(doctor.format_report(report))
    return 0 if report.all_runnable else 1


def cmd_setup(args: argparse.Namespace) -> int:
    """Install what the chosen labs need (Debian as root), make sure an engine answers, make their bases and
    assets."""
    labs = catalog.select(args.notebooks)
    if engine.can_manage_host():
        packages = tuple(dict.fromkeys(p for lab in labs for p in lab.packages))
        installed = engine.install_packages(packages)
        print(f"installed with apt-get: {' '.join(installed)}" if installed else "lab packages: all present")
    client = engine.ensure() if any(lab.needs_engine for lab in labs) else None
    if client is not None:
        print(f"engine: {engine.info(client).version} at {engine.engine_address()}")
    with engine.build_cache_as_found(client) if client is not None else nullcontext():
        _make_bases_and_assets(client, labs)
    return 0


def _make_bases_and_assets(client: docker.DockerClient | None, labs: list[Lab]) -> None:
    from labkit.instruments import images

    for lab in labs:
        if lab.bases and client is None:
            raise LabkitError(f"{lab.stem} uses bases {list(lab.bases)} but declares no engine requirement.",
                              "Add labkit.core.lab.ENGINE to its LAB.requirements.")
    bases = tuple(dict.fromkeys(name for lab in labs for name in lab.bases))
    if client is not None and bases:
        started = time.perf_counter()
        images.make_bases(client, bases, lambda line: print(f"  {line}", flush=True))
        print(f"bases: {len(bases)} ready in {time.perf_counter() - started:.1f} s")
    for lab in labs:
        lines = lab.prepare(client)
        if lines:
            print(f"{lab.stem}:\n" + "".join(f"  {line}\n" for line in lines), end="")


def cmd_run(args: argparse.Namespace) -> int:
    from labkit.app import runner
    from labkit.core import session

    if args.record:  # before anything runs: a recording's provenance names a commit, which must hold its code
        session.require_committed()
    notebooks = runner.discover(args.notebooks)
    results_dir = paths.recorded_results_dir() if args.record else None
    fresh = ("--record: a recording always measures anew" if args.record else
             "--fresh: every notebook is executed again" if args.fresh else "")
    runs = runner.execute(notebooks, quick=args.quick, mode=args.mode, results_dir=results_dir,
                          output_dir=Path(args.output) if args.output else None, timeout_s=args.timeout,
                          fresh=fresh)
    print(runner.format_report(runs))
    # Every notebook ran or was reused (an interrupt raises instead): the failures come last, each with its way back.
    failed = [r for r in runs if r.status not in ("ok", "reused")]
    for r in failed:
        print(f"FAILED: {r.notebook} at cell {r.failed_cell}: {r.error}\n  executed copy with the traceback: "
              f"{r.output}\n  run it again: {runner.rerun_command(r.notebook)}", file=sys.stderr)
    return 1 if failed else 0


def cmd_claims(args: argparse.Namespace) -> int:
    from labkit.core import claims

    root = Path(args.results) if args.results else paths.recorded_results_dir()
    target, merged = claims.write_merged(root)
    print(merged.groupby(["source", "verdict"]).size().to_string())
    print(f"{len(merged)} claims from {merged['notebook'].nunique()} notebook(s) → {target}")
    return 0


def cmd_book(args: argparse.Namespace) -> int:
    from labkit.app import book

    built = book.build(Path(args.executed) if args.executed else None,
                       results_dir=Path(args.results) if args.results else None)
    # The book publishes what ran; a failed chapter is a page in it, and still a failure of this command.
    for chapter in built.failed:
        print(f"FAILED: {chapter.stem} {chapter.status} in this run at {chapter.where()}: "
              f"{chapter.error.splitlines()[0]}\n  its page in the book shows the cell and the error; run it again: "
              f"{chapter.rerun}", file=sys.stderr)
    print(built.index)
    return 1 if built.failed else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from labkit.app import bench

    print(bench.measure_all(args.notebooks, cold=not args.warm_only, full=not args.quick_only))
    return 0


def cmd_guest_run(args: argparse.Namespace) -> int:
    from labkit.app import guest_run, runner

    done = guest_run.run(args.notebooks, quick=args.quick, record=args.record, timeout_s=args.timeout)
    marks = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in done.marks.items())
    print(f"lab machine: {marks}\n{runner.format_report(done.runs)}\nexecuted copies: {done.notebooks_dir}\n"
          f"results: {done.results_dir}")
    for r in done.failed:
        print(f"FAILED in the lab machine: {r.notebook} ({r.status}) at cell {r.failed_cell}: {r.error}\n"
              f"  executed copy: {done.notebooks_dir / Path(r.output).name}\n  the guest's console: "
              f"{done.notebooks_dir / guest_run.CONSOLE}", file=sys.stderr)
    return 1 if done.failed or not done.runs else 0


def cmd_guest_lab(args: argparse.Namespace) -> int:
    from labkit.app import guest_lab

    return guest_lab.serve(args.notebooks, args.port, args.timeout)


def cmd_lab(args: argparse.Namespace) -> int:
    from labkit.app import jupyter

    return jupyter.serve(args.port, Path(args.dir) if args.dir else None)


def cmd_clean(args: argparse.Namespace) -> int:
    from labkit.app import runner
    from labkit.core import results

    report, removed = runner.sweep()
    if report is None:
        print("no engine answers: no docker objects to remove")
    else:
        print(f"run objects: {report}")
        for kind, names in vars(report).items():
            for name in names:
                print(f"  {kind[:-1]} {name}")
        if args.bases:
            print(f"base images: {engine.cleanup(engine.connect(), engine.LABEL_BASE)}")
    print(f"host state (cgroups, engines, namespaces, rules): removed {len(removed)}"
          + "".join(f"\n  {path}" for path in removed))
    partials = [p for quick in (False, True) for p in results.prune_partials(paths.run_dir(quick) / "results", keep=0)]
    print(f"unfinished runs' results: removed {len(partials)}" + "".join(f"\n  {p}" for p in partials))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labkit", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every shell-out")
    sub = parser.add_subparsers(dest="command", required=True)
    doctor = sub.add_parser("doctor", help="what each notebook needs, what this host has, and the fixes")
    doctor.add_argument("notebooks", nargs="*", help="01 or a notebook stem (default: all)")
    doctor.set_defaults(func=cmd_doctor)
    setup = sub.add_parser("setup", help="install what the labs need, start an engine, make bases and assets")
    setup.add_argument("notebooks", nargs="*", help="01 or a notebook stem (default: all)")
    setup.set_defaults(func=cmd_setup)
    run = sub.add_parser("run", help="execute notebooks with papermill into build/notebooks "
                                                   "(quick runs: build/quick/notebooks)")
    run.add_argument("notebooks", nargs="*", help="01, a notebook stem or path (default: all)")
    run.add_argument("--quick", action="store_true",
                     help="fewer repeats, every experiment still real: about 15-60 s per notebook on two cores; 12, "
                          "13 and 15 about 70-90 s (make bench measures each)")
    run.add_argument("--mode", choices=["live", "replay", "auto"], default="live",
                     help="live (default) needs an engine; replay shows the committed results")
    run.add_argument("--record", action="store_true",
                     help="write results to data/results/ (to commit them); only from a committed tree")
    run.add_argument("--fresh", action="store_true",
                     help="execute every notebook again, even one whose inputs did not change since its last run")
    run.add_argument("--timeout", type=float, default=1800.0, help="seconds per notebook (default 1800)")
    run.add_argument("--output", help="folder for the executed notebooks (default build/notebooks, with --quick "
                                      "build/quick/notebooks and their results in build/quick/results)")
    run.set_defaults(func=cmd_run)
    claims = sub.add_parser("claims", help="merge every notebook's claims into one ledger (claims.csv)")
    claims.add_argument("--results", help="results folder to merge (default data/results)")
    claims.set_defaults(func=cmd_claims)
    book = sub.add_parser("book", help="build the static book; prints the path of index.html last")
    book.add_argument("--executed", help="folder of executed notebooks (default build/notebooks; a quick run's: "
                                         "build/quick/notebooks)")
    book.add_argument("--results", help="results behind them, for the claims page (default build/results; a quick "
                                        "run's: build/quick/results)")
    book.set_defaults(func=cmd_book)
    bench = sub.add_parser("bench", help="time the README's commands by phase, each notebook, container start; "
                                         "writes data/bench/")
    bench.add_argument("notebooks", nargs="*", help="01 or a notebook stem (default: all)")
    bench.add_argument("--warm-only", action="store_true",
                       help="skip the cold phases (a fresh venv; a fresh engine and bases from an empty cache)")
    bench.add_argument("--quick-only", action="store_true", help="notebooks in quick mode only, not full")
    bench.set_defaults(func=cmd_bench)
    guest = sub.add_parser("guest", help="the lab machine (notebook 15's guest: cgroup v2, Docker's systemd driver)")
    guest_sub = guest.add_subparsers(dest="guest_command", required=True)
    guest_run = guest_sub.add_parser("run", help="execute notebooks inside the lab machine; executed copies and "
                                                 "results to build/guest/ (quick: build/guest/quick/)")
    guest_run.add_argument("notebooks", nargs="+", help="01, a notebook stem or path")
    guest_run.add_argument("--quick", action="store_true", help="fewer repeats, as `labkit run --quick`")
    guest_run.add_argument("--record", action="store_true",
                           help="results to data/results/guest/ (to commit them); only from a committed tree")
    guest_run.add_argument("--timeout", type=float, default=1800.0, help="seconds per notebook (default 1800)")
    guest_run.set_defaults(func=cmd_guest_run)
    guest_lab = guest_sub.add_parser("lab", help="JupyterLab served from inside the lab machine on 127.0.0.1 over "
                                                 "your copies of the notebooks (build/guest/lab)")
    guest_lab.add_argument("notebooks", nargs="*", help="01, a notebook stem or path (default: 01 and 07)")
    guest_lab.add_argument("--port", type=int, default=8889, help="port on 127.0.0.1 (default 8889)")
    guest_lab.add_argument("--timeout", type=float, default=8 * 3600.0,
                           help="seconds until the lab machine is powered off (default 28800: 8 hours)")
    guest_lab.set_defaults(func=cmd_guest_lab)
    lab = sub.add_parser("lab", help="JupyterLab on 127.0.0.1 over your copies of the notebooks (build/lab)")
    lab.add_argument("--port", type=int, default=8888, help="port on 127.0.0.1 (default 8888; 0: any free one)")
    lab.add_argument("--dir", help="folder of your notebook copies (default build/lab)")
    lab.set_defaults(func=cmd_lab)
    clean = sub.add_parser("clean", help="remove every object, cgroup and unfinished result folder labkit made")
    clean.add_argument("--bases", action="store_true", help="also remove the base images")
    clean.set_defaults(func=cmd_clean)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # Ctrl-C and SIGTERM both end in KeyboardInterrupt, even where the caller left SIGINT ignored (a background
    # job of a non-interactive shell, `nohup … &`, starts with SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        if args.command in UNDOES_ORPHANS:
            for line in undo.undo_orphans():
                print(f"host: {line}", file=sys.stderr)
        return int(args.func(args))
    except KeyboardInterrupt as exc:
        print("interrupted: the run's containers and cgroups were removed", file=sys.stderr)
        if isinstance(exc, Terminated) or isinstance(exc.__context__, Terminated):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        return 130
    except LabkitError as exc:
        # An error a user can act on: its message and hint say what to do; a traceback would only hide it.
        # Anything else is a bug and shows its traceback.
        print(f"labkit {args.command}: {exc}", file=sys.stderr)
        return 2
    except engine.SDK_ERRORS as exc:
        # The docker SDK's own errors (and requests' below it) reach the user as LabkitErrors, never raw.
        translated = engine.engine_error(exc, f"labkit {args.command}")
        if translated is None:
            raise
        print(f"labkit {args.command}: {translated}", file=sys.stderr)
        return 2

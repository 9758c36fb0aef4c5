"""The `labkit` command (also `python -m labkit`): doctor, setup, run, book, clean."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from labkit import paths
from labkit.instruments import engine
from labkit.instruments.cgroups import CgroupError
from labkit.instruments.shell import CommandError

# What the labs use besides the engine: debootstrap and busybox-static for the bases, qemu-system-x86 for the
# VM comparison, qemu-user-static and binfmt-support for arm64 emulation.
LAB_PACKAGES = ("debootstrap", "busybox-static", "qemu-system-x86", "qemu-user-static", "binfmt-support")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def cmd_doctor(args: argparse.Namespace) -> int:
    from labkit.app import doctor

    checks = doctor.diagnose()
    print(doctor.format_checks(checks))
    return 1 if any(c.required and not c.ok for c in checks) else 0


def cmd_setup(args: argparse.Namespace) -> int:
    """Make sure an engine answers and make the bases and the VM kernel the notebooks use."""
    from labkit.instruments import images, vm

    if engine.can_manage_host():
        installed = engine.install_packages(LAB_PACKAGES)
        print(f"installed with apt-get: {' '.join(installed)}" if installed else "lab packages: all present")
    client = engine.ensure()
    print(f"engine: {engine.info(client).version} at {engine.engine_address()}")
    for name in images.known_bases():
        base = images.ensure_base(client, name)
        how = f"made in {base.made_s:.1f} s" if base.made_s else "reused"
        print(f"base {name}: {base.tag} ({base.size_bytes / 1e6:.1f} MB, {how})")
    print(f"rootfs busybox: {images.rootfs_dir('busybox')}")
    print(f"rootfs debian-minbase: {images.rootfs_dir('debian-minbase')}")
    assets = vm.prepare_vm_assets(paths.cache_dir() / "vm")
    print(f"vm kernel: {assets.kernel_release} ({assets.kernel})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from labkit.app import runner

    notebooks = runner.discover(args.notebooks)
    results_dir = paths.recorded_results_dir() if args.record else None
    runs = runner.execute(notebooks, quick=args.quick, mode=args.mode, results_dir=results_dir,
                          output_dir=Path(args.output) if args.output else None, timeout_s=args.timeout)
    print(runner.format_report(runs))
    failed = [r for r in runs if r.status != "ok"]
    for r in failed:
        print(f"FAILED: {r.notebook} at cell {r.failed_cell}: {r.error}\n  executed copy with the traceback: "
              f"{r.output}", file=sys.stderr)
    return 1 if failed or len(runs) < len(notebooks) else 0


def cmd_book(args: argparse.Namespace) -> int:
    from labkit.app import book

    index = book.build(Path(args.executed) if args.executed else None)
    print(index)
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from labkit.app import runner

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
    print(f"cgroups: removed {len(removed)}" + "".join(f"\n  {path}" for path in removed))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labkit", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every shell-out")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="what the labs need and what this host has").set_defaults(func=cmd_doctor)
    sub.add_parser("setup", help="start an engine if none answers; make the base images and VM kernel") \
        .set_defaults(func=cmd_setup)
    run = sub.add_parser("run", help="execute notebooks with papermill into build/notebooks")
    run.add_argument("notebooks", nargs="*", help="01, a notebook stem or path (default: all)")
    run.add_argument("--quick", action="store_true", help="fewer repeats: about a minute per notebook")
    run.add_argument("--mode", choices=["live", "replay", "auto"], default="live",
                     help="live (default) needs an engine; replay shows the committed results")
    run.add_argument("--record", action="store_true", help="write results to data/results/ (to commit them)")
    run.add_argument("--timeout", type=float, default=1800.0, help="seconds per notebook (default 1800)")
    run.add_argument("--output", help="folder for the executed notebooks (default build/notebooks)")
    run.set_defaults(func=cmd_run)
    book = sub.add_parser("book", help="build the static book; prints the path of index.html last")
    book.add_argument("--executed", help="folder of executed notebooks (default build/notebooks)")
    book.set_defaults(func=cmd_book)
    clean = sub.add_parser("clean", help="remove every object and cgroup labkit runs made")
    clean.add_argument("--bases", action="store_true", help="also remove the base images")
    clean.set_defaults(func=cmd_clean)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # Ctrl-C and SIGTERM both end in KeyboardInterrupt, even where the caller left SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted: the run's containers and cgroups were removed", file=sys.stderr)
        return 130
    except (engine.EngineUnavailable, CommandError, CgroupError, ValueError, LookupError, OSError) as exc:
        # Errors a user can act on: the message says what to do; a traceback would only hide it.
        print(f"labkit {args.command}: {exc}", file=sys.stderr)
        return 2

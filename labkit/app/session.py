"""A notebook's session: live against the engine, or replaying committed results where none answers.

The notebook opens one session; each lab experiment goes through :meth:`LabSession.record` (several tables) or
:meth:`LabSession.measure` (one), which runs it live and saves its tables at once, each with its parameters and
times, or reads the recorded tables back (replay). Live tables must carry the columns their lab declares.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import docker
import pandas as pd

from labkit import paths
from labkit.app.claims import CLAIMS_TABLE, ClaimLedger
from labkit.app.results import ResultStore, utc_now
from labkit.errors import BadParameter, EngineLost, NeedsRoot, NotPrepared
from labkit.instruments import engine, measure
from labkit.instruments.engine import Scope
from labkit.instruments.host import HostFacts
from labkit.instruments.shell import CommandError, run

log = logging.getLogger("labkit.session")

MODES = ("auto", "live", "replay")


class LabSession:
    """State shared by the experiments of one notebook execution: live, or replaying `replay` when given."""

    def __init__(self, stem: str, quick: bool, results_root: Path,
                 client: docker.DockerClient | None, replay: ResultStore | None,
                 tables: Mapping[str, Sequence[str]] | None = None) -> None:
        self.stem = stem
        self.tables = tables  # the lab's declared tables and columns, enforced on every table it records
        self.quick = quick
        self.results_root = results_root
        self.client = client
        self.run_id = engine.new_run_id()
        self.claims = ClaimLedger(stem)
        self.replay = replay
        self.store = None if replay else ResultStore.partial(results_root, stem, self.run_id)
        self.provenance: dict[str, Any] = replay.read_provenance() if replay else {
            "topic": stem,
            "run_id": self.run_id,
            "quick": quick,
            "started_utc": utc_now(),
            "fingerprint": measure.fingerprint(client),
            "git_commit": _git_commit(),
            "experiments": {},
        }

    @property
    def live(self) -> bool:
        return self.replay is None

    @property
    def engine(self) -> docker.DockerClient:
        if self.client is None:
            raise NotPrepared("this session replays recorded results: there is no engine to use.",
                              "Open the session with mode='live' on a host with a Docker Engine.")
        return self.client

    def require_root(self, why: str) -> None:
        """NeedsRoot saying what needs root, before a live experiment starts (replay needs nothing)."""
        if self.live and os.geteuid() != 0:
            raise NeedsRoot(f"{why} needs root (uid 0; this is uid {os.geteuid()}).",
                            "Run it as root, e.g. `sudo make lab`, or replay the recorded results with "
                            "mode='replay'.")

    def scope(self) -> Scope:
        """Labels for one experiment's docker objects, removed when the `with` block ends."""
        return Scope(self.engine, self.run_id, lab=self.stem)

    def measure(self, name: str, experiment: Callable[[], pd.DataFrame], **parameters: Any) -> pd.DataFrame:
        """Run an experiment that makes one table `name`; see :meth:`record`."""
        return self.record(name, (name,), lambda: {name: experiment()}, **parameters)[name]

    def record(self, experiment: str, tables: Sequence[str], run: Callable[[], Mapping[str, pd.DataFrame]],
               **parameters: Any) -> dict[str, pd.DataFrame]:
        """Run `experiment` (live), which returns the tables named in `tables`, and save each at once with the
        experiment's name, `parameters` and start and end time in the provenance; or read them back (replay).

        If the engine stops answering while it runs, :class:`~labkit.errors.EngineLost` says so and names the
        folder that keeps what the earlier experiments measured.
        """
        if self.replay is not None:
            return {name: self.replay.read_table(name) for name in tables}
        assert self.store is not None
        started = utc_now()
        try:
            frames = dict(run())
        except Exception as exc:
            if engine.timed_out(exc):
                raise engine.timeout_error(exc, f"the experiment {experiment!r}", f" What the earlier experiments "
                                           f"measured is kept in {self.store.folder}.") from exc
            if self.client is not None and not engine.answers(self.client):
                raise EngineLost(f"The Docker Engine stopped answering during the experiment {experiment!r}.",
                                 f"What the earlier experiments measured is kept in {self.store.folder}. Start "
                                 "the engine again (`labkit setup`) and re-run the notebook.") from exc
            raise
        if sorted(frames) != sorted(tables):
            raise RuntimeError(f"experiment {experiment!r} made tables {sorted(frames)}, not {sorted(tables)}")
        ended = utc_now()
        for name in tables:
            self._check_declared(name, frames[name])
            self.store.write_table(name, frames[name])
            self.provenance["experiments"][name] = {"experiment": experiment, "parameters": parameters,
                                                    "started_utc": started, "ended_utc": ended,
                                                    "rows": len(frames[name])}
        self.store.write_provenance(self.provenance)
        return {name: frames[name] for name in tables}

    def _check_declared(self, name: str, frame: pd.DataFrame) -> None:
        """A table the lab did not declare, or with other columns, is a bug in the lab: refuse to record it."""
        if self.tables is None:
            return
        if list(self.tables.get(name, ())) != list(frame.columns):
            raise RuntimeError(f"{self.stem} records table {name!r} with columns {list(frame.columns)}; its LAB "
                               f"declares {list(self.tables.get(name, ('(no such table)',)))}")

    def finish(self) -> Path:
        """Save the claims, stamp the end time and publish the results folder; return where it is."""
        if self.replay is not None:
            return self.replay.folder
        assert self.store is not None
        claims = self.claims.frame()
        self._check_declared(CLAIMS_TABLE, claims)
        self.store.write_table(CLAIMS_TABLE, claims)
        self.provenance["ended_utc"] = utc_now()
        self.store.write_provenance(self.provenance)
        return self.store.publish(self.results_root, self.stem).folder

    def banner(self) -> str:
        """Markdown that says where the numbers below come from, and what kind of machine that was."""
        p = self.provenance
        fp = p.get("fingerprint", {})
        where = (f"{fp.get('os', '?')}, kernel {fp.get('kernel', '?')}, {fp.get('arch', '?')}, "
                 f"{fp.get('cores', '?')} cores, cgroup {fp.get('cgroup_version', '?')}, "
                 f"Docker Engine {fp.get('engine_version', '?')} ({fp.get('storage_driver', '?')})")
        machine = f" The host is {HostFacts(**fp['host']).describe()}." if "host" in fp else ""
        if self.replay is None:
            return (f"**Live run** `{self.run_id}` — every number below is measured now, on {where}"
                    f"{' (quick mode: fewer repeats)' if self.quick else ''}.{machine}")
        return (f"> ⚠️ **REPLAYED RESULTS — nothing below was measured in this execution.** No Docker Engine "
                f"answers here, so the tables and plots come from `{self.replay.folder.name}/` in "
                f"`data/results/`, measured on {where}, from {p.get('started_utc')} to {p.get('ended_utc')} "
                f"(run `{p.get('run_id')}`, quick={p.get('quick')}, commit `{str(p.get('git_commit'))[:12]}`)."
                f"{machine}")


def results_root() -> Path:
    """Where live runs write: LABKIT_RESULTS_DIR (set by `labkit run`) or build/results."""
    override = os.environ.get("LABKIT_RESULTS_DIR")
    return Path(override).resolve() if override else paths.build_dir() / "results"


def open_session(stem: str, mode: str = "auto", quick: bool = False) -> LabSession:
    """Open a session: `live` needs an engine, `replay` needs recorded results, `auto` prefers live."""
    if mode not in MODES:
        raise BadParameter(f"mode={mode!r} is not a session mode.", f"Choose one of {list(MODES)}.")
    # The notebook's tables are shown whole: pandas would cut a claim's wording or caveat at 50 characters
    # ("…") and hide middle columns of a wide matrix, in JupyterLab and in the book alike.
    pd.set_option("display.max_colwidth", None, "display.max_columns", None)
    recorded = ResultStore(paths.recorded_results_dir() / stem)
    if mode == "replay":
        recorded.read_provenance()  # a clear error when nothing was recorded
        return LabSession(stem, quick, recorded.folder.parent, None, recorded)
    try:
        client = engine.connect()
    except engine.EngineUnavailable:
        if mode == "live" or not (recorded.folder / "provenance.json").exists():
            raise
        log.warning("no engine answers: replaying %s", recorded.folder)
        return LabSession(stem, quick, recorded.folder.parent, None, recorded)
    return LabSession(stem, quick, results_root(), client, None, tables=_declared_tables(stem))


def _declared_tables(stem: str) -> Mapping[str, Sequence[str]] | None:
    from labkit.app import protocol

    return next((dict(lab.tables) for lab in protocol.all_labs() if lab.stem == stem), None)


def _git_commit() -> str:
    """The checkout's commit, with `-dirty` when files differ from it; 'unknown' without git or a checkout."""
    try:
        result = run(["git", "-C", str(paths.project_root()), "describe", "--always", "--dirty", "--abbrev=40"],
                     10, check=False)
    except CommandError:
        return "unknown (git is not installed)"
    return result.stdout.strip() if result.exit_code == 0 else "unknown (not a git checkout)"

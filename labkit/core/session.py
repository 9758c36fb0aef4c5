"""A notebook's session: live against the engine, or replaying committed results where none answers.

The notebook opens one session; each lab experiment goes through :meth:`LabSession.record` (several tables) or
:meth:`LabSession.measure` (one), which runs it live and saves its tables at once, each with its parameters and
times, or reads the recorded tables back (replay). Live tables must carry the columns their lab declares.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import docker
import pandas as pd

from labkit import paths
from labkit.core.claims import CLAIMS_TABLE, ClaimLedger
from labkit.core.lab import Lab
from labkit.core.results import ResultStore, utc_now
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
            "git_commit": git_commit(),
            "experiments": {},
        }

    @classmethod
    def replaying(cls, lab: Lab, recorded: ResultStore, quick: bool = False) -> LabSession:
        """A session that replays `recorded` (a folder of `lab`'s tables) and knows `lab`'s declared tables."""
        return cls(lab.stem, quick, recorded.folder.parent, None, recorded, tables=dict(lab.tables))

    @property
    def live(self) -> bool:
        return self.replay is None

    @property
    def engine_version(self) -> str:
        """The Docker Engine's version the numbers come from (this run's, or the recording's when replaying)."""
        return str(self.provenance.get("fingerprint", {}).get("engine_version", "?"))

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

    def unrecorded(self, table: str) -> pd.DataFrame | None:
        """In a replay of a recording made before the lab measured `table`: that table with its declared columns
        and no rows, so that its section says it was not recorded rather than failing; None otherwise."""
        declared = self.tables or {}
        if table not in declared:
            raise BadParameter(f"table {table!r} is not one of {self.stem}'s tables.",
                               f"Declare it in the lab's LAB (tables=…); declared: {', '.join(declared)}.")
        if self.replay is None or table in self.replay.tables():
            return None
        return pd.DataFrame(columns=list(declared[table]))

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
        folder that keeps what the earlier experiments measured; any other error of the docker SDK reaches the
        notebook as a LabkitError with a hint (:func:`labkit.instruments.engine.engine_error`), never raw.
        """
        if self.replay is not None:
            return {name: self.replay.read_table(name) for name in tables}
        assert self.store is not None
        started = utc_now()
        try:
            frames = dict(run())
        except Exception as exc:
            kept = f" What the earlier experiments measured is kept in {self.store.folder}."
            if not engine.timed_out(exc) and self.client is not None and not engine.answers(self.client):
                raise EngineLost(f"The Docker Engine stopped answering during the experiment {experiment!r}.",
                                 f"What the earlier experiments measured is kept in {self.store.folder}. Start "
                                 "the engine again (`labkit setup`) and re-run the notebook.") from exc
            translated = engine.engine_error(exc, f"the experiment {experiment!r}", kept)
            if translated is not None:
                raise translated from exc
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

    def parameters(self, table: str) -> dict[str, Any]:
        """The parameters the experiment that made `table` ran with: this run's, or the recording's in a replay
        (where they describe the host it was measured on, not this one)."""
        return dict(self.provenance["experiments"][table]["parameters"])

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
            source = (f"**Live run** `{self.run_id}` — every number below is measured now, on {where}"
                      f"{' (quick mode: fewer repeats)' if self.quick else ''}.")
        else:
            source = (f"> ⚠️ **REPLAYED RESULTS — nothing below was measured in this execution.** No Docker Engine "
                      f"answers here, so the tables and plots come from `{self.replay.folder.name}/` in "
                      f"`data/results/`, measured on {where}, from {p.get('started_utc')} to {p.get('ended_utc')} "
                      f"(run `{p.get('run_id')}`, quick={p.get('quick')}, commit "
                      f"`{str(p.get('git_commit'))[:12]}`).")
        return source + machine + bench_times(self.stem)


def bench_times(stem: str) -> str:
    """A sentence saying how long the `make bench` in data/bench/ took to execute notebook `stem` in quick and in
    full mode (s, rounded), when, and on how many cores and which cgroup version: what a reader can expect of a
    run. "" when that bench did not time it. Dated, not called the newest: a reused execution keeps its banner."""
    table, provenance = paths.bench_dir() / "bench.csv", paths.bench_dir() / "provenance.json"
    if not (table.exists() and provenance.exists()):
        return ""
    bench = pd.read_csv(table)
    timed = bench[(bench["group"] == "notebook") & (bench["item"] == stem) & (bench["note"] == "ok")]
    seconds = dict(zip(timed["condition"], timed["value"], strict=True))
    took = " and ".join(f"{seconds[mode]:,.0f} s {mode}" for mode in ("quick", "full") if mode in seconds)
    if not took:
        return ""
    made = json.loads(provenance.read_text())
    machine = made["fingerprint"]
    return (f" `make bench` on {str(made['started_utc'])[:10]} ({machine['cores']} cores, cgroup "
            f"{machine['cgroup_version']}) executed this notebook in {took}.")


def results_root() -> Path:
    """Where live runs write: LABKIT_RESULTS_DIR (set by `labkit run`) or build/results."""
    override = os.environ.get("LABKIT_RESULTS_DIR")
    return Path(override).resolve() if override else paths.build_dir() / "results"


def open_session(lab: Lab, mode: str = "auto", quick: bool = False) -> LabSession:
    """Open a session for `lab` (its module's ``LAB``): `live` needs an engine, `replay` needs recorded results,
    `auto` prefers live. A live session records only the tables `lab` declares, with their columns."""
    if not isinstance(lab, Lab):
        raise BadParameter(f"open_session takes a lab's declaration (its module's LAB), not {lab!r}.",
                           "Pass the lab module's LAB, e.g. "
                           "open_session(what_a_container_is.LAB, mode=mode, quick=quick).")
    if mode not in MODES:
        raise BadParameter(f"mode={mode!r} is not a session mode.", f"Choose one of {list(MODES)}.")
    # The notebook's tables are shown whole: pandas would cut a claim's wording or caveat at 50 characters
    # ("…") and hide middle columns of a wide matrix, in JupyterLab and in the book alike.
    pd.set_option("display.max_colwidth", None, "display.max_columns", None)
    recorded = ResultStore(paths.recorded_results_dir() / lab.stem)
    if mode == "replay":
        recorded.read_provenance()  # a clear error when nothing was recorded
        return LabSession.replaying(lab, recorded, quick)
    try:
        client = engine.connect()
    except engine.EngineUnavailable:
        if mode == "live" or not (recorded.folder / "provenance.json").exists():
            raise
        log.warning("no engine answers: replaying %s", recorded.folder)
        return LabSession.replaying(lab, recorded, quick)
    return LabSession(lab.stem, quick, results_root(), client, None, tables=dict(lab.tables))


# Folders that hold code a run executes: a file there that git does not track makes the tree dirty (`git describe
# --dirty` ignores untracked files, so a lab never added to git looked committed).
CODE_FOLDERS = ("labkit", "notebooks", "tests")
# What a recording writes: its own changes there do not make the tree it runs from dirty.
RESULTS_FOLDER = "data/results"


def git_commit(root: Path | None = None) -> str:
    """The commit of the checkout at `root` (default: this project), with `-dirty` when :func:`uncommitted` names
    a path; 'unknown' without git or a checkout. LABKIT_GIT_COMMIT, when set, is the answer: `labkit guest run` sets
    it for the lab machine, which reads the host's checkout read-only and has no git (labkit.app.guest_run)."""
    pinned = os.environ.get("LABKIT_GIT_COMMIT")
    if pinned:
        return pinned
    root = root or paths.project_root()
    try:
        head = run(["git", "-C", str(root), "rev-parse", "HEAD"], 10, check=False)
    except CommandError:
        return "unknown (git is not installed)"
    if head.exit_code != 0:
        return "unknown (not a git checkout)"
    return head.stdout.strip() + ("-dirty" if uncommitted(root) else "")


def uncommitted(root: Path | None = None) -> list[str]:
    """Paths of the checkout at `root` (default: this project) that its commit does not hold as they are: tracked
    files changed or staged anywhere but under data/results/, and untracked files under labkit/, notebooks/ or
    tests/."""
    root = root or paths.project_root()
    status = run(["git", "-C", str(root), "status", "--porcelain", "-z", "--untracked-files=all", "--", ".",
                  f":(exclude){RESULTS_FOLDER}"], 30).stdout
    entries = iter(status.split("\0"))
    changed = []
    for entry in entries:
        code, path = entry[:2], entry[3:]
        if code[:1] in ("R", "C"):
            next(entries, None)  # a rename or copy is followed by the path it came from
        if path and (code != "??" or path.startswith(tuple(f"{folder}/" for folder in CODE_FOLDERS))):
            changed.append(path)
    return changed


def require_committed(root: Path | None = None) -> None:
    """Refuse (NotPrepared, naming the paths) to record results from a tree whose code its commit does not hold:
    the provenance of a recording names a commit, and that commit must be the code that made it."""
    changed = uncommitted(root)
    if changed:
        shown = ", ".join(changed[:10]) + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
        raise NotPrepared(f"results are recorded only from a committed tree; not committed: {shown}.",
                          "Commit first (`git add` the new files, then `git commit`), then record again "
                          "(`make record`).")

"""A notebook's session: live against the engine, or replaying committed results where none answers.

The notebook opens one session; each lab experiment goes through :meth:`LabSession.measure`, which runs it
(live) and saves its table at once, or reads the recorded table back (replay).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pandas as pd

from labkit import paths
from labkit.app.claims import ClaimLedger
from labkit.app.results import ResultStore, utc_now
from labkit.instruments import engine, measure
from labkit.instruments.engine import Scope
from labkit.instruments.shell import CommandError, run

log = logging.getLogger("labkit.session")

MODES = ("auto", "live", "replay")


class LabSession:
    """State shared by the experiments of one notebook execution: live, or replaying `replay` when given."""

    def __init__(self, topic: str, quick: bool, results_root: Path,
                 client: docker.DockerClient | None, replay: ResultStore | None) -> None:
        self.topic = topic
        self.quick = quick
        self.results_root = results_root
        self.client = client
        self.run_id = engine.new_run_id()
        self.claims = ClaimLedger()
        self.replay = replay
        self.store = None if replay else ResultStore.partial(results_root, topic, self.run_id)
        self.provenance: dict[str, Any] = replay.read_provenance() if replay else {
            "topic": topic,
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
            raise RuntimeError("this session replays recorded results: there is no engine to use.")
        return self.client

    def require_root(self, why: str) -> None:
        """PermissionError saying what needs root, before a live experiment starts (replay needs nothing)."""
        if self.live and os.geteuid() != 0:
            raise PermissionError(f"{why} needs root (uid 0; this is uid {os.geteuid()}): run it as root, "
                                  "e.g. `sudo make lab`, or replay the recorded results with mode='replay'.")

    def scope(self) -> Scope:
        """Labels for one experiment's docker objects, removed when the `with` block ends."""
        return Scope(self.engine, self.run_id, lab=self.topic)

    def measure(self, name: str, experiment: Callable[[], pd.DataFrame], **parameters: Any) -> pd.DataFrame:
        """Run `experiment` and save its table now (live), or read the recorded table (replay)."""
        if self.replay is not None:
            return self.replay.read_table(name)
        assert self.store is not None
        started = utc_now()
        frame = experiment()
        self.store.write_table(name, frame)
        self.provenance["experiments"][name] = {
            "parameters": parameters, "started_utc": started, "ended_utc": utc_now(), "rows": len(frame)}
        self.store.write_provenance(self.provenance)
        return frame

    def finish(self) -> Path:
        """Save the claims, stamp the end time and publish the results folder; return where it is."""
        if self.replay is not None:
            return self.replay.folder
        assert self.store is not None
        self.store.write_table("claims", self.claims.frame())
        self.provenance["ended_utc"] = utc_now()
        self.store.write_provenance(self.provenance)
        return self.store.publish(self.results_root, self.topic).folder

    def banner(self) -> str:
        """Markdown that says where the numbers below come from."""
        p = self.provenance
        fp = p.get("fingerprint", {})
        where = (f"{fp.get('os', '?')}, kernel {fp.get('kernel', '?')}, {fp.get('arch', '?')}, "
                 f"{fp.get('cores', '?')} cores, cgroup {fp.get('cgroup_version', '?')}, "
                 f"Docker Engine {fp.get('engine_version', '?')} ({fp.get('storage_driver', '?')})")
        if self.replay is None:
            return (f"**Live run** `{self.run_id}` — every number below is measured now, on {where}"
                    f"{' (quick mode: fewer repeats)' if self.quick else ''}.")
        return (f"> ⚠️ **REPLAYED RESULTS — nothing below was measured in this execution.** No Docker Engine "
                f"answers here, so the tables and plots come from `{self.replay.folder.name}/` in "
                f"`data/results/`, measured on {where}, from {p.get('started_utc')} to {p.get('ended_utc')} "
                f"(run `{p.get('run_id')}`, quick={p.get('quick')}, commit `{str(p.get('git_commit'))[:12]}`).")


def results_root() -> Path:
    """Where live runs write: LABKIT_RESULTS_DIR (set by `labkit run`) or build/results."""
    override = os.environ.get("LABKIT_RESULTS_DIR")
    return Path(override).resolve() if override else paths.build_dir() / "results"


def open_session(topic: str, mode: str = "auto", quick: bool = False) -> LabSession:
    """Open a session: `live` needs an engine, `replay` needs recorded results, `auto` prefers live."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: choose one of {list(MODES)}.")
    recorded = ResultStore(paths.recorded_results_dir() / topic)
    if mode == "replay":
        recorded.read_provenance()  # a clear error when nothing was recorded
        return LabSession(topic, quick, recorded.folder.parent, None, recorded)
    try:
        client = engine.connect()
    except engine.EngineUnavailable:
        if mode == "live" or not (recorded.folder / "provenance.json").exists():
            raise
        log.warning("no engine answers: replaying %s", recorded.folder)
        return LabSession(topic, quick, recorded.folder.parent, None, recorded)
    return LabSession(topic, quick, results_root(), client, None)


def _git_commit() -> str:
    """The checkout's commit, with `-dirty` when files differ from it; 'unknown' without git or a checkout."""
    try:
        result = run(["git", "-C", str(paths.project_root()), "describe", "--always", "--dirty", "--abbrev=40"],
                     10, check=False)
    except CommandError:
        return "unknown (git is not installed)"
    return result.stdout.strip() if result.exit_code == 0 else "unknown (not a git checkout)"

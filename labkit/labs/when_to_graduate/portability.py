"""Notebook 13's section 4, the chapter's "The image is portable; the runtime is replaceable": the app image this
engine built, saved with ``docker save`` and run unchanged by the other runtimes found on this host
(:mod:`labkit.instruments.runtimes`: containerd through ``ctr``, podman), with the output and the image's config
digest compared, and each runtime's ``run --rm`` timed, interleaved."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import images, measure, runtimes, shell, undo
from labkit.instruments.engine import Scope, docker_cli
from labkit.labs.when_to_graduate.declaration import APP_BASE
from labkit.labs.when_to_graduate.orchestrator import build_app

TABLE = "portability"
COMMAND = ("cat", "/www/index.html")  # what each runtime runs: the version the image serves
WARMUP = 1  # an untimed round first: the first run of an image on a runtime prepares its snapshot
DOCKER, PODMAN = runtimes.DOCKER, runtimes.PODMAN


def _experiment(lab: LabSession, repeats: int) -> pd.DataFrame:
    missing = runtimes.unavailable()
    with ExitStack() as stack, undo.temporary_folder("labkit-13-portable-") as folder:
        scope: Scope = stack.enter_context(lab.scope())
        image = build_app(scope, images.require_base(lab.engine, APP_BASE).tag, "v1", healthy=True).tag
        archive = Path(folder) / "app.tar"
        shell.run([docker_cli(), "save", "--output", str(archive), image], runtimes.RUN_TIMEOUT_S)
        ran = [stack.enter_context(runtimes.docker(image, COMMAND))]
        others = {runtimes.CONTAINERD: lambda: runtimes.containerd(archive, lab.run_id, scope.scope_id, COMMAND),
                  PODMAN: lambda: runtimes.podman(archive, COMMAND)}
        for name, loaded in others.items():
            if name not in missing:
                try:
                    ran.append(stack.enter_context(loaded()))
                except runtimes.CannotRun as exc:
                    missing[name] = str(exc)
        outputs: dict[str, list[str]] = {r.name: [] for r in ran}

        def timed(runtime: runtimes.Runtime) -> Callable[[], object]:
            return lambda: outputs[runtime.name].append(runtime.run())

        timings = measure.compare({r.name: timed(r) for r in ran}, repeats, WARMUP)
        rows = [{"runtime": r.name, "version": r.version, "config_digest": r.config_digest,
                 "output": outputs[r.name][WARMUP + t.repeat], "repeat": t.repeat, "position": t.position,
                 "wall_s": t.wall_s, "missing": ""}
                for r in ran for t in timings[timings["method"] == r.name].itertuples()]
        rows += [{"runtime": name, "version": "", "config_digest": "", "output": "", "repeat": -1, "position": -1,
                  "wall_s": float("nan"), "missing": why} for name, why in missing.items()]
        return pd.DataFrame(rows)


@dataclass(frozen=True)
class PortabilityResult:
    """`runs`: one row per timed run (runtime, version, config_digest, output, repeat, position, wall_s) and one
    per runtime that could not run here (`missing` says why, the rest blank)."""

    runs: pd.DataFrame

    @property
    def recorded(self) -> bool:
        """False in a replay of a recording made before the section existed."""
        return not self.runs.empty

    @property
    def ran(self) -> pd.DataFrame:
        return self.runs[self.runs["missing"].fillna("") == ""]

    @property
    def missing(self) -> dict[str, str]:
        gone = self.runs[self.runs["missing"].fillna("") != ""]
        return dict(zip(gone["runtime"], gone["missing"], strict=True))

    @property
    def table(self) -> pd.DataFrame:
        """One row per runtime that ran: version, the config digest it reports, the outputs seen, and the
        median time of `run --rm` with its interval (s) and its ratio to Docker's."""
        if self.ran.empty:
            return pd.DataFrame()
        times = measure.summary_table(self.ran, floor=DOCKER, group="runtime")
        first = self.ran.groupby("runtime", sort=False).agg(
            version=("version", "first"), config_digest=("config_digest", "first"),
            outputs=("output", lambda o: " / ".join(sorted(set(map(str, o))))))
        return first.join(times[["n", "median", "ci_low", "ci_high", "coverage", "ratio_to_floor"]])

    def same_everywhere(self) -> bool:
        """Every runtime that ran printed Docker's output, and reports Docker's config digest."""
        table = self.table
        return bool(len(table) > 1 and (table["outputs"] == table.loc[DOCKER, "outputs"]).all()
                    and (table["config_digest"] == table.loc[DOCKER, "config_digest"]).all())

    def others(self) -> list[str]:
        return [name for name in self.table.index if name != DOCKER]

    def conclusion(self) -> str:
        table = self.table
        if table.empty:
            return "Not recorded: this recording was made before the section existed."
        lines = [f"- **{name}** ({r.version}): printed `{r.outputs}`, config digest `{r.config_digest[:19]}…`, "
                 f"`run --rm` {r['median']:.2f} s (interval {r.ci_low:.2f}–{r.ci_high:.2f} s, "
                 f"{r.coverage:.0%}; {r.ratio_to_floor:.2f}× Docker's)" for name, r in table.iterrows()]
        lines += [f"- **{name}**: not run here — {why}" for name, why in self.missing.items()]
        if PODMAN in table.index:
            lines.append(f"\npodman ran with `{' '.join(runtimes.PODMAN_LIMITS)}`: as root it asks for more open "
                         "files and processes than a root without CAP_SYS_RESOURCE (as on the host measured here) may "
                         "grant, and fails without them.")
        verdict = ("the same image ran unchanged under each runtime that could run a container here, with the same "
                   "output and the same config digest" if self.same_everywhere() else
                   "the runtimes did not all agree" if self.others() else "no other runtime could run here")
        return "\n".join(lines) + f"\n\nSo {verdict}. Each time is one `run --rm` of the CLI as a reader types it " \
            "(create, start, the command, removal); the runtimes do different work around the same container " \
            "(Docker's daemon and containerd, containerd alone, podman with no daemon), so the times compare " \
            "those paths, not the image."


def run_portability(lab: LabSession, repeats: int) -> PortabilityResult:
    """The app image run by every runtime found here, `repeats` interleaved timed runs each (see the module)."""
    measure.validate_repeats(repeats)
    if (missing := lab.unrecorded(TABLE)) is not None:
        return PortabilityResult(missing)
    return PortabilityResult(lab.measure(TABLE, lambda: _experiment(lab, repeats), repeats=repeats,
                                         warmup=WARMUP))

"""Section 2: Dockerfiles A and B rebuilt over the scripted history, with each builder, interleaved per edit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from labkit.core.results import rows_where
from labkit.core.session import LabSession
from labkit.instruments import builds, measure, undo
from labkit.instruments.buildlog import BUILDERS
from labkit.labs.build_cache.declaration import (
    BASE,
    CHANGING,
    DOCKERFILE_MEANING,
    DOCKERFILES,
    HISTORY,
    INSTALL_MARK,
    LAB,
    NO_CHANGE,
    SOURCE,
    STEM,
    Edit,
    isolated_base,
    packages_installed,
    pip_base,
    validate_builders,
    validate_history,
    wheelhouse,
    write_context,
)

COLD = "cold"


@dataclass(frozen=True)
class RebuildResult:
    """`rebuilds`: one row per build — the pass over the history (`repeat`), the build's place among the builds of
    its edit (`order`), builder, Dockerfile, edit (edit_index 0 is the cold build, with --no-cache), wall_s (s),
    cached and executed steps (FROM not counted), whether the dependency install ran and how many packages it
    installed, the first step that missed the cache, the build context and the image size (bytes). `steps`: one
    row per step of each build."""

    rebuilds: pd.DataFrame
    steps: pd.DataFrame

    @property
    def builders(self) -> list[str]:
        return list(dict.fromkeys(self.rebuilds["builder"]))

    @property
    def repeats(self) -> int:
        """Passes over the history (each from a base of its own, so each starts cold)."""
        return int(self.rebuilds["repeat"].nunique())

    @property
    def edits(self) -> pd.DataFrame:
        """The rebuilds after an edit (the cold builds left out)."""
        return self.rebuilds[self.rebuilds["edit_index"] > 0]

    @property
    def install_makes_venv(self) -> bool:
        """Whether the install step also made the venv (``python3 -m venv``), as in recordings made before the pip
        base: read from the steps' instructions (False without steps)."""
        if self.steps.empty:
            return False
        instructions = self.steps["instruction"].astype(str)
        return bool((instructions.str.contains(INSTALL_MARK) & instructions.str.contains("-m venv")).any())

    def _of(self, builder: str, dockerfile: str, kind: str | None = None) -> pd.DataFrame:
        rows = rows_where(self.rebuilds, builder=builder, dockerfile=dockerfile)
        return rows[rows["edit_index"] > 0] if kind is None else rows[rows["kind"] == kind]

    def total_s(self, builder: str, dockerfile: str) -> float:
        """Seconds spent rebuilding over one pass of the history (the cold build not counted; mean over passes)."""
        return float(self._of(builder, dockerfile)["wall_s"].sum()) / self.repeats

    def ratio(self, builder: str) -> float:
        """B's total rebuild time over A's."""
        return self.total_s(builder, "B") / self.total_s(builder, "A")

    def median_s(self, builder: str, dockerfile: str, kind: str) -> float:
        return float(self._of(builder, dockerfile, kind)["wall_s"].median())

    def cold_s(self, builder: str, dockerfile: str) -> float:
        return self.median_s(builder, dockerfile, COLD)

    def executed(self, builder: str, dockerfile: str, kind: str) -> list[int]:
        return [int(n) for n in self._of(builder, dockerfile, kind)["executed"]]

    def fewer_steps(self, builder: str) -> tuple[int, int]:
        """(source edits on which A executed fewer steps than B, source edits), pairing each pass's edits."""
        a, b = self.executed(builder, "A", SOURCE), self.executed(builder, "B", SOURCE)
        return sum(x < y for x, y in zip(a, b, strict=True)), len(a)

    def install_reran(self, builder: str, dockerfile: str, kinds: Sequence[str] = CHANGING) -> tuple[int, int]:
        """(rebuilds that re-ran the dependency install, rebuilds) among the edits of `kinds`, over every pass."""
        rows = self._of(builder, dockerfile)
        rows = rows[rows["kind"].isin(kinds)]
        return int(rows["install_ran"].sum()), len(rows)

    def source_ratios(self, builder: str) -> pd.Series:
        """B's wall time over A's for each source-only edit of each pass (A and B built one after the other),
        indexed by (repeat, edit_index)."""
        rows = rows_where(self.edits, builder=builder, kind=SOURCE)
        wall = rows.pivot_table(index=["repeat", "edit_index"], columns="dockerfile", values="wall_s")
        return wall["B"] / wall["A"]

    def ratio_summary(self, builder: str) -> measure.Summary:
        """Median of :meth:`source_ratios` with its order-statistic interval."""
        return measure.summarize(self.source_ratios(builder).tolist())

    def times(self) -> pd.DataFrame:
        """Per builder, Dockerfile and kind of edit: builds (n), median wall time (s) and its interval, and the
        packages the installs that ran installed (lowest–highest)."""
        rows = []
        for (builder, dockerfile, kind), frame in self.rebuilds.groupby(["builder", "dockerfile", "kind"], sort=False):
            summary = measure.summarize(frame["wall_s"].tolist())
            ran = frame.loc[frame["install_ran"].astype(bool), "packages_installed"]
            rows.append({"builder": builder, "dockerfile": dockerfile, "kind": kind,
                         **{k: v for k, v in asdict(summary).items() if k in ("n", "median", "ci_low", "ci_high",
                                                                               "coverage")},
                         "packages_installed": f"{ran.min()}–{ran.max()}" if len(ran) else "(not run)"})
        return pd.DataFrame(rows).set_index(["builder", "dockerfile", "kind"])

    def packages(self, builder: str, dockerfile: str, kind: str) -> pd.Series:
        """How many rebuilds installed how many packages (packages → rebuilds), among the installs that ran."""
        rows = self._of(builder, dockerfile, kind)
        return rows.loc[rows["install_ran"].astype(bool), "packages_installed"].value_counts().sort_index()

    def packages_text(self, builder: str, dockerfile: str = "B", kind: str = SOURCE) -> str:
        """E.g. "9 packages in 6 and 7 in 1 of the 7 source-only rebuilds", from :meth:`packages`."""
        counts = self.packages(builder, dockerfile, kind).sort_values(ascending=False)
        parts = " and ".join(f"{int(n)} in {int(builds_)}" for n, builds_ in counts.items())
        return f"packages installed: {parts} of the {len(self._of(builder, dockerfile, kind))} {kind} rebuilds"

    def per_edit(self, builder: str) -> pd.DataFrame:
        """Median rebuild wall time (s) over the passes per edit (rows, labelled ``<index> <kind>``) and
        Dockerfile (columns)."""
        rows = self.edits[self.edits["builder"] == builder]
        table = rows.pivot_table(index=["edit_index", "kind"], columns="dockerfile", values="wall_s",
                                 aggfunc="median")
        table.index = [f"{index} {kind}" for index, kind in table.index]
        return table.rename(columns=DOCKERFILE_MEANING)

    def counts(self) -> pd.DataFrame:
        """Steps executed per build in the first pass (edit rows × builder and Dockerfile columns), as the builds'
        logs report them."""
        first = self.rebuilds[self.rebuilds["repeat"] == self.rebuilds["repeat"].min()]
        return first.pivot_table(index=["edit_index", "edit", "kind"], columns=["builder", "dockerfile"],
                                 values="executed", aggfunc="first")

    def conclusion(self) -> str:
        parts = []
        for builder in self.builders:
            a_src, b_src = self.median_s(builder, "A", SOURCE), self.median_s(builder, "B", SOURCE)
            ratio = self.ratio_summary(builder)
            reran, changing = self.install_reran(builder, "B")
            parts.append(
                f"With **{builder}**, a source-only edit rebuilt in a median **{a_src:.2f} s** with A and "
                f"**{b_src:.2f} s** with B; edit by edit, B took a median **{ratio.median:.1f}×** A's time "
                f"({_interval(ratio)}; {ratio.n} source edit{'' if ratio.n == 1 else 's'}). Over one pass of the "
                f"history B spent **{self.total_s(builder, 'B'):.0f} s** against A's "
                f"**{self.total_s(builder, 'A'):.0f} s** "
                f"(**{self.ratio(builder):.1f}×**). B re-ran the dependency install on {reran} of {changing} rebuilds "
                f"after an edit that changed a file ({self.packages_text(builder)}); A on "
                f"{self.install_reran(builder, 'A')[0]}. A rebuild with nothing changed took "
                f"{self.median_s(builder, 'A', NO_CHANGE):.2f} s (A) and "
                f"{self.median_s(builder, 'B', NO_CHANGE):.2f} s (B): the floor of a build that is all cache hits.")
        return "**What we measured.** " + " ".join(parts)


def _interval(summary: measure.Summary) -> str:
    if summary.n < 2:
        return "one pair, no interval"
    return f"{summary.ci_low:.1f}–{summary.ci_high:.1f}× with {summary.coverage:.0%} coverage"


def build_order(index: int, builders: Sequence[str]) -> list[tuple[str, str]]:
    """The builds of edit `index`, every builder × Dockerfile, rotated by one place per edit so that each takes
    each place in turn (e.g. 2 builders: BuildKit A, BuildKit B, legacy A, legacy B, then BuildKit B, legacy A, …)."""
    pairs = [(builder, name) for builder in builders for name in DOCKERFILES]
    shift = index % len(pairs)
    return pairs[shift:] + pairs[:shift]


def _build_row(repeat: int, order: int, builder: str, dockerfile: str, index: int, edit: Edit | None,
               made: builds.Build, image_bytes: int) -> dict[str, Any]:
    install_ran = any(INSTALL_MARK in s.instruction and not s.cached for s in made.log.steps)
    return {"repeat": repeat, "order": order, "builder": builder, "dockerfile": dockerfile, "edit_index": index,
            "edit": edit.name if edit else "cold build (--no-cache)", "kind": edit.kind if edit else COLD,
            "wall_s": made.wall_s, "cached": made.log.cached, "executed": made.log.executed,
            "install_ran": install_ran, "packages_installed": packages_installed(made.text) if install_ran else 0,
            "first_executed": made.log.first_executed or "", "context_bytes": made.log.context_bytes,
            "image_bytes": image_bytes}


def run_rebuilds(lab: LabSession, history: Sequence[Edit] = HISTORY, builders: Sequence[str] = BUILDERS,
                 repeats: int = 1) -> RebuildResult:
    """`repeats` passes over `history`: build A and B cold with each builder, then apply each edit to every
    context and rebuild each, every builder × Dockerfile in an order rotated per edit (:func:`build_order`), so
    drift on the machine hits all alike. Each pass starts from a base of its own per Dockerfile (cold, and A's
    cache apart from B's), each made from the pip base (:func:`pip_base`: the venv with pip is made once, not in
    every install).

    No build passes ``--label``: the images inherit the run's labels from the pass's base, so the legacy builder
    runs no LABEL steps of its own and both builders do the same Dockerfile's work."""
    snapshots = validate_history(history)
    validate_builders(builders)
    measure.validate_repeats(repeats)

    def experiment() -> dict[str, pd.DataFrame]:
        client = lab.engine
        wheels = wheelhouse()
        rows: list[dict[str, Any]] = []
        step_rows: list[pd.DataFrame] = []
        with lab.scope() as scope, undo.temporary_folder("labkit-03-") as scratch:
            pip = pip_base(client, scope, Path(scratch) / "pip")
            for repeat in range(repeats):
                bases = {name: isolated_base(client, scope, Path(scratch) / f"base-{repeat}-{name}",
                                             f"{repeat}-{name}", start=pip) for name in DOCKERFILES}
                for index, files in enumerate(snapshots):
                    for order, (builder, name) in enumerate(build_order(index, builders)):
                        folder = Path(scratch) / f"{repeat}-{builder}-{name}"
                        folder.mkdir(exist_ok=True)
                        write_context(folder, files, wheels, DOCKERFILES[name].format(base=bases[name]))
                        tag = f"labkit-exp/{STEM}-{name.lower()}:{builder}-{repeat}-{index}-{scope.scope_id}"
                        made = builds.build(folder, tag, scope, builder=builder, no_cache=index == 0,
                                            inherit_labels=True)
                        size = int(client.images.get(made.image_id).attrs["Size"])
                        edit = history[index - 1] if index else None
                        rows.append(_build_row(repeat, order, builder, name, index, edit, made, size))
                        step_rows.append(made.log.frame().drop(columns="builder").assign(
                            repeat=repeat, builder=builder, dockerfile=name, edit_index=index))
        steps = pd.concat(step_rows, ignore_index=True)[list(LAB.tables["steps"])]
        return {"rebuilds": pd.DataFrame(rows, columns=list(LAB.tables["rebuilds"])), "steps": steps}

    tables = lab.record("rebuilds", ("rebuilds", "steps"), experiment, edits=[e.name for e in history],
                        builders=list(builders), repeats=repeats, base=BASE, labels="inherited from the base",
                        venv="made once in the pip base, not by the install step")
    return RebuildResult(tables["rebuilds"], tables["steps"])

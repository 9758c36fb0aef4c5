"""Section 3: start time per base, interleaved."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import containers, images, measure
from labkit.instruments.shell import run
from labkit.labs.choosing_a_base_image.bases import BaseTable
from labkit.labs.choosing_a_base_image.declaration import (
    APP_ARGV,
    LIMITS,
    NODE_FAMILY,
    QUICK_BASES,
    RUNTIME_NAMES,
    app_argv,
    validate_bases,
    validate_extra_images,
)


@dataclass(frozen=True)
class StartResult:
    """`samples`: method (the base), repeat, position, wall_s — ``docker run --rm`` of the base's app (the same
    greeting with its own runtime), interleaved round by round."""

    samples: pd.DataFrame

    @cached_property
    def summary(self) -> pd.DataFrame:
        """Per base: n, median, q1, q3, ci_low, ci_high (s), coverage, and ratio_to_floor (to the fastest)."""
        medians = self.samples.groupby("method")["wall_s"].median()
        return measure.summary_table(self.samples, floor=str(medians.idxmin()))

    def ms(self, base: str, column: str = "median") -> float:
        return float(self.summary.loc[base, column]) * 1e3

    def node_family(self) -> list[str]:
        return [b for b in NODE_FAMILY[:3] if b in self.summary.index]

    @property
    def size_decides(self) -> bool | None:
        """Within the node family (one runtime, one app): whether the largest image's start interval lies wholly
        above the smallest's. None when fewer than two of them were measured."""
        family = self.node_family()
        if len(family) < 2:
            return None
        largest, smallest = family[0], family[-1]
        return self.ms(largest, "ci_low") > self.ms(smallest, "ci_high")

    def conclusion(self, table: BaseTable) -> str:
        s = self.summary
        parts = "; ".join(f"{b} {r['median'] * 1e3:.0f} ms [{r['ci_low'] * 1e3:.0f}, {r['ci_high'] * 1e3:.0f}]"
                          for b, r in s.sort_values("median").iterrows())
        family = self.node_family()
        if self.size_decides is None:
            node = "Fewer than two node images were measured, so size and runtime cannot be told apart here."
        else:
            sizes = ", ".join(f"{b} {table.mb(b):.0f} MB" for b in family)
            node = (f"The node images ({sizes}) run the same app with the same runtime: "
                    + ("the largest starts measurably slower than the smallest."
                       if self.size_decides else
                       "their start intervals overlap — a container's root filesystem is an overlay mount of "
                       "layers already on disk, so nothing is copied at start and size barely matters."))
        runtimes = self.by_runtime_ms()
        runtime_text = ", ".join(f"{name} {ms:.0f} ms" for name, ms in runtimes.items())
        return (f"**What we measured** (n = {int(s['n'].min())} starts per base, interleaved; median with an "
                f"order-statistic interval of coverage {s['coverage'].min():.1%}): {parts}. {node} By the runtime "
                f"that prints the greeting (median over its bases): {runtime_text} — the spread between runtimes, "
                f"{max(runtimes.values()) - min(runtimes.values()):.0f} ms, is what start time depends on here.")

    def by_runtime_ms(self) -> dict[str, float]:
        """Median start (ms) per runtime (the program the app runs: sh, python3, node, a static binary), each the
        median of its bases' medians, fastest first."""
        runtime = {base: RUNTIME_NAMES.get(argv[0], argv[0]) for base, argv in APP_ARGV.items()}
        medians = self.summary["median"].groupby(lambda base: runtime.get(str(base), str(base))).median() * 1e3
        return {str(name): float(ms) for name, ms in medians.sort_values().items()}


def run_startup(lab: LabSession, bases: Sequence[str] = QUICK_BASES, repeats: int = 5, warmup: int = 1,
                extra_images: Sequence[str] = (), extra_argv: Sequence[str] = ()) -> StartResult:
    """Wall time (s) of ``docker run --rm`` of each base's app, `repeats` interleaved rounds after `warmup`."""
    chosen = validate_bases(bases)
    measure.validate_repeats(repeats, warmup)
    extra = validate_extra_images(lab.client if lab.live else None, extra_images)

    def experiment() -> pd.DataFrame:
        client = lab.engine
        tags = {name: images.require_base(client, name).tag for name in chosen} | {name: name for name in extra}
        with lab.scope() as scope:
            starters: dict[str, Callable[[], Any]] = {
                name: partial(run, containers.cli_run_argv(scope, tag, app_argv(name, tuple(extra_argv)),
                                                           limits=LIMITS), 120)
                for name, tag in tags.items()}
            return measure.compare(starters, repeats, warmup)

    return StartResult(lab.measure("startup", experiment, bases=list(chosen), repeats=repeats, warmup=warmup,
                                   extra_images=list(extra)))

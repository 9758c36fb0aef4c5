"""Section 5: CPU quotas (``--cpus``), shares (``--cpu-shares``) and a noisy neighbour."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import stress
from labkit.instruments.limits import MIB, Limits, check_cpus
from labkit.instruments.sampler import CgroupSampler
from labkit.labs.cgroups_and_limits.declaration import (
    CPU_SAMPLE_COLUMNS,
    PIDS_LIMIT,
    RESTORED_FROM,
    SHARES_TOLERANCE,
    STARVED_BELOW,
    WAIT_S,
    WORK_COLUMNS,
)
from labkit.labs.cgroups_and_limits.rig import check_hz, check_positive, host_cores, stress_rig


def _work_rate(work: pd.DataFrame, start_s: float | None = None, end_s: float | None = None) -> float:
    """Work units per second from a cumulative (t_s, work_units) table, over [start_s, end_s] (default: all of
    it), interpolating between the program's reports."""
    t, units = work["t_s"].to_numpy(float), work["work_units"].to_numpy(float)
    start = t[0] if start_s is None else start_s
    end = t[-1] if end_s is None else end_s
    return float((np.interp(end, t, units) - np.interp(start, t, units)) / (end - start))


def _cpu_rate(samples: pd.DataFrame) -> float:
    """CPU seconds per wall second (cores) from first to last sample."""
    first, last = samples.iloc[0], samples.iloc[-1]
    return float((last["cpu_s"] - first["cpu_s"]) / (last["t_s"] - first["t_s"]))


def _program_times(output: str, origin_ns: int, condition: str) -> pd.DataFrame:
    work = stress.work(output)
    return pd.DataFrame({"condition": condition, "t_s": (work["t_ns"] - origin_ns) / 1e9,
                         "work_units": work["work_units"]}, columns=list(WORK_COLUMNS))


def _shifted(frame: pd.DataFrame, sampler: CgroupSampler, origin_ns: int) -> pd.DataFrame:
    """A sampler's frame with ``t_s`` moved to seconds since the CLOCK_MONOTONIC instant `origin_ns`."""
    return frame.assign(t_s=frame["t_s"] + (sampler.started_ns - origin_ns) / 1e9)


NO_QUOTA = "no --cpus"


@dataclass(frozen=True)
class CpuQuotaResult:
    """`samples` (condition, cpus, t_s, cpu_s, nr_periods, nr_throttled, throttled_s: the container's group) and
    `work` (condition, t_s, work_units: the program's own cumulative count). ``cpus`` is NaN without a quota."""

    samples: pd.DataFrame
    work: pd.DataFrame

    @cached_property
    def summary(self) -> pd.DataFrame:
        """Per condition: the quota asked (cores), the CPU rate measured (cores), their ratio, work per second
        and the share of CFS periods in which the container was throttled."""
        rows = []
        for condition, samples in self.samples.groupby("condition", sort=False):
            cpus, rate, last = samples["cpus"].iloc[0], _cpu_rate(samples), samples.iloc[-1]
            rows.append({"condition": condition, "quota_cores": cpus, "cpu_cores": rate,
                         "rate_over_quota": rate / cpus if not pd.isna(cpus) else np.nan,
                         "work_per_s": _work_rate(self.work[self.work["condition"] == condition]),
                         "throttled_periods": last["nr_throttled"] / last["nr_periods"] if last["nr_periods"] else 0.0})
        return pd.DataFrame(rows)

    @property
    def worst_deviation(self) -> float:
        """The largest |measured/quota − 1| over the conditions with a quota."""
        return float((self.summary["rate_over_quota"].dropna() - 1).abs().max())

    def conclusion(self) -> str:
        rows = self.summary
        quota = rows.dropna(subset=["quota_cores"])
        parts = [f"`{q.condition}` used {q.cpu_cores:.3f} cores ({q.rate_over_quota:.1%} of its quota, throttled in "
                 f"{q.throttled_periods:.0%} of its periods)" for q in quota.itertuples()]
        free = rows[rows["quota_cores"].isna()].iloc[0]
        return ("**What we measured.** " + "; ".join(parts) + f". Without `--cpus` the same program used "
                f"{free['cpu_cores']:.2f} cores of this host's {host_cores()} and was never throttled. Work done "
                "followed the CPU: " + ", ".join(f"{r.work_per_s:.0f}" for r in rows.itertuples())
                + " work units per second in that order. The quota is a ceiling enforced every 100 ms period: "
                "the container runs until it has used its share of the period, then waits for the next one.")

    def plot(self, axes: Sequence[Axes]) -> None:
        """CPU used per sampling interval (cores) with the quota as a line; throttled periods so far."""
        for condition, samples in self.samples.groupby("condition", sort=False):
            rate = samples["cpu_s"].diff() / samples["t_s"].diff()
            line, = axes[0].plot(samples["t_s"], rate, label=str(condition))
            if not pd.isna(samples["cpus"].iloc[0]):
                axes[0].axhline(samples["cpus"].iloc[0], color=line.get_color(), linestyle=":", linewidth=1)
            axes[1].plot(samples["t_s"], samples["nr_throttled"], color=line.get_color(), label=str(condition))
        axes[0].set_ylabel("CPU used (cores)")
        axes[0].set_title("CPU used per sampling interval (dotted: the quota)")
        axes[1].set_ylabel("throttled periods so far")
        axes[1].set_title("CFS periods in which the quota ran out")
        for ax in axes:
            ax.set_xlabel("time since the container started (s)")
            ax.legend(fontsize="small")


def _check_seconds(seconds: object) -> int:
    return check_positive(seconds, "seconds", "seconds", 3)


def run_cpu_quota(lab: LabSession, cpus: Sequence[float] = (0.5, 1.5), seconds: int = 3, threads: int = 2,
                  sample_hz: float = 10) -> CpuQuotaResult:
    """A busy program with `threads` threads runs `seconds` s under ``--cpus`` each of `cpus` (cores), then with
    no ``--cpus`` (only its fence: every core of the host); sampled at `sample_hz`."""
    cores = host_cores()
    quotas = [check_cpus(c, "cpus", cores) for c in cpus]
    seconds = _check_seconds(seconds)
    threads = check_positive(threads, "threads", "threads", 2)
    hz = check_hz(sample_hz)

    def experiment() -> dict[str, pd.DataFrame]:
        samples: list[pd.DataFrame] = []
        work: list[pd.DataFrame] = []
        with stress_rig(lab) as rig:
            for quota in [*quotas, None]:
                condition = NO_QUOTA if quota is None else f"--cpus {quota:g}"
                limits = Limits(64 * MIB, PIDS_LIMIT, quota or float(cores))
                options: dict[str, Any] = {"nano_cpus": 0} if quota is None else {}
                origin = time.perf_counter_ns()
                with rig.fence(f"cpu-{len(samples)}", Limits(256 * MIB, PIDS_LIMIT, float(cores))) as (_, parent), \
                        rig.container(["cpu", str(seconds), str(threads), "100"], stem=f"cpu-{len(samples)}",
                                      limits=limits, parent=parent, **options) as container, \
                        CgroupSampler(rig.group_of(container), 1 / hz, ("cpu", "throttling")) as sampler:
                    rig.go(container)
                    _, _, output = rig.finish(container)
                frame = _shifted(sampler.frame(), sampler, origin)
                samples.append(frame.assign(condition=condition, cpus=np.nan if quota is None else quota))
                work.append(_program_times(output, origin, condition))
        return {"cpu_samples": pd.concat(samples, ignore_index=True)[list(CPU_SAMPLE_COLUMNS)],
                "cpu_work": pd.concat(work, ignore_index=True)}

    tables = lab.record("cpu_quota", ("cpu_samples", "cpu_work"), experiment, cpus=list(quotas), seconds=seconds,
                        threads=threads, sample_hz=sample_hz, cores=cores)
    return CpuQuotaResult(tables["cpu_samples"], tables["cpu_work"])


@dataclass(frozen=True)
class SharesResult:
    """Two single-threaded busy containers pinned to CPU 0 with different ``--cpu-shares``: `samples`
    (container, shares, t_s, cpu_s) and `work` (container, shares, t_s, work_units), on one time axis."""

    samples: pd.DataFrame
    work: pd.DataFrame

    @cached_property
    def window(self) -> tuple[float, float]:
        """The seconds in which both programs were running (from both their own reports)."""
        spans = self.work.groupby("container")["t_s"].agg(["min", "max"])
        return float(spans["min"].max()), float(spans["max"].min())

    @cached_property
    def summary(self) -> pd.DataFrame:
        """Per container over the common window: shares, work per second, CPU cores."""
        start, end = self.window
        rows = []
        for name, work in self.work.groupby("container", sort=False):
            samples = self.samples[self.samples["container"] == name]
            t, cpu = samples["t_s"].to_numpy(float), samples["cpu_s"].to_numpy(float)
            rows.append({"container": name, "shares": int(work["shares"].iloc[0]),
                         "work_per_s": _work_rate(work, start, end),
                         "cpu_cores": float((np.interp(end, t, cpu) - np.interp(start, t, cpu)) / (end - start))})
        return pd.DataFrame(rows)

    @property
    def shares_ratio(self) -> float:
        s = self.summary
        return float(s["shares"].iloc[0] / s["shares"].iloc[1])

    @property
    def work_ratio(self) -> float:
        s = self.summary
        return float(s["work_per_s"].iloc[0] / s["work_per_s"].iloc[1])

    @property
    def cpu_ratio(self) -> float:
        s = self.summary
        return float(s["cpu_cores"].iloc[0] / s["cpu_cores"].iloc[1])

    @property
    def within_tolerance(self) -> bool:
        return abs(self.work_ratio / self.shares_ratio - 1) <= SHARES_TOLERANCE


    def plot(self, ax: Axes) -> Axes:
        """Each container's cumulative work over time, the common window shaded."""
        for name, work in self.work.groupby("container", sort=False):
            ax.plot(work["t_s"], work["work_units"], label=str(name))
        ax.axvspan(*self.window, color="grey", alpha=0.15, label="both running")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("work units done")
        ax.set_title("Two busy containers on one CPU, --cpu-shares 2:1")
        ax.legend(fontsize="small")
        return ax

    def conclusion(self) -> str:
        start, end = self.window
        return (f"**What we measured.** Both containers on CPU 0, {end - start:.2f} s of overlap: work rates "
                f"{self.summary['work_per_s'].iloc[0]:.0f} and {self.summary['work_per_s'].iloc[1]:.0f} units/s, a "
                f"ratio of {self.work_ratio:.2f} (CPU time ratio {self.cpu_ratio:.2f}) for shares in the ratio "
                f"{self.shares_ratio:.2f} — {abs(self.work_ratio / self.shares_ratio - 1):.1%} off, "
                + ("within" if self.within_tolerance else "outside")
                + f" the {SHARES_TOLERANCE:.0%} tolerance. Shares are a weight that matters only under contention: "
                "alone, either container could use the whole CPU.")


def run_cpu_shares(lab: LabSession, shares: tuple[int, int] = (1024, 512), seconds: int = 3,
                   sample_hz: float = 10) -> SharesResult:
    """Two busy single-threaded containers, ``--cpuset-cpus 0`` both, ``--cpu-shares`` `shares`, for `seconds` s."""
    if len(shares) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 2 for s in shares):
        raise BadParameter(f"shares={shares!r}: two whole numbers ≥ 2 are needed (the kernel's smallest weight).",
                           "E.g. shares=(1024, 512).")
    seconds = _check_seconds(seconds)
    hz = check_hz(sample_hz)

    def experiment() -> dict[str, pd.DataFrame]:
        names = [f"shares={s}" for s in shares]
        limits = Limits(64 * MIB, PIDS_LIMIT, 1.0)
        origin = time.perf_counter_ns()
        fence_limits = Limits(256 * MIB, PIDS_LIMIT, float(host_cores()))
        with stress_rig(lab) as rig, rig.fence("shares", fence_limits) as (_, parent), contextlib.ExitStack() as stack:
            started = [stack.enter_context(rig.container(["cpu", str(seconds), "1", "100"], stem=f"shares-{s}",
                                                         limits=limits, parent=parent, cpu_shares=s,
                                                         cpuset_cpus="0")) for s in shares]
            samplers = [stack.enter_context(CgroupSampler(rig.group_of(c), 1 / hz, ("cpu",))) for c in started]
            for container in started:
                rig.go(container)
            outputs = [rig.finish(c)[2] for c in started]
        samples = pd.concat([_shifted(s.frame(), s, origin).assign(container=n, shares=v)
                             for s, n, v in zip(samplers, names, shares, strict=True)], ignore_index=True)
        work = pd.concat([_program_times(o, origin, n).rename(columns={"condition": "container"}).assign(shares=v)
                          for o, n, v in zip(outputs, names, shares, strict=True)], ignore_index=True)
        return {"shares_samples": samples[["container", "shares", "t_s", "cpu_s"]],
                "shares_work": work[["container", "shares", "t_s", "work_units"]]}

    tables = lab.record("cpu_shares", ("shares_samples", "shares_work"), experiment, shares=list(shares),
                        seconds=seconds, sample_hz=sample_hz)
    return SharesResult(tables["shares_samples"], tables["shares_work"])


ALONE = "alone"
BESIDE_UNLIMITED = "beside an unlimited neighbour"


@dataclass(frozen=True)
class NeighbourResult:
    """`work` (condition, neighbour_threads, t_s, work_units): a single-threaded victim's work, alone (0
    neighbour threads) and beside a busy many-threaded neighbour without and with ``--cpus``."""

    work: pd.DataFrame

    @cached_property
    def summary(self) -> pd.DataFrame:
        rates = {c: _work_rate(w) for c, w in self.work.groupby("condition", sort=False)}
        return pd.DataFrame({"condition": list(rates), "work_per_s": list(rates.values()),
                             "of_alone": [r / rates[ALONE] for r in rates.values()]})

    def kept(self, condition: str) -> float:
        """The victim's work rate in `condition` over its rate alone."""
        return float(self.summary.set_index("condition").loc[condition, "of_alone"])

    @property
    def limited_condition(self) -> str:
        return str(self.summary["condition"].iloc[-1])


    def plot(self, ax: Axes) -> Axes:
        """The victim's work rate per condition, as a share of its rate alone."""
        summary = self.summary
        ax.bar(range(len(summary)), summary["of_alone"] * 100, color=["tab:green", "tab:red", "tab:blue"])
        ax.set_xticks(range(len(summary)), [c.replace("beside ", "beside\n") for c in summary["condition"]])
        ax.axhline(100, color="black", linewidth=1)
        ax.set_ylabel("victim's work rate (% of alone)")
        ax.set_title("A one-thread victim beside a busy neighbour")
        return ax

    def conclusion(self) -> str:
        unlimited, limited = self.kept(BESIDE_UNLIMITED), self.kept(self.limited_condition)
        threads = int(self.work["neighbour_threads"].max())
        return (f"**What we measured.** Beside a neighbour with {threads} busy threads and no `--cpus`, the "
                f"victim kept {unlimited:.0%} of the work rate it had alone; beside the same neighbour with "
                f"`{self.limited_condition.rsplit('with ', 1)[-1]}` it kept {limited:.0%}. "
                + ("That is starvation." if unlimited < STARVED_BELOW else
                   "It was slowed, not starved." if unlimited < RESTORED_FROM else
                   "It was not starved at all.")
                + " Docker gives every container its own cgroup with the same CPU weight, and the scheduler shares "
                "CPU between groups before it shares between threads: a container with many busy threads weighs no "
                "more than one with a single thread. A neighbour without limits still takes every idle cycle, "
                "and processes outside containers, memory and disk are not protected this way.")


def run_noisy_neighbour(lab: LabSession, seconds: int = 3, neighbour_threads: int | None = None,
                        neighbour_cpus: float = 0.5) -> NeighbourResult:
    """A victim (one busy thread, ``--cpus 1``) runs `seconds` s alone, then beside a neighbour with
    `neighbour_threads` busy threads (default 4 per core) and no ``--cpus``, then beside the same neighbour under
    ``--cpus <neighbour_cpus>``."""
    cores = host_cores()
    seconds = _check_seconds(seconds)
    threads = check_positive(neighbour_threads if neighbour_threads is not None else 4 * cores,
                              "neighbour_threads", "threads", 8)
    limited = check_cpus(neighbour_cpus, "neighbour_cpus", cores)

    def experiment() -> pd.DataFrame:
        conditions: dict[str, dict[str, Any] | None] = {ALONE: None, BESIDE_UNLIMITED: {"nano_cpus": 0},
                      f"beside a neighbour with --cpus {limited:g}": {"nano_cpus": round(limited * 1e9)}}
        victim_limits = Limits(64 * MIB, PIDS_LIMIT, 1.0)
        work = []
        with stress_rig(lab) as rig:
            for index, (condition, neighbour) in enumerate(conditions.items()):
                with rig.fence(f"neighbour-{index}", Limits(256 * MIB, 2 * PIDS_LIMIT, float(cores))) as (_, parent), \
                        contextlib.ExitStack() as stack:
                    busy = None
                    if neighbour is not None:  # busy first, so the victim starts into a loaded machine
                        busy = stack.enter_context(rig.container(["cpu", str(seconds + int(WAIT_S)), str(threads),
                                                                  "1000"], stem=f"neighbour-{index}", wait=False,
                                                                 limits=victim_limits, parent=parent, **neighbour))
                    origin = time.perf_counter_ns()
                    victim = stack.enter_context(rig.container(["cpu", str(seconds), "1", "100"],
                                                               stem=f"victim-{index}", limits=victim_limits,
                                                               parent=parent, wait=False))
                    work.append(_program_times(rig.finish(victim)[2], origin, condition)
                                .assign(neighbour_threads=0 if busy is None else threads))
                    if busy is not None and (busy.reload() or busy.status) != "running":
                        raise RuntimeError(f"the neighbour stopped before the victim finished ({busy.status}): "
                                           f"{busy.logs().decode()[-300:]}")
        return pd.concat(work, ignore_index=True)[["condition", "neighbour_threads", "t_s", "work_units"]]

    return NeighbourResult(lab.measure("neighbour_work", experiment, seconds=seconds, neighbour_threads=threads,
                                       neighbour_cpus=neighbour_cpus, cores=cores))

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

from labkit.core.results import rows_where
from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import stress
from labkit.instruments.limits import MIB, Limits, check_cpus
from labkit.instruments.measure import median_interval
from labkit.instruments.sampler import CgroupSampler
from labkit.labs.cgroups_and_limits.declaration import (
    CPU_SAMPLE_COLUMNS,
    NEIGHBOUR_COLUMNS,
    NEIGHBOUR_CPU_COLUMNS,
    NEIGHBOUR_TOLERANCE,
    PIDS_LIMIT,
    SHARES_SAMPLE_COLUMNS,
    SHARES_TOLERANCE,
    SHARES_WORK_COLUMNS,
    WAIT_S,
    WORK_COLUMNS,
)
from labkit.labs.cgroups_and_limits.rig import (
    StressRig,
    T,
    by_mode,
    check_hz,
    check_positive,
    host_cores,
    stress_rig,
)


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
    """`samples` (round, condition, cpus, t_s, cpu_s, nr_periods, nr_throttled, throttled_s: the container's
    group) and `work` (round, condition, t_s, work_units: the program's own cumulative count). ``cpus`` is NaN
    without a quota; each round runs every condition once. `host_cores`: the cores of the host it was measured on
    (the recording's, in a replay), all of which the condition without a quota may use."""

    samples: pd.DataFrame
    work: pd.DataFrame
    host_cores: int

    @cached_property
    def per_round(self) -> pd.DataFrame:
        """Per round and condition: the quota asked (cores), the CPU rate measured (cores), their ratio, work per
        second and the share of CFS periods in which the container was throttled."""
        rows = []
        for (round_, condition), samples in self.samples.groupby(["round", "condition"], sort=False):
            cpus, rate, last = samples["cpus"].iloc[0], _cpu_rate(samples), samples.iloc[-1]
            work = rows_where(self.work, round=round_, condition=condition)
            rows.append({"round": round_, "condition": condition, "quota_cores": cpus, "cpu_cores": rate,
                         "rate_over_quota": rate / cpus if not pd.isna(cpus) else np.nan,
                         "work_per_s": _work_rate(work),
                         "throttled_periods": last["nr_throttled"] / last["nr_periods"] if last["nr_periods"] else 0.0})
        return pd.DataFrame(rows)

    @cached_property
    def summary(self) -> pd.DataFrame:
        """Per condition: rounds, the quota (cores), the median CPU rate (cores) with its order-statistic interval
        [cpu_low, cpu_high] (min and max below six rounds), the median rate over the quota, work per second and
        share of throttled periods."""
        rows = []
        for condition, rounds in self.per_round.groupby("condition", sort=False):
            low, high, _ = median_interval(rounds["cpu_cores"])
            rows.append({"condition": condition, "rounds": len(rounds), "quota_cores": rounds["quota_cores"].iloc[0],
                         "cpu_cores": rounds["cpu_cores"].median(), "cpu_low": low, "cpu_high": high,
                         "rate_over_quota": rounds["rate_over_quota"].median(),
                         "work_per_s": rounds["work_per_s"].median(),
                         "throttled_periods": rounds["throttled_periods"].median()})
        return pd.DataFrame(rows)

    @property
    def first_round(self) -> pd.DataFrame:
        """The samples of the first round (what the plot shows)."""
        return self.samples[self.samples["round"] == self.samples["round"].min()]

    @property
    def worst_deviation(self) -> float:
        """The largest |measured/quota − 1| over the conditions with a quota."""
        return float((self.summary["rate_over_quota"].dropna() - 1).abs().max())

    def conclusion(self) -> str:
        rows = self.summary
        quota = rows.dropna(subset=["quota_cores"])
        parts = [f"`{q.condition}` used {q.cpu_cores:.3f} cores [{q.cpu_low:.3f}, {q.cpu_high:.3f}] "
                 f"({q.rate_over_quota:.1%} of its quota, throttled in {q.throttled_periods:.0%} of its periods)"
                 for q in quota.itertuples()]
        free = rows[rows["quota_cores"].isna()].iloc[0]
        return (f"**What we measured.** Medians of {int(rows['rounds'].min())} round(s), the conditions rotated "
                "from round to round, with their intervals: " + "; ".join(parts) + ". Without `--cpus` the same "
                f"program used {free['cpu_cores']:.2f} cores of this host's {self.host_cores}, throttled in "
                f"{free['throttled_periods']:.0%} of its periods. Work done "
                "followed the CPU: " + ", ".join(f"{r.work_per_s:,.0f}" for r in rows.itertuples())
                + " work units per second in that order. The quota is a ceiling enforced every 100 ms period: "
                "the container runs until it has used its share of the period, then waits for the next one.")

def _rotated(items: Sequence[T], by: int) -> list[T]:
    """`items` rotated left by `by` (the order of one round among several)."""
    return [*items[by % len(items):], *items[:by % len(items)]]


def _check_seconds(lab: LabSession, seconds: int | None) -> int:
    """How long a CPU experiment runs, s (None: 2 in quick mode, 6 otherwise)."""
    return check_positive(by_mode(lab, seconds, 2, 6), "seconds", "seconds", 3)


def run_cpu_quota(lab: LabSession, cpus: Sequence[float] = (0.5, 1.5), seconds: int | None = None, threads: int = 2,
                  sample_hz: float = 10, repeats: int | None = None) -> CpuQuotaResult:
    """A busy program with `threads` threads runs `seconds` s under ``--cpus`` each of `cpus` (cores), and with
    no ``--cpus`` (only its fence: every core of the host); sampled at `sample_hz`. `repeats` rounds (None: 1 in
    quick mode, 3 otherwise), the conditions rotated from round to round."""
    cores = host_cores()
    quotas = [check_cpus(c, "cpus", cores) for c in cpus]
    seconds = _check_seconds(lab, seconds)
    threads = check_positive(threads, "threads", "threads", 2)
    hz = check_hz(sample_hz)
    repeats = check_positive(by_mode(lab, repeats, 1, 3), "repeats", "rounds", 3)

    def experiment() -> dict[str, pd.DataFrame]:
        samples: list[pd.DataFrame] = []
        work: list[pd.DataFrame] = []
        conditions: list[float | None] = [*quotas, None]
        with stress_rig(lab) as rig:
            for round_, quota in ((r, q) for r in range(repeats) for q in _rotated(conditions, r)):
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
                samples.append(frame.assign(round=round_, condition=condition,
                                            cpus=np.nan if quota is None else quota))
                work.append(_program_times(output, origin, condition).assign(round=round_))
        return {"cpu_samples": pd.concat(samples, ignore_index=True)[list(CPU_SAMPLE_COLUMNS)],
                "cpu_work": pd.concat(work, ignore_index=True)[["round", *WORK_COLUMNS]]}

    tables = lab.record("cpu_quota", ("cpu_samples", "cpu_work"), experiment, cpus=list(quotas), seconds=seconds,
                        threads=threads, sample_hz=sample_hz, cores=cores, repeats=repeats)
    return CpuQuotaResult(tables["cpu_samples"], tables["cpu_work"], int(lab.parameters("cpu_samples")["cores"]))


@dataclass(frozen=True)
class SharesResult:
    """Two single-threaded busy containers pinned to CPU 0 with different ``--cpu-shares``, in rounds: `samples`
    (round, container, shares, t_s, cpu_s) and `work` (round, container, shares, t_s, work_units), each round on
    its own time axis (s since it started)."""

    samples: pd.DataFrame
    work: pd.DataFrame

    def window(self, round_: int) -> tuple[float, float]:
        """The seconds of round `round_` in which both programs were running (from both their own reports)."""
        spans = self.work[self.work["round"] == round_].groupby("container")["t_s"].agg(["min", "max"])
        return float(spans["min"].max()), float(spans["max"].min())

    @property
    def first_round(self) -> int:
        return int(self.work["round"].min())

    @property
    def first_work(self) -> pd.DataFrame:
        """The first round's work (what the plot shows)."""
        return self.work[self.work["round"] == self.first_round]

    @cached_property
    def by_round(self) -> pd.DataFrame:
        """Per round and container, over the window both ran: shares, work per second, CPU cores."""
        rows = []
        for (round_, name), work in self.work.groupby(["round", "container"], sort=False):
            start, end = self.window(int(round_))
            samples = rows_where(self.samples, round=round_, container=name)
            t, cpu = samples["t_s"].to_numpy(float), samples["cpu_s"].to_numpy(float)
            rows.append({"round": int(round_), "container": name, "shares": int(work["shares"].iloc[0]),
                         "overlap_s": end - start, "work_per_s": _work_rate(work, start, end),
                         "cpu_cores": float((np.interp(end, t, cpu) - np.interp(start, t, cpu)) / (end - start))})
        return pd.DataFrame(rows)

    @cached_property
    def ratios(self) -> pd.DataFrame:
        """Per round: the first container's work and CPU time over the second's."""
        rows = []
        for round_, pair in self.by_round.groupby("round", sort=True):
            first, second = pair.iloc[0], pair.iloc[1]
            rows.append({"round": int(round_), "work_ratio": first["work_per_s"] / second["work_per_s"],
                         "cpu_ratio": first["cpu_cores"] / second["cpu_cores"]})
        return pd.DataFrame(rows)

    @property
    def summary(self) -> pd.DataFrame:
        """Per container: shares, and the median over rounds of its work per second and CPU cores."""
        return (self.by_round.groupby(["container", "shares"], sort=False)[["work_per_s", "cpu_cores"]]
                .median().reset_index())

    @property
    def shares_ratio(self) -> float:
        first, second = self.by_round.iloc[0], self.by_round.iloc[1]
        return float(first["shares"] / second["shares"])

    @property
    def work_ratio(self) -> float:
        """The median over rounds of the work ratio."""
        return float(self.ratios["work_ratio"].median())

    @property
    def work_ratio_interval(self) -> tuple[float, float, float]:
        """The work ratio's order-statistic interval: low, high, coverage."""
        return median_interval(self.ratios["work_ratio"].to_numpy(float))

    @property
    def cpu_ratio(self) -> float:
        return float(self.ratios["cpu_ratio"].median())

    @property
    def within_tolerance(self) -> bool:
        return abs(self.work_ratio / self.shares_ratio - 1) <= SHARES_TOLERANCE

    def conclusion(self) -> str:
        low, high, coverage = self.work_ratio_interval
        rounds = len(self.ratios)
        spread = (f" [{low:.2f}, {high:.2f}] ({coverage:.0%} interval over {rounds} rounds, the starting order "
                  "alternated)") if rounds > 1 else " (one round: no interval)"
        overlap = self.by_round["overlap_s"]
        return (f"**What we measured.** Both containers on CPU 0, {overlap.min():.2f}–{overlap.max():.2f} s of "
                f"overlap per round: median work rates {self.summary['work_per_s'].iloc[0]:,.0f} and "
                f"{self.summary['work_per_s'].iloc[1]:,.0f} units/s, a ratio of {self.work_ratio:.2f}{spread} "
                f"(CPU time ratio {self.cpu_ratio:.2f}) for shares in the ratio {self.shares_ratio:.2f} — "
                f"{abs(self.work_ratio / self.shares_ratio - 1):.1%} off, "
                + ("within" if self.within_tolerance else "outside")
                + f" the {SHARES_TOLERANCE:.0%} tolerance. Shares are a weight that matters only under contention: "
                "alone, either container could use the whole CPU.")


def run_cpu_shares(lab: LabSession, shares: tuple[int, int] = (1024, 512), seconds: int | None = None,
                   sample_hz: float = 10, repeats: int | None = None) -> SharesResult:
    """Two busy single-threaded containers, ``--cpuset-cpus 0`` both, ``--cpu-shares`` `shares`, for `seconds` s;
    `repeats` rounds (None: 1 in quick mode, 5 otherwise), the one started first alternating."""
    if len(shares) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 2 for s in shares):
        raise BadParameter(f"shares={shares!r}: two whole numbers ≥ 2 are needed (the kernel's smallest weight).",
                           "E.g. shares=(1024, 512).")
    seconds = _check_seconds(lab, seconds)
    hz = check_hz(sample_hz)
    repeats = check_positive(by_mode(lab, repeats, 1, 5), "repeats", "rounds", 5)

    def one_round(rig: StressRig, round_: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        names = [f"shares={s}" for s in shares]
        limits = Limits(64 * MIB, PIDS_LIMIT, 1.0)
        fence_limits = Limits(256 * MIB, PIDS_LIMIT, float(host_cores()))
        order = [0, 1] if round_ % 2 == 0 else [1, 0]  # who starts first must not decide the split
        origin = time.perf_counter_ns()
        with rig.fence(f"shares-{round_}", fence_limits) as (_, parent), contextlib.ExitStack() as stack:
            started = {i: stack.enter_context(rig.container(["cpu", str(seconds), "1", "100"],
                                                            stem=f"shares-{round_}-{shares[i]}", limits=limits,
                                                            parent=parent, cpu_shares=shares[i], cpuset_cpus="0"))
                       for i in order}
            samplers = {i: stack.enter_context(CgroupSampler(rig.group_of(c), 1 / hz, ("cpu",)))
                        for i, c in started.items()}
            for i in order:
                rig.go(started[i])
            outputs = {i: rig.finish(started[i])[2] for i in order}
        samples = pd.concat([_shifted(samplers[i].frame(), samplers[i], origin).assign(container=names[i],
                                                                                     shares=shares[i])
                             for i in (0, 1)], ignore_index=True)
        work = pd.concat([_program_times(outputs[i], origin, names[i]).rename(columns={"condition": "container"})
                          .assign(shares=shares[i]) for i in (0, 1)], ignore_index=True)
        return samples.assign(round=round_), work.assign(round=round_)

    def experiment() -> dict[str, pd.DataFrame]:
        with stress_rig(lab) as rig:
            rounds = [one_round(rig, r) for r in range(repeats)]
        return {"shares_samples": pd.concat([s for s, _ in rounds], ignore_index=True)[list(SHARES_SAMPLE_COLUMNS)],
                "shares_work": pd.concat([w for _, w in rounds], ignore_index=True)[list(SHARES_WORK_COLUMNS)]}

    tables = lab.record("cpu_shares", ("shares_samples", "shares_work"), experiment, shares=list(shares),
                        seconds=seconds, sample_hz=sample_hz, repeats=repeats)
    return SharesResult(tables["shares_samples"], tables["shares_work"])


ALONE = "alone"
BESIDE_UNLIMITED = "beside an unlimited neighbour"
SHARED_CPU = "0"  # victim and neighbour both run on this CPU (--cpuset-cpus)
DEFAULT_SHARES = 1024  # the weight Docker gives a container without --cpu-shares
NEIGHBOUR_HZ = 20.0  # CPU-time samples per second of the victim's and the neighbour's groups
VICTIM_THREADS = 2  # the victim wants two CPUs' worth: more than the one CPU it is pinned to, let alone its share


@dataclass(frozen=True)
class NeighbourResult:
    """`work` (round, condition, neighbour_threads, neighbour_shares, neighbour_cpus, t_s, work_units): a
    two-thread victim's cumulative work on one CPU, alone (no neighbour: 0 threads, NaN) and beside a busy
    many-threaded neighbour on the same CPU — without limits (NaN cpus), under ``--cpus``, under
    ``--cpu-shares``; `cpu` (round, condition, container, t_s, cpu_s): the CPU time of the victim's and the
    neighbour's groups while the victim ran, on the same time axis per round and condition."""

    work: pd.DataFrame
    cpu: pd.DataFrame

    @cached_property
    def per_round(self) -> pd.DataFrame:
        """Per round and condition: the victim's work rate (units/s), that rate over its rate alone in the same
        round (``of_alone``), its part of the CPU time the pair used while it ran (``cpu_share``), the pair's CPU
        rate (cores) and the part :func:`expected_share` gives the victim."""
        rows = []
        for (r, c), w in self.work.groupby(["round", "condition"], sort=False):
            share, pair_cores = _victim_cpu_share(rows_where(self.cpu, round=r, condition=c))
            first = w.iloc[0]
            rows.append({"round": r, "condition": c, "work_per_s": _work_rate(w), "cpu_share": share,
                         "pair_cores": pair_cores,
                         "expected_share": expected_share(first["neighbour_shares"], first["neighbour_cpus"],
                                                          pair_cores)})
        table = pd.DataFrame(rows)
        alone = table[table["condition"] == ALONE].set_index("round")["work_per_s"]
        return table.assign(of_alone=table["work_per_s"] / table["round"].map(alone))

    @cached_property
    def summary(self) -> pd.DataFrame:
        """Per condition (index): rounds; the median share of the pair's CPU time the victim got (``cpu_share``)
        with the order-statistic interval [low, high] (min and max below six rounds); the share expected; and
        the median of its work rate over its rate alone (``kept``), which other load on the host moves too; the
        pair's CPU rate (cores: below 1 where the host's other work took part of the CPU)."""
        rows = {}
        for condition, rounds in self.per_round.groupby("condition", sort=False):
            shares = rounds["cpu_share"].to_numpy(float)
            low, high, _ = median_interval(shares)
            rows[condition] = {"rounds": len(shares), "cpu_share": float(np.median(shares)), "low": low,
                               "high": high, "expected": float(np.median(rounds["expected_share"])),
                               "pair_cores": float(np.median(rounds["pair_cores"])),
                               "kept": float(np.median(rounds["of_alone"]))}
        return pd.DataFrame.from_dict(rows, orient="index")

    def share(self, condition: str) -> float:
        """The victim's median share of the pair's CPU time in `condition`."""
        return float(self.summary.loc[condition, "cpu_share"])

    @property
    def worst_miss(self) -> float:
        """The largest |cpu_share − expected| over the conditions beside a neighbour."""
        beside = self.summary.drop(index=ALONE)
        return float((beside["cpu_share"] - beside["expected"]).abs().max())

    def conclusion(self) -> str:
        threads = int(self.work["neighbour_threads"].max())
        rounds = int(self.summary["rounds"].min())
        beside = self.summary.drop(index=ALONE)
        parts = [f"{c} {row.cpu_share:.0%} of the CPU time (expected {row.expected:.0%}), {row.kept:.0%} of its "
                 "work rate alone" for c, row in beside.iterrows()]
        unlimited = self.share(BESIDE_UNLIMITED)
        per_thread = VICTIM_THREADS / (VICTIM_THREADS + threads)
        return (f"**What we measured.** A victim with {VICTIM_THREADS} busy threads and a neighbour with {threads}, "
                f"both pinned to CPU {SHARED_CPU}; medians of {rounds} round(s): " + "; ".join(parts) + ". "
                + (f"Beside the unlimited neighbour the victim got {unlimited:.0%} of the pair's CPU time: "
                   + ("about half, its share by weight — the kernel shared the CPU between the two groups, not "
                      f"between their {VICTIM_THREADS + threads} threads (per thread it would have got "
                      f"{per_thread:.0%})." if abs(unlimited - 0.5) <= NEIGHBOUR_TOLERANCE else
                      f"not the half that equal weights would give (per thread: {per_thread:.0%})."))
                + " A limit on the neighbour gives the victim back what the neighbour may no longer take: `--cpus` "
                "caps the neighbour's time, `--cpu-shares` lowers its weight only while both are busy. Largest "
                f"distance from the expected share: {self.worst_miss:.1%}. Beside a neighbour the pair got "
                f"{beside['pair_cores'].median():.2f} of CPU {SHARED_CPU}'s time (the rest went to other work on the "
                "host, which a quota, being CPU time, does not follow); the work rate against the rate alone also "
                "moves with that other work, the split between the two groups does not.")


def _victim_cpu_share(cpu: pd.DataFrame) -> tuple[float, float]:
    """The victim's CPU time over the pair's while the victim was sampled (1 with no neighbour), and the pair's
    CPU rate then (cores)."""
    victim, neighbour = (cpu[cpu["container"] == name] for name in ("victim", "neighbour"))
    start, end = float(victim["t_s"].iloc[0]), float(victim["t_s"].iloc[-1])
    used = {name: float(np.interp(end, f["t_s"], f["cpu_s"]) - np.interp(start, f["t_s"], f["cpu_s"]))
            for name, f in (("victim", victim), ("neighbour", neighbour)) if len(f)}
    return used["victim"] / sum(used.values()), sum(used.values()) / (end - start)


def expected_share(neighbour_shares: float, neighbour_cpus: float, pair_cores: float) -> float:
    """The victim's part of the pair's CPU time if the kernel splits what the pair gets (`pair_cores`) between
    the two groups by weight — the victim's Docker default against `neighbour_shares` — with the neighbour held
    to its quota `neighbour_cpus` (NaN: none); 1 with no neighbour (NaN shares). E.g. equal weights: 1/2; 256
    against 1024: 4/5; a 0.25-core quota when the pair gets a whole core: 3/4, when it gets half a core: 1/2."""
    if pd.isna(neighbour_shares):
        return 1.0
    by_weight = pair_cores * neighbour_shares / (DEFAULT_SHARES + neighbour_shares)
    neighbour = by_weight if pd.isna(neighbour_cpus) else min(by_weight, float(neighbour_cpus))
    return 1 - neighbour / pair_cores


def run_noisy_neighbour(lab: LabSession, seconds: int | None = None, neighbour_threads: int = 8,
                        neighbour_cpus: float = 0.25, neighbour_shares: int = 256, repeats: int | None = None
                        ) -> NeighbourResult:
    """A victim with two busy threads, pinned to one CPU, runs `seconds` s alone, beside a neighbour with
    `neighbour_threads` busy threads pinned to the same CPU and no limits, beside it under ``--cpus
    <neighbour_cpus>``, and beside it under ``--cpu-shares <neighbour_shares>``: `repeats` rounds, the
    conditions rotated from round to round (None: 1 in quick mode, 5 otherwise)."""
    cores = host_cores()
    seconds = _check_seconds(lab, seconds)
    threads = check_positive(neighbour_threads, "neighbour_threads", "threads", 8)
    quota = check_cpus(neighbour_cpus, "neighbour_cpus", 1)
    if quota >= 1:
        raise BadParameter(f"neighbour_cpus={neighbour_cpus!r}: on one shared CPU a quota of a whole CPU or more "
                           "limits nothing.", "Give a quota below 1, e.g. neighbour_cpus=0.25.")
    if isinstance(neighbour_shares, bool) or not isinstance(neighbour_shares, int) or neighbour_shares < 2:
        raise BadParameter(f"neighbour_shares={neighbour_shares!r}: a CPU weight is a whole number ≥ 2.",
                           "E.g. neighbour_shares=256 (Docker's default is 1024).")
    repeats = check_positive(by_mode(lab, repeats, 1, 5), "repeats", "rounds", 5)

    def experiment() -> dict[str, pd.DataFrame]:
        conditions: dict[str, tuple[dict[str, Any] | None, float, float]] = {  # options, its shares and cpus
            ALONE: (None, np.nan, np.nan),
            BESIDE_UNLIMITED: ({"nano_cpus": 0}, DEFAULT_SHARES, np.nan),
            f"beside a neighbour with --cpus {quota:g}": ({"nano_cpus": round(quota * 1e9)}, DEFAULT_SHARES, quota),
            f"beside a neighbour with --cpu-shares {neighbour_shares}": (
                {"nano_cpus": 0, "cpu_shares": neighbour_shares}, neighbour_shares, np.nan),
        }
        limits = Limits(64 * MIB, PIDS_LIMIT, float(cores))
        work: list[pd.DataFrame] = []
        cpu: list[pd.DataFrame] = []
        with stress_rig(lab) as rig:
            for round_ in range(repeats):
                names = list(conditions)
                for name in _rotated(names, round_):
                    neighbour, weight, cap = conditions[name]
                    tag = f"{round_}-{names.index(name)}"
                    fence = Limits(256 * MIB, 2 * PIDS_LIMIT, float(cores))
                    with rig.fence(f"neighbour-{tag}", fence) as (_, parent), \
                            contextlib.ExitStack() as stack:
                        busy = None
                        if neighbour is not None:  # busy first, so the victim starts into a loaded CPU
                            busy = stack.enter_context(rig.container(
                                ["cpu", str(seconds + int(WAIT_S)), str(threads), "1000"], stem=f"neighbour-{tag}",
                                wait=False, limits=limits, parent=parent, cpuset_cpus=SHARED_CPU, **neighbour))
                        origin = time.perf_counter_ns()
                        victim = stack.enter_context(rig.container(
                            ["cpu", str(seconds), str(VICTIM_THREADS), "100"], stem=f"victim-{tag}", limits=limits,
                            parent=parent, cpuset_cpus=SHARED_CPU))
                        with contextlib.ExitStack() as sampling:  # the victim's sampler ends with its group
                            samplers = {role: sampling.enter_context(CgroupSampler(rig.group_of(c), 1 / NEIGHBOUR_HZ,
                                                                                   ("cpu",)))
                                        for role, c in (("victim", victim), ("neighbour", busy)) if c is not None}
                            rig.go(victim)
                            output = rig.finish(victim)[2]
                        work.append(_program_times(output, origin, name)
                                    .assign(round=round_, neighbour_shares=weight, neighbour_cpus=cap,
                                            neighbour_threads=0 if busy is None else threads))
                        cpu += [_shifted(sampler.frame(), sampler, origin).assign(round=round_, condition=name,
                                                                                   container=role)
                                for role, sampler in samplers.items()]
                        if busy is not None and (busy.reload() or busy.status) != "running":
                            raise RuntimeError(f"the neighbour stopped before the victim finished ({busy.status}): "
                                               f"{busy.logs().decode()[-300:]}")
        return {"neighbour_work": pd.concat(work, ignore_index=True)[list(NEIGHBOUR_COLUMNS)],
                "neighbour_cpu": pd.concat(cpu, ignore_index=True)[list(NEIGHBOUR_CPU_COLUMNS)]}

    tables = lab.record("neighbour", ("neighbour_work", "neighbour_cpu"), experiment, seconds=seconds,
                        neighbour_threads=threads, neighbour_cpus=neighbour_cpus, neighbour_shares=neighbour_shares,
                        repeats=repeats, cores=cores)
    return NeighbourResult(tables["neighbour_work"], tables["neighbour_cpu"])

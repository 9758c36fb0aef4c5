"""Section 3: what each storage path costs — the same workload on the writable layer, a named volume, a bind mount,
tmpfs and the host directory itself (the floor), in interleaved rounds — and copy-up on first write."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from labkit.core.results import rows_where
from labkit.core.session import LabSession
from labkit.instruments import measure, space, storage
from labkit.instruments.shell import run
from labkit.labs.volumes_and_persistence.declaration import (
    BIG_FILE,
    BIND,
    HOST,
    LAB,
    LAYER,
    MIB,
    MOUNT_POINTS,
    NAMED,
    PYTHON_BASE,
    TMPFS,
    check_bind_parent,
    exec_ok,
    limits_for,
    positive_mib,
    require_disk,
    rig,
)

PATHS = (HOST, LAYER, NAMED, BIND, TMPFS)
SEQ_WRITE, COLD_READ, WARM_READ = "sequential write + 1 fsync", "cold read", "warm read"
FSYNC_P50, FSYNC_P99 = "fsync per 4 KiB, p50", "fsync per 4 KiB, p99"
CREATE, DELETE = "create small files", "delete small files"
METRICS = (SEQ_WRITE, FSYNC_P50, FSYNC_P99, CREATE, DELETE, COLD_READ, WARM_READ)
COLD_AT_MOST = 0.05  # a read counts as cold when at most 5 % of the file's pages were resident before it
WORKLOAD_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class CostResult:
    """`costs`: per path, round (`repeat`; `position` its place in the rotated round), metric: seconds (for the
    fsync rows the round's p50 or p99 of one 4 KiB write + fsync), the fraction of the file's pages resident
    just before a read, the bytes and the count the metric covers. `fsync`: every commit's latency (s)."""

    costs: pd.DataFrame
    fsync: pd.DataFrame

    @cached_property
    def summary(self) -> pd.DataFrame:
        """Per metric and path: median seconds, its order-statistic interval and coverage, and the ratio of the
        median to the host directory's (the floor)."""
        parts = []
        for metric in METRICS:
            rows = self.costs[self.costs["metric"] == metric]
            table = measure.summary_table(rows, floor=HOST, group="path", value="seconds").reset_index()
            parts.append(table.assign(metric=metric))
        columns = ["metric", "path", "n", "median", "ci_low", "ci_high", "coverage", "ratio_to_floor"]
        return pd.concat(parts, ignore_index=True)[columns]

    def ratio(self, metric: str, path: str) -> float:
        row = rows_where(self.summary, metric=metric, path=path)
        return float(row["ratio_to_floor"].iloc[0])

    def median_s(self, metric: str, path: str) -> float:
        row = rows_where(self.summary, metric=metric, path=path)
        return float(row["median"].iloc[0])

    def ratios(self) -> pd.DataFrame:
        """metric × path of the ratio to the host directory's median (how many times slower)."""
        table = self.summary.pivot(index="metric", columns="path", values="ratio_to_floor")
        return table.loc[list(METRICS), list(PATHS)]

    def ratio_intervals(self, metric: str) -> pd.DataFrame:
        """Per path, for `metric`: the median's ratio to the floor's and its interval's ends over the floor's
        median (the floor's own interval is shown as the floor's spread), for the plot."""
        rows = self.summary[self.summary["metric"] == metric].set_index("path")
        floor = float(rows.loc[HOST, "median"])
        return pd.DataFrame({"ratio": rows["ratio_to_floor"], "low": rows["ci_low"] / floor,
                             "high": rows["ci_high"] / floor}).loc[list(PATHS)]

    def clearly_slower(self, path: str, factor: float) -> list[str]:
        """The metrics on which `path` is clearly more than `factor` times slower than the host directory: even
        the low end of its median's interval lies above `factor` × the floor's median."""
        return [metric for metric in METRICS if float(self.ratio_intervals(metric).loc[path, "low"]) > factor]

    @property
    def floor_beaten(self) -> list[str]:
        """The metrics on which the host directory's median is above that of every disk path in a container (the
        writable layer, the named volume, the bind mount): a floor that is no floor, which the reader should know."""
        return [metric for metric in METRICS
                if all(self.ratio(metric, path) < 1 for path in PATHS if path not in (HOST, TMPFS))]

    def resident(self, path: str, phase: str) -> float:
        """The largest resident fraction seen before a `phase` read (cold or warm) on `path`."""
        rows = rows_where(self.costs, path=path, metric=phase)
        return float(rows["resident_fraction"].max())

    @property
    def cold_everywhere_but_tmpfs(self) -> bool:
        return all(self.resident(path, COLD_READ) <= COLD_AT_MOST for path in PATHS if path != TMPFS)

    @property
    def rounds(self) -> int:
        return int(self.costs["repeat"].nunique())

    def conclusion(self) -> str:
        coverage = self.summary["coverage"].min()
        return (f"**What we measured** ({self.rounds} interleaved rounds; intervals cover the median with "
                f"≥ {coverage:.0%}). One 4 KiB write + fsync took a median "
                f"{self.median_s(FSYNC_P50, HOST) * 1e3:.3f} ms on the host directory, "
                f"{self.median_s(FSYNC_P50, NAMED) * 1e3:.3f} ms on a named volume, "
                f"{self.median_s(FSYNC_P50, BIND) * 1e3:.3f} ms on a bind mount, "
                f"{self.median_s(FSYNC_P50, LAYER) * 1e3:.3f} ms on the writable layer and "
                f"{self.median_s(FSYNC_P50, TMPFS) * 1e3:.4f} ms on tmpfs (fsync has nothing to flush there). "
                f"Creating the small files cost {self.ratio(CREATE, LAYER):.2f}× the host's on the writable layer, "
                f"{self.ratio(CREATE, NAMED):.2f}× on the named volume and {self.ratio(CREATE, BIND):.2f}× on the "
                f"bind mount. Before each cold read at most {self.resident(LAYER, COLD_READ):.0%} (writable layer), "
                f"{self.resident(HOST, COLD_READ):.0%} (host) of the file's pages were in the page cache "
                f"(dropped for this file alone with posix_fadvise DONTNEED, checked with mincore); on tmpfs "
                f"{self.resident(TMPFS, COLD_READ):.0%}: its pages are the storage, so a tmpfs read is never cold."
                + (f" On {', '.join(self.floor_beaten)} the host directory was slower than every disk path in a "
                   "container, although all of them write to the same disk: in this run the floor is no lower bound "
                   "there, so read those ratios with their intervals." if self.floor_beaten else ""))


def _rows(path: str, repeat: int, position: int, found: storage.WorkloadRun, size_bytes: int, commits: int,
          files: int) -> list[dict[str, Any]]:
    nan = float("nan")
    values = [(SEQ_WRITE, found.seq_write_s, nan, size_bytes, 1),
              (FSYNC_P50, storage.percentile(found.fsync_s, 50), nan, storage.COMMIT_BYTES, commits),
              (FSYNC_P99, storage.percentile(found.fsync_s, 99), nan, storage.COMMIT_BYTES, commits),
              (CREATE, found.create_s, nan, storage.SMALL_FILE_BYTES * files, files),
              (DELETE, found.delete_s, nan, storage.SMALL_FILE_BYTES * files, files),
              (COLD_READ, found.cold_read_s, found.cold_resident, size_bytes, 1),
              (WARM_READ, found.warm_read_s, found.warm_resident, size_bytes, 1)]
    return [{"path": path, "repeat": repeat, "position": position, "metric": metric, "seconds": seconds,
             "resident_fraction": resident, "size_bytes": size, "count": count}
            for metric, seconds, resident, size, count in values]


def run_costs(lab: LabSession, repeats: int = 5, size_mib: int = 64, commits: int = 200, files: int = 2000,
              bind_parent: str = "/tmp") -> CostResult:
    """The storage workload (:mod:`labkit.instruments.storage`: a `size_mib` MiB file written with one fsync, read
    cold and warm; `commits` fsync'd 4 KiB writes; `files` 1 KiB files created and deleted) on each path, in
    `repeats` rounds after one warm-up round, the order rotated each round."""
    measure.validate_repeats(repeats)
    measure.validate_repeats(commits, names=("commits", "warmup"))
    measure.validate_repeats(files, names=("files", "warmup"))
    positive_mib(size_mib, "size_mib")
    parent = check_bind_parent(bind_parent)
    size = space.Size("size_mib", size_mib)
    require_disk(lab, parent, {size: 2}, {size: 2})  # the file and its warm-up's, on each disk, one at a time
    limits = limits_for(size_mib)
    if lab.live:
        space.require_memory({space.Size("size_mib", round(limits.memory_mib)): 1})

    def experiment() -> dict[str, pd.DataFrame]:
        outputs: dict[str, list[storage.WorkloadRun]] = {path: [] for path in PATHS}
        with rig(lab, parent) as rig_:
            image = rig_.build(PYTHON_BASE, 1)
            host_folder, bind = rig_.bind_folder("host-floor"), rig_.bind_folder("bind")
            container = rig_.start("costs", image, limits, volume=rig_.volume("costs"), bind=bind,
                                   tmpfs_mib=size_mib + 8)

            def method(path: str) -> Any:
                def call() -> None:
                    if path == HOST:
                        argv = storage.workload_argv(sys.executable, str(host_folder), size_mib * MIB, commits, files)
                        text = run(argv, WORKLOAD_TIMEOUT_S).stdout
                    else:
                        argv = storage.workload_argv("python3", MOUNT_POINTS[path], size_mib * MIB, commits, files)
                        text = exec_ok(container, argv)
                    outputs[path].append(storage.parse_workload(text))
                return call

            order = measure.compare({path: method(path) for path in PATHS}, repeats, warmup=1)
        rows, latencies = [], []
        for call in order.itertuples():
            found = outputs[str(call.method)][1 + int(call.repeat)]  # the first run of each path was its warm-up
            rows += _rows(str(call.method), int(call.repeat), int(call.position), found, size_mib * MIB, commits,
                          files)
            latencies += [{"path": call.method, "repeat": call.repeat, "commit": index, "seconds": seconds}
                          for index, seconds in enumerate(found.fsync_s)]
        return {"costs": pd.DataFrame(rows, columns=list(LAB.tables["costs"])),
                "fsync": pd.DataFrame(latencies, columns=list(LAB.tables["fsync"]))}

    tables = lab.record("costs", ("costs", "fsync"), experiment, repeats=repeats, size_mib=size_mib,
                        commits=commits, files=files, **limits.record())
    return CostResult(tables["costs"], tables["fsync"])


# ---------------------------------------------------------------- copy-up on first write


@dataclass(frozen=True)
class CopyUpResult:
    """`copy_up`: per repeat (a fresh container each), the first and the second one-byte append to a file of
    `file_bytes` from the image's lower layer (s, timed inside), and the bytes of it in the container's UpperDir
    after both."""

    copy_up: pd.DataFrame

    def median_ms(self, write: str) -> float:
        return float(self.copy_up.loc[self.copy_up["write"] == write, "seconds"].median() * 1e3)

    @property
    def file_bytes(self) -> int:
        return int(self.copy_up["file_bytes"].iloc[0])

    @property
    def whole_copy(self) -> bool:
        """Every UpperDir held the whole file plus the two appended bytes."""
        return bool((self.copy_up["upper_bytes"] == self.copy_up["file_bytes"] + 2).all())

    def samples_ms(self) -> pd.DataFrame:
        return self.copy_up.assign(method=self.copy_up["write"] + " append", wall_ms=self.copy_up["seconds"] * 1e3)

    def conclusion(self) -> str:
        first, second = self.median_ms("first"), self.median_ms("second")
        return (f"**What we measured.** The first one-byte append to the {self.file_bytes / MIB:.0f} MiB file of the "
                f"image took a median **{first:.1f} ms**, the second **{second:.3f} ms** ({first / second:.0f}×); "
                f"the container's UpperDir then held {'the whole file' if self.whole_copy else 'less than the file'}"
                ". This is notebook 02's copy-up figure again, on this notebook's image: a write into the writable "
                "layer first copies the file it changes, a write to a volume never does.")


def run_copy_up(lab: LabSession, repeats: int = 5, big_mib: int = 64, bind_parent: str = "/tmp") -> CopyUpResult:
    """In `repeats` fresh containers, the first and second one-byte append to a `big_mib` MiB file from a lower
    layer, and the file's size in UpperDir after."""
    measure.validate_repeats(repeats)
    positive_mib(big_mib, "big_mib")
    parent = check_bind_parent(bind_parent)
    require_disk(lab, parent, {space.Size("big_mib", big_mib): 2})  # the layer and one container's copy
    lab.require_root("reading a container's UpperDir")
    limits = limits_for(8)

    def experiment() -> pd.DataFrame:
        rows = []
        with rig(lab, parent) as rig_:
            image = rig_.build(PYTHON_BASE, big_mib)
            for repeat in range(repeats):
                container = rig_.start("copy-up", image, limits)
                first, second = storage.parse_appends(
                    exec_ok(container, ["python3", "-c", storage.APPEND_TWICE, BIG_FILE]))
                upper = Path(container.attrs["GraphDriver"]["Data"]["UpperDir"]) / BIG_FILE.lstrip("/")
                upper_bytes = upper.stat().st_size if upper.exists() else 0
                container.remove(force=True, v=True)
                rows += [{"repeat": repeat, "write": write, "seconds": seconds, "file_bytes": big_mib * MIB,
                          "upper_bytes": upper_bytes} for write, seconds in (("first", first), ("second", second))]
        return pd.DataFrame(rows, columns=list(LAB.tables["copy_up"]))

    return CopyUpResult(lab.measure("copy_up", experiment, repeats=repeats, big_mib=big_mib, **limits.record()))

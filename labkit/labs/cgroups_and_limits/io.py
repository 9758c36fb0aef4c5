"""Section 5, IO bandwidth: a container writing to a loop device of its own under ``--device-write-bps`` and
``--device-write-iops``, with O_DIRECT and through the page cache."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import loopdev, stress
from labkit.instruments.limits import MIB, Limits
from labkit.labs.cgroups_and_limits.declaration import CPUS, IO_COLUMNS, PIDS_LIMIT
from labkit.labs.cgroups_and_limits.rig import StressRig, by_mode, check_positive, stress_rig
from labkit.paths import state_dir

DEVICE_IN_CONTAINER = "/dev/labkit-disk"


@dataclass(frozen=True)
class IoResult:
    """`writes` (condition, direct, limit_bps, limit_iops, t_s, event, mib): the writer's own report — ``wrote``
    with the MiB written so far (the first row at 0: its start), ``synced`` when its fsync returned; seconds from
    its start. ``limit_bps`` (bytes/s) and ``limit_iops`` are NaN where not set."""

    writes: pd.DataFrame

    @cached_property
    def summary(self) -> pd.DataFrame:
        """Per condition: whether it wrote with O_DIRECT, the limit, MiB written, the rate of its writes (MiB/s,
        start to last write), the fsync's seconds, and the rate over the whole, fsync included (MiB/s)."""
        rows = []
        for condition, w in self.writes.groupby("condition", sort=False):
            wrote, synced = w[w["event"] == "wrote"], w[w["event"] == "synced"]
            last_write, end = float(wrote["t_s"].iloc[-1]), float(synced["t_s"].iloc[0])
            mib = float(wrote["mib"].iloc[-1])
            rows.append({"condition": condition, "direct": bool(w["direct"].iloc[0]),
                         "limit_mib_per_s": w["limit_bps"].iloc[0] / MIB, "limit_iops": w["limit_iops"].iloc[0],
                         "mib": mib, "write_mib_per_s": mib / last_write, "fsync_s": end - last_write,
                         "overall_mib_per_s": mib / end})
        return pd.DataFrame(rows).set_index("condition")

    def conclusion(self) -> str:
        s = self.summary
        parts = [f"{c}: writes at {r.write_mib_per_s:.1f} MiB/s, fsync {r.fsync_s:.2f} s, "
                 f"{r.overall_mib_per_s:.1f} MiB/s overall" for c, r in s.iterrows()]
        iops = s[s["limit_iops"].notna()]
        if len(iops):  # 1 MiB writes reach the device split into smaller requests, each counted by the iops limit
            i = iops.iloc[0]
            parts.append(f"under --device-write-iops {i['limit_iops']:.0f} the device took "
                         f"{i['write_mib_per_s'] * 1024 / i['limit_iops']:.0f} KiB per counted IO")
        bps = s[s["limit_mib_per_s"].notna()]
        direct_bps, buffered_bps = bps[bps["direct"]], bps[~bps["direct"]]
        verdict = ""
        if len(direct_bps) and len(buffered_bps):
            d, b = direct_bps.iloc[0], buffered_bps.iloc[0]
            escaped = b["write_mib_per_s"] > 2 * b["limit_mib_per_s"]
            verdict = (f" With O_DIRECT the writer ran at {d['write_mib_per_s'] / d['limit_mib_per_s']:.0%} of the "
                       f"{d['limit_mib_per_s']:.0f} MiB/s limit. Through the page cache its writes ran at "
                       f"{b['write_mib_per_s']:.0f} MiB/s — "
                       + (f"{b['write_mib_per_s'] / b['limit_mib_per_s']:.0f}× the limit: buffered writes escape "
                          "the throttle, which sees the IO a container's tasks submit, not pages they only dirty"
                          if escaped else "held to the limit")
                       + f"; its fsync then took {b['fsync_s']:.2f} s, {b['overall_mib_per_s']:.1f} MiB/s overall: "
                       "the writeback an fsync forces is submitted by the container's own task, and the throttle "
                       "holds that. On cgroup v2 writeback is charged to the group that dirtied the pages.")
        return "**What we measured.** " + "; ".join(parts) + "." + verdict


def _write(rig: StressRig, device: loopdev.LoopDevice, mib: int, direct: bool, parent: str,
           throttle: dict[str, Any], stem: str) -> pd.DataFrame:
    limits = Limits(64 * MIB, PIDS_LIMIT, CPUS)
    with rig.container(["write", DEVICE_IN_CONTAINER, str(mib), str(int(direct))], stem=stem, limits=limits,
                       parent=parent, devices=[f"{device.path}:{DEVICE_IN_CONTAINER}:rw"], **throttle) as container:
        rig.go(container)
        exit_code, _, output = rig.finish(container)
    if exit_code != 0:
        raise RuntimeError(f"the writer exited {exit_code}: {output[-300:]}")
    writes = stress.writes(output)
    return writes.assign(t_s=(writes["t_ns"] - writes["t_ns"].iloc[0]) / 1e9).drop(columns="t_ns")


def run_io(lab: LabSession, write_mib: int | None = None, limit_mib_per_s: int = 4, limit_iops: int = 16,
           device_mib: int = 64) -> IoResult:
    """A container writes `write_mib` MiB (None: 4 in quick mode, 16 otherwise) in 1 MiB writes to a loop device
    labkit makes (`device_mib` MiB, sparse, in labkit's state folder) and fsyncs it: with O_DIRECT and no limit,
    with O_DIRECT under ``--device-write-bps <limit_mib_per_s>mb``, with O_DIRECT under ``--device-write-iops
    <limit_iops>``, and through the page cache under the same bps limit."""
    mib = check_positive(by_mode(lab, write_mib, 4, 16), "write_mib", "MiB", 8)
    bps = check_positive(limit_mib_per_s, "limit_mib_per_s", "MiB/s", 4)
    iops = check_positive(limit_iops, "limit_iops", "IOs per second", 16)
    size = check_positive(device_mib, "device_mib", "MiB", 64)
    if mib > size:
        raise BadParameter(f"write_mib={write_mib!r}: more than the {size} MiB device.",
                           f"Choose write_mib ≤ device_mib, e.g. {size // 2}.")

    def experiment() -> pd.DataFrame:
        frames = []
        with stress_rig(lab) as rig, loopdev.attached(state_dir() / "07" / f"io-{lab.run_id}.img", size) as device, \
                rig.fence("io", Limits(256 * MIB, 2 * PIDS_LIMIT, CPUS)) as (_, parent):
            rule = {"Path": device.path}
            conditions: list[tuple[str, bool, float, float, dict[str, Any]]] = [
                ("O_DIRECT, no limit", True, np.nan, np.nan, {}),
                (f"O_DIRECT, --device-write-bps {bps}mb", True, bps * MIB, np.nan,
                 {"device_write_bps": [{**rule, "Rate": bps * MIB}]}),
                (f"O_DIRECT, --device-write-iops {iops}", True, np.nan, iops,
                 {"device_write_iops": [{**rule, "Rate": iops}]}),
                (f"page cache, --device-write-bps {bps}mb", False, bps * MIB, np.nan,
                 {"device_write_bps": [{**rule, "Rate": bps * MIB}]}),
            ]
            for index, (name, direct, limit_bps, limit_iops_, throttle) in enumerate(conditions):
                frame = _write(rig, device, mib, direct, parent, throttle, f"io-{index}")
                frames.append(frame.assign(condition=name, direct=direct, limit_bps=limit_bps,
                                           limit_iops=limit_iops_))
        return pd.concat(frames, ignore_index=True)[list(IO_COLUMNS)]

    return IoResult(lab.measure("io_writes", experiment, write_mib=mib, limit_mib_per_s=limit_mib_per_s,
                                limit_iops=limit_iops, device_mib=device_mib))

"""Sections 1–4: the lab machine booted and timed, and the same probe run on the host and inside it."""

from __future__ import annotations

import json
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from labkit import assets
from labkit.core.session import LabSession
from labkit.instruments import images, measure, shell, space
from labkit.instruments.vm import accelerator, guest
from labkit.labs.the_lab_machine.declaration import (
    BASE,
    BOOT_TIMEOUT_S,
    CLOCK_RESOLUTION_S,
    CPUS,
    ESCAPED_FROM,
    GUEST,
    HOST,
    IO_TOLERANCE,
    MARKS,
    MEMORY_MIB,
    MINUTE_S,
)

PROBE = "lab_machine/probe.py"
GUEST_IMAGE = "labkit/busybox:guest"
GUEST_DISK = "/dev/vda"  # the guest's only disk, under its engine's data-root
_SCOPE_PATH_RE = re.compile(r"/system\.slice/docker-[0-9a-f]{64}\.scope$")
# The guest makes the probe's image from its own busybox-static (the package the host's busybox base is made from).
_GUEST_SCRIPT = """mkdir -p /tmp/busybox/bin && cp /bin/busybox /tmp/busybox/bin/
chroot /tmp/busybox /bin/busybox --install -s /bin
tar -C /tmp/busybox -c . | docker import --change 'ENV PATH=/bin' - {image} >/dev/null
echo "LABKIT mark image-ready $(cut -d' ' -f1 /proc/uptime)"
python3 /labkit/probe.py {image} {labels} {disk} /labkit/out/probe.json
"""


@dataclass(frozen=True)
class MachineResult:
    """The lab machine's boots and the probe on both machines; every table has a `machine` ("host"/"guest") and a
    `boot` column (the host's probe is boot 0; the guest's boots count from 1).

    `image`: how the guest was made (one row; seconds per phase). `marks`: per boot, seconds from QEMU's start to
    each mark (`host_s`) and the guest's own uptime at the marks its job printed. `facts`, `cgroupns`, `oom`,
    `writes`: the probe's rows (see labkit/assets/lab_machine/probe.py).
    """

    image: pd.DataFrame
    marks: pd.DataFrame
    facts: pd.DataFrame
    cgroupns: pd.DataFrame
    oom: pd.DataFrame
    writes: pd.DataFrame

    @property
    def accelerator(self) -> str:
        return str(self.marks["accelerator"].iloc[0])

    @property
    def emulated(self) -> bool:
        return self.accelerator != "kvm"

    @property
    def boots(self) -> int:
        return int(self.marks["boot"].nunique())

    def timeline(self) -> pd.DataFrame:
        """boot × mark: seconds from QEMU's start, marks in boot order."""
        wide = self.marks.pivot(index="boot", columns="mark", values="host_s")
        return wide[[m for m in MARKS if m in wide.columns]]

    def mark_s(self, mark: str) -> pd.Series:
        """Per boot, seconds from QEMU's start to `mark` (NaN for a boot that never reached it)."""
        timeline = self.timeline()
        return timeline.get(mark, pd.Series(float("nan"), index=timeline.index))

    def median_s(self, mark: str) -> float:
        return float(self.mark_s(mark).median())

    def interval_s(self, mark: str) -> tuple[float, float]:
        """The order-statistic interval of the median seconds to `mark` over the boots (min–max for 5 or fewer)."""
        samples = self.mark_s(mark).dropna().tolist()
        low, high, _ = measure.median_interval(samples)
        return float(low), float(high)

    def fact(self, machine: str, key: str) -> str:
        rows = self.facts[(self.facts["machine"] == machine) & (self.facts["key"] == key)]
        values = rows["value"].astype(str).unique()
        return values[0] if len(values) == 1 else " / ".join(values)

    def in_scope(self) -> bool:
        """Every guest OOM container lived in a systemd scope, ``/system.slice/docker-<id>.scope``."""
        paths = self.oom[self.oom["machine"] == GUEST]["cgroup"].astype(str)
        return bool(len(paths)) and all(_SCOPE_PATH_RE.search(p) for p in paths)

    def default_ns(self, machine: str) -> pd.DataFrame:
        rows = self.cgroupns[self.cgroupns["machine"] == machine]
        return rows[rows["mode"] == "default"]

    def namespaces(self) -> pd.DataFrame:
        """mode × machine: whether the container shared the machine's cgroup namespace, and the path it saw."""
        table = self.cgroupns.assign(seen=lambda f: f["shared_with_host"].map({True: "shared", False: "private"})
                                     + " · sees " + f["sees_path"].astype(str).str.slice(0, 32))
        first = table.sort_values("boot").groupby(["mode", "machine"], sort=False)["seen"].first()
        return first.unstack("machine")[[HOST, GUEST]]

    def oom_rows(self, machine: str) -> pd.DataFrame:
        return self.oom[self.oom["machine"] == machine]

    def oom_numbers(self, machine: str, column: str) -> pd.Series:
        """One numeric column of `machine`'s OOM rows (a file that was missing or read "max" is NaN): read back from
        CSV, a column with NaN in some rows is float, so its text is never compared."""
        return pd.to_numeric(self.oom_rows(machine)[column], errors="coerce")

    def oom_cgroup(self, machine: str) -> str:
        """The OOM container's cgroup folder on `machine` (its first boot), its id shortened to ``<id>``."""
        return _short(str(self.oom_rows(machine)["cgroup"].iloc[0]))

    def write_ratio(self) -> pd.DataFrame:
        """machine × kind: the limited write's rate over the limit (median over boots; 1 = at the limit). A write
        that took less than the clock's step is counted as one step: its ratio is then a lower bound."""
        limited = self.writes[self.writes["limit_bps"] > 0].copy()
        seconds = limited["seconds"].clip(lower=CLOCK_RESOLUTION_S)
        limited["over_limit"] = limited["bytes"] / seconds / limited["limit_bps"]
        return limited.groupby(["kind", "machine"], sort=False)["over_limit"].median().unstack("machine")[
            [HOST, GUEST]]

    @property
    def limit_mib_s(self) -> float:
        """The write limit (MiB/s) the limited rows ran under."""
        return float(self.writes.loc[self.writes["limit_bps"] > 0, "limit_bps"].iloc[0]) / (1 << 20)

    def held(self, machine: str, kind: str) -> bool:
        return bool(self.write_ratio().loc[kind, machine] <= 1 + IO_TOLERANCE)

    def escaped(self, machine: str, kind: str) -> bool:
        return bool(self.write_ratio().loc[kind, machine] >= ESCAPED_FROM)

    def side_by_side(self) -> pd.DataFrame:
        """The answers that differ or might: one row per question, one column per machine (the OOM rows: the first
        boot's)."""
        rows = {
            "cgroup file system at /sys/fs/cgroup": {m: self.fact(m, "cgroup_fs") for m in (HOST, GUEST)},
            "engine's cgroup driver (docker info)": {m: self.fact(m, "cgroup_driver") for m in (HOST, GUEST)},
            "cgroup version (docker info)": {m: self.fact(m, "cgroup_version") for m in (HOST, GUEST)},
            "kernel": {m: self.fact(m, "kernel") for m in (HOST, GUEST)},
            "engine": {m: self.fact(m, "server_version") for m in (HOST, GUEST)},
        }
        for machine in (HOST, GUEST):
            oom = self.oom_rows(machine).iloc[0]
            rows.setdefault("OOM container's cgroup", {})[machine] = self.oom_cgroup(machine)
            rows.setdefault("OOM kills counted in the container's cgroup", {})[machine] = (
                f"{int(oom['oom_kills'])} ({'memory.events oom_kill' if machine == GUEST else 'memory.oom_control'})")
            group = self.oom_numbers(machine, "oom_group").iloc[0]
            rows.setdefault("memory.oom.group", {})[machine] = "(no such file)" if pd.isna(group) else f"{group:.0f}"
            rows.setdefault("PID 1 after its child's OOM kill", {})[machine] = (
                "running" if bool(oom["pid1_running"]) else "gone")
            some = oom["pressure_some_us"]
            rows.setdefault("memory stall (PSI 'some' total)", {})[machine] = (
                "(no memory.pressure file)" if pd.isna(some) else f"{float(some) / 1e3:.1f} ms")
        return pd.DataFrame(rows).T

    def made_conclusion(self) -> str:
        row = self.image.iloc[0]
        return (f"**The machine.** Debian {images.DEBIAN_SUITE} with systemd {row['systemd_version']}, Docker "
                f"{row['docker_version']} and python3 {row['python3_version']}, on 01's kernel package "
                f"`{row['kernel_package']}`; its disk holds {row['disk_used_bytes'] / 1e9:.2f} GB. It was made on "
                f"{row['made_utc']} in {row['debootstrap_s']:.0f} s of debootstrap, {row['kernel_s']:.0f} s to "
                f"install the kernel and {row['disk_s']:.1f} s to write the disk — once: later runs reuse it from "
                "the cache (its recipe hash names the folder), so these phases are when it was made, not this run.")

    def boot_conclusion(self) -> str:
        how = "software emulation (TCG)" if self.emulated else "KVM"
        target, (low, high) = self.median_s("default-target"), self.interval_s("default-target")
        kernel, systemd = self.median_s("kernel"), self.median_s("systemd")
        ready = self.median_s("docker-ready")
        return (f"**What we measured.** Over {self.boots} boot(s) under {how}, the kernel printed its first line "
                f"after {kernel:.1f} s, systemd started as PID 1 after {systemd:.1f} s, the default target was "
                f"reached after **{target:.1f} s**"
                + (f" (median; interval {low:.1f}–{high:.1f} s)" if self.boots > 1 else "")
                + f" and the guest's Docker answered after {ready:.1f} s: {ready - target:.1f} s more. "
                + (f"Under emulation every guest instruction is translated, so this is slower than the same VM with "
                   f"KVM; it is still {'under' if target < MINUTE_S else 'over'} a minute. " if self.emulated else "")
                + "This Debian has little to start (no network to wait for, no cloud-init, no desktop): a cloud "
                "image's boot adds those.")

    def defaults_conclusion(self) -> str:
        guest_default, host_default = self.default_ns(GUEST).iloc[0], self.default_ns(HOST).iloc[0]
        whose = "the machine's" if guest_default["shared_with_host"] else "its own"
        host_ns = "shared the host's" if host_default["shared_with_host"] else "had its own"
        return (f"**What differs.** The guest's engine picked the **{self.fact(GUEST, 'cgroup_driver')}** driver "
                f"on cgroup v{self.fact(GUEST, 'cgroup_version')} with no configuration, and put each container in "
                f"`{self.oom_cgroup(GUEST).removeprefix('/sys/fs/cgroup')}`; the host's uses "
                f"{self.fact(HOST, 'cgroup_driver')} on v{self.fact(HOST, 'cgroup_version')} "
                f"(`{self.oom_cgroup(HOST).removeprefix('/sys/fs/cgroup/memory')}`). By default a container in the "
                f"guest got {whose} cgroup namespace and saw itself at `{guest_default['sees_path']}`; on the host it "
                f"{host_ns} and saw "
                f"`{_short(str(host_default['sees_path']))}`: a program inside that reads /proc/self/cgroup gets "
                "a different answer on the two machines from the same image. Both engines are Debian's "
                f"{self.fact(GUEST, 'server_version')}; the kernels differ ({self.fact(HOST, 'kernel')} on the host, "
                f"{self.fact(GUEST, 'kernel')} in the guest).")

    def oom_conclusion(self) -> str:
        guest, host = self.oom_rows(GUEST), self.oom_rows(HOST).iloc[0]
        stalls = guest["pressure_some_us"].astype(float)
        return (f"**What we measured.** In the guest, over {len(guest)} boot(s), memory.max read "
                f"{listed(self.oom_numbers(GUEST, 'limit_bytes'))} bytes, memory.peak reached "
                f"{guest['peak_bytes'].max() / (1 << 20):.1f} MiB and memory.events counted "
                f"{', '.join(str(int(k)) for k in guest['oom_kills'])} oom_kill(s); memory.oom.group was "
                f"{listed(self.oom_numbers(GUEST, 'oom_group'))}, so the kernel killed the child alone and "
                f"PID 1 was {'still running' if guest['pid1_running'].astype(bool).all() else 'gone'}. The host (v1) "
                f"counted {int(host['oom_kills'])} kill in memory.oom_control and its PID 1 was "
                f"{'still running' if bool(host['pid1_running']) else 'gone'} too. Only v2 kept how long the "
                "container's tasks stalled waiting for memory on the way: memory.pressure's 'some' total read "
                + ", ".join("none" if s != s else f"{s / 1e3:.1f} ms" for s in stalls)
                + ". The engine's own OOMKilled flag stayed "
                f"{'false' if not guest['oom_killed_flag'].astype(bool).any() else 'true'} in the guest: it is set "
                "only when the container's main process is the one killed.")

    def io_conclusion(self) -> str:
        ratios, limit_mib_s = self.write_ratio(), self.limit_mib_s

        def listed(machine: str) -> str:
            return ", ".join(f"{'≥ ' if self.below_step(machine, kind) else ''}{ratios.loc[kind, machine]:.2f}× "
                             f"({kind})" for kind in ratios.index)

        def verdicts(machine: str) -> str:
            held = [kind for kind in ratios.index if self.held(machine, kind)]
            escaped = [kind for kind in ratios.index if self.escaped(machine, kind)]
            return (f"held: {', '.join(held) or 'none'}; escaped: {', '.join(escaped) or 'none'}")

        return (f"**What we measured.** Under `--device-write-bps` {limit_mib_s:g} MiB/s the guest's writes ran at "
                f"{listed(GUEST)} the limit ({verdicts(GUEST)}); the host's at {listed(HOST)} ({verdicts(HOST)}). "
                "On v1 the kernel's flusher threads write back dirty pages outside the container's cgroup, so a "
                "write flushed later escapes a limit that an fsync (written back by the container's own task) or "
                "O_DIRECT does not; on v2 writeback is charged to the cgroup that dirtied the pages. The writes are "
                f"small ({int(self.writes['bytes'].iloc[0]) >> 20} MiB each) and timed in the container's 10 ms clock "
                "steps: a write faster than one step counts as one step, so its ratio is a lower bound (≥).")

    def below_step(self, machine: str, kind: str) -> bool:
        """Whether the limited `kind` of write took one clock step or less on `machine` (its ratio a lower bound)."""
        rows = self.writes[(self.writes["kind"] == kind) & (self.writes["limit_bps"] > 0)
                           & (self.writes["machine"] == machine)]
        return bool((rows["seconds"] <= CLOCK_RESOLUTION_S).any())


def listed(values: pd.Series) -> str:
    """The distinct whole numbers in `values`, in order, as text ("none" for a value that was not read)."""
    return ", ".join(sorted({"none" if pd.isna(v) else f"{v:.0f}" for v in values}))


def _short(path: str) -> str:
    return re.sub(r"[0-9a-f]{64}", "<id>", path)


def _labels_arg(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in labels.items())


def _probe_rows(probe: dict[str, object], machine: str, boot: int) -> dict[str, list[dict[str, object]]]:
    """The probe's JSON as rows of the four tables, each with its machine and boot."""
    tag = {"machine": machine, "boot": boot}
    facts = probe["facts"]
    assert isinstance(facts, dict)
    return {
        "facts": [{**tag, "key": key, "value": str(value)} for key, value in facts.items()],
        "cgroupns": [{**tag, **row} for row in probe["cgroupns"]],  # type: ignore[attr-defined]
        "oom": [{**tag, **probe["oom"]}],  # type: ignore[dict-item]
        "writes": [{**tag, **row} for row in probe["writes"]],  # type: ignore[attr-defined]
    }


def run_machine(lab: LabSession, boots: int = 3, memory_mib: int = MEMORY_MIB, cpus: int = CPUS,
                timeout_s: float = BOOT_TIMEOUT_S) -> MachineResult:
    """Make the lab machine (once; cached), run the probe on the host, then boot the machine `boots` times, each
    boot running the same probe inside it; `memory_mib` MiB and `cpus` virtual CPUs per boot, each killed after
    `timeout_s` seconds."""
    measure.validate_repeats(boots, names=("boots", "warmup"))
    guest.validate_run("tcg", memory_mib, cpus, timeout_s)
    disk = Path()
    if lab.live:
        lab.require_root("Booting the lab machine and reading the host's cgroups")
        disk = space.whole_disk(space.engine_storage(lab.engine))  # the host's IO limits name it
        space.require_memory({space.Size("memory_mib", memory_mib): 1})
        space.require_disk((guest.guest_parent(), {space.Size("the lab machine's disk, made once", guest.MAKING_MIB):
                                                   0 if guest.is_made() else 1}),
                           (guest.runs_parent(), {space.Size("one boot's snapshot", guest.BOOT_MIB): 1}))

    def experiment() -> dict[str, pd.DataFrame]:
        made = guest.ensure_guest()
        manifest = made.manifest
        versions = manifest["versions"]
        assert isinstance(versions, dict)
        image = pd.DataFrame([{
            **{key: manifest[key] for key in ("recipe", "kernel_package", "kernel_release", "made_utc",
                                              "debootstrap_s", "kernel_s", "disk_s", "disk_used_bytes")},
            "docker_version": versions["docker.io"], "systemd_version": versions["systemd"],
            "python3_version": versions["python3"]}])
        rows: dict[str, list[dict[str, object]]] = {"facts": [], "cgroupns": [], "oom": [], "writes": []}
        with lab.scope() as scope:
            with tempfile.TemporaryDirectory(prefix="labkit-probe-") as folder:
                out = Path(folder) / "probe.json"
                shell.run([sys.executable, str(assets.FOLDER / PROBE), images.require_base(lab.engine, BASE).tag,
                           _labels_arg(scope.labels), str(disk), str(out)], 600)
                for table, found in _probe_rows(json.loads(out.read_text()), HOST, 0).items():
                    rows[table] += found
            accel = accelerator()
            probe = assets.text(PROBE).encode()
            script = _GUEST_SCRIPT.format(image=GUEST_IMAGE, labels=_labels_arg(scope.labels), disk=GUEST_DISK)
            marks, console = [], []
            for boot in range(1, boots + 1):
                run = guest.run_job(made, script, {"probe.py": probe}, run_id=lab.run_id, accel=accel,
                                    memory_mib=memory_mib, cpus=cpus, timeout_s=timeout_s)
                console += [{"boot": boot, "line": line} for line in run.console]
                marks += [{"boot": boot, "accelerator": run.accelerator, "mark": mark, "host_s": seconds,
                           "guest_uptime_s": run.uptimes.get(mark)} for mark, seconds in run.marks.items()]
                if not run.completed or run.status != 0 or "probe.json" not in run.outputs:
                    raise RuntimeError(f"the lab machine's probe did not finish (boot {boot}, status {run.status}, "
                                       f"completed {run.completed}); what it printed:\n"
                                       + "\n".join(run.job_lines()[-30:]))
                for table, found in _probe_rows(json.loads(run.outputs["probe.json"]), GUEST, boot).items():
                    rows[table] += found
        return {"guest_image": image, "boot_marks": pd.DataFrame(marks), "console": pd.DataFrame(console),
                **{table: pd.DataFrame(found) for table, found in rows.items()}}

    tables = lab.record("machine", ("guest_image", "boot_marks", "console", "facts", "cgroupns", "oom", "writes"),
                        experiment, boots=boots, memory_mib=memory_mib, cpus=cpus, timeout_s=timeout_s)
    return MachineResult(tables["guest_image"], tables["boot_marks"], tables["facts"], tables["cgroupns"],
                         tables["oom"], tables["writes"])


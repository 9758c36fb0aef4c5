"""Sections 1–4: the lab machine booted and timed, and the same probe run on the host and inside it."""

from __future__ import annotations

import json
import re
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from labkit import assets
from labkit.assets.lab_machine import probe as probe_program
from labkit.core.results import rows_where
from labkit.core.session import LabSession
from labkit.instruments import images, measure, shell, space, undo
from labkit.instruments.host import HostFacts
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
# SeaBIOS's line before it hands over: "ROM" when QEMU's -kernel/-initrd gave it the kernel (its linuxboot option
# ROM), "Hard Disk" when a bootloader on the disk takes over.
_BOOTED_FROM_RE = re.compile(r"Booting from (.+?)\.\.\.")
_HIERARCHY_RE = re.compile(r"^/sys/fs/cgroup(/memory)?")  # v2's one hierarchy, or v1's memory hierarchy
SIGKILL_EXIT = 128 + signal.SIGKILL  # what the shell reports for a child the OOM killer ended
WRITE_KINDS = tuple(kind for kind, _, _ in probe_program.WRITE_KINDS)
SYNCED = WRITE_KINDS[0]  # written through the page cache, then flushed by `sync`
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
    each mark (`host_s`) and the guest's own uptime at the marks its job printed. `console`: per boot, the lines of
    its serial console. `facts`, `cgroupns`, `oom`, `writes`: the probe's rows (see
    labkit/assets/lab_machine/probe.py). `host_facts`: what kind of machine the host is, from the session's
    fingerprint (None for a recording whose fingerprint has no host facts).
    """

    image: pd.DataFrame
    marks: pd.DataFrame
    console: pd.DataFrame
    facts: pd.DataFrame
    cgroupns: pd.DataFrame
    oom: pd.DataFrame
    writes: pd.DataFrame
    host_facts: HostFacts | None

    @property
    def accelerator(self) -> str:
        return str(self.marks["accelerator"].iloc[0])

    @property
    def emulated(self) -> bool:
        return self.accelerator != "kvm"

    @property
    def boots(self) -> int:
        return int(self.marks["boot"].nunique())

    def emulation_limit(self) -> str:
        """What emulation hides of a VM's boot, from the accelerator and the host's facts ('' under KVM)."""
        if not self.emulated:
            return ""
        facts = self.host_facts
        nested = facts is not None and facts.nested_kvm
        if facts is not None and facts.virtualised:
            where = (" inside a virtual machine (the host's CPU reports a hypervisor"
                     + ("; its /dev/kvm is nested, kvm_pvm" if nested else "") + ")")
        else:
            where = " (the host's /dev/kvm is nested, kvm_pvm)" if nested else ""
        return (f"it booted under software emulation (TCG){where}, every guest instruction translated: the same VM "
                "with hardware-speed KVM would boot faster")

    def direct_boot(self) -> bool:
        """Every boot's SeaBIOS booted from ROM (the kernel and initramfs QEMU was given), none from a disk."""
        lines = self.console.assign(source=self.console["line"].astype(str).str.extract(_BOOTED_FROM_RE)[0])
        sources = lines.dropna(subset=["source"]).groupby("boot")["source"].agg(set)
        return len(sources) == self.boots and all(found == {"ROM"} for found in sources)

    def direct_boot_limit(self) -> str:
        """What a direct boot hides of a VM's boot ('' unless every boot was one)."""
        if not self.direct_boot():
            return ""
        return ("SeaBIOS booted from ROM: QEMU loaded the kernel and initramfs itself (-kernel/-initrd) and no "
                "bootloader read them from the disk, so a VM that boots from its disk takes longer than this")

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
        rows = rows_where(self.facts, machine=machine, key=key)
        values = rows["value"].astype(str).unique()
        return values[0] if len(values) == 1 else " / ".join(values)

    def version(self, machine: str) -> str:
        """`machine`'s cgroup version as its engine reports it ("1" or "2")."""
        return self.fact(machine, "cgroup_version")

    def legend(self) -> dict[str, str]:
        """Each machine named with its cgroup version and its engine's cgroup driver."""
        return {m: f"{m} (v{self.version(m)}, {self.fact(m, 'cgroup_driver')})" for m in (HOST, GUEST)}

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

    def cgroup_path(self, machine: str) -> str:
        """The OOM container's cgroup as a path in its (memory) hierarchy, as /proc/<pid>/cgroup names it."""
        return _HIERARCHY_RE.sub("", self.oom_cgroup(machine))

    def kill_counter(self, machine: str) -> str:
        """The file of the container's cgroup that counts its OOM kills on `machine`'s cgroup version."""
        return "memory.events oom_kill" if self.version(machine) == "2" else "memory.oom_control"

    def child_killed_alone(self, machine: str) -> bool:
        """In every boot the child ended by SIGKILL and the container's PID 1 was still running after it."""
        rows = self.oom_rows(machine)
        return bool(len(rows)) and bool(rows["pid1_running"].astype(bool).all()
                                        and (self.oom_numbers(machine, "child_exit") == SIGKILL_EXIT).all())

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

    def writes_fit(self, machine: str) -> bool:
        """`machine`'s limited writes show what its cgroup version predicts: the fsync'd and O_DIRECT writes held,
        and the write flushed later by `sync` escaped on v1 and held on v2."""
        synced = self.escaped(machine, SYNCED) if self.version(machine) == "1" else self.held(machine, SYNCED)
        return synced and all(self.held(machine, kind) for kind in WRITE_KINDS if kind != SYNCED)

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
                f"{int(oom['oom_kills'])} ({self.kill_counter(machine)})")
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
        host_version, guest_version = self.version(HOST), self.version(GUEST)
        return (f"**The machine.** Debian {images.DEBIAN_SUITE} with systemd {row['systemd_version']}, Docker "
                f"{row['docker_version']} and python3 {row['python3_version']}, on 01's kernel package "
                f"`{row['kernel_package']}`; its disk holds {row['disk_used_bytes'] / 1e9:.2f} GB. It was made on "
                f"{row['made_utc']} in {row['debootstrap_s']:.0f} s of debootstrap, {row['kernel_s']:.0f} s to "
                f"install the kernel and {row['disk_s']:.1f} s to write the disk — once: later runs reuse it from "
                "the cache (its recipe hash names the folder), so these phases are when it was made, not this run. "
                f"Its engine reports cgroup v{guest_version} with the {self.fact(GUEST, 'cgroup_driver')} driver; "
                f"the host's, which runs the same probe beside it, cgroup v{host_version} with the "
                f"{self.fact(HOST, 'cgroup_driver')} driver"
                + ("." if host_version != guest_version else
                   ": the same version, so the sections below compare two machines of one cgroup version."))

    def boot_conclusion(self) -> str:
        target, (low, high) = self.median_s("default-target"), self.interval_s("default-target")
        kernel, systemd = self.median_s("kernel"), self.median_s("systemd")
        ready = self.median_s("docker-ready")
        limits = [limit for limit in (self.emulation_limit(), self.direct_boot_limit()) if limit]
        return (f"**What we measured.** Over {self.boots} boot(s) under {self.accelerator.upper()}, the kernel "
                f"printed its first line after {kernel:.1f} s, systemd started as PID 1 after {systemd:.1f} s, the "
                f"default target was reached after **{target:.1f} s**"
                + (f" (median; interval {low:.1f}–{high:.1f} s)" if self.boots > 1 else "")
                + f" — {'under' if target < MINUTE_S else 'over'} a minute — and the guest's Docker answered after "
                f"{ready:.1f} s: {ready - target:.1f} s more. "
                + "".join(f"{limit[0].upper()}{limit[1:]}. " for limit in limits)
                + "This Debian has little to start (no network to wait for, no cloud-init, no desktop): a cloud "
                "image's boot adds those.")

    def defaults_conclusion(self) -> str:
        guest_default, host_default = self.default_ns(GUEST).iloc[0], self.default_ns(HOST).iloc[0]
        guest_sees, host_sees = _short(str(guest_default["sees_path"])), _short(str(host_default["sees_path"]))
        whose = "the machine's" if guest_default["shared_with_host"] else "its own"
        host_ns = "shared the host's" if host_default["shared_with_host"] else "had its own"
        answers = "the same answer on both machines" if guest_sees == host_sees else "different answers on the two"
        return (f"**What differs.** The guest's engine reports the **{self.fact(GUEST, 'cgroup_driver')}** driver "
                f"on cgroup v{self.version(GUEST)} and put each container in `{self.cgroup_path(GUEST)}`; the "
                f"host's reports {self.fact(HOST, 'cgroup_driver')} on v{self.version(HOST)} "
                f"(`{self.cgroup_path(HOST)}`). By default a container in the guest got {whose} cgroup namespace "
                f"and saw itself at `{guest_sees}`; on the host it {host_ns} and saw `{host_sees}`: the same command "
                f"reading /proc/self/cgroup gets {answers}. "
                + _compared("Docker", {m: self.fact(m, "server_version") for m in (HOST, GUEST)}) + " "
                + _compared("the kernel", {m: self.fact(m, "kernel") for m in (HOST, GUEST)}))

    def oom_conclusion(self) -> str:
        guest, host = self.oom_rows(GUEST), self.oom_rows(HOST)
        return (f"**What we measured.** In the guest, over {len(guest)} boot(s), memory.max read "
                f"{listed(self.oom_numbers(GUEST, 'limit_bytes'))} bytes, memory.peak reached "
                f"{guest['peak_bytes'].max() / (1 << 20):.1f} MiB and {self.kill_counter(GUEST)} counted "
                f"{', '.join(str(int(k)) for k in guest['oom_kills'])} kill(s); memory.oom.group was "
                f"{listed(self.oom_numbers(GUEST, 'oom_group'))} and {self._who_was_killed(GUEST)}. The host "
                f"(cgroup v{self.version(HOST)}) counted {', '.join(str(int(k)) for k in host['oom_kills'])} "
                f"kill(s) in {self.kill_counter(HOST)}, and {self._who_was_killed(HOST)}. "
                + self._limit_hits() + " memory.pressure's 'some' total (how long the container's tasks stalled "
                f"waiting for memory) read {_stalls(self.oom_numbers(GUEST, 'pressure_some_us'))} in the guest and "
                f"{_stalls(self.oom_numbers(HOST, 'pressure_some_us'))} on the host. " + self._oom_flag())

    def _who_was_killed(self, machine: str) -> str:
        if self.child_killed_alone(machine):
            return (f"each time the child exited {SIGKILL_EXIT} (SIGKILL) while PID 1 kept running: the kernel "
                    "killed the child alone")
        rows = self.oom_rows(machine)
        return (f"the child's exit read {listed(self.oom_numbers(machine, 'child_exit'))}, with PID 1 still "
                f"running in {int(rows['pid1_running'].astype(bool).sum())} of {len(rows)} boot(s)")

    def _limit_hits(self) -> str:
        """The charges each machine counted as failing at the limit, and where that count stayed 0 although the
        peak reached the limit (there, the peak is the witness)."""
        counter = {m: "memory.events max" if self.version(m) == "2" else "failcnt" for m in (HOST, GUEST)}
        silent = [m for m in (HOST, GUEST) if (self.oom_numbers(m, "limit_hits") == 0).all()
                  and (self.oom_numbers(m, "peak_bytes") >= self.oom_numbers(m, "limit_bytes")).all()]
        return (f"Charges that failed at the limit: {listed(self.oom_numbers(GUEST, 'limit_hits'))} in the guest "
                f"({counter[GUEST]}), {listed(self.oom_numbers(HOST, 'limit_hits'))} on the host "
                f"({counter[HOST]})"
                + "".join(f"; the {m}'s {counter[m]} stayed 0 although its peak reached the limit, so there the "
                          "peak, not that counter, shows the limit was met" for m in silent) + ".")

    def _oom_flag(self) -> str:
        """What the engine's OOMKilled flag read, and when: in the same `docker inspect` as PID 1's state."""
        running = pd.concat([self.oom_rows(m)["pid1_running"] for m in (HOST, GUEST)]).astype(bool)
        when = ("while every container was still running; what the flag reads once the container has exited is "
                "not measured here" if running.all() else
                f"in the same read that found PID 1 gone in {int((~running).sum())} of {len(running)} run(s)")
        return (f"The engine's OOMKilled flag read {_flags(self.oom_rows(GUEST)['oom_killed_flag'])} in the guest "
                f"and {_flags(self.oom_rows(HOST)['oom_killed_flag'])} on the host, read by `docker inspect` once "
                f"the probe's wait for the kill ended, {when}.")

    def io_conclusion(self) -> str:
        ratios, limit_mib_s = self.write_ratio(), self.limit_mib_s

        def listed(machine: str) -> str:
            return ", ".join(f"{'≥ ' if self.below_step(machine, kind) else ''}{ratios.loc[kind, machine]:.2f}× "
                             f"({kind})" for kind in ratios.index)

        def verdicts(machine: str) -> str:
            held = [kind for kind in ratios.index if self.held(machine, kind)]
            escaped = [kind for kind in ratios.index if self.escaped(machine, kind)]
            return (f"held: {', '.join(held) or 'none'}; escaped: {', '.join(escaped) or 'none'}")

        def reading(machine: str) -> str:
            predicted, why = _WRITEBACK["1" if self.version(machine) == "1" else "2"]
            where = f"{'On the host' if machine == HOST else 'In the guest'} (cgroup v{self.version(machine)})"
            return (f"{where} they fit how that version charges writeback: {why}. " if self.writes_fit(machine)
                    else f"{where} they do not fit what that version predicts ({predicted}). ")

        return (f"**What we measured.** Under `--device-write-bps` {limit_mib_s:g} MiB/s the guest's writes ran at "
                f"{listed(GUEST)} the limit ({verdicts(GUEST)}); the host's at {listed(HOST)} ({verdicts(HOST)}). "
                + reading(HOST) + reading(GUEST)
                + f"The writes are small ({int(self.writes['bytes'].iloc[0]) >> 20} MiB each) and timed in the "
                f"container's {CLOCK_RESOLUTION_S * 1e3:.0f} ms clock steps: a write faster than one step counts as "
                "one step, so its ratio is a lower bound (≥).")

    def below_step(self, machine: str, kind: str) -> bool:
        """Whether the limited `kind` of write took one clock step or less on `machine` (its ratio a lower bound)."""
        rows = self.writes[(self.writes["kind"] == kind) & (self.writes["limit_bps"] > 0)
                           & (self.writes["machine"] == machine)]
        return bool((rows["seconds"] <= CLOCK_RESOLUTION_S).any())


def listed(values: pd.Series) -> str:
    """The distinct whole numbers in `values`, in order, as text ("none" for a value that was not read)."""
    return ", ".join(sorted({"none" if pd.isna(v) else f"{v:.0f}" for v in values}))


_WRITEBACK = {
    "1": ("the write flushed later escapes the limit; the fsync'd and O_DIRECT writes are held",
          "the kernel's flusher threads write dirty pages back outside the container's cgroup, so the write flushed "
          "later escapes the limit, while an fsync's writeback runs in the container's own task and O_DIRECT skips "
          "the page cache"),
    "2": ("every kind of write is held to the limit",
          "writeback is charged to the cgroup that dirtied the pages, so the limit holds every kind of write"),
}
"""Per cgroup version: what the limited writes should show, and why."""


def _compared(noun: str, values: Mapping[str, str]) -> str:
    """A sentence on one fact (`values`: per machine) of the two machines: the same, or how it differs."""
    if values[HOST] == values[GUEST]:
        return f"Both machines run {noun} {values[HOST]}."
    return f"{noun[0].upper()}{noun[1:]} differs: {values[HOST]} on the host, {values[GUEST]} in the guest."


def _stalls(stalls: pd.Series) -> str:
    """PSI 'some' totals (µs) per boot as text; a machine without memory.pressure says so."""
    if stalls.isna().all():
        return "nothing (no memory.pressure file)"
    return ", ".join("none" if pd.isna(s) else f"{s / 1e3:.1f} ms" for s in stalls)


def _flags(flags: pd.Series) -> str:
    """The OOMKilled flags of a machine's boots as text: one value, or how many were true."""
    values = flags.astype(bool)
    if values.nunique() == 1:
        return str(bool(values.iloc[0])).lower()
    return f"true in {int(values.sum())} of {len(values)} boots"


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
            with undo.temporary_folder("labkit-probe-") as folder:
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
    return MachineResult(tables["guest_image"], tables["boot_marks"], tables["console"], tables["facts"],
                         tables["cgroupns"], tables["oom"], tables["writes"], _host_facts(lab.provenance))


def _host_facts(provenance: Mapping[str, Any]) -> HostFacts | None:
    """What kind of machine the host is, as the session's fingerprint says (live: read now; replay: recorded)."""
    recorded = provenance.get("fingerprint", {}).get("host")
    return None if recorded is None else HostFacts(**{**recorded, "kvm_modules": tuple(recorded["kvm_modules"])})


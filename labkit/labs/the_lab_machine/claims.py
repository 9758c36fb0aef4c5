"""Section 5: the chapter's claims this notebook judges on a second machine, and our findings on cgroup v2."""

from __future__ import annotations

from labkit.assets.lab_machine import probe
from labkit.core.claims import ClaimLedger, Source, Verdict, at_least_verdict, verdict
from labkit.labs.the_lab_machine.declaration import (
    ESCAPED_FROM,
    GUEST,
    HOST,
    IO_TOLERANCE,
    MINUTE_S,
    SECTION_DEFAULTS,
    SECTION_IO,
    SECTION_OOM,
    SECTION_WHAT,
)
from labkit.labs.the_lab_machine.machine import SYNCED, WRITE_KINDS, MachineResult, listed


def check_claims(ledger: ClaimLedger, machine: MachineResult) -> None:
    """The chapter's claims judged on the lab machine and our findings about cgroup v2 beside this host (v1 here;
    on a v2 host the comparisons are inconclusive), each with a criterion and a verdict computed from this
    notebook's measurements."""
    _boot(ledger, machine)
    _memory(ledger, machine)
    _io(ledger, machine)
    _defaults(ledger, machine)


def _boot(ledger: ClaimLedger, machine: MachineResult) -> None:
    booted = machine.median_s("default-target")
    low, high = machine.interval_s("default-target")
    boot_verdict = at_least_verdict(booted >= MINUTE_S, machine.emulated)
    # What the boot does not show: a VM at hardware speed (when emulated), and one booting from its disk.
    limits = [limit for limit in (machine.emulation_limit(), machine.direct_boot_limit()) if limit]
    caveat = {Verdict.INCONCLUSIVE: ["it took a minute or more, but hardware-speed KVM might not", *limits],
              Verdict.HOLDS: [],
              Verdict.FAILS: ["the guest is a small Debian (systemd, udev, dbus, dockerd; no network to wait for, "
                              "no cloud-init, no desktop), not a fuller system", *limits]}[boot_verdict]
    ledger.check(
        "machine.vm_minutes", source=Source.CHAPTER, section=SECTION_WHAT,
        claim="A VM takes minutes to boot (a whole Debian with systemd and Docker this time)",
        value=booted, unit="s (median, QEMU start → default target)",
        measured=f"{machine.boots} boot(s) under {machine.accelerator}: default target after {booted:.1f} s "
                 f"[{low:.1f}, {high:.1f}], Docker answering after {machine.median_s('docker-ready'):.1f} s",
        criterion=f"the median boot to systemd's default target is ≥ {MINUTE_S:.0f} s; a minute or more under "
                  "emulation is inconclusive (hardware-speed KVM would be faster)",
        verdict=boot_verdict, caveat="; ".join(caveat), tables=("boot_marks",))


def _memory(ledger: ClaimLedger, machine: MachineResult) -> None:
    oom = machine.oom_rows(GUEST)
    limits = machine.oom_numbers(GUEST, "limit_bytes")
    held = bool((limits == probe.MEMORY_LIMIT).all() and (oom["peak_bytes"] <= probe.MEMORY_LIMIT).all())
    counted = bool((oom["oom_kills"] >= 1).all())
    ledger.demonstrate(
        "machine.cgroup_v2_memory", source=Source.CHAPTER, section=SECTION_WHAT,
        claim="Cgroups cap a container's memory and account for it (on cgroup v2 with the systemd driver)",
        shown=held and counted, unit="1 = memory.max as asked, memory.peak within it, the kill counted",
        measured=f"--memory {probe.MEMORY_LIMIT >> 20}m read back as memory.max {listed(limits)} in every boot; "
                 f"memory.peak at most {oom['peak_bytes'].max() / (1 << 20):.1f} MiB; memory.events counted "
                 f"{', '.join(str(int(k)) for k in oom['oom_kills'])} oom_kill(s) per boot",
        fixed_by="the engine writing --memory into memory.max, and the kernel's memory controller, which keeps "
                 "memory.peak at or below memory.max and counts the kill it makes in memory.events; the probe "
                 "waits for that kill",
        expected=f"in every boot memory.max is the {probe.MEMORY_LIMIT >> 20} MiB asked for, memory.peak stays at "
                 "or below it and memory.events counts at least one oom_kill",
        tables=("oom",))

    survived = bool(oom["pid1_running"].astype(bool).all())
    groups = machine.oom_numbers(GUEST, "oom_group")
    host = machine.oom_rows(HOST).iloc[0]
    ledger.check(
        "machine.oom_kills_one_process", source=Source.FINDING, section=SECTION_OOM,
        claim="On cgroup v2 too, the OOM killer ends the process that grew, not the whole container",
        value=float(survived), unit="1 = PID 1 still running after its child's OOM kill",
        measured=f"guest: memory.oom.group {listed(groups)}, PID 1 {'running' if survived else 'gone'}, the "
                 f"child's exit {', '.join(str(int(c)) for c in oom['child_exit'].dropna())}; host "
                 f"(v{machine.version(HOST)}): PID 1 {'running' if bool(host['pid1_running']) else 'gone'}",
        criterion="memory.oom.group is 0 and PID 1 is still running after the kill in every boot (with 1 the "
                  "kernel would have killed every process in the container)",
        verdict=verdict(survived and bool((groups == 0).all())), tables=("oom",))

    stalls = oom["pressure_some_us"]
    if stalls.isna().any():
        psi_verdict, caveat = Verdict.INCONCLUSIVE, "this kernel exposes no memory.pressure (PSI off)"
    else:
        psi_verdict, caveat = verdict(bool((stalls > 0).all())), ""
    ledger.check(
        "machine.memory_pressure", source=Source.FINDING, section=SECTION_OOM,
        claim="On cgroup v2 a container's memory.pressure shows the time its tasks stalled on memory",
        value=float(stalls.median()) / 1e3 if stalls.notna().all() else float("nan"),
        unit="ms ('some' total, median over boots)",
        measured="'some' stall totals per boot: " + ", ".join(
            "none" if s != s else f"{s / 1e3:.1f} ms" for s in stalls.astype(float)),
        criterion="the 'some' total of the OOM container's memory.pressure is above 0 in every boot (v1 has no "
                  "per-cgroup pressure file to compare)",
        verdict=psi_verdict, caveat=caveat, tables=("oom",))


def _io(ledger: ClaimLedger, machine: MachineResult) -> None:
    ratios = machine.write_ratio()
    held = all(machine.held(GUEST, kind) for kind in WRITE_KINDS)
    ledger.check(
        "machine.cgroup_v2_io", source=Source.CHAPTER, section=SECTION_WHAT,
        claim="Cgroups limit a container's IO bandwidth (on cgroup v2, every kind of write)",
        value=float(ratios[GUEST].max()), unit="× the limit (fastest limited write in the guest)",
        measured=f"guest, rate over the {machine.limit_mib_s:g} MiB/s limit: " + ", ".join(
            f"{kind} {ratios.loc[kind, GUEST]:.2f}×" for kind in WRITE_KINDS),
        criterion=f"each kind of write under --device-write-bps runs at most {IO_TOLERANCE:.0%} above the limit",
        verdict=verdict(held), tables=("writes",))

    charged = machine.held(GUEST, SYNCED) and machine.escaped(HOST, SYNCED)
    v1_caveat = _no_v1_host(machine)
    ledger.check(
        "machine.writeback_charged_on_v2", source=Source.FINDING, section=SECTION_IO,
        claim="Writes the kernel flushes later are held to a container's IO limit on cgroup v2, not on v1",
        value=float(ratios.loc[SYNCED, GUEST]), unit="× the limit (guest, buffered then sync)",
        measured=f"written through the page cache then flushed by `sync`: "
                 f"{'at least ' if machine.below_step(HOST, SYNCED) else ''}{ratios.loc[SYNCED, HOST]:.1f}× the "
                 f"limit on the v{machine.version(HOST)} host, {ratios.loc[SYNCED, GUEST]:.2f}× in the "
                 f"v{machine.version(GUEST)} guest",
        criterion=f"the guest's write runs at most {IO_TOLERANCE:.0%} above the limit and the host's at "
                  f"{ESCAPED_FROM:.0f}× or more",
        verdict=Verdict.INCONCLUSIVE if v1_caveat else verdict(charged), caveat=v1_caveat, tables=("writes",))


def _defaults(ledger: ClaimLedger, machine: MachineResult) -> None:
    driver, version = machine.fact(GUEST, "cgroup_driver"), machine.fact(GUEST, "cgroup_version")
    systemd = driver == "systemd" and version == "2" and machine.in_scope()
    ledger.check(
        "machine.systemd_driver", source=Source.FINDING, section=SECTION_DEFAULTS,
        claim="On a systemd host with cgroup v2 the engine uses the systemd cgroup driver by itself",
        value=float(systemd), unit="1 = systemd driver, v2, containers in system.slice scopes",
        measured=f"guest: driver {driver}, cgroup v{version}, the OOM container in "
                 f"{machine.oom_cgroup(GUEST)}; host: driver "
                 f"{machine.fact(HOST, 'cgroup_driver')}, v{machine.fact(HOST, 'cgroup_version')}",
        criterion="with no daemon.json, docker info reports the systemd driver and cgroup v2, and each container "
                  "lives in /system.slice/docker-<id>.scope",
        verdict=verdict(systemd), tables=("facts", "oom"))

    guest_default, host_default = machine.default_ns(GUEST), machine.default_ns(HOST)
    v1_caveat = _no_v1_host(machine)
    private_v2 = bool((~guest_default["shared_with_host"].astype(bool)).all()
                      and (guest_default["sees_path"] == "/").all())
    shared_v1 = bool(host_default["shared_with_host"].astype(bool).all())
    ledger.check(
        "machine.cgroupns_private_on_v2", source=Source.FINDING, section=SECTION_DEFAULTS,
        claim="By default a container gets its own cgroup namespace on cgroup v2 and shares the host's on v1",
        value=float(private_v2 and shared_v1), unit="1 = private on v2 and shared on v1",
        measured=f"default mode: guest {'private, sees /' if private_v2 else 'not private'}; host "
                 f"{'shared, sees ' + str(host_default['sees_path'].iloc[0])[:40] if shared_v1 else 'not shared'}",
        criterion="in the guest the default container's /proc/self/ns/cgroup differs from the machine's and it "
                  "sees itself at /; on the host it is the host's namespace",
        verdict=Verdict.INCONCLUSIVE if v1_caveat else verdict(private_v2 and shared_v1), caveat=v1_caveat,
        tables=("cgroupns",))


def _no_v1_host(machine: MachineResult) -> str:
    """Why a claim that compares v1 with v2 cannot be decided here ('' when the host is on v1)."""
    if machine.version(HOST) == "1":
        return ""
    return (f"this host is on cgroup v{machine.version(HOST)} too, so the v1 half was not measured: run the "
            "notebook on a cgroup v1 host to compare")

"""Section 5: the chapter's claims this notebook judges on a second machine, and our findings on cgroup v2."""

from __future__ import annotations

from labkit.assets.lab_machine import probe
from labkit.core.claims import ClaimLedger, Verdict, at_least_verdict, verdict
from labkit.labs.the_lab_machine.declaration import (
    ESCAPED_FROM,
    GUEST,
    HOST,
    IO_TOLERANCE,
    MINUTE_S,
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
        "machine.vm_minutes", value=booted,
        measured=f"{machine.boots} boot(s) under {machine.accelerator}: default target after {booted:.1f} s "
                 f"[{low:.1f}, {high:.1f}], Docker answering after {machine.median_s('docker-ready'):.1f} s",
        verdict=boot_verdict, caveat="; ".join(caveat), minute_s=MINUTE_S)


def _memory(ledger: ClaimLedger, machine: MachineResult) -> None:
    oom = machine.oom_rows(GUEST)
    limits = machine.oom_numbers(GUEST, "limit_bytes")
    held = bool((limits == probe.MEMORY_LIMIT).all() and (oom["peak_bytes"] <= probe.MEMORY_LIMIT).all())
    counted = bool((oom["oom_kills"] >= 1).all())
    ledger.demonstrate(
        "machine.cgroup_v2_memory", shown=held and counted,
        measured=f"--memory {probe.MEMORY_LIMIT >> 20}m read back as memory.max {listed(limits)} in every boot; "
                 f"memory.peak at most {oom['peak_bytes'].max() / (1 << 20):.1f} MiB; memory.events counted "
                 f"{', '.join(str(int(k)) for k in oom['oom_kills'])} oom_kill(s) per boot",
        memory_limit_mib=probe.MEMORY_LIMIT >> 20)

    survived = bool(oom["pid1_running"].astype(bool).all())
    groups = machine.oom_numbers(GUEST, "oom_group")
    host = machine.oom_rows(HOST).iloc[0]
    ledger.check(
        "machine.oom_kills_one_process", value=float(survived),
        measured=f"guest: memory.oom.group {listed(groups)}, PID 1 {'running' if survived else 'gone'}, the "
                 f"child's exit {', '.join(str(int(c)) for c in oom['child_exit'].dropna())}; host "
                 f"(v{machine.version(HOST)}): PID 1 {'running' if bool(host['pid1_running']) else 'gone'}",
        verdict=verdict(survived and bool((groups == 0).all())))

    stalls = oom["pressure_some_us"]
    if stalls.isna().any():
        psi_verdict, caveat = Verdict.INCONCLUSIVE, "this kernel exposes no memory.pressure (PSI off)"
    else:
        psi_verdict, caveat = verdict(bool((stalls > 0).all())), ""
    ledger.check(
        "machine.memory_pressure", value=float(stalls.median()) / 1e3 if stalls.notna().all() else float("nan"),
        measured="'some' stall totals per boot: " + ", ".join(
            "none" if s != s else f"{s / 1e3:.1f} ms" for s in stalls.astype(float)),
        verdict=psi_verdict, caveat=caveat)


def _io(ledger: ClaimLedger, machine: MachineResult) -> None:
    ratios = machine.write_ratio()
    held = all(machine.held(GUEST, kind) for kind in WRITE_KINDS)
    ledger.check(
        "machine.cgroup_v2_io", value=float(ratios[GUEST].max()),
        measured=f"guest, rate over the {machine.limit_mib_s:g} MiB/s limit: " + ", ".join(
            f"{kind} {ratios.loc[kind, GUEST]:.2f}×" for kind in WRITE_KINDS),
        verdict=verdict(held), io_tolerance=IO_TOLERANCE)

    charged = machine.held(GUEST, SYNCED) and machine.escaped(HOST, SYNCED)
    v1_caveat = _no_v1_host(machine)
    ledger.check(
        "machine.writeback_charged_on_v2", value=float(ratios.loc[SYNCED, GUEST]),
        measured=f"written through the page cache then flushed by `sync`: "
                 f"{'at least ' if machine.below_step(HOST, SYNCED) else ''}{ratios.loc[SYNCED, HOST]:.1f}× the "
                 f"limit on the v{machine.version(HOST)} host, {ratios.loc[SYNCED, GUEST]:.2f}× in the "
                 f"v{machine.version(GUEST)} guest",
        verdict=Verdict.INCONCLUSIVE if v1_caveat else verdict(charged), caveat=v1_caveat, io_tolerance=IO_TOLERANCE,
        escaped_from=ESCAPED_FROM)


def _defaults(ledger: ClaimLedger, machine: MachineResult) -> None:
    driver, version = machine.fact(GUEST, "cgroup_driver"), machine.fact(GUEST, "cgroup_version")
    systemd = driver == "systemd" and version == "2" and machine.in_scope()
    ledger.check(
        "machine.systemd_driver", value=float(systemd),
        measured=f"guest: driver {driver}, cgroup v{version}, the OOM container in "
                 f"{machine.oom_cgroup(GUEST)}; host: driver "
                 f"{machine.fact(HOST, 'cgroup_driver')}, v{machine.fact(HOST, 'cgroup_version')}",
        verdict=verdict(systemd))

    guest_default, host_default = machine.default_ns(GUEST), machine.default_ns(HOST)
    v1_caveat = _no_v1_host(machine)
    private_v2 = bool((~guest_default["shared_with_host"].astype(bool)).all()
                      and (guest_default["sees_path"] == "/").all())
    shared_v1 = bool(host_default["shared_with_host"].astype(bool).all())
    ledger.check(
        "machine.cgroupns_private_on_v2", value=float(private_v2 and shared_v1),
        measured=f"default mode: guest {'private, sees /' if private_v2 else 'not private'}; host "
                 f"{'shared, sees ' + str(host_default['sees_path'].iloc[0])[:40] if shared_v1 else 'not shared'}",
        verdict=Verdict.INCONCLUSIVE if v1_caveat else verdict(private_v2 and shared_v1), caveat=v1_caveat)


def _no_v1_host(machine: MachineResult) -> str:
    """Why a claim that compares v1 with v2 cannot be decided here ('' when the host is on v1)."""
    if machine.version(HOST) == "1":
        return ""
    return (f"this host is on cgroup v{machine.version(HOST)} too, so the v1 half was not measured: run the "
            "notebook on a cgroup v1 host to compare")

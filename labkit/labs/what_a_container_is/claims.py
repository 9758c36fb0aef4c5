"""Section 6: the chapter's claims and our findings beyond them, checked on the results."""

from __future__ import annotations

from labkit.core.claims import ClaimLedger, Verdict, at_least_verdict, verdict
from labkit.labs.what_a_container_is.declaration import (
    CAP_DROP_ALL,
    CHAPTER_KINDS,
    DEFAULT,
    DOCKER_SDK,
    HOST,
    HOST_NETWORK,
    ISOLATED_KINDS,
    MINUTE_S,
    NET_RAW,
    SCRATCH_START,
    SLEEP_ARGV,
    listed,
    short_caps,
)
from labkit.labs.what_a_container_is.from_scratch import ScratchResult
from labkit.labs.what_a_container_is.namespaces import BOOTTIME, REALTIME, ClockResult, NamespaceResult
from labkit.labs.what_a_container_is.privileges import PrivilegeResult
from labkit.labs.what_a_container_is.startup import StartupResult
from labkit.labs.what_a_container_is.vm_boot import VmBootResult


def check_claims(ledger: ClaimLedger, ns: NamespaceResult, privileges: PrivilegeResult, from_scratch: ScratchResult,
                 startup: StartupResult, boot: VmBootResult, clock: ClockResult) -> None:
    """The chapter's claims about what a container is, each with a criterion and a verdict computed from this
    notebook's measurements (the clock's only where the replayed recording holds it). The chapter's AppArmor claim
    is ledgered once, by notebook 10 (``security.lsm_confines``); section 2 reads the same facts here."""
    pid = ns.fact("its PID")
    ordinary = str(pid["inside"]) == "1" and str(pid["host"]) != "1" and "shim" in ns.parent_name
    ledger.check(
        "process.ordinary", value=float(pid["host"]),
        measured=f"host PID {pid['host']}, PID {pid['inside']} in its own pid namespace; parent chain "
                 f"{ns.parent_chain}",
        verdict=verdict(ordinary))

    boot_id = ns.fact("kernel boot id")
    ledger.check(
        "kernel.shared", value=float(ns.same_kernel),
        measured=f"boot id {boot_id['inside']} inside and {boot_id['host']} on the host; uname -r "
                 f"{ns.fact('kernel release (uname -r)')['inside']} both",
        verdict=verdict(ns.same_kernel))

    new, shared = ns.new_kinds(DEFAULT), ns.shared_kinds(DEFAULT)
    ledger.check(
        "namespaces.own", value=len(set(ISOLATED_KINDS) & set(new)),
        measured=f"new: {listed(new)}; shared with the host: {listed(shared)}",
        verdict=verdict(set(ISOLATED_KINDS) <= set(new)), len_isolated_kinds=len(ISOLATED_KINDS),
        isolated_kinds=", ".join(ISOLATED_KINDS))

    own_kinds = [k for k in CHAPTER_KINDS if k in new]
    hosts_kinds = [k for k in CHAPTER_KINDS if k not in new]
    ledger.check(
        "namespaces.six_kinds", value=len(own_kinds),
        measured=f"its own: {listed(own_kinds)}; the host's: {listed(hosts_kinds)}", verdict=verdict(not hosts_kinds),
        caveat=f"the host's {listed(hosts_kinds)} namespace: uid 0 inside is uid 0 on the host; Docker makes a user "
               "namespace only when its daemon runs with userns-remap (not measured)" if "user" in hosts_kinds
        else "",
        len_chapter_kinds=len(CHAPTER_KINDS), chapter_kinds=", ".join(CHAPTER_KINDS))

    beyond_default = sorted(set(ns.shared_kinds(HOST_NETWORK)) - set(shared))
    kept_own = ns.new_kinds(HOST_NETWORK)
    ledger.check(
        "namespaces.host_network", value=len(kept_own),
        measured=f"{HOST_NETWORK} shares {listed(beyond_default)} with the host beyond what a default container "
                 f"shares ({listed(shared)}); its own: {listed(kept_own)}",
        verdict=verdict(not kept_own),
        caveat=f"only the network is the host's: the flag leaves it its own {listed(kept_own)}" if kept_own
        and beyond_default == ["net"] else "",
        host_network=HOST_NETWORK)

    scratch_caps = int(from_scratch.record["effective_capabilities"])
    scratch_seccomp = int(from_scratch.record["seccomp_mode"])
    same_isolation = set(ISOLATED_KINDS) <= set(from_scratch.new_kinds) and from_scratch.limit_enforced
    keeps_privileges = scratch_caps > len(privileges.effective(DEFAULT)) or scratch_seccomp != 2
    ledger.check(
        "scratch.same_isolation", value=len(from_scratch.new_kinds),
        measured=f"new {listed(from_scratch.new_kinds)}; a memory hog under its "
                 f"{from_scratch.record['memory_limit_read_bytes'] / 2**20:.0f} MiB limit ended "
                 f"{from_scratch.record['hog_raw_exit']} after {from_scratch.record['hog_oom_kills']} OOM kill(s)",
        verdict=verdict(same_isolation, caveat=keeps_privileges),
        caveat=f"its PID 1 keeps {scratch_caps} capabilities and seccomp mode {scratch_seccomp}: Docker also drops "
               "capabilities and applies a seccomp filter, which this box does not" if keeps_privileges else "",
        isolated_kinds=", ".join(ISOLATED_KINDS))

    default_caps, host_caps = privileges.effective(DEFAULT), privileges.effective(HOST)
    weaker = default_caps < host_caps and privileges.seccomp_mode(DEFAULT) == 2
    ledger.check(
        "privileges.less_than_host_root", value=len(default_caps),
        measured=f"{len(default_caps)} effective capabilities against {len(host_caps)} for host root, lacking "
                 f"{short_caps(privileges.dangerous_lacking)}; seccomp mode {privileges.seccomp_mode(DEFAULT)}",
        verdict=verdict(weaker))

    keeps_net_raw = NET_RAW in default_caps
    ledger.check(
        "capabilities.net_raw", value=float(keeps_net_raw),
        measured=f"a default container running `{' '.join(SLEEP_ARGV)}` (no raw sockets) holds "
                 f"{'CAP_NET_RAW' if keeps_net_raw else 'no CAP_NET_RAW'}; with {CAP_DROP_ALL} it holds "
                 f"{'CAP_NET_RAW' if NET_RAW in privileges.effective(CAP_DROP_ALL) else 'none'}",
        verdict=verdict(not keeps_net_raw),
        caveat="Docker's default set keeps CAP_NET_RAW whatever the program needs (ping uses it); it goes only "
               "when the run drops it (--cap-drop NET_RAW or ALL)" if keeps_net_raw else "")

    if clock.recorded:
        check_clock(ledger, clock, privileges)

    docker_ms = startup.ms(DOCKER_SDK)
    fast, bearable = docker_ms < 100, docker_ms < 1000
    ledger.check(
        "startup.milliseconds", value=docker_ms,
        measured=f"docker run median {docker_ms:.0f} ms ({startup.ratio(DOCKER_SDK):.0f}× fork/exec); from "
                 f"scratch {startup.ms(SCRATCH_START):.1f} ms",
        verdict=verdict(bearable, caveat=not fast),
        caveat="hundreds of milliseconds through the engine; the kernel's part (from scratch) costs "
               f"{startup.ms(SCRATCH_START):.0f} ms" if bearable and not fast else "")

    ratio = boot.median_s / startup.median_s(DOCKER_SDK)
    ledger.check(
        "vm.slower_than_container", value=ratio,
        measured=f"a VM reached /init in at least {boot.median_s:.1f} s ({boot.accelerator}) against "
                 f"{startup.ms(DOCKER_SDK):.0f} ms for docker run",
        verdict=verdict(ratio >= 10, caveat=boot.emulated),
        caveat="booted under software emulation (TCG): with KVM the VM would start faster" if boot.emulated
        and ratio >= 10 else "")

    vm_verdict = at_least_verdict(boot.median_s >= MINUTE_S, boot.emulated)
    vm_caveat = {Verdict.INCONCLUSIVE: "it took minutes under emulation, which KVM would shorten", Verdict.HOLDS: "",
                 Verdict.FAILS: "a minimal kernel + initramfs, no init system: a full distribution adds its services' "
                                "start-up (measured in notebook 15)"}[vm_verdict]
    ledger.check(
        "vm.minutes", value=boot.median_s,
        measured=f"{boot.reached} of {boot.tried} boot(s) reached /init; median at least {boot.median_s:.1f} s "
                 f"with {boot.accelerator}",
        verdict=vm_verdict, caveat=vm_caveat)


def check_clock(ledger: ClaimLedger, clock: ClockResult, privileges: PrivilegeResult) -> None:
    """The time namespace: not among the chapter's six, and a default container does not get one. Notebook 10
    ledgers the chapter's clock pitfall (pitfalls.time_is_the_host_s) from the wall clock alone."""
    wall, boot = clock.row(REALTIME), clock.row(BOOTTIME)
    can_set = "CAP_SYS_TIME" in privileges.effective(DEFAULT)
    ledger.check(
        "namespaces.time_is_the_host_s", value=float(clock.shares_time_namespace and clock.clocks_agree),
        measured=f"time namespace {'the host' if clock.shares_time_namespace else 'its own'}'s (its children's "
                 f"too); date +%s inside {wall['inside']:.0f} against the host's {wall['host_low']:.0f}–"
                 f"{wall['host_high']:.2f}; uptime {boot['inside']:.2f} s against {boot['host_low']:.2f}–"
                 f"{boot['host_high']:.2f} s; {'holds' if can_set else 'lacks'} CAP_SYS_TIME",
        verdict=verdict(clock.shares_time_namespace and clock.clocks_agree),
        caveat="" if clock.kernel_has_time_namespaces else "this kernel has no time namespaces (before 5.6)")

"""Section 5: the chapter's claims about architectures and our findings beyond them."""

from __future__ import annotations

from labkit.core.claims import ClaimLedger, Verdict, verdict
from labkit.instruments import registry
from labkit.labs.arm64_vs_amd64.builds import BuildResult
from labkit.labs.arm64_vs_amd64.declaration import (
    CPU_BOUND,
    CROSS_BUILD,
    DEFAULT_PLATFORM,
    EMULATED_BUILD,
    MUCH_SLOWER,
    NATIVE_BUILD,
)
from labkit.labs.arm64_vs_amd64.emulation import EmulationResult
from labkit.labs.arm64_vs_amd64.exec_format import ExecFormatResult


def check_claims(ledger: ClaimLedger, exec_format: ExecFormatResult, cost: EmulationResult, builds: BuildResult,
                 manifest: registry.ManifestResult) -> None:
    """The chapter's claims about architectures and our findings beyond them, each with a criterion and a verdict
    computed from this notebook's measurements."""
    native_arch = builds.summary.loc[NATIVE_BUILD, "image_architecture"]
    default_arch = builds.recorded(DEFAULT_PLATFORM)
    ledger.demonstrate(
        "build.host_architecture_by_default", shown=default_arch == native_arch,
        measured=f"without --platform the engine recorded {default_arch} (host: {native_arch}) for an image whose "
                 f"binary is {builds.binary_platform(DEFAULT_PLATFORM)}")

    off = exec_format.row("disabled", native=False)
    ledger.check(
        "run.exec_format_error", value=float(off["exit_code"]),
        measured=f"exit {off['exit_code']}: {off['output']}; with qemu registered it ran and printed "
                 f"{exec_format.row('enabled', native=False)['output']}",
        verdict=verdict(exec_format.failed_without_emulator, caveat=exec_format.recovered),
        caveat="only where no emulator is registered: with qemu-user in binfmt_misc (Docker Desktop, this host "
               "after `labkit setup`) it runs, emulated" if exec_format.recovered else "")

    requested = builds.binary_platform(DEFAULT_PLATFORM)
    explicit_ok = builds.recorded(requested) == requested.split("/")[1] and default_arch != requested.split("/")[1]
    ledger.demonstrate(
        "build.explicit_platform", shown=explicit_ok,
        measured=f"the same {requested} binary was recorded as {default_arch} without --platform and as "
                 f"{builds.recorded(requested)} with --platform {requested}")

    cpu_bound = cost.summary.loc[list(CPU_BOUND)]
    straddling = cpu_bound.index[(cpu_bound["ci_low"] < MUCH_SLOWER) & (cpu_bound["ci_high"] >= MUCH_SLOWER)]
    least = cost.cpu_bound_least
    ledger.check(
        "emulation.slower", value=float(cost.summary.loc[least, "slowdown"]),
        measured="; ".join(f"{w} {r.slowdown:.1f}× [{r.ci_low:.1f}, {r.ci_high:.1f}]"
                           for w, r in cost.summary.iterrows()),
        verdict=cost.much_slower,
        caveat=f"the interval of {', '.join(straddling)} reaches below {MUCH_SLOWER:g}×"
        if cost.much_slower == Verdict.INCONCLUSIVE else "",
        much_slower=MUCH_SLOWER)

    ledger.check(
        "build.cross_faster_than_emulated", value=builds.emulated_over_cross,
        measured=f"emulated builds {builds.range_s(EMULATED_BUILD)}, cross builds {builds.range_s(CROSS_BUILD)}, "
                 f"native builds {builds.range_s(NATIVE_BUILD)}; outputs "
                 f"{'identical' if builds.same_output else 'DIFFERENT'}",
        verdict=verdict(builds.cross_always_faster and builds.same_output))

    ledger.demonstrate(
        "manifest.one_tag_two_architectures", shown=manifest.resolves,
        measured="; ".join(f"{r.platform} → {r.pulled_architecture} ({r.uname_m})"
                           for r in manifest.pulls.itertuples()))

"""Section 5: the chapter's claims about architectures and our findings beyond them."""

from __future__ import annotations

from labkit.core.claims import ClaimLedger, Source, Verdict, demonstration, verdict
from labkit.instruments import registry
from labkit.labs.arm64_vs_amd64.builds import BuildResult
from labkit.labs.arm64_vs_amd64.declaration import (
    CPU_BOUND,
    CROSS_BUILD,
    DEFAULT_PLATFORM,
    EMULATED_BUILD,
    MUCH_SLOWER,
    NATIVE_BUILD,
    SECTION,
    SECTION_BUILD,
    SECTION_COST,
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
        "build.host_architecture_by_default", source=Source.CHAPTER, section=SECTION,
        claim="Without --platform, docker build makes an image for the machine it runs on",
        shown=default_arch == native_arch, unit="1 = host architecture recorded",
        measured=f"without --platform the engine recorded {default_arch} (host: {native_arch}) for an image whose "
                 f"binary is {builds.binary_platform(DEFAULT_PLATFORM)}",
        fixed_by="how the builder labels an image",
        expected="an image built without --platform is recorded "
                 "with the host's architecture",
        tables=("default_platform", "builds"))

    off = exec_format.row("disabled", native=False)
    ledger.check(
        "run.exec_format_error", source=Source.CHAPTER, section=SECTION,
        claim="An image built for another architecture fails to start with exec format error",
        value=float(off["exit_code"]), unit="exit code (no emulator registered)",
        measured=f"exit {off['exit_code']}: {off['output']}; with qemu registered it ran and printed "
                 f"{exec_format.row('enabled', native=False)['output']}",
        criterion=demonstration("the kernel's binfmt loader once the emulator entry is off", "without an emulator "
                                "entry the foreign image exits non-zero with 'exec format error'; that it runs once "
                                "qemu is registered in binfmt_misc is a caveat"),
        verdict=verdict(exec_format.failed_without_emulator, caveat=exec_format.recovered),
        caveat="only where no emulator is registered: with qemu-user in binfmt_misc (Docker Desktop, this host "
               "after `labkit setup`) it runs, emulated" if exec_format.recovered else "",
        tables=("exec_format",))

    requested = builds.binary_platform(DEFAULT_PLATFORM)
    explicit_ok = builds.recorded(requested) == requested.split("/")[1] and default_arch != requested.split("/")[1]
    ledger.demonstrate(
        "build.explicit_platform", source=Source.CHAPTER, section=SECTION,
        claim="Passing --platform in CI builds for the servers' architecture whatever the runner is",
        shown=explicit_ok, unit="1 = only the explicit flag recorded the binary's platform",
        measured=f"the same {requested} binary was recorded as {default_arch} without --platform and as "
                 f"{builds.recorded(requested)} with --platform {requested}",
        fixed_by="how the builder labels an image",
        expected="with --platform the recorded architecture is "
                 "the requested one, and without it the host's (so a default build on another CI "
                 "runner would record something else)",
        tables=("default_platform",))

    cpu_bound = cost.summary.loc[list(CPU_BOUND)]
    straddling = cpu_bound.index[(cpu_bound["ci_low"] < MUCH_SLOWER) & (cpu_bound["ci_high"] >= MUCH_SLOWER)]
    least = cost.cpu_bound_least
    ledger.check(
        "emulation.slower", source=Source.FINDING, section=SECTION_COST,
        claim=f"Running another architecture's programs under emulation is much slower (≥ {MUCH_SLOWER:g}×)",
        value=float(cost.summary.loc[least, "slowdown"]), unit="× native (median, least-affected CPU-bound workload)",
        measured="; ".join(f"{w} {r.slowdown:.1f}× [{r.ci_low:.1f}, {r.ci_high:.1f}]"
                           for w, r in cost.summary.iterrows()),
        criterion=f"holds if every CPU-bound workload's slowdown interval lies at or above {MUCH_SLOWER:g}×; does "
                  f"not hold if one lies wholly below it; otherwise inconclusive",
        verdict=cost.much_slower,
        caveat=f"the interval of {', '.join(straddling)} reaches below {MUCH_SLOWER:g}×"
        if cost.much_slower == Verdict.INCONCLUSIVE else "", tables=("emulation",))

    ledger.check(
        "build.cross_faster_than_emulated", source=Source.FINDING, section=SECTION_BUILD,
        claim="Cross-compiling on the host beats building the same program under emulation",
        value=builds.emulated_over_cross, unit="× (emulated build time / cross build time, medians)",
        measured=f"emulated builds {builds.range_s(EMULATED_BUILD)}, cross builds {builds.range_s(CROSS_BUILD)}, "
                 f"native builds {builds.range_s(NATIVE_BUILD)}; outputs "
                 f"{'identical' if builds.same_output else 'DIFFERENT'}",
        criterion="the slowest cross build is faster than the fastest emulated one, and its binary prints the same "
                  "output",
        verdict=verdict(builds.cross_always_faster and builds.same_output), tables=("builds",))

    ledger.demonstrate(
        "manifest.one_tag_two_architectures", source=Source.CHAPTER, section=SECTION,
        claim="Under one tag, a manifest list gives each machine the image for its own architecture",
        shown=manifest.resolves, unit="1 = every pull resolved to its platform",
        measured="; ".join(f"{r.platform} → {r.pulled_architecture} ({r.uname_m})"
                           for r in manifest.pulls.itertuples()),
        fixed_by="how a manifest list is resolved",
        expected="for every platform, pull --platform of the one "
                 "tag gives that platform's image (same id as the one pushed), recorded with its "
                 "architecture, and uname -m in it prints that machine",
        tables=("manifest",))

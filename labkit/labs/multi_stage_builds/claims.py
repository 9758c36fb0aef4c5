"""The chapter's claims about multi-stage builds, each with a criterion and a verdict computed from the measurements."""

from __future__ import annotations

from labkit.core.claims import ClaimLedger, verdict
from labkit.labs.multi_stage_builds.declaration import MB, MULTI, SINGLE
from labkit.labs.multi_stage_builds.module_layer import EDITED, ModuleResult
from labkit.labs.multi_stage_builds.runtime_bases import BUILDER, RUNS, SCRATCH, STATIC, TIMEZONE, TLS, RuntimeResult
from labkit.labs.multi_stage_builds.stages import MultiStageResult
from labkit.labs.multi_stage_builds.stripping import StrippingResult

CHAPTER_GO = (700 * MB, 10 * MB)  # the chapter's "~700 MB → ~10 MB" for Go
COMPILED = ("go", "c")  # the services whose final stage is FROM scratch and one static binary
MUCH_SMALLER = 10.0  # "small images for compiled apps": at least an order of magnitude (the chapter's Go: ~70×)


def check_claims(ledger: ClaimLedger, result: MultiStageResult, modules: ModuleResult | None = None,
                 stripping: StrippingResult | None = None, runtime: RuntimeResult | None = None) -> None:
    """The chapter's claims about multi-stage builds, each with a criterion and a verdict computed from this
    notebook's measurements; a section not measured (None, or a recording made before it existed) adds no row."""
    if "go" in result.services:
        single, multi = result.row("go", SINGLE)["image_bytes"], result.row("go", MULTI)["image_bytes"]
        near = 0.5 * CHAPTER_GO[0] <= single <= 1.5 * CHAPTER_GO[0] and multi <= 2 * CHAPTER_GO[1]
        ledger.check(
            "multistage.go_700mb_to_10mb", value=single / multi,
            measured=f"{single / MB:.0f} MB single-stage (builder: Debian's golang-go) → {multi / MB:.1f} MB "
                     "multi-stage (static binary on scratch)",
            verdict=verdict(near))
    compiled = [s for s in result.services if s in COMPILED]
    smaller = {s: result.ratio(s) for s in compiled}
    others = "; ".join(f"{s} (not compiled; both stages on the same base): {result.ratio(s):.2f}×"
                       for s in result.services if s not in COMPILED)
    if smaller:
        ledger.check(
            "multistage.smaller", value=min(smaller.values()),
            measured="; ".join([*(f"{s}: {r:.0f}×" for s, r in smaller.items()), *([others] if others else [])]),
            verdict=verdict(all(r >= MUCH_SMALLER for r in smaller.values()), caveat=True),
            caveat="by construction: the final stage is FROM scratch and the one binary copied from the builder, "
                   "so it holds a sliver of the builder; a registry runtime base (distroless, alpine) would add its "
                   "own files to the final image",
            much_smaller=MUCH_SMALLER)
    no_tools = all(not result.row(s, MULTI)["has_shell"] and not result.row(s, MULTI)["has_package_manager"]
                   for s in compiled)
    ledger.check(
        "multistage.attack_surface", value=float(sum(int(result.row(s, MULTI)["sbom_packages"]) for s in compiled)),
        measured="; ".join(f"{s}: {int(result.row(s, SINGLE)['sbom_packages'])} → "
                           f"{int(result.row(s, MULTI)['sbom_packages'])} packages, shell "
                           f"{bool(result.row(s, MULTI)['has_shell'])}, package manager "
                           f"{bool(result.row(s, MULTI)['has_package_manager'])}" for s in compiled),
        verdict=verdict(bool(compiled) and no_tools and all(
            result.row(s, MULTI)["sbom_packages"] < result.row(s, SINGLE)["sbom_packages"] for s in compiled),
            caveat=True),
        caveat="by construction: an image of one static binary on FROM scratch has nothing else in it; a registry "
               "runtime base brings its own files (alpine a shell and apk, distroless neither)")
    if modules is not None and modules.recorded:
        _check_module_layer(ledger, modules)
    if stripping is not None and stripping.recorded:
        _check_stripping(ledger, stripping)
    if runtime is not None and runtime.recorded:
        _check_runtime(ledger, runtime)


STRIPPED_AT_LEAST = 0.10  # "-s -w" earns its place if it takes at least a tenth off the binary


def _check_module_layer(ledger: ClaimLedger, modules: ModuleResult) -> None:
    first, everything = modules.download("download first", EDITED), modules.download("everything first", EDITED)
    ledger.check(
        "multistage.go_mod_download_cached", value=float(first.count("cached")),
        measured=f"download first: go mod download {', '.join(first)} after the edit; everything first (the "
                 f"control): {', '.join(everything)}",
        verdict=verdict(modules.kept, caveat=True),
        caveat="the one dependency comes from a file:// module proxy made on this host (no proxy is reachable): "
               "the layer is cached the same way, but a real download's seconds saved are not measured here")


def _check_stripping(ledger: ClaimLedger, stripping: StrippingResult) -> None:
    ledger.check(
        "multistage.ldflags_strip", value=100 * stripping.saving,
        measured=f"{stripping.bytes('unstripped') / MB:.2f} MB → {stripping.bytes('stripped') / MB:.2f} MB binary; "
                 f"image {stripping.bytes('unstripped', 'image_bytes') / MB:.2f} MB → "
                 f"{stripping.bytes('stripped', 'image_bytes') / MB:.2f} MB",
        verdict=verdict(stripping.saving >= STRIPPED_AT_LEAST and set(stripping.sizes["output"]) == {"ok"}),
        stripped_at_least=STRIPPED_AT_LEAST)


def _check_runtime(ledger: ClaimLedger, runtime: RuntimeResult) -> None:
    dynamic = runtime.row(SCRATCH, RUNS)
    ledger.check(
        "multistage.scratch_static_only", value=float(dynamic["exit_code"]),
        measured=f"dynamic C binary on scratch: {dynamic['detail']}; in {BUILDER}: "
                 f"{'ran' if runtime.works(BUILDER, RUNS) else 'failed'}",
        verdict=verdict(runtime.dynamic_enoent))
    ledger.check(
        "multistage.scratch_lacks_certs_and_zones",
        value=float(sum(runtime.works(STATIC, c) for c in (TLS, TIMEZONE))
                    - sum(runtime.works(SCRATCH, c) for c in (TLS, TIMEZONE))),
        measured="; ".join(f"{c}: scratch {'ok' if runtime.works(SCRATCH, c) else 'failed'} "
                           f"({runtime.row(SCRATCH, c)['detail']}), static base "
                           f"{'ok' if runtime.works(STATIC, c) else 'failed'}" for c in (TLS, TIMEZONE)),
        verdict=verdict(runtime.scratch_lacks, caveat=True),
        caveat="the server's CA is a local one, added to Debian's bundle in the static base as an organisation "
               "adds its own; a public server's chain would need only Debian's bundle, which scratch lacks as well")

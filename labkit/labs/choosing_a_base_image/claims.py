"""The chapter's claims about base images and our findings beyond them, checked on the results."""

from __future__ import annotations

import math

from labkit.core.claims import ClaimLedger, Source, Verdict, verdict
from labkit.labs.choosing_a_base_image.bases import BaseTable
from labkit.labs.choosing_a_base_image.declaration import SECTION, SECTION_START, SIZE_TOLERANCE
from labkit.labs.choosing_a_base_image.native import NativeResult
from labkit.labs.choosing_a_base_image.pulls import PullFit
from labkit.labs.choosing_a_base_image.startup import StartResult


def check_claims(ledger: ClaimLedger, table: BaseTable, fit: PullFit, start: StartResult,
                 native: NativeResult) -> None:
    """The chapter's claims about bases and our findings beyond them, each with a criterion and a verdict computed
    from this notebook's measurements."""
    chapter = table.chapter
    judged = chapter[chapter["verdict"] != Verdict.INCONCLUSIVE.value]
    family = table.node_family_measured
    if len(family) < 2:
        order_verdict, order_caveat = Verdict.INCONCLUSIVE, "fewer than two of the node family were measured"
    else:
        order_verdict = verdict(table.node_family_ordered and bool(judged["rank_agrees"].all()), caveat=True)
        order_caveat = ("certain by construction: each stand-in holds a subset of the one before it (slim leaves "
                        "out docs and extras, distroless keeps the runtime and its libraries, scratch one binary); "
                        "registry images are built apart, so only they could come out in another order")
    ledger.check(
        "size.base_ordering", source=Source.CHAPTER, section=SECTION,
        claim="A leaner base makes a smaller image: full, then slim, then distroless, then scratch",
        value=float(judged["rank_agrees"].sum()), unit="chapter rows in the chapter's order",
        measured="; ".join(f"{b} {table.mb(b):.1f} MB" for b in family),
        criterion="each measured node-family base is smaller than the one before it and every measured row sits "
                  "in the chapter's order",
        verdict=order_verdict, caveat=order_caveat, tables=("bases",))

    sized = table.sized_rows
    close = sized["verdict"] == Verdict.HOLDS.value
    if sized.empty:
        size_verdict, size_caveat = Verdict.INCONCLUSIVE, "no stand-in for a row with a size was measured"
    else:
        size_verdict = verdict(bool(close.any()), caveat=not close.all())
        size_caveat = "; ".join(f"{r.image}: {r.why}" for r in sized[~close].itertuples())
    ledger.check(
        "size.chapter_sizes", source=Source.CHAPTER, section=SECTION,
        claim="The node bases weigh about what the chapter's table gives: ~1 GB full, ~250 MB slim, ~120 MB "
              "distroless",
        value=float(close.sum()), unit=f"of {len(sized)} sized rows within {SIZE_TOLERANCE:g}×",
        measured="; ".join(f"{r.image}: {r.measured_mb:.0f} MB against ~{r.chapter_mb:.0f} MB ({r.factor:.2f}×)"
                           for r in sized.itertuples()) or "no sized row measured",
        criterion=f"each stand-in is within {SIZE_TOLERANCE:g}× of the chapter's size for the image it stands in "
                  "for: all of them holds, some holds with caveat, none does not hold",
        verdict=size_verdict, caveat=size_caveat, tables=("bases",))

    faster = fit.faster_when_smaller
    files_matter = fit.better_model == "files" or fit.residual_files_correlation >= 0.5
    ledger.check(
        "pull.smaller_faster", source=Source.CHAPTER, section=SECTION,
        claim="The smaller the image, the faster it is pulled",
        value=fit.slope_s_per_mb * 1e3, unit="ms per compressed MB (fitted slope)",
        measured=f"pull ≈ {fit.intercept_s:.2f} s + {fit.slope_s_per_mb * 1e3:.1f} ms/MB (R² {fit.r_squared:.2f}, "
                 f"rank correlation {fit.rank_correlation:.2f}); against files ≈ {fit.files_intercept_s:.2f} s + "
                 f"{fit.files_slope_s * 1e6:.0f} µs/file (R² {fit.files_r_squared:.2f}, rank correlation "
                 f"{fit.files_rank_correlation:.2f}); the better model: {fit.better_model}; the smallest image "
                 f"pulled in {fit.fixed_cost_s:.2f} s; residuals of the bytes line against file count: rank "
                 f"correlation {fit.residual_files_correlation:.2f}",
        criterion="of two straight lines through the cold pulls, pull time against compressed size and against "
                  "file count, the one with the higher R² has a positive slope, and the bases' median pull times "
                  "follow its measure (rank correlation ≥ 0.8); file count the better model, or residuals of the "
                  "bytes line that follow the file count (rank correlation ≥ 0.5), is a caveat",
        verdict=verdict(faster, caveat=files_matter),
        caveat="bytes are not the whole cost: the file count explains the pull times better, or at equal "
               "compressed size an image with more files pulls slower" if faster and files_matter else "",
        tables=("transfers", "bases"))

    surface = table.sizes
    pairs = [(slim, lean) for slim, lean in (("node-slim", "node-distroless"), ("python-slim", "python-distroless"))
             if table.has(slim) and table.has(lean)]
    if pairs:
        smaller = all(not surface.loc[lean, "shell"] and not surface.loc[lean, "package_manager"]
                      and surface.loc[lean, "files"] < surface.loc[slim, "files"]
                      and surface.loc[lean, "setuid_files"] <= surface.loc[slim, "setuid_files"]
                      for slim, lean in pairs)
        ledger.check(
            "surface.distroless_smaller", source=Source.CHAPTER, section=SECTION,
            claim="A distroless base leaves an attacker less to use: no shell and no package manager",
            value=float(sum(surface.loc[slim, "files"] - surface.loc[lean, "files"] for slim, lean in pairs)),
            unit="fewer files than the slim image (summed over pairs)",
            measured="; ".join(f"{lean}: {int(surface.loc[lean, 'files'])} files, "
                               f"{int(surface.loc[lean, 'setuid_files'])} setuid, shell "
                               f"{surface.loc[lean, 'shell'] or 'none'} against {slim}: "
                               f"{int(surface.loc[slim, 'files'])} files, {int(surface.loc[slim, 'setuid_files'])} "
                               f"setuid, shell {surface.loc[slim, 'shell'] or 'none'}" for slim, lean in pairs),
            criterion="the distroless-style image has no shell and no package manager, fewer files and no more "
                      "setuid programs than the slim image of the same runtime",
            verdict=verdict(smaller, caveat=True),
            caveat="by construction: the stand-in is the runtime and the libraries it loads, copied onto FROM "
                   "scratch, so nothing else is there to count; its libraries carry no package metadata, so a "
                   "scanner sees fewer packages than it holds", tables=("bases",))

    if native.recorded:
        _check_native(ledger, native)

    decides = start.size_decides
    family = start.node_family()
    ledger.check(
        "start.smaller_faster", source=Source.FINDING, section=SECTION_START,
        claim="A smaller base image makes a container start faster",
        value=start.ms(family[0]) - start.ms(family[-1]) if family else math.nan,
        unit="ms (largest minus smallest node image, median start)",
        measured="; ".join(f"{b} {start.ms(b):.0f} ms [{start.ms(b, 'ci_low'):.0f}, {start.ms(b, 'ci_high'):.0f}]"
                           for b in family) or "fewer than two node images measured",
        criterion="within the node family (same runtime, same app) the largest image's start interval lies wholly "
                  "above the smallest's",
        verdict=Verdict.INCONCLUSIVE if decides is None else verdict(decides),
        caveat="fewer than two node images were measured" if decides is None else "", tables=("startup",))


def _check_native(ledger: ClaimLedger, native: NativeResult) -> None:
    failing = native.glibc_builds_failing_on_musl
    if not native.glibc_builds_load_on_glibc:
        native_verdict = Verdict.INCONCLUSIVE  # the module fails where it was built for: it says nothing of musl
    else:
        native_verdict = verdict(native.musl_build_loads_on_musl and bool(failing),
                                 caveat=len(failing) < len(native.glibc_builds))
    ledger.check(
        "musl.native_modules", source=Source.CHAPTER, section=SECTION,
        claim="On a musl base such as Alpine, a native module built against glibc can fail to load, where the same "
              "code built against musl works",
        value=float(len(failing)), unit=f"of {len(native.glibc_builds)} glibc builds failing on {native.musl_base}",
        measured="; ".join(f"{r.module} on {r.base}: " + ("loaded" if r.loaded else f"failed ({r.output})")
                           for r in native.modules.itertuples()),
        criterion=f"on {native.musl_base} (musl's loader, no glibc) the musl build of the module loads and answers, "
                  "and at least one glibc build of the same source fails to load; every glibc build loads on "
                  f"{native.glibc_base} (else the module itself is at fault: inconclusive); a glibc build that "
                  "loads on musl is a caveat",
        verdict=native_verdict,
        caveat={Verdict.CAVEAT: f"only {len(failing)} of {len(native.glibc_builds)} glibc builds failed: whether "
                                "one trips depends on the glibc-only functions its build calls; the module is a "
                                "small C stand-in for a Python extension or node addon, loaded by a small program "
                                "standing in for the interpreter",
                Verdict.INCONCLUSIVE: f"a glibc build failed on {native.glibc_base} too, so the module, not "
                                      "musl, is at fault"}.get(native_verdict, ""),
        tables=("native_modules",))

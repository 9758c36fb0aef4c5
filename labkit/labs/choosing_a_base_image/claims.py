"""The chapter's claims about base images and our findings beyond them, checked on the results."""

from __future__ import annotations

import math

import pandas as pd

from labkit.core.claims import ClaimLedger, Verdict, verdict
from labkit.labs.choosing_a_base_image.bases import BaseTable
from labkit.labs.choosing_a_base_image.declaration import SIZE_TOLERANCE
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
        "size.base_ordering", value=float(judged["rank_agrees"].sum()),
        measured="; ".join(f"{b} {table.mb(b):.1f} MB" for b in family), verdict=order_verdict, caveat=order_caveat)

    sized = table.sized_rows
    close = sized["verdict"] == Verdict.HOLDS.value
    if sized.empty:
        size_verdict, size_caveat = Verdict.INCONCLUSIVE, "no stand-in for a row with a size was measured"
    else:
        size_verdict = verdict(bool(close.any()), caveat=not close.all())
        size_caveat = "; ".join(f"{r.image}: {r.why}" for r in sized[~close].itertuples())
    ledger.check(
        "size.chapter_sizes", value=float(close.sum()),
        measured="; ".join(f"{r.image}: {r.measured_mb:.0f} MB against ~{r.chapter_mb:.0f} MB ({r.factor:.2f}×)"
                           for r in sized.itertuples()) or "no sized row measured",
        verdict=size_verdict, caveat=size_caveat, len_sized=len(sized), size_tolerance=SIZE_TOLERANCE)

    faster = fit.faster_when_smaller
    files_matter = fit.better_model == "files" or fit.residual_files_correlation >= 0.5
    ledger.check(
        "pull.smaller_faster", value=fit.slope_s_per_mb * 1e3,
        measured=f"pull ≈ {fit.intercept_s:.2f} s + {fit.slope_s_per_mb * 1e3:.1f} ms/MB (R² {fit.r_squared:.2f}, "
                 f"rank correlation {fit.rank_correlation:.2f}); against files ≈ {fit.files_intercept_s:.2f} s + "
                 f"{fit.files_slope_s * 1e6:.0f} µs/file (R² {fit.files_r_squared:.2f}, rank correlation "
                 f"{fit.files_rank_correlation:.2f}); the better model: {fit.better_model}; the smallest image "
                 f"pulled in {fit.fixed_cost_s:.2f} s; residuals of the bytes line against file count: rank "
                 f"correlation {fit.residual_files_correlation:.2f}",
        verdict=verdict(faster, caveat=files_matter),
        caveat="bytes are not the whole cost: the file count explains the pull times better, or at equal "
               "compressed size an image with more files pulls slower" if faster and files_matter else "")

    surface = table.sizes
    pairs = [(slim, lean) for slim, lean in (("node-slim", "node-distroless"), ("python-slim", "python-distroless"))
             if table.has(slim) and table.has(lean)]
    if pairs:
        smaller = all(not surface.loc[lean, "shell"] and not surface.loc[lean, "package_manager"]
                      and surface.loc[lean, "files"] < surface.loc[slim, "files"]
                      and surface.loc[lean, "setuid_files"] <= surface.loc[slim, "setuid_files"]
                      for slim, lean in pairs)
        ledger.check(
            "surface.distroless_smaller",
            value=float(sum(surface.loc[slim, "files"] - surface.loc[lean, "files"] for slim, lean in pairs)),
            measured="; ".join(f"{lean}: {_surface(surface.loc[lean])} against {slim}: {_surface(surface.loc[slim])}"
                               for slim, lean in pairs),
            verdict=verdict(smaller, caveat=True),
            caveat="by construction: the stand-in is the runtime and the libraries it loads, copied onto FROM "
                   "scratch, so nothing else is there to count; its libraries carry no package metadata, so a "
                   "scanner sees fewer packages than it holds")

    if native.recorded:
        _check_native(ledger, native)

    decides = start.size_decides
    family = start.node_family()
    ledger.check(
        "start.smaller_faster", value=start.ms(family[0]) - start.ms(family[-1]) if family else math.nan,
        measured="; ".join(f"{b} {start.ms(b):.0f} ms [{start.ms(b, 'ci_low'):.0f}, {start.ms(b, 'ci_high'):.0f}]"
                           for b in family) or "fewer than two node images measured",
        verdict=Verdict.INCONCLUSIVE if decides is None else verdict(decides),
        caveat="fewer than two node images were measured" if decides is None else "")


def _check_native(ledger: ClaimLedger, native: NativeResult) -> None:
    failing = native.glibc_builds_failing_on_musl
    if not native.glibc_builds_load_on_glibc:
        native_verdict = Verdict.INCONCLUSIVE  # the module fails where it was built for: it says nothing of musl
    else:
        native_verdict = verdict(native.musl_build_loads_on_musl and bool(failing),
                                 caveat=len(failing) < len(native.glibc_builds))
    ledger.check(
        "musl.native_modules", value=float(len(failing)),
        measured="; ".join(f"{r.module} on {r.base}: " + ("loaded" if r.loaded else f"failed ({r.output})")
                           for r in native.modules.itertuples()),
        verdict=native_verdict,
        caveat={Verdict.CAVEAT: f"only {len(failing)} of {len(native.glibc_builds)} glibc builds failed: whether "
                                "one trips depends on the glibc-only functions its build calls; the module is a "
                                "small C stand-in for a Python extension or node addon, loaded by a small program "
                                "standing in for the interpreter",
                Verdict.INCONCLUSIVE: f"a glibc build failed on {native.glibc_base} too, so the module, not "
                                      "musl, is at fault"}.get(native_verdict, ""),
        len_glibc_builds=len(native.glibc_builds), musl_base=native.musl_base, glibc_base=native.glibc_base)


def _surface(base: pd.Series) -> str:
    """One base's attack surface in brief: files, setuid programs and its shells (``bin/sh, bin/bash``)."""
    shells = str(base["shell"] or "").replace(";", ", ") or "none"
    return f"{int(base['files']):,} files, {int(base['setuid_files'])} setuid, shell {shells}"

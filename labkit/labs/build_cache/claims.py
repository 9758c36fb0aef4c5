"""Section 4: the chapter's claims about the cache and .dockerignore, with verdicts from sections 2 and 3."""

from __future__ import annotations

from labkit.core.claims import ClaimLedger, Source, demonstration, verdict
from labkit.labs.build_cache.context import ContextResult
from labkit.labs.build_cache.declaration import SECTION, SOURCE
from labkit.labs.build_cache.rebuilds import RebuildResult

CHAPTER_RATIO = 10.0  # the chapter's "from 30 s to 5 min"


def _listed(numbers: list[int]) -> str:
    return ", ".join(str(n) for n in numbers)


def check_claims(ledger: ClaimLedger, rebuilds: RebuildResult, context: ContextResult) -> None:
    """The chapter's claims about the cache and .dockerignore, each with a criterion and a verdict computed from
    this notebook's measurements."""
    builders = rebuilds.builders
    fewer = {b: all(a < bb for a, bb in zip(rebuilds.executed(b, "A", SOURCE), rebuilds.executed(b, "B", SOURCE),
                                             strict=True)) for b in builders}
    faster = {b: rebuilds.total_s(b, "A") < rebuilds.total_s(b, "B") for b in builders}
    ledger.check(
        "cache.least_changing_first", source=Source.CHAPTER, section=SECTION,
        claim="Instructions whose inputs change least belong first: rebuilds then reuse more of the cache",
        value=min(rebuilds.ratio(b) for b in builders), unit="× (B's total rebuild time over A's, lowest builder)",
        measured="; ".join(f"{b}: A executed {_listed(rebuilds.executed(b, 'A', SOURCE))} steps on the source edits "
                           f"against B's {_listed(rebuilds.executed(b, 'B', SOURCE))}, "
                           f"{rebuilds.total_s(b, 'A'):.1f} s against {rebuilds.total_s(b, 'B'):.1f} s per pass "
                           "of the history" for b in builders),
        criterion="with every builder, A (dependencies first) executes fewer steps than B on every source-only "
                  "edit and spends less time over the whole history",
        verdict=verdict(all(fewer.values()) and all(faster.values())), tables=("rebuilds",))

    reran = {b: rebuilds.install_reran(b, "B") for b in builders}
    every = all(n == total and total > 0 for n, total in reran.values())
    ledger.check(
        "cache.copy_all_invalidates", source=Source.CHAPTER, section=SECTION,
        claim="Copying the whole source before the dependency install makes every edit re-run the install",
        value=sum(n for n, _ in reran.values()) / sum(t for _, t in reran.values()), unit="share of B's edits",
        measured="; ".join(f"{b}: B re-ran the install on {n} of {t} rebuilds after an edit that changed a file "
                           f"(A: {rebuilds.install_reran(b, 'A')[0]})" for b, (n, t) in reran.items()),
        criterion="in B the dependency install re-runs on every edit that changes any file in the context "
                  "(source, dependency or README); the no-change rebuild is not an edit",
        verdict=verdict(every), tables=("rebuilds", "steps"))

    ratios = {b: rebuilds.ratio_summary(b) for b in builders}
    reaching = [b for b, s in ratios.items() if s.median >= CHAPTER_RATIO]
    surely = [b for b, s in ratios.items() if s.n > 1 and s.ci_low >= CHAPTER_RATIO]
    short = [b for b in builders if b not in surely]
    ledger.check(
        "cache.thirty_seconds_to_five_minutes", source=Source.CHAPTER, section=SECTION,
        claim="The wrong COPY order turns a 30-second rebuild into a 5-minute one (10×)",
        value=min(s.median for s in ratios.values()),
        unit="× (B over A per source-only edit, median, lowest builder)",
        measured="; ".join(f"{b}: median {s.median:.2f}× over {s.n} source edit{'' if s.n == 1 else 's'} "
                           f"(interval {s.ci_low:.2f}–{s.ci_high:.2f}×, {s.coverage:.0%}); "
                           f"{rebuilds.median_s(b, 'B', SOURCE):.2f} s (B) against "
                           f"{rebuilds.median_s(b, 'A', SOURCE):.2f} s (A)" for b, s in ratios.items()),
        criterion=f"holds if, with every builder, the median of B's time over A's for the same source-only edit "
                  f"is ≥ {CHAPTER_RATIO:.0f}× and so is its interval's low end; holds with caveat if the median "
                  f"is ≥ {CHAPTER_RATIO:.0f}× with some builder; does not hold if it is below with every builder",
        verdict=verdict(bool(reaching), caveat=bool(short)),
        caveat=(f"not surely ≥ {CHAPTER_RATIO:.0f}× with {', '.join(short)} (median below it, or the interval "
                f"reaches below it, or one pair only); B's install here is pip copying wheels from a local "
                f"wheelhouse, with no download and no compilation ({rebuilds.packages_text(short[0])} with "
                f"{short[0]}), so B pays less for it than a project that downloads or compiles would "
                "(not measured)") if short else "",
        tables=("rebuilds",))

    leaked, kept_out = context.secret_found(False), not context.secret_found(True)
    ledger.check(
        "ignore.secret_in_layer", source=Source.CHAPTER, section=SECTION,
        claim="Without a .dockerignore, a secret lying in the build context is baked into the image",
        value=float(leaked and kept_out), unit="1 = found without, absent with",
        measured=f"without .dockerignore: {'found in ' + context.secret_where() if leaked else 'not found'}; "
                 f"with it: {'absent' if kept_out else 'found'}",
        criterion=demonstration("what COPY . . copies", "the fake .env is a file in one of the image's layer "
                                "tars when built without .dockerignore, and in none with it"),
        verdict=verdict(leaked and kept_out), tables=("context",))

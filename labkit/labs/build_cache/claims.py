"""Section 6: the chapter's claims about the cache, .dockerignore and dev dependencies, with verdicts from
sections 2 to 5 (a section missing from a replayed recording adds no row)."""

from __future__ import annotations

from labkit.core.claims import ClaimLedger, verdict
from labkit.labs.build_cache.context import ContextResult
from labkit.labs.build_cache.declaration import SOURCE
from labkit.labs.build_cache.dev_dependencies import DevResult
from labkit.labs.build_cache.ignore_patterns import ANY_DEPTH, SAME, IgnoreResult
from labkit.labs.build_cache.rebuilds import RebuildResult

CHAPTER_RATIO = 10.0  # the chapter's "from 30 s to 5 min"


def _steps(numbers: list[int]) -> str:
    """Steps executed per rebuild, in brief: ``2`` when every rebuild executed as many, else ``2–3``."""
    low, high = min(numbers), max(numbers)
    return f"{low}" if low == high else f"{low}–{high}"


def _fewer_steps(rebuilds: RebuildResult, builder: str, fewer: int, edits: int) -> str:
    """How many steps A and B executed on the source edits, and on how many of them (`fewer` of `edits`, from
    :meth:`RebuildResult.fewer_steps`) A executed fewer."""
    return (f"on the {edits} source edits A executed {_steps(rebuilds.executed(builder, 'A', SOURCE))} steps, "
            f"B {_steps(rebuilds.executed(builder, 'B', SOURCE))}; A fewer on {fewer} of {edits}")


def check_claims(ledger: ClaimLedger, rebuilds: RebuildResult, context: ContextResult, dev: DevResult,
                 ignore: IgnoreResult) -> None:
    """The chapter's claims about the cache, .dockerignore and dev dependencies, each with a criterion and a
    verdict computed from this notebook's measurements; our finding about ``**/``."""
    builders = rebuilds.builders
    fewer = {b: rebuilds.fewer_steps(b) for b in builders}
    faster = {b: rebuilds.total_s(b, "A") < rebuilds.total_s(b, "B") for b in builders}
    ledger.check(
        "cache.least_changing_first", value=min(rebuilds.ratio(b) for b in builders),
        measured="; ".join(f"{b}: {_fewer_steps(rebuilds, b, *fewer[b])}, {rebuilds.total_s(b, 'A'):.1f} s against "
                           f"{rebuilds.total_s(b, 'B'):.1f} s per pass of the history" for b in builders),
        verdict=verdict(all(n == edits for n, edits in fewer.values()) and all(faster.values())))

    reran = {b: rebuilds.install_reran(b, "B") for b in builders}
    every = all(n == total and total > 0 for n, total in reran.values())
    ledger.check(
        "cache.copy_all_invalidates", value=sum(n for n, _ in reran.values()) / sum(t for _, t in reran.values()),
        measured="; ".join(f"{b}: B re-ran the install on {n} of {t} rebuilds after an edit that changed a file "
                           f"(A: {rebuilds.install_reran(b, 'A')[0]})" for b, (n, t) in reran.items()),
        verdict=verdict(every))

    ratios = {b: rebuilds.ratio_summary(b) for b in builders}
    reaching = [b for b, s in ratios.items() if s.median >= CHAPTER_RATIO]
    surely = [b for b, s in ratios.items() if s.n > 1 and s.ci_low >= CHAPTER_RATIO]
    short = [b for b in builders if b not in surely]
    ledger.check(
        "cache.thirty_seconds_to_five_minutes", value=min(s.median for s in ratios.values()),
        measured="; ".join(f"{b}: median {s.median:.2f}× over {s.n} source edit{'' if s.n == 1 else 's'} "
                           f"(interval {s.ci_low:.2f}–{s.ci_high:.2f}×, {s.coverage:.0%}); "
                           f"{rebuilds.median_s(b, 'B', SOURCE):.2f} s (B) against "
                           f"{rebuilds.median_s(b, 'A', SOURCE):.2f} s (A)" for b, s in ratios.items()),
        verdict=verdict(bool(reaching), caveat=bool(short)),
        caveat=(f"not surely ≥ {CHAPTER_RATIO:.0f}× with {', '.join(short)} (median below it, or the interval "
                f"reaches below it, or one pair only); B's install here is pip copying wheels from a local "
                f"wheelhouse into {'a venv it first makes' if rebuilds.install_makes_venv else 'the venv of the base'}"
                f", with no download and no compilation ({rebuilds.packages_text(short[0])} with "
                f"{short[0]}), so B pays less for it than a project that downloads or compiles would "
                "(not measured)") if short else "",
        chapter_ratio=CHAPTER_RATIO)

    leaked, kept_out = context.secret_found(False), not context.secret_found(True)
    ledger.check(
        "ignore.secret_in_layer", value=float(leaked and kept_out),
        measured=f"without .dockerignore: {'found in ' + context.secret_where() if leaked else 'not found'}; "
                 f"with it: {'absent' if kept_out else 'found'}",
        verdict=verdict(leaked and kept_out))
    if dev.recorded:
        _check_dev(ledger, dev)
    if ignore.recorded:
        _check_ignore(ledger, ignore)


def _check_dev(ledger: ClaimLedger, dev: DevResult) -> None:
    smaller = {b: dev.smaller_without(b) for b in dev.builders}
    faster = {b: dev.faster_without(b) for b in dev.builders}
    slow = [b for b, f in faster.items() if not f]
    ledger.check(
        "deps.omit_dev", value=min(dev.extra_mb(b) for b in dev.builders),
        measured="; ".join(f"{b}: {dev.image_mb(b, False):.1f} MB ({dev.packages(b, False)} packages) without, "
                           f"{dev.image_mb(b, True):.1f} MB ({dev.packages(b, True)}) with; cold build median "
                           f"{dev.wall(b, False).median:.1f} s against {dev.wall(b, True).median:.1f} s "
                           f"({dev.wall(b, False).n} each)" for b in dev.builders),
        verdict=verdict(all(smaller.values()), caveat=bool(slow)),
        caveat=("the size part is certain by construction (the dev set's files are added, nothing removed)"
                + (f"; the build was not faster beyond doubt with {', '.join(slow)} (times overlap, or one build "
                   "each)" if slow else "")))


def _check_ignore(ledger: ClaimLedger, ignore: IgnoreResult) -> None:
    same, fixed = ignore.leaked_paths(SAME), ignore.leaked_paths(ANY_DEPTH)
    ledger.check(
        "ignore.mirrors_gitignore", value=float(len(same)),
        measured=f"git check-ignore ignores {ignore.git_ignored()} of {ignore.ignore['path'].nunique()} paths; "
                 f"with the same patterns as .dockerignore, in the layer: {', '.join(same) or 'none'}",
        verdict=verdict(not same))
    ledger.check(
        "ignore.any_depth", value=float(len(fixed)),
        measured=f"with `**/` patterns, in the layer: {', '.join(fixed) or 'none'} (same patterns: {len(same)})",
        verdict=verdict(not fixed))

"""Section 6: the chapter's claims about the cache, .dockerignore and dev dependencies, with verdicts from
sections 2 to 5 (a section missing from a replayed recording adds no row)."""

from __future__ import annotations

from labkit.core.claims import ClaimLedger, Source, demonstration, verdict
from labkit.labs.build_cache.context import ContextResult
from labkit.labs.build_cache.declaration import SECTION, SOURCE
from labkit.labs.build_cache.dev_dependencies import DevResult
from labkit.labs.build_cache.ignore_patterns import ANY_DEPTH, SAME, IgnoreResult
from labkit.labs.build_cache.ignore_patterns import SECTION as SECTION_IGNORE
from labkit.labs.build_cache.rebuilds import RebuildResult

CHAPTER_RATIO = 10.0  # the chapter's "from 30 s to 5 min"


def _listed(numbers: list[int]) -> str:
    return ", ".join(str(n) for n in numbers)


def check_claims(ledger: ClaimLedger, rebuilds: RebuildResult, context: ContextResult, dev: DevResult,
                 ignore: IgnoreResult) -> None:
    """The chapter's claims about the cache, .dockerignore and dev dependencies, each with a criterion and a
    verdict computed from this notebook's measurements; our finding about ``**/``."""
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
                f"wheelhouse into {'a venv it first makes' if rebuilds.install_makes_venv else 'the venv of the base'}"
                f", with no download and no compilation ({rebuilds.packages_text(short[0])} with "
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
    if dev.recorded:
        _check_dev(ledger, dev)
    if ignore.recorded:
        _check_ignore(ledger, ignore)


def _check_dev(ledger: ClaimLedger, dev: DevResult) -> None:
    smaller = {b: dev.smaller_without(b) for b in dev.builders}
    faster = {b: dev.faster_without(b) for b in dev.builders}
    slow = [b for b, f in faster.items() if not f]
    ledger.check(
        "deps.omit_dev", source=Source.CHAPTER, section=SECTION,
        claim="Installing only the production dependencies (npm ci --omit=dev) keeps the dev tools out of the "
              "image: a smaller image, built faster",
        value=min(dev.extra_mb(b) for b in dev.builders),
        unit="MB (image with dev dependencies less without, lowest builder)",
        measured="; ".join(f"{b}: {dev.image_mb(b, False):.1f} MB ({dev.packages(b, False)} packages) without, "
                           f"{dev.image_mb(b, True):.1f} MB ({dev.packages(b, True)}) with; cold build median "
                           f"{dev.wall(b, False).median:.1f} s against {dev.wall(b, True).median:.1f} s "
                           f"({dev.wall(b, False).n} each)" for b in dev.builders),
        criterion="holds if, with every builder, the image without the dev dependencies is smaller and every cold "
                  "build without them is faster than every build with them (at least 2 each); holds with caveat "
                  "if it is smaller only; does not hold if it is not smaller",
        verdict=verdict(all(smaller.values()), caveat=bool(slow)),
        caveat=("the size part is certain by construction (the dev set's files are added, nothing removed)"
                + (f"; the build was not faster beyond doubt with {', '.join(slow)} (times overlap, or one build "
                   "each)" if slow else "")),
        tables=("dev",))


def _check_ignore(ledger: ClaimLedger, ignore: IgnoreResult) -> None:
    same, fixed = ignore.leaked_paths(SAME), ignore.leaked_paths(ANY_DEPTH)
    ledger.check(
        "ignore.mirrors_gitignore", source=Source.CHAPTER, section=SECTION,
        claim=".dockerignore does for the build what .gitignore does for the repository: the same patterns keep "
              "the same files out",
        value=float(len(same)), unit="paths git ignores that land in the layer (same patterns, any builder)",
        measured=f"git check-ignore ignores {ignore.git_ignored()} of {ignore.ignore['path'].nunique()} paths; "
                 f"with the same patterns as .dockerignore, in the layer: {', '.join(same) or 'none'}",
        criterion=demonstration("the two pattern languages (git matches a name without a slash at any depth; "
                                ".dockerignore matches from the context's root)",
                                "holds if, with the same patterns in both files, no path git ignores lands in the "
                                "layer with any builder"),
        verdict=verdict(not same), tables=("ignore",))
    ledger.check(
        "ignore.any_depth", source=Source.FINDING, section=SECTION_IGNORE,
        claim="Prefixing each .gitignore pattern with `**/` makes .dockerignore leave out what git ignores, "
              "at any depth",
        value=float(len(fixed)), unit="paths git ignores that land in the layer (`**/` patterns, any builder)",
        measured=f"with `**/` patterns, in the layer: {', '.join(fixed) or 'none'} (same patterns: {len(same)})",
        criterion=demonstration("`**` in .dockerignore matching any number of folders",
                                "holds if no path git ignores lands in the layer with any builder"),
        verdict=verdict(not fixed), tables=("ignore",))

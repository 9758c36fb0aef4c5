"""Section 5: the quick check's claims and the mnemonic's, checked on the waterfall; our findings beside them."""

from __future__ import annotations

import itertools

from labkit.core.claims import ClaimLedger, Verdict, verdict
from labkit.labs.the_quick_check.declaration import (
    DEV_DEPENDENCY,
    FULL,
    SLIM,
    steps_of,
)
from labkit.labs.the_quick_check.lint import LintResult
from labkit.labs.the_quick_check.node_env import NODE_ENV, VARIANTS, NodeEnvResult
from labkit.labs.the_quick_check.waterfall import (
    CHAPTER_CODE_ONLY_S,
    CHAPTER_FIRST_BYTES,
    CHAPTER_FIRST_S,
    CHAPTER_FULL_BASE_BYTES,
    CHAPTER_SLIM_BASE_BYTES,
    CHAPTER_TARGET_BYTES,
    CHAPTER_TARGET_S,
    WaterfallResult,
)

ABOUT = 1.5  # the chapter's "~10 seconds" read as at most 1.5 × 10 s: a faster rebuild does not contradict it
SIGTERM_EXIT, SIGKILL_EXIT = 143, 137


def stand_ins(result: WaterfallResult) -> str:
    """What our bases and npm are against the chapter's, with the bases' sizes where the recording has them."""
    ours = (f", {result.base_bytes(FULL) / 1e6:.0f} MB and {result.base_bytes(SLIM) / 1e6:.0f} MB here"
            if result.bases_recorded else "")
    return (f"our {FULL} and {SLIM} stand in for node:20 and node:20-slim (~{CHAPTER_FULL_BASE_BYTES / 1e9:.0f} GB "
            f"and ~{CHAPTER_SLIM_BASE_BYTES / 1e6:.0f} MB in the chapter's table{ours}): Debian bookworm with its own "
            "nodejs and npm packages, made offline; npm installs from a local cache, so no step waits on the network "
            "as CI does")


def _drops(result: WaterfallResult) -> dict[str, tuple[float, float]]:
    """Per fix among the chapter's three (the step after each), what it saved against the step before: (bytes of
    image, seconds of median code-only rebuild)."""
    steps = result.steps
    saved: dict[str, tuple[float, float]] = {}
    for before, after in itertools.pairwise(steps):
        if after in ("cache-deps", "slim-base", "multi-stage"):
            saved[after] = (result.size_bytes(before) - result.size_bytes(after),
                            result.code_only(before).median - result.code_only(after).median)
    return saved


def _ratios(ledger: ClaimLedger, result: WaterfallResult) -> None:
    """The chapter's before and after as ratios: our stand-ins start smaller, so the issue asks that the ratios be
    judged as well as the targets (nothing is scaled)."""
    first, final = result.first, result.final
    size_ratio = result.size_bytes(final) / result.size_bytes(first)
    ledger.check(
        "quick_check.size_ratio", value=size_ratio,
        measured=f"{result.size_bytes(final) / 1e6:.0f} MB after step {final} of {result.size_bytes(first) / 1e6:.0f}"
                 f" MB: {size_ratio:.1%}",
        verdict=verdict(size_ratio <= CHAPTER_TARGET_BYTES / CHAPTER_FIRST_BYTES, caveat=True),
        caveat=f"{stand_ins(result)}: the full base is most of the teammate's image and ours is smaller, so each MB "
               "the changes remove is a smaller share here",
        chapter_size_ratio=CHAPTER_TARGET_BYTES / CHAPTER_FIRST_BYTES)
    time_ratio = result.code_only(final).median / result.code_only(first).median
    ledger.check(
        "quick_check.rebuild_ratio", value=time_ratio,
        measured=f"{result.code_only(final).median:.2f} s after step {final} against "
                 f"{result.code_only(first).median:.2f} s: {time_ratio:.1%}",
        verdict=verdict(time_ratio <= CHAPTER_TARGET_S / CHAPTER_FIRST_S, caveat=True),
        caveat=f"{stand_ins(result)}: the teammate's rebuild here reinstalls from a local cache in "
               f"{result.code_only(first).median:.1f} s, where the chapter's CI took {CHAPTER_FIRST_S / 60:.0f} "
               "minutes rerunning npm install",
        chapter_rebuild_ratio=CHAPTER_TARGET_S / CHAPTER_FIRST_S, chapter_target_s=CHAPTER_TARGET_S,
        chapter_first_min=CHAPTER_FIRST_S / 60)


def _under_200_mb(ledger: ClaimLedger, result: WaterfallResult) -> None:
    """The size target, judged against the runtime base: an image holds its base, so with a base under 200 MB the
    target is met by construction unless the app's own files push it over, and with one over it, missed."""
    first, final = result.first, result.final
    final_bytes = result.size_bytes(final)
    if result.bases_recorded:
        base_bytes = result.base_bytes(result.runtime_base(final))
        if base_bytes >= CHAPTER_TARGET_BYTES:
            reach = f"the base alone is over {CHAPTER_TARGET_BYTES / 1e6:.0f} MB: the target is missed by construction"
        elif final_bytes < CHAPTER_TARGET_BYTES:
            reach = (f"the base alone is under {CHAPTER_TARGET_BYTES / 1e6:.0f} MB, where the chapter's node:20-slim "
                     f"(~{CHAPTER_SLIM_BASE_BYTES / 1e6:.0f} MB) would exceed it alone: our stand-in meets the target "
                     "by construction")
        else:
            reach = (f"the base alone is under {CHAPTER_TARGET_BYTES / 1e6:.0f} MB: what the app adds takes the "
                     "image over it")
        # Only an app that takes a base under the target over it is a result; otherwise the base decides.
        app_decides = base_bytes < CHAPTER_TARGET_BYTES <= final_bytes
        share = f"{result.base_share(final)}; {reach}"
    else:
        app_decides = False
        share = "this recording holds no base sizes, so how much of the image is the base is not known"
    ledger.check(
        "quick_check.under_200_mb", value=final_bytes / 1e6,
        measured=f"{result.size_bytes(first) / 1e6:.0f} MB for the teammate's Dockerfile, {final_bytes / 1e6:.1f} "
                 f"MB after step {final}",
        verdict=Verdict.FAILS if app_decides else Verdict.INCONCLUSIVE, caveat=f"{share}; {stand_ins(result)}",
        chapter_target_mb=CHAPTER_TARGET_BYTES / 1e6)


def _under_60_s(ledger: ClaimLedger, result: WaterfallResult) -> None:
    """The rebuild target; inconclusive when the teammate's Dockerfile already meets it (nothing left to show)."""
    first, final = result.first, result.final
    teammate, code = result.code_only(first), result.code_only(final)
    met = code.ci_high < CHAPTER_TARGET_S
    already = teammate.ci_high < CHAPTER_TARGET_S
    before = (f"the teammate's Dockerfile already rebuilds in {teammate.median:.1f} s (interval up to "
              f"{teammate.ci_high:.1f} s), under {CHAPTER_TARGET_S:.0f} s before any fix: our stand-in meets the "
              "target by construction; " if met and already else "")
    ledger.check(
        "quick_check.under_60_s", value=code.median,
        measured=f"{teammate.median:.1f} s for the teammate's Dockerfile, {code.median:.1f} s "
                 f"(interval {code.ci_low:.1f}–{code.ci_high:.1f} s, n = {code.n}) after step {final}",
        verdict=Verdict.INCONCLUSIVE if met and already else verdict(met, caveat=True),
        caveat=f"{before}{stand_ins(result)}, where the chapter's {CHAPTER_FIRST_S / 60:.0f} minutes come from "
               "rerunning npm install on every code change",
        chapter_target_s=CHAPTER_TARGET_S)


def _code_only_about_10_s(ledger: ClaimLedger, result: WaterfallResult) -> None:
    """The chapter's ~10 s for a code-only rebuild after the first fix, one-sided: at most its 10 s with our
    tolerance. The time half cannot fail when even the teammate's rebuild, install included, is that fast."""
    cached, teammate = result.code_only("cache-deps"), result.code_only(result.first)
    bound = CHAPTER_CODE_ONLY_S * ABOUT
    installs = result.code_installs("cache-deps")
    fast_anyway = teammate.median <= bound
    ledger.check(
        "quick_check.code_only_about_10_s", value=cached.median,
        measured=f"{cached.median:.1f} s (interval {cached.ci_low:.1f}–{cached.ci_high:.1f} s, n = {cached.n}) "
                 f"after the first fix, {teammate.median:.1f} s before it; an npm install ran in "
                 f"{'some' if installs else 'none'} of the rebuilds after it",
        verdict=verdict(not installs and cached.median <= bound, caveat=fast_anyway),
        caveat=f"even the teammate's code-only rebuild, which reruns the install, takes {teammate.median:.1f} s here, "
               f"within {bound:.0f} s: the time half is met by construction and the install half is the test; "
               f"{stand_ins(result)}" if fast_anyway else "",
        bound=bound, chapter_code_only_s=CHAPTER_CODE_ONLY_S, about=ABOUT)


def _priority_order(ledger: ClaimLedger, result: WaterfallResult) -> None:
    """Our reading of the chapter's numbers for its first two fixes (minutes to ~10 s; a ~1 GB base to ~250 MB) as
    a ranking of what each fix saves. The slim base's saving is the gap between the two bases: a gap smaller than
    the chapter's can only understate it, so a miss on size is then inconclusive."""
    drops = _drops(result)
    if set(drops) != {"cache-deps", "slim-base", "multi-stage"}:
        return
    time_first = max(drops, key=lambda fix: drops[fix][1]) == "cache-deps"
    size_second = max(drops, key=lambda fix: drops[fix][0]) == "slim-base"
    base_gap = drops["slim-base"][0]  # that step changes only its FROM line
    chapter_gap = CHAPTER_FULL_BASE_BYTES - CHAPTER_SLIM_BASE_BYTES
    if time_first and size_second:
        outcome = Verdict.CAVEAT
    elif time_first and base_gap < chapter_gap:
        outcome = Verdict.INCONCLUSIVE
    else:
        outcome = Verdict.FAILS
    listed = "; ".join(f"{fix}: {size / 1e6:.0f} MB and {seconds:.1f} s saved" for fix, (size, seconds)
                       in drops.items())
    ledger.check(
        "quick_check.priority_order", value=float(time_first) + float(size_second), measured=listed, verdict=outcome,
        caveat=f"the slim-base step changes only its base and saves {base_gap / 1e6:.0f} MB here, against "
               f"~{chapter_gap / 1e6:.0f} MB in the chapter; the multi-stage step also moves to a runtime base "
               f"without npm and leaves out the dev dependencies and the copy of node_modules that COPY . . lays "
               f"over the installed one; {stand_ins(result)}",
        chapter_gap_mb=chapter_gap / 1e6)


def _exec_form(ledger: ClaimLedger, result: WaterfallResult) -> None:
    first, final = result.first, result.final
    stop_first, stop_final = result.image(first), result.image(final)
    grace_s = int(stop_final["stop_timeout_s"])
    prompt = int(stop_final["exit_code"]) in (0, SIGTERM_EXIT) and float(stop_final["stop_s"]) < grace_s
    ledger.check(
        "mnemonic.exec_form", value=float(stop_final["stop_s"]),
        measured=f"teammate: {float(stop_first['stop_s']):.2f} s, exit {int(stop_first['exit_code'])}, PID 1 "
                 f"`{stop_first['pid1']}`; last step: {float(stop_final['stop_s']):.2f} s, exit "
                 f"{int(stop_final['exit_code'])}, PID 1 `{stop_final['pid1']}`",
        verdict=verdict(prompt and int(stop_first["exit_code"]) == SIGKILL_EXIT, caveat=True),
        caveat="the exec form only delivers the signal: the prompt stop is the service's own SIGTERM handler (its "
               "server.ts closes the server and exits 0). Node as PID 1 without one would not stop on SIGTERM, "
               "which the kernel drops for a namespace's PID 1 that has no handler, and would be killed after the "
               f"{grace_s} s grace period as well",
        grace_s=grace_s, sigterm_exit=SIGTERM_EXIT, sigkill_exit=SIGKILL_EXIT)


def _dockerignore_secret(ledger: ClaimLedger, result: WaterfallResult) -> None:
    """Judged on the steps where a .dockerignore can matter to the image: those whose image stage copies the whole
    context. The steps with one here are multi-stage, so its measured effect is on the context sent."""
    steps = dict(zip(result.steps, steps_of(result.steps), strict=True))
    exposed = [name for name, step in steps.items() if step.ships_context and not step.ignores]
    if not exposed:
        return
    shipped = [name for name in exposed if result.secret_shipped(name)]
    # Steps without a .dockerignore whose image stage copies only what other stages built, and holds no .env.
    kept_out = [name for name, step in steps.items()
                if not step.ignores and not step.ships_context and not result.secret_shipped(name)]
    ignoring = [name for name, step in steps.items() if step.ignores]
    caveat = (f"without a .dockerignore, the image of {', '.join(kept_out)} holds no .env either: its image stage "
              "copies only what the other stages built, so no step here shows a .dockerignore keeping .env out of an "
              "image" if kept_out else "")
    if ignoring:
        without, with_ignore = [name for name in result.steps if not steps[name].ignores][-1], ignoring[0]
        context = (f"the .dockerignore's measured effect is on the build context: "
                   f"{float(result.image(without)['context_bytes']) / 1e6:.2f} MB sent for {without}, "
                   f"{float(result.image(with_ignore)['context_bytes']) / 1e6:.2f} MB for {with_ignore} (images of "
                   f"{result.size_bytes(without) / 1e6:.1f} and {result.size_bytes(with_ignore) / 1e6:.1f} MB)")
        caveat = f"{caveat}; {context}" if caveat else context
    ledger.check(
        "dockerignore.secret", value=len(shipped),
        measured=f"/app/.env in the image of: {', '.join(s for s in steps if result.secret_shipped(s)) or 'no step'}",
        verdict=verdict(shipped == exposed, caveat=bool(caveat)), caveat=caveat, len_exposed=len(exposed),
        exposed_steps=', '.join(exposed))


def check_claims(ledger: ClaimLedger, result: WaterfallResult, lint: LintResult,
                 node_env: NodeEnvResult | None = None) -> None:
    """The chapter's quick check (its targets, its 10 s), our reading of its priority order, the mnemonic's last
    two items, the .dockerignore's secret and the NODE_ENV advice (where measured: not in a recording made before
    that section), with verdicts from this run; hadolint's reach as a finding."""
    first, final = result.first, result.final
    _under_200_mb(ledger, result)
    _under_60_s(ledger, result)
    _ratios(ledger, result)
    if "cache-deps" in result.steps:
        _code_only_about_10_s(ledger, result)
    _priority_order(ledger, result)

    uid = int(result.image(final)["uid"])
    ledger.demonstrate(
        "mnemonic.non_root", shown=uid != 0 and int(result.image(first)["uid"]) == 0,
        measured=", ".join(f"{s}: uid {int(result.image(s)['uid'])}" for s in result.steps))
    _exec_form(ledger, result)
    _dockerignore_secret(ledger, result)

    caught = lint.codes(first)
    ledger.check(
        "lint.mnemonic_reach", value=len(caught),
        measured=f"teammate: {', '.join(caught) or 'none'}; last step: {', '.join(lint.codes(final)) or 'none'}",
        verdict=verdict(caught == ["DL3025"] and not lint.codes(final)))
    if node_env is not None and node_env.recorded:
        check_node_env(ledger, node_env)


def check_node_env(ledger: ClaimLedger, node_env: NodeEnvResult) -> None:
    ledger.check(
        "quick_check.node_env_prunes_dev", value=float(node_env.dev_files(NODE_ENV)),
        measured=f"npm {node_env.npm_version}: " + "; ".join(
            f"{variant}: {node_env.dev_files(variant)} files of {DEV_DEPENDENCY}" for variant in VARIANTS),
        verdict=verdict(node_env.prunes()), dev_dependency=DEV_DEPENDENCY)

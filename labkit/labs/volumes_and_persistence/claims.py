"""Section 6: the chapter's claims about volumes and persistence, and our findings beyond them."""

from __future__ import annotations

from labkit.core.claims import ClaimLedger, verdict
from labkit.labs.volumes_and_persistence.backup import BackupResult, OwnershipResult
from labkit.labs.volumes_and_persistence.costs import CREATE, DELETE, METRICS, CopyUpResult, CostResult
from labkit.labs.volumes_and_persistence.declaration import (
    ANONYMOUS,
    BIND,
    LAYER,
    NAMED,
    TMPFS,
)
from labkit.labs.volumes_and_persistence.portable import FILLED, RESTORED, SAME_NAME, MovedResult
from labkit.labs.volumes_and_persistence.survival import (
    EVENTS,
    HOST_TO_CONTAINER,
    RESTART,
    RM_NEW,
    RM_V_NEW,
    STOP_START,
    BindEditResult,
    SurvivalResult,
)

AT_HOST_SPEED = 1.25  # "as fast as the host": every metric's median within 1.25× the host directory's
EDIT_SEEN_MS = 10.0  # "the container sees the save": the host's edit seen inside within 10 ms (median)
SLOWER = 1.25  # "slower": a median more than 1.25× the host directory's


def _kept(survival: SurvivalResult, storage: str) -> str:
    return ", ".join(f"{event} {'✓' if survival.survived(storage, event) else '✗'}" for event in EVENTS)


def _against_the_floor(costs: CostResult, path: str) -> tuple[list[str], str, str]:
    """The metrics on which `path` is clearly slower than the host directory, what was measured, and the criterion
    (a threshold of ours: the chapter gives no number)."""
    slower = costs.clearly_slower(path, AT_HOST_SPEED)
    ratios = [costs.ratio(metric, path) for metric in METRICS]
    measured = (f"{path} medians {min(ratios):.2f}–{max(ratios):.2f}× the host directory's over {len(METRICS)} "
                f"metrics, {costs.rounds} interleaved rounds (clearly slower: {', '.join(slower) or 'none'})")
    criterion = (f"on no metric is the {path} clearly more than {AT_HOST_SPEED}× slower than the host directory "
                 f"(its interval's low end above {AT_HOST_SPEED}× the host's median)")
    return slower, measured, criterion


def _portable(ledger: ClaimLedger, moved: MovedResult) -> None:
    """The chapter's "portable across hosts", from the volume taken to a second engine."""
    before = int(moved.row(SAME_NAME)["entries"])
    ledger.check(
        "volumes.portable_across_hosts", value=float(moved.identical_there),
        measured=f"a volume of {int(moved.row(FILLED)['entries'])} entries backed up here and restored on a "
                 f"second engine; its same-named volume there held {before} entries before the copy, and "
                 f"{int(moved.row(RESTORED)['entries'])} after, "
                 f"{'identical' if moved.identical_there else 'NOT identical'} to the original",
        verdict=verdict(moved.identical_there, caveat=True),
        caveat=f"portable by a copy, as any folder is: the engine carries nothing between hosts (the same "
               f"name on the other engine started with {before} entries), and the other engine is a second "
               "daemon on this machine, so the tar crossed no network")


def check_claims(ledger: ClaimLedger, survival: SurvivalResult, edits: BindEditResult, costs: CostResult,
                 copy_up: CopyUpResult, backup: BackupResult, moved: MovedResult, ownership: OwnershipResult) -> None:
    """The chapter's claims and our findings, each with a criterion and a verdict computed from the results."""
    layer_gone = not survival.survived(LAYER, RM_NEW) and not survival.survived(LAYER, RM_V_NEW)
    layer_restart = survival.survived(LAYER, RESTART) and survival.survived(LAYER, STOP_START)
    ledger.check(
        "volumes.removed_with_container", value=float(layer_gone),
        measured=f"writable layer: {_kept(survival, LAYER)}; on the host after rm: "
                 f"{survival.left_on_host(LAYER, RM_NEW)}",
        verdict=verdict(layer_gone and survival.left_on_host(LAYER, RM_NEW) == "no"))

    ledger.check(
        "pitfalls.logs_lost_on_restart", value=float(not survival.survived(LAYER, RESTART)),
        measured=f"a file in the writable layer after docker restart: "
                 f"{'still there' if survival.survived(LAYER, RESTART) else 'gone'}; after stop + start: "
                 f"{'still there' if survival.survived(LAYER, STOP_START) else 'gone'}; after rm + a new "
                 f"container: {'still there' if survival.survived(LAYER, RM_NEW) else 'gone'}",
        verdict=verdict(not survival.survived(LAYER, RESTART)),
        caveat="a restart keeps the writable layer; the file is lost when the container is removed and replaced "
               "(a redeploy, `docker compose up` with a new image, `--rm`), and tmpfs is emptied on restart"
        if survival.survived(LAYER, RESTART) else "")

    named_all = all(survival.survived(NAMED, event) for event in EVENTS)
    ledger.check(
        "pitfalls.volume_across_restarts", value=float(named_all),
        measured=f"named volume: {_kept(survival, NAMED)}; writable layer: {_kept(survival, LAYER)}",
        verdict=verdict(named_all, caveat=layer_restart),
        caveat="the writable layer survives restarts too; what only a volume survives is the container's removal"
        if layer_restart else "")

    under_root = bool(survival.locations.set_index("storage").loc[NAMED, "under_docker_root"])
    ledger.check(
        "volumes.engine_manages_location", value=float(under_root),
        measured=f"docker inspect puts it at {survival.location(NAMED)}", verdict=verdict(under_root))

    ledger.check(
        "volumes.backup_restore", value=float(backup.all_equal),
        measured=f"{len(backup.backup) // 2} backups and restores of "
                 f"{sorted({int(s) for s in backup.backup['size_bytes'] // 2**20})} MiB volumes with a throwaway "
                 f"busybox container and tar; checksums {'all equal' if backup.all_equal else 'differ'}",
        verdict=verdict(backup.all_equal, caveat=True),
        caveat="we show the documented way works and what it costs; 'easier' than backing up a bind mount's "
               "folder (a plain tar on the host) is not something a measurement here can show")

    _portable(ledger, moved)

    bind_slower, bind_measured, bind_criterion = _against_the_floor(costs, BIND)
    seen_ms = edits.median_ms(HOST_TO_CONTAINER)
    ledger.check(
        "volumes.bind_fast_for_dev", value=len(bind_slower),
        measured=f"{bind_measured}; a host edit seen inside after {seen_ms:.2f} ms (median)",
        verdict=verdict(not bind_slower and seen_ms <= EDIT_SEEN_MS), bind_criterion=bind_criterion,
        edit_seen_ms=EDIT_SEEN_MS)

    dangling_ok = (survival.anonymous.set_index("event").loc[RM_NEW, "dangling_after"]
                   and not survival.anonymous.set_index("event").loc[RM_V_NEW, "exists_after"])
    ledger.check(
        "survival.anonymous_dangles", value=survival.dangling,
        measured=f"anonymous volume: {_kept(survival, ANONYMOUS)}; its file on the host after rm: "
                 f"{survival.left_on_host(ANONYMOUS, RM_NEW)}, after rm -v: "
                 f"{survival.left_on_host(ANONYMOUS, RM_V_NEW)}",
        verdict=verdict(bool(dangling_ok) and not survival.survived(ANONYMOUS, RM_NEW)))

    tmpfs_lost = not survival.survived(TMPFS, RESTART) and not survival.survived(TMPFS, STOP_START)
    ledger.check(
        "survival.tmpfs_emptied", value=float(tmpfs_lost), measured=f"tmpfs: {_kept(survival, TMPFS)}",
        verdict=verdict(tmpfs_lost))

    named_slower, named_measured, named_criterion = _against_the_floor(costs, NAMED)
    ledger.check(
        "costs.volume_at_host_speed", value=len(named_slower), measured=named_measured,
        verdict=verdict(not named_slower, caveat=not costs.cold_everywhere_but_tmpfs),
        caveat="some 'cold' reads found more than 5 % of the file in the page cache"
        if not costs.cold_everywhere_but_tmpfs else "",
        named_criterion=named_criterion)

    create = costs.ratio(CREATE, LAYER)
    layer_slower = CREATE in costs.clearly_slower(LAYER, SLOWER)
    ledger.check(
        "costs.layer_small_files", value=create,
        measured=f"creating small files: {create:.2f}× on the writable layer, {costs.ratio(CREATE, NAMED):.2f}× "
                 f"on a named volume; deleting: {costs.ratio(DELETE, LAYER):.2f}× on the writable layer",
        verdict=verdict(layer_slower), slower=SLOWER)

    first, second = copy_up.median_ms("first"), copy_up.median_ms("second")
    ledger.check(
        "costs.copy_up", value=first / second,
        measured=f"first append {first:.1f} ms, second {second:.3f} ms on a {copy_up.file_bytes / 2**20:.0f} MiB "
                 f"file; UpperDir held {'the whole file' if copy_up.whole_copy else 'less than the file'}",
        verdict=verdict(copy_up.whole_copy and first > 2 * second))

    ledger.check(
        "ownership.numeric_ids", value=float(ownership.as_expected),
        measured="; ".join(f"{row.case}: errno {row.errno}, owner {row.file_uid}:{row.file_gid}"
                           for row in ownership.ownership.itertuples()),
        verdict=verdict(ownership.as_expected))


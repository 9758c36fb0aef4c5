"""Notebook 09's lab and its storage instrument: the workload's output and the fsync summary on hand-made samples,
the cost table's ratios and intervals, bad input refused before anything starts, each experiment live against known
answers (every survival cell, checksums, uid/gid, EACCES), and nothing left behind — also after SIGINT or SIGTERM
at chosen moments."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pandas as pd
import pytest

from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import daemons, storage
from labkit.labs import volumes_and_persistence as volumes
from labkit.labs.volumes_and_persistence import backup as backup_module
from labkit.labs.volumes_and_persistence import claims as claims_module
from labkit.labs.volumes_and_persistence import costs as costs_module
from labkit.labs.volumes_and_persistence import declaration, portable
from labkit.labs.volumes_and_persistence import survival as survival_module
from labkit.labs.volumes_and_persistence.declaration import ANONYMOUS, BIND, HOST, LAYER, NAMED, TMPFS
from tests.conftest import default_sigint, leftovers, open_live

LAB = volumes.LAB
MIB = 2**20
ANONYMOUS_LOG = re.compile(r"anonymous volume ([0-9a-f]{64})")

# ---------------------------------------------------------------- the instrument, on hand-made samples


def test_nearest_rank_percentiles_on_a_hand_made_sample() -> None:
    hundred = [float(v) for v in range(100, 0, -1)]  # 1..100, given in reverse
    assert storage.percentile(hundred, 50) == 50.0  # ceil(0.50 * 100) = the 50th smallest
    assert storage.percentile(hundred, 99) == 99.0  # ceil(0.99 * 100) = the 99th smallest
    ten = [0.2, 0.1, 0.9, 0.3, 0.5, 0.4, 0.8, 0.6, 0.7, 5.0]
    assert storage.percentile(ten, 99) == 5.0  # ceil(9.9) = 10: the largest
    assert storage.percentile(ten, 50) == 0.5  # ceil(5.0) = the 5th smallest
    with pytest.raises(BadParameter):
        storage.percentile([], 50)
    with pytest.raises(BadParameter):
        storage.percentile(ten, 0)


def test_workload_output_is_read_in_seconds() -> None:
    printed = "warning from somewhere\n" + json.dumps({
        "seq_write_ns": 2_000_000_000, "cold_resident": 0.0, "cold_read_ns": 500_000_000, "warm_resident": 1.0,
        "warm_read_ns": 250_000_000, "fsync_ns": [1000, 3000], "create_ns": 40_000_000, "delete_ns": 10_000_000})
    found = storage.parse_workload(printed)
    assert (found.seq_write_s, found.cold_read_s, found.warm_read_s) == (2.0, 0.5, 0.25)
    assert found.fsync_s == (1e-6, 3e-6)
    assert (found.create_s, found.delete_s, found.cold_resident, found.warm_resident) == (0.04, 0.01, 0.0, 1.0)
    assert storage.parse_appends("40000000 30000\n") == (0.04, 3e-05)
    with pytest.raises(BadParameter):
        storage.workload_argv("python3", "/x", MIB + 1, 1, 1)  # not a whole number of MiB


def _hand_made_costs() -> pd.DataFrame:
    """Five rounds; per path every metric takes `factor` × 10, 10.1, 10.2, 10.3, 10.4 s. So each median ratio to the
    host is the factor; the writable layer's interval (n = 5: [min, max], 93.75 %) starts at 2 × 10 = 20 s, which
    over the host's median 10.2 s is 1.96: clearly more than 1.25× slower. The named volume's starts at 10 s
    (0.98×): not clearly slower."""
    factors = {HOST: 1.0, LAYER: 2.0, NAMED: 1.0, BIND: 1.1, TMPFS: 0.5}
    rows = [{"path": path, "repeat": repeat, "position": 0, "metric": metric, "seconds": factor * (10 + repeat / 10),
             "resident_fraction": 0.0 if path != TMPFS else 1.0, "size_bytes": MIB, "count": 1}
            for repeat in range(5) for path, factor in factors.items() for metric in costs_module.METRICS]
    return pd.DataFrame(rows, columns=list(LAB.tables["costs"]))


def test_cost_summary_ratios_and_intervals_on_a_hand_made_table() -> None:
    costs = volumes.CostResult(_hand_made_costs(), pd.DataFrame(columns=list(LAB.tables["fsync"])))
    assert costs.ratio(costs_module.CREATE, LAYER) == pytest.approx(2.0)
    assert costs.ratio(costs_module.CREATE, BIND) == pytest.approx(1.1)
    assert costs.median_s(costs_module.SEQ_WRITE, HOST) == pytest.approx(10.2)
    low = costs.ratio_intervals(costs_module.CREATE).loc[LAYER, "low"]
    assert low == pytest.approx(20 / 10.2)
    assert costs.clearly_slower(LAYER, 1.25) == list(costs_module.METRICS)
    assert costs.clearly_slower(NAMED, 1.25) == [] and costs.clearly_slower(BIND, 1.25) == []
    assert costs.rounds == 5 and costs.cold_everywhere_but_tmpfs
    assert costs.floor_beaten == []  # the named volume ties the host (1.0×), so the floor holds on every metric
    assert list(costs.ratios().columns) == list(costs_module.PATHS)


def test_survival_table_and_dangling_count_on_a_hand_made_table() -> None:
    rows = [{"storage": kind, "event": event, "survived": kind == NAMED or event == "restart",
             "left_on_host": "yes", "host_path": "/x"} for event in ("restart", "rm") for kind in (LAYER, NAMED)]
    anonymous = pd.DataFrame([{"event": "restart", "volume": "a", "exists_after": True, "dangling_after": False},
                              {"event": "rm", "volume": "b", "exists_after": True, "dangling_after": True}])
    result = volumes.SurvivalResult(pd.DataFrame(rows), anonymous, pd.DataFrame())
    assert result.table().to_dict() == {"restart": {LAYER: "✓", NAMED: "✓"}, "rm": {LAYER: "✗", NAMED: "✓"}}
    assert result.dangling == 1 and not result.survived(LAYER, "rm")


def test_ownership_verdict_on_hand_made_tables() -> None:
    def table(denied_errno: int) -> pd.DataFrame:
        return pd.DataFrame([
            {"case": backup_module.ROOT_CREATES, "user": "", "directory_mode": "755", "errno": 0, "file_uid": 0,
             "file_gid": 0},
            {"case": backup_module.UID_CREATES, "user": "1000:1000", "directory_mode": "777", "errno": 0,
             "file_uid": 1000, "file_gid": 1000},
            {"case": backup_module.UID_DENIED, "user": "1000:1000", "directory_mode": "755", "errno": denied_errno,
             "file_uid": -1 if denied_errno else 1000, "file_gid": -1 if denied_errno else 1000}])

    assert volumes.OwnershipResult(table(13)).as_expected  # 13 = EACCES
    assert not volumes.OwnershipResult(table(0)).as_expected
    assert "EACCES" in volumes.OwnershipResult(table(13)).conclusion()


ORIGINAL = """. 0:0 755 directory 3
./f1 0:0 644 regular file 1
'./latest' -> 'f1' 0:0 777 symbolic link 1
./shared 0:0 1777 directory 2
./shared/key 1000:1000 640 regular file 1
dec20da898a5fe13a335bbd2ca7cd41066d7d46bdcc4c97a3046bdbd71d6f67c  ./f1
a7998f247bd965694ff227fa325c81169a07471a8b6808d3e002a486c4e65975  ./shared/key
"""
EMPTY = ". 0:0 755 directory 2\n"  # busybox's stat quotes only a link's name


def _moved(restored: str, before: str = EMPTY) -> volumes.MovedResult:
    rows = [portable.FILLED, portable.BACKED_UP, portable.SAME_NAME, portable.RESTORED]
    listings = [ORIGINAL, ORIGINAL, before, restored]
    made = [portable._row(step, "e", "/root", "/root/v", listing, ORIGINAL, 0.5)
            for step, listing in zip(rows, listings, strict=True)]
    return volumes.MovedResult(pd.DataFrame(made, columns=list(LAB.tables["moved"])))


def test_moved_entries_and_equality_on_hand_made_listings() -> None:
    good = _moved(ORIGINAL)
    assert good.row(portable.FILLED)["entries"] == 4  # f1, latest, shared, shared/key: not the root, not a hash
    assert good.row(portable.SAME_NAME)["entries"] == 0 and good.empty_there_first and good.identical_there
    assert "matched" in good.conclusion() and "an empty" in good.conclusion()
    lost_owner = _moved(ORIGINAL.replace("1000:1000 640", "0:0 640"))
    assert not lost_owner.identical_there and "did NOT match" in lost_owner.conclusion()


def test_the_portability_verdict_follows_the_listings() -> None:
    from labkit.core.claims import ClaimLedger, Verdict

    def verdict_of(moved: volumes.MovedResult) -> Verdict:
        ledger = ClaimLedger(volumes.STEM)
        claims_module._portable(ledger, moved)
        return ledger.frame().set_index("id").loc["volumes.portable_across_hosts", "verdict"]

    assert verdict_of(_moved(ORIGINAL)) == Verdict.CAVEAT
    assert verdict_of(_moved(ORIGINAL.replace("-> 'f1'", "-> 'f9'"))) == Verdict.FAILS


@pytest.mark.parametrize("bind_parent", ["tmp", "./here", "/no/such/folder/for/labkit", "/"])
def test_a_relative_missing_or_root_bind_parent_is_refused(bind_parent: str) -> None:
    with pytest.raises(BadParameter):
        declaration.check_bind_parent(bind_parent)


# ---------------------------------------------------------------- live


@pytest.fixture
def live(docker_client: docker.DockerClient, tmp_path: Path,
         caplog: pytest.LogCaptureFixture) -> Iterator[LabSession]:
    (tmp_path / "binds").mkdir()
    caplog.set_level(logging.INFO, logger="labkit.volumes")
    lab = open_live(LAB, tmp_path / "results")
    yield lab
    assert leftovers(docker_client, lab.run_id) == {"containers": [], "networks": [], "volumes": []}
    assert list((tmp_path / "binds").iterdir()) == []  # the lab's own temporary folder is gone
    for name in ANONYMOUS_LOG.findall(caplog.text):
        with pytest.raises(docker.errors.NotFound):
            docker_client.volumes.get(name)


def _binds(lab: LabSession) -> str:
    """The folder the `live` fixture made beside the session's results (and checks is empty at the end)."""
    return str(lab.results_root.parent / "binds")


@pytest.mark.docker
@pytest.mark.parametrize("call", [
    lambda lab, binds: volumes.run_costs(lab, repeats=0, bind_parent=binds),
    lambda lab, binds: volumes.run_costs(lab, size_mib=10**9, bind_parent=binds),
    lambda lab, binds: volumes.run_backup(lab, sizes_mib=(4, 10**9), bind_parent=binds),
    lambda lab, binds: volumes.run_copy_up(lab, big_mib=10**9, bind_parent=binds),
    lambda lab, binds: volumes.run_backup(lab, sizes_mib=(), bind_parent=binds),
    lambda lab, binds: volumes.run_bind_edits(lab, edits=0, bind_parent=binds),
    lambda lab, binds: volumes.run_survival(lab, bind_parent="relative/folder"),
    lambda lab, binds: volumes.run_ownership(lab, bind_parent=binds + "/missing"),
], ids=["zero repeats", "size over free disk", "backup over free disk", "copy-up over free disk", "no sizes",
        "zero edits", "relative bind path", "missing bind path"])
def test_bad_input_is_refused_before_anything_starts(live: LabSession, call: object) -> None:
    with pytest.raises(BadParameter):
        call(live, _binds(live))  # type: ignore[operator]
    assert live.provenance["experiments"] == {}  # nothing ran (the fixture checks nothing was made)


# Every cell, known from how each kind of storage works: the writable layer lasts as long as its container; the
# named volume and the bind folder outlive any container; a new container gets a new anonymous volume (the old one
# dangles after rm, is removed by rm -v); a tmpfs is mounted anew at every start.
KNOWN_SURVIVAL = {
    LAYER: (True, True, False, False),
    NAMED: (True, True, True, True),
    ANONYMOUS: (True, True, False, False),
    BIND: (True, True, True, True),
    TMPFS: (False, False, False, False),
}
KNOWN_ON_HOST = {  # is the marker still in the host folder the container used before the event?
    LAYER: ("yes", "yes", "no", "no"),
    NAMED: ("yes",) * 4,
    ANONYMOUS: ("yes", "yes", "yes", "no"),
    BIND: ("yes",) * 4,
    TMPFS: (survival_module.IN_MEMORY,) * 4,
}


@pytest.mark.docker
@pytest.mark.root
def test_live_every_survival_cell_is_the_known_one(live: LabSession) -> None:
    result = volumes.run_survival(live, bind_parent=_binds(live))
    for storage_kind, expected in KNOWN_SURVIVAL.items():
        for event, survived, on_host in zip(survival_module.EVENTS, expected, KNOWN_ON_HOST[storage_kind],
                                            strict=True):
            assert result.survived(storage_kind, event) is survived, (storage_kind, event)
            assert result.left_on_host(storage_kind, event) == on_host, (storage_kind, event)
    anonymous = result.anonymous.set_index("event")
    assert anonymous["exists_after"].tolist() == [True, True, True, False]
    assert anonymous["dangling_after"].tolist() == [False, False, True, False]
    locations = result.locations.set_index("storage")
    assert locations.loc[NAMED, "host_path"].startswith(locations.loc[NAMED, "docker_root"] + "/volumes/")
    assert locations.loc[BIND, "host_path"].startswith(_binds(live) + "/labkit-09-")


@pytest.mark.docker
@pytest.mark.root
def test_live_ownership_uids_and_eacces(live: LabSession) -> None:
    result = volumes.run_ownership(live, bind_parent=_binds(live))
    rows = result.ownership.set_index("case")
    assert rows.loc[backup_module.ROOT_CREATES, ["errno", "file_uid", "file_gid"]].tolist() == [0, 0, 0]
    assert rows.loc[backup_module.UID_CREATES, ["errno", "file_uid", "file_gid"]].tolist() == [0, 1000, 1000]
    assert rows.loc[backup_module.UID_DENIED, ["errno", "file_uid", "file_gid"]].tolist() == [13, -1, -1]  # EACCES


@pytest.mark.docker
@pytest.mark.root
def test_live_backup_restores_identical_files(live: LabSession) -> None:
    result = volumes.run_backup(live, sizes_mib=(1, 2), repeats=1, bind_parent=_binds(live))
    assert result.all_equal and result.backup["files"].tolist() == [8] * 4
    # A tar holds the 8 files' bytes plus headers (512 bytes per entry), rounded to 10 KiB records.
    assert all(row.size_bytes < row.tar_bytes < row.size_bytes + 64 * 1024 for row in result.backup.itertuples())


@pytest.mark.docker
@pytest.mark.root
def test_live_a_volume_moved_to_a_second_engine_arrives_whole(live: LabSession) -> None:
    result = volumes.run_moved(live, size_mib=1, bind_parent=_binds(live))
    filled = result.row(portable.FILLED)
    # 4 files, their hard link, the symlink, the shared folder and its key: 8 entries
    assert filled["entries"] == 8 and "./shared/key 1000:1000 640 regular file 1" in filled["listing"]
    assert "./f2 0:0 644 regular file 2" in filled["listing"] and "'./latest' -> 'f1'" in filled["listing"]
    assert "./shared 0:0 1777 directory" in filled["listing"]
    assert result.row(portable.SAME_NAME)["listing"].splitlines() == [". 0:0 755 directory 2"]
    assert result.empty_there_first and result.identical_there
    there = result.row(portable.RESTORED)
    assert there["data_root"].startswith(str(daemons.state_parent() / f"{live.run_id}-"))
    assert there["mountpoint"].startswith(there["data_root"] + "/volumes/")
    assert not list(daemons.state_parent().glob(f"{live.run_id}-*"))  # the second engine is gone


@pytest.mark.docker
@pytest.mark.root
def test_live_copy_up_puts_the_whole_file_in_the_upper_dir(live: LabSession) -> None:
    result = volumes.run_copy_up(live, repeats=2, big_mib=4, bind_parent=_binds(live))
    assert result.copy_up["upper_bytes"].tolist() == [4 * MIB + 2] * 4  # the file plus the two appended bytes


@pytest.mark.docker
@pytest.mark.root
def test_live_costs_cover_every_path_and_the_cold_read_is_cold(live: LabSession) -> None:
    result = volumes.run_costs(live, repeats=1, size_mib=2, commits=10, files=20, bind_parent=_binds(live))
    assert len(result.costs) == 5 * 7 and len(result.fsync) == 5 * 10
    assert set(result.costs["path"]) == set(costs_module.PATHS)
    for path in costs_module.PATHS:
        cold = result.resident(path, costs_module.COLD_READ)
        assert cold == 1.0 if path == TMPFS else cold <= costs_module.COLD_AT_MOST, path
        assert result.resident(path, costs_module.WARM_READ) == 1.0, path


@pytest.mark.docker
@pytest.mark.root
def test_live_bind_edits_are_seen_both_ways(live: LabSession) -> None:
    result = volumes.run_bind_edits(live, edits=3, bind_parent=_binds(live))
    assert sorted(result.bind_edits["direction"].value_counts().tolist()) == [3, 3]
    assert (result.bind_edits["seconds"] > 0).all()


@pytest.mark.docker
@pytest.mark.root
def test_live_a_failure_mid_experiment_leaves_nothing(live: LabSession, monkeypatch: pytest.MonkeyPatch) -> None:
    # The first read-back fails: by then the image, a named volume, a bind folder, a container and its anonymous
    # volume exist; the `live` fixture checks they are all gone.
    def broken(container: object, token: str) -> dict[str, bool]:
        raise RuntimeError("a failure in the middle of the experiment")

    monkeypatch.setattr(survival_module, "_reads", broken)
    with pytest.raises(RuntimeError, match="in the middle"):
        volumes.run_survival(live, bind_parent=_binds(live))


# ---------------------------------------------------------------- interrupted at chosen moments

CHILD = """
import logging, sys
from labkit.core.session import open_session
from labkit.labs import volumes_and_persistence as volumes
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
lab = open_session(volumes.LAB, mode="live")
print("run", lab.run_id, flush=True)
{call}
"""
MOMENTS = {
    # right after `rm` without -v: a dangling anonymous volume exists, its replacement container not yet
    "survival, after rm": ("volumes.run_survival(lab, bind_parent=sys.argv[1])", r"removed container .* \(rm \+ new"),
    # in the middle of the workload rounds: a container with a named volume, a bind mount and a tmpfs runs
    "costs, mid-workload": ("volumes.run_costs(lab, repeats=50, size_mib=8, bind_parent=sys.argv[1])",
                            r"anonymous volume .* of container labkit-costs"),
    # the second engine answers: its daemon, data-root and namespace exist, the tar and its volume here too
    "moved, second engine up": ("volumes.run_moved(lab, size_mib=1, bind_parent=sys.argv[1])",
                                r"second engine .* answers"),
}


@pytest.mark.docker
@pytest.mark.root
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("moment", sorted(MOMENTS))
def test_live_interrupted_experiment_leaves_nothing(docker_client: docker.DockerClient, tmp_path: Path,
                                                    moment: str, signum: int) -> None:
    call, ready = MOMENTS[moment]
    binds = tmp_path / "binds"
    binds.mkdir()
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(call=call), str(binds)], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, preexec_fn=default_sigint,
                             env={**os.environ, "LABKIT_RESULTS_DIR": str(tmp_path / "results")})
    assert child.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 300
    while not (seen and re.search(ready, seen[-1])):
        assert time.monotonic() < deadline and child.poll() is None, "".join(seen) + child.stdout.read()
        seen.append(child.stdout.readline())
    if moment.startswith("costs"):
        time.sleep(1.0)  # into the workload rounds
    child.send_signal(signum)
    output = child.communicate(timeout=120)[0]
    assert child.returncode != 0, output
    log = "".join(seen) + output
    run_id = next(line.split()[1] for line in seen if line.startswith("run "))
    assert leftovers(docker_client, run_id) == {"containers": [], "networks": [], "volumes": []}, log
    for name in ANONYMOUS_LOG.findall(log):
        with pytest.raises(docker.errors.NotFound):
            docker_client.volumes.get(name)
    assert list(binds.iterdir()) == [], log
    assert not list(daemons.state_parent().glob(f"{run_id}-*")), log

"""labkit.cgroups on recorded v1 and hand-written v2 trees (fixtures/cgroup/README.md), plus one live test."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from labkit.instruments import cgroups
from labkit.instruments.cgroups import MIB, CgroupLayout, CgroupUnavailable, Hierarchy, MemorySampler, detect, sweep

FIXTURES = Path(__file__).parent / "fixtures" / "cgroup"
HYBRID_TEXT = (FIXTURES / "mountinfo-hybrid.txt").read_text()
V2_TEXT = (FIXTURES / "mountinfo-v2.txt").read_text()


@pytest.fixture
def v1_root(tmp_path: Path) -> Path:
    """A writable copy of the recorded v1 tree."""
    shutil.copytree(FIXTURES / "v1", tmp_path / "root")
    return tmp_path / "root"


@pytest.fixture
def v2_root(tmp_path: Path) -> Path:
    """A writable copy of the hand-written v2 tree."""
    shutil.copytree(FIXTURES / "v2", tmp_path / "root")
    return tmp_path / "root"


@pytest.fixture
def kernel_rmdir(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make rmdir on a fixture tree behave like cgroupfs: control files go with the directory, a group with
    child groups or processes is busy."""

    def rmdir(directory: Path) -> None:
        if not directory.exists():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(directory))
        procs = directory / "cgroup.procs"
        busy = any(p.is_dir() for p in directory.iterdir()) or (procs.exists() and procs.read_text().split())
        if busy:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(directory))
        for p in directory.iterdir():
            p.unlink()
        directory.rmdir()

    monkeypatch.setattr(cgroups, "_remove_group_dir", rmdir)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- detect ---------------------------------------------------------------------------------------------


def test_detect_hybrid_host_puts_memory_and_pids_on_v1(v1_root: Path) -> None:
    layout = detect(HYBRID_TEXT, root=v1_root)
    assert layout.version == "v1"
    assert layout.memory == Hierarchy(v1_root / "sys/fs/cgroup/memory", "v1")
    assert layout.pids == Hierarchy(v1_root / "sys/fs/cgroup/pids", "v1")
    assert layout.hierarchies() == [layout.memory, layout.pids]


def test_detect_pure_v2_host(v2_root: Path) -> None:
    layout = detect(V2_TEXT, root=v2_root)
    assert layout.version == "v2"
    assert layout.memory == Hierarchy(v2_root / "sys/fs/cgroup", "v2")
    assert layout.pids == layout.memory
    assert layout.hierarchies() == [layout.memory]


def test_detect_v2_without_memory_controller_says_how_to_enable_it(v2_root: Path) -> None:
    (v2_root / "sys/fs/cgroup/cgroup.controllers").write_text("cpuset cpu io pids\n")
    with pytest.raises(CgroupUnavailable, match="No memory controller") as info:
        detect(V2_TEXT, root=v2_root)
    assert "cpu cpuset io pids" in str(info.value)
    assert "cgroup.subtree_control" in str(info.value) and "cgroup_enable=memory" in str(info.value)


def test_detect_hybrid_without_v1_memory_finds_none_in_the_unified_mount(v1_root: Path) -> None:
    text = "\n".join(line for line in HYBRID_TEXT.splitlines() if not line.endswith(",memory"))
    assert text != HYBRID_TEXT.rstrip("\n")
    with pytest.raises(CgroupUnavailable, match="not on any cgroup v1 hierarchy") as info:
        detect(text, root=v1_root)
    assert "unified (hugetlb)" in str(info.value)


def test_detect_without_any_cgroup_mount() -> None:
    text = "\n".join(line for line in HYBRID_TEXT.splitlines() if " - cgroup" not in line)
    with pytest.raises(CgroupUnavailable, match="No cgroup filesystem is mounted"):
        detect(text, root=Path("/nonexistent"))


def test_detect_unescapes_mount_points_and_picks_comounted_controllers(tmp_path: Path) -> None:
    text = (
        "30 25 0:26 / /cg\\040v1 rw,relatime shared:9 - cgroup cgroup rw,memory,pids\n"
        "31 25 0:27 / /sys/fs/cgroup rw,relatime shared:10 - cgroup2 cgroup2 rw\n"
    )
    (tmp_path / "sys/fs/cgroup").mkdir(parents=True)
    (tmp_path / "sys/fs/cgroup/cgroup.controllers").write_text("cpu io\n")
    layout = detect(text, root=tmp_path)
    assert layout.memory == Hierarchy(tmp_path / "cg v1", "v1")
    assert layout.pids == layout.memory


def test_detect_rejects_a_line_that_is_not_mountinfo() -> None:
    with pytest.raises(ValueError, match="not a /proc/self/mountinfo line"):
        detect("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n")


def test_from_system_reads_proc_self_mountinfo_under_root(v2_root: Path) -> None:
    (v2_root / "proc/self").mkdir(parents=True)
    (v2_root / "proc/self/mountinfo").write_text(V2_TEXT)
    assert CgroupLayout.from_system(root=v2_root) == detect(V2_TEXT, root=v2_root)


# --- reading groups -------------------------------------------------------------------------------------


def test_v1_reads_of_recorded_groups(v1_root: Path) -> None:
    layout = detect(HYBRID_TEXT, root=v1_root)
    oom = layout.open("fixture/oom")
    assert oom.memory_max_bytes() == 8 * MIB
    assert oom.memory_current_bytes() == 94208
    assert oom.memory_events() == {"max": 40, "oom_kill": 1}
    assert oom.pids_max() == 16
    assert oom.pids() == []
    idle = layout.open("fixture/idle")
    assert idle.memory_max_bytes() is None  # 9223372036854771712 is v1's "no limit"
    assert idle.pids_max() is None
    assert idle.memory_events() == {"max": 0, "oom_kill": 0}
    recorded = int((v1_root / "sys/fs/cgroup/memory/fixture/idle/cgroup.procs").read_text())
    assert idle.pids() == [recorded]


def test_v1_pids_is_the_union_over_hierarchies(v1_root: Path) -> None:
    layout = detect(HYBRID_TEXT, root=v1_root)
    (v1_root / "sys/fs/cgroup/pids/fixture/idle/cgroup.procs").write_text("7\n3\n")
    recorded = int((v1_root / "sys/fs/cgroup/memory/fixture/idle/cgroup.procs").read_text())
    assert layout.open("fixture/idle").pids() == sorted({3, 7, recorded})


def test_v2_reads_of_hand_written_groups(v2_root: Path) -> None:
    layout = detect(V2_TEXT, root=v2_root)
    oom = layout.open("fixture/oom")
    assert oom.memory_max_bytes() == 8 * MIB
    assert oom.memory_current_bytes() == 0
    assert oom.memory_events() == {
        "low": 0,
        "high": 0,
        "max": 77,
        "oom": 1,
        "oom_kill": 1,
        "oom_group_kill": 0,
    }
    assert oom.pids_max() == 16
    idle = layout.open("fixture/idle")
    assert idle.memory_max_bytes() is None
    assert idle.memory_current_bytes() == 348160
    assert idle.pids() == [4242]


# --- create, validate, remove, sweep --------------------------------------------------------------------


def test_v1_create_makes_the_group_in_memory_and_pids_with_limits(v1_root: Path) -> None:
    layout = detect(HYBRID_TEXT, root=v1_root)
    group = layout.create("labkit/run1/box", memory_max_bytes=32 * MIB, pids_max=32)
    memory = v1_root / "sys/fs/cgroup/memory/labkit/run1/box"
    pids = v1_root / "sys/fs/cgroup/pids/labkit/run1/box"
    assert group.dirs() == [memory, pids]
    assert (memory / "memory.limit_in_bytes").read_text() == str(32 * MIB)
    assert (pids / "pids.max").read_text() == "32"
    assert group.memory_max_bytes() == 32 * MIB
    assert group.procs_files == [memory / "cgroup.procs", pids / "cgroup.procs"]
    assert not (v1_root / "sys/fs/cgroup/unified/labkit").exists()


def test_v1_create_without_limits_writes_no_limit_files(v1_root: Path) -> None:
    layout = detect(HYBRID_TEXT, root=v1_root)
    group = layout.create("labkit/run1/free", memory_max_bytes=None, pids_max=None)
    assert all(d.is_dir() for d in group.dirs())
    assert [p.name for d in group.dirs() for p in d.iterdir()] == []


def test_v2_create_enables_controllers_in_every_parent(v2_root: Path) -> None:
    layout = detect(V2_TEXT, root=v2_root)
    group = layout.create("labkit/run1/box", memory_max_bytes=64 * MIB, pids_max=8)
    base = v2_root / "sys/fs/cgroup"
    for parent in (base, base / "labkit", base / "labkit/run1"):
        assert (parent / "cgroup.subtree_control").read_text() == "+memory +pids", parent
    leaf = base / "labkit/run1/box"
    assert group.dirs() == [leaf]
    assert not (leaf / "cgroup.subtree_control").exists()
    assert (leaf / "memory.max").read_text() == str(64 * MIB)
    assert (leaf / "pids.max").read_text() == "8"


def test_create_refuses_an_existing_group(v2_root: Path) -> None:
    layout = detect(V2_TEXT, root=v2_root)
    with pytest.raises(FileExistsError, match="labkit clean"):
        layout.create("fixture/idle", memory_max_bytes=None, pids_max=None)


@pytest.mark.parametrize(
    ("memory_max_bytes", "pids_max", "param"),
    [
        (4 * MIB - 1, 10, "memory_max_bytes"),
        (-1, 10, "memory_max_bytes"),
        (0, 10, "memory_max_bytes"),
        (True, 10, "memory_max_bytes"),
        (64 * MIB, 0, "pids_max"),
        (64 * MIB, -5, "pids_max"),
        (64 * MIB, cgroups.PIDS_MAX_LIMIT + 1, "pids_max"),
    ],
)
def test_create_validates_limits_before_creating_anything(
    v1_root: Path, memory_max_bytes: int, pids_max: int, param: str
) -> None:
    layout = detect(HYBRID_TEXT, root=v1_root)
    with pytest.raises(ValueError, match=rf"^{param}=.*allowed") as info:
        layout.create("labkit/run1/bad", memory_max_bytes=memory_max_bytes, pids_max=pids_max)
    assert ("4 MiB" if param == "memory_max_bytes" else "1..4194304") in str(info.value)
    assert not (v1_root / "sys/fs/cgroup/memory/labkit").exists()
    assert not (v1_root / "sys/fs/cgroup/pids/labkit").exists()


def test_create_accepts_the_smallest_allowed_limits(v1_root: Path) -> None:
    layout = detect(HYBRID_TEXT, root=v1_root)
    group = layout.create("labkit/run1/small", memory_max_bytes=4 * MIB, pids_max=1)
    assert group.memory_max_bytes() == 4 * MIB and group.pids_max() == 1


@pytest.mark.parametrize(
    "relpath", ["", "/labkit/x", "labkit/../x", "labkit//x", "labkit/.hidden", "labkit/x/"]
)
def test_relpath_must_be_a_clean_relative_path(v2_root: Path, relpath: str) -> None:
    layout = detect(V2_TEXT, root=v2_root)
    with pytest.raises(ValueError, match="relpath="):
        layout.create(relpath, memory_max_bytes=None, pids_max=None)


def test_pids_limit_without_pids_controller_is_refused(v2_root: Path) -> None:
    (v2_root / "sys/fs/cgroup/cgroup.controllers").write_text("cpu io memory\n")
    layout = detect(V2_TEXT, root=v2_root)
    assert layout.pids is None
    with pytest.raises(CgroupUnavailable, match="pids_max=None"):
        layout.create("labkit/run1/box", memory_max_bytes=None, pids_max=10)
    group = layout.create("labkit/run1/box", memory_max_bytes=8 * MIB, pids_max=None)
    assert (v2_root / "sys/fs/cgroup/cgroup.subtree_control").read_text() == "+memory"
    assert group.memory_max_bytes() == 8 * MIB


@pytest.mark.usefixtures("kernel_rmdir")
def test_remove_takes_the_leaf_from_every_hierarchy_and_prunes_empty_parents(v1_root: Path) -> None:
    layout = detect(HYBRID_TEXT, root=v1_root)
    first = layout.create("labkit/run1/a", memory_max_bytes=8 * MIB, pids_max=4)
    second = layout.create("labkit/run1/b", memory_max_bytes=8 * MIB, pids_max=4)
    first.remove()
    assert not first.exists() and second.exists()  # run1 still holds b: kept
    second.remove()
    for h in ("memory", "pids"):
        assert not (v1_root / "sys/fs/cgroup" / h / "labkit").exists()
        assert (v1_root / "sys/fs/cgroup" / h / "fixture/idle").is_dir()
    second.remove()  # already gone: fine


@pytest.mark.usefixtures("kernel_rmdir")
def test_remove_of_a_group_with_processes_says_to_kill_first(v2_root: Path) -> None:
    layout = detect(V2_TEXT, root=v2_root)
    with pytest.raises(cgroups.CgroupError, match=r"kill_all\(\) first") as info:
        layout.open("fixture/idle").remove(timeout_s=0.05)
    assert "[4242]" in str(info.value)


@pytest.mark.usefixtures("kernel_rmdir")
def test_sweep_removes_everything_under_the_prefix_deepest_first(v1_root: Path) -> None:
    layout = detect(HYBRID_TEXT, root=v1_root)
    for relpath in ("labkit/r1/a", "labkit/r1/b", "labkit/r2/c"):
        layout.create(relpath, memory_max_bytes=8 * MIB, pids_max=4)
    (v1_root / "sys/fs/cgroup/memory/labkit/r3").mkdir()  # interrupted between the two mkdirs: memory only
    removed = sweep(layout)
    assert removed == [
        "labkit/r1/a",
        "labkit/r1/b",
        "labkit/r2/c",
        "labkit/r1",
        "labkit/r2",
        "labkit/r3",
        "labkit",
    ]
    for h in ("memory", "pids"):
        assert not (v1_root / "sys/fs/cgroup" / h / "labkit").exists()
        assert (v1_root / "sys/fs/cgroup" / h / "fixture/oom").is_dir()
    assert sweep(layout) == []


def test_kill_all_signals_listed_processes_and_times_out_when_they_stay_listed(v2_root: Path) -> None:
    # A fixture's cgroup.procs does not empty itself: kill_all kills our own child, then gives up.
    child = subprocess.Popen(["sleep", "30"])
    try:
        layout = detect(V2_TEXT, root=v2_root)
        group = layout.create("labkit/run1/box", memory_max_bytes=None, pids_max=None)
        (group.dir("memory") / "cgroup.procs").write_text(f"{child.pid}\n")
        with pytest.raises(TimeoutError, match=str(child.pid)):
            group.kill_all(timeout_s=0.2)
        assert child.wait(timeout=5) == -9
    finally:
        child.kill()
        child.wait()


def test_kill_all_uses_cgroup_kill_on_v2(v2_root: Path) -> None:
    layout = detect(V2_TEXT, root=v2_root)
    group = layout.open("fixture/oom")
    (group.dir("memory") / "cgroup.kill").write_text("")
    group.kill_all(timeout_s=1)
    assert (group.dir("memory") / "cgroup.kill").read_text() == "1"


# --- MemorySampler --------------------------------------------------------------------------------------


def test_memory_sampler_returns_a_frame_of_samples(v2_root: Path) -> None:
    group = detect(V2_TEXT, root=v2_root).open("fixture/idle")
    current = group.dir("memory") / "memory.current"
    with MemorySampler(group, interval_s=0.005) as sampler:
        time.sleep(0.05)
        _write_atomically(current, "1048576\n")
        time.sleep(0.05)
    frame = sampler.frame()
    assert list(frame.columns) == ["t_s", "memory_bytes"]
    assert len(frame) >= 4
    assert frame["t_s"].is_monotonic_increasing and frame["t_s"].iloc[0] >= 0
    assert set(frame["memory_bytes"]) == {348160, 1048576}
    assert frame["memory_bytes"].iloc[0] == 348160 and frame["memory_bytes"].iloc[-1] == 1048576


def test_memory_sampler_stops_quietly_when_the_group_goes_away(v2_root: Path) -> None:
    group = detect(V2_TEXT, root=v2_root).open("fixture/idle")
    with MemorySampler(group, interval_s=0.005) as sampler:
        time.sleep(0.03)
        shutil.rmtree(group.dir("memory"))
        time.sleep(0.03)
        count = len(sampler.frame())
        time.sleep(0.03)
        assert len(sampler.frame()) == count


def test_memory_sampler_reports_an_unreadable_value(v2_root: Path) -> None:
    group = detect(V2_TEXT, root=v2_root).open("fixture/idle")
    (group.dir("memory") / "memory.current").write_text("garbage\n")
    with pytest.raises(ValueError, match="garbage"), MemorySampler(group, interval_s=0.005):
        time.sleep(0.02)


@pytest.mark.parametrize("interval_s", [0, -1.0])
def test_memory_sampler_validates_interval(v2_root: Path, interval_s: float) -> None:
    group = detect(V2_TEXT, root=v2_root).open("fixture/idle")
    with pytest.raises(ValueError, match="interval_s"):
        MemorySampler(group, interval_s=interval_s)


# --- live -----------------------------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="creating cgroups on the live kernel needs root")
def test_live_group_limits_counts_kills_and_removes() -> None:
    layout = CgroupLayout.from_system()  # a missing memory controller is a failure here, not a skip
    run = f"test-{uuid.uuid4().hex[:8]}"
    group = layout.create(f"labkit/{run}/live", memory_max_bytes=32 * MIB, pids_max=16)
    # The child waits for a line on stdin, so it execs `sleep` (and allocates) only once it is in the group:
    # memory a process allocated before it joined stays charged to its old group.
    child = subprocess.Popen(["sh", "-c", "read go; exec sleep 30"], stdin=subprocess.PIPE, text=True)
    try:
        group.add(child.pid)
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.close()
        assert group.pids() == [child.pid]
        assert group.memory_max_bytes() == 32 * MIB
        assert group.pids_max() == 16
        deadline = time.monotonic() + 5
        while group.memory_current_bytes() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert group.memory_current_bytes() > 0
        assert group.memory_events()["oom_kill"] == 0
        group.kill_all(timeout_s=5)
        assert child.wait(timeout=5) == -9
        assert group.pids() == []
        group.remove()
        assert not group.exists()
        assert not any((h.path / "labkit" / run).exists() for h in layout.hierarchies())
    finally:
        child.kill()
        child.wait()
        if group.exists():
            group.kill_all(timeout_s=5)
            group.remove()

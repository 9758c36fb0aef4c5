"""labkit.instruments.scratch: a container from scratch (unshare + pivot_root), live on this kernel, busybox rootfs.

Live tests need root: skipped outside CI, a failure in CI (CI=true).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit.errors import BadParameter
from labkit.instruments import shell, undo
from labkit.instruments.cgroups import CgroupLayout, CpuMax
from labkit.instruments.limits import MIB, Limits
from labkit.instruments.scratch import (
    DEFAULT_LIMITS,
    ExitStatus,
    ScratchContainer,
    ScratchSetupError,
    ScratchSpec,
    run_scratch_once,
)
from labkit.instruments.scratch.argv import SETUP_NAME
from labkit.instruments.scratch.pid1 import find_pid1
from labkit.instruments.scratch.status import why_code

NAMESPACES = ("pid", "net", "mnt", "uts", "ipc")
APPLETS = ("sh", "sleep", "mount", "umount", "hostname", "cat", "true", "false", "tail", "rmdir", "ls")
PROC_FIXTURES = Path(__file__).parent / "fixtures" / "proc"
SIGKILLED_RAW = "unshare exited 1: sigprocmask unblock failed: Invalid argument"


@pytest.fixture(scope="module", autouse=True)
def no_labkit_cgroup_left() -> Iterator[None]:
    yield
    if os.geteuid() == 0:
        left = sorted(glob.glob("/sys/fs/cgroup/*/labkit") + glob.glob("/sys/fs/cgroup/labkit"))
        assert left == [], "labkit cgroups left behind"


def make_busybox_rootfs(root: Path) -> Path:
    """A minimal rootfs: the host's static busybox with applet symlinks, plus empty proc, dev, sys, tmp."""
    busybox = Path(shell.require_program("busybox"))
    (root / "bin").mkdir(parents=True)
    shutil.copy2(busybox, root / "bin/busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    for d in ("proc", "dev", "sys", "tmp"):
        (root / d).mkdir()
    return root


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_busybox_rootfs(tmp_path_factory.mktemp("scratch") / "rootfs")


@pytest.fixture
def run_id() -> Iterator[str]:
    run = f"test-{uuid.uuid4().hex[:8]}"
    yield run
    if os.geteuid() == 0:
        hierarchies = CgroupLayout.from_system().hierarchies()
        left = [h.path / "labkit" / run for h in hierarchies if (h.path / "labkit" / run).exists()]
        assert left == [], f"cgroups left behind: {left}"


def _nspid(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return [int(tok) for tok in line.split()[1:]]
    raise AssertionError("no NSpid line")


def _wait_for_file(path: Path, timeout_s: float = 5.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.01)
    raise AssertionError(f"{path} did not appear within {timeout_s} s")


def _assert_gone(pid: int, cgroup_dirs: list[Path], rootfs: Path) -> None:
    assert not Path(f"/proc/{pid}").exists(), f"process {pid} survived"
    assert [d for d in cgroup_dirs if d.exists()] == []
    assert [p.name for p in rootfs.iterdir() if p.name.startswith(".labkit-oldroot")] == []
    assert str(rootfs) not in Path("/proc/self/mountinfo").read_text()


@pytest.mark.root
def test_scratch_container_is_isolated_limited_and_leaves_nothing(rootfs: Path, run_id: str) -> None:
    (rootfs / "tmp/h").unlink(missing_ok=True)
    argv = ["sh", "-c", "hostname > /tmp/h; exec sleep 30"]
    limits = Limits(memory_bytes=64 * MIB, pids=16, cpus=0.5)
    with ScratchContainer(rootfs, argv, run_id=run_id, name="iso", hostname="labkit-box", limits=limits) as box:
        pid = box.host_pid
        for kind in NAMESPACES:
            assert os.readlink(f"/proc/{pid}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}"), kind
        nspid = _nspid(pid)
        assert nspid[0] == pid and nspid[-1] == 1 and len(nspid) == len(_nspid(os.getpid())) + 1
        assert _wait_for_file(rootfs / "tmp/h") == "labkit-box\n"
        # its root is the rootfs (same inode), and the host's old root is no longer mounted inside
        assert os.stat(f"/proc/{pid}/root/bin/busybox").st_ino == os.stat(rootfs / "bin/busybox").st_ino
        mounts = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
        assert [m.split()[4] for m in mounts] == ["/", "/proc"]
        assert box.cgroup.memory_max_bytes() == 64 * MIB
        assert box.cgroup.pids_max() == 16
        assert box.cgroup.cpu_max() == CpuMax(50000, 100000)
        assert len(box.cgroup.dirs()) == len(CgroupLayout.from_system().hierarchies(box.cgroup.paths))
        assert pid in box.cgroup.pids()
        assert box.cgroup.memory_current_bytes() > 0
        dirs = box.cgroup.dirs()
        assert all(d.is_dir() for d in dirs)
    _assert_gone(pid, dirs, rootfs)


@pytest.mark.root
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_exception_inside_the_block_still_cleans_up(
    rootfs: Path, run_id: str, error: type[BaseException]
) -> None:
    with pytest.raises(error), ScratchContainer(rootfs, ["sleep", "30"], run_id=run_id, name="boom") as box:
        pid = box.host_pid
        dirs = box.cgroup.dirs()
        assert Path(f"/proc/{pid}/cmdline").read_text() == "sleep\x0030\x00"
        raise error("inside the with block")
    _assert_gone(pid, dirs, rootfs)


@pytest.mark.root
@pytest.mark.parametrize(("argv", "code"), [(["true"], 0), (["false"], 1), (["sh", "-c", "exit 7"], 7)])
def test_run_scratch_once_returns_the_exit_code(
    rootfs: Path, run_id: str, argv: list[str], code: int
) -> None:
    assert run_scratch_once(rootfs, argv, run_id=run_id, name="once", timeout_s=30) == code


@pytest.mark.root
def test_raw_exit_of_a_normal_exit(rootfs: Path, run_id: str) -> None:
    with ScratchContainer(rootfs, ["sh", "-c", "exit 7"], run_id=run_id, name="seven") as box:
        with pytest.raises(RuntimeError, match="wait"):
            _ = box.raw_exit
        assert box.wait(timeout_s=30) == 7
        assert box.raw_exit == "exited 7"
    assert box.raw_exit == "exited 7"  # kept after the block


@pytest.mark.root
def test_pid1_killed_from_the_host_is_137_and_raw_says_what_unshare_did(rootfs: Path, run_id: str) -> None:
    with ScratchContainer(rootfs, ["sleep", "30"], run_id=run_id, name="killed") as box:
        os.kill(box.host_pid, signal.SIGKILL)
        assert box.wait(timeout_s=30) == 137
        assert box.raw_exit == SIGKILLED_RAW


@pytest.mark.root
def test_the_memory_limit_is_enforced(rootfs: Path, run_id: str) -> None:
    # a string that doubles forever: at 8 MiB the OOM killer ends the shell (exit 128 + SIGKILL)
    hog = ["sh", "-c", "x=0123456789abcdef; while :; do x=$x$x; done"]
    limits = Limits(memory_bytes=8 * MIB, pids=16, cpus=1.0)
    with ScratchContainer(rootfs, hog, run_id=run_id, name="oom", limits=limits) as box:
        assert box.wait(timeout_s=60) == 137
        assert box.raw_exit == SIGKILLED_RAW
        assert box.cgroup.memory_events()["oom_kill"] >= 1
        assert box.cgroup.memory_peak_bytes() == 8 * MIB


@pytest.mark.root
def test_run_scratch_once_past_its_timeout_raises_and_cleans_up(rootfs: Path, run_id: str) -> None:
    with pytest.raises(shell.CommandError, match=r"longer than 0\.5 s") as info:
        run_scratch_once(rootfs, ["sleep", "30"], run_id=run_id, name="slow", timeout_s=0.5)
    assert info.value.exit_code is None


@pytest.mark.root
def test_a_failing_setup_step_is_reported_and_cleaned_up(tmp_path: Path, run_id: str) -> None:
    broken = make_busybox_rootfs(tmp_path / "broken")
    (broken / "bin/umount").unlink()
    (broken / "bin/umount").symlink_to("missing")  # there, but cannot run after pivot_root
    with pytest.raises(ScratchSetupError, match="detaching the old root"):
        run_scratch_once(broken, ["true"], run_id=run_id, name="broken", timeout_s=30)
    assert [p.name for p in broken.iterdir() if p.name.startswith(".labkit-oldroot")] == []


@pytest.mark.root
def test_host_pid_of_a_command_that_already_ended_says_so(rootfs: Path, run_id: str) -> None:
    with ScratchContainer(rootfs, ["true"], run_id=run_id, name="short") as box:
        assert box.wait(timeout_s=30) == 0
        with pytest.raises(RuntimeError, match="ended"):
            _ = box.host_pid


@pytest.mark.root
def test_output_is_kept_after_the_block(rootfs: Path, run_id: str) -> None:
    with ScratchContainer(rootfs, ["sh", "-c", "echo out; echo err >&2"], run_id=run_id, name="out") as box:
        assert box.wait(timeout_s=30) == 0
    assert box.output() == ("out\n", "err\n")


def _no_side_effects(rootfs: Path, **overrides: object) -> None:
    kwargs: dict[str, object] = {"argv": ["true"], "run_id": "r", "name": "n", **overrides}
    argv = kwargs.pop("argv")
    ScratchContainer(rootfs, argv, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"argv": []}, "argv"),
        ({"argv": "true"}, "argv"),
        ({"argv": [""]}, "argv"),
        ({"limits": (64 * MIB, 16, 0.5)}, "limits"),
        ({"limits": None}, "limits"),
        ({"run_id": "../etc"}, "run_id"),
        ({"name": ""}, "name"),
        ({"hostname": "not a hostname"}, "hostname"),
        ({"start_timeout_s": 0}, "start_timeout_s"),
        ({"start_timeout_s": float("nan")}, "start_timeout_s"),
    ],
)
def test_parameters_are_validated_before_anything_starts(
    rootfs: Path, overrides: dict[str, object], param: str
) -> None:
    with pytest.raises(BadParameter, match=rf"^{param}="):
        _no_side_effects(rootfs, **overrides)
    assert [p.name for p in rootfs.iterdir() if p.name.startswith(".labkit-oldroot")] == []


@pytest.mark.parametrize(
    ("remove", "message"), [("bin/sh", "no bin/sh"), ("proc", "no proc"), ("bin/umount", "no umount")]
)
def test_the_rootfs_is_checked(tmp_path: Path, remove: str, message: str) -> None:
    root = make_busybox_rootfs(tmp_path / "rootfs")
    target = root / remove
    target.rmdir() if target.is_dir() and not target.is_symlink() else target.unlink()
    with pytest.raises(BadParameter, match=rf"^rootfs=.*{message}"):
        _no_side_effects(root)
    with pytest.raises(BadParameter, match="no such directory"):
        _no_side_effects(tmp_path / "absent")
    with pytest.raises(BadParameter, match="host's root"):
        _no_side_effects(Path("/"))


def test_a_spec_is_frozen_and_normalised(rootfs: Path) -> None:
    spec = ScratchSpec(rootfs / "bin" / "..", ["sh", "-c", Path("x")], run_id="r1", name="box")  # type: ignore[list-item]
    assert spec.rootfs == rootfs.resolve() and spec.argv == ("sh", "-c", "x")
    assert spec.limits == DEFAULT_LIMITS and spec.relpath == "labkit/r1/box"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    box = ScratchContainer.from_spec(spec)
    assert box.spec == spec and box.limits == DEFAULT_LIMITS


@pytest.mark.parametrize(
    ("returncode", "stderr", "code", "raw"),
    [
        (0, "", 0, "exited 0"),
        (7, "some output\n", 7, "exited 7"),
        (-15, "", 143, "killed by signal 15"),
        (1, "hog starting\nunshare: sigprocmask unblock failed: Invalid argument\n", 137, SIGKILLED_RAW),
        (1, "unshare: sigprocmask unblock failed: Invalid argument\nbut the command printed more\n", 1, "exited 1"),
    ],
)
def test_exit_status_keeps_the_raw_status_beside_the_shell_code(
    returncode: int, stderr: str, code: int, raw: str
) -> None:
    status = ExitStatus.of(returncode, stderr)
    assert (status.code, status.raw) == (code, raw)


@pytest.mark.parametrize(
    ("returncode", "stderr", "words"),
    [
        (1, "unshare: sigprocmask unblock failed: Invalid argument\n", "when its PID 1 dies of SIGKILL"),
        (-9, "", "reported as 137 (128 + the signal's number)"),
        (1, "", "exit code 1"),
    ],
)
def test_the_reader_is_told_why_a_raw_status_is_reported_as_its_code(returncode: int, stderr: str, words: str) -> None:
    status = ExitStatus.of(returncode, stderr)
    assert words in why_code(status.raw, status.code)


def test_pid1_is_found_by_nspid_in_a_recorded_proc() -> None:
    # docker-default/6244: NSpid 6244 1, cmdline "sleep 60" (a container's PID 1 seen from the host)
    proc = PROC_FIXTURES / "docker-default"
    assert find_pid1([999999, 6244], "/usr/bin/unshare", depth=2, proc_root=proc) == 6244
    assert find_pid1([6244], "/usr/bin/unshare", depth=3, proc_root=proc) is None
    assert find_pid1([6244], "sleep", depth=2, proc_root=proc) is None  # still a copy of "unshare"


def test_pid1_in_the_setup_shell_is_not_taken_for_the_command(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    shutil.copytree(PROC_FIXTURES / "docker-default/6244", proc / "6244")
    (proc / "6244/cmdline").write_bytes(f"/bin/sh\0-c\0script\0{SETUP_NAME}\0".encode())
    assert find_pid1([6244], "/usr/bin/unshare", depth=2, proc_root=proc) is None


HOLDS_A_CONTAINER = """
import sys, time
from labkit.instruments.scratch import ScratchContainer
with ScratchContainer(sys.argv[1], ["sleep", "300"], run_id=sys.argv[2], name="killed") as box:
    print(box.host_pid, flush=True)
    time.sleep(300)
"""


@pytest.mark.root
def test_a_container_whose_maker_is_sigkilled_runs_on_until_the_next_labkit_command_ends_it(
        rootfs: Path, run_id: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", HOLDS_A_CONTAINER, str(rootfs), run_id], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None
        pid = int(child.stdout.readline())
    finally:
        child.kill()  # SIGKILL: no block of the child's ends
        child.wait(30)
    dirs = [d for d in CgroupLayout.from_system().open(f"labkit/{run_id}/killed").dirs() if d.is_dir()]
    # The kernel's processes outlive their maker: without the journal the container would run on.
    assert Path(f"/proc/{pid}").exists() and dirs
    assert any(line.startswith(f"scratch container labkit/{run_id}/killed (left by pid {child.pid})")
               for line in undo.undo_orphans())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the killed process leaves /proc once its parent, init, reaps it
    _assert_gone(pid, dirs, rootfs)  # and the run's own group, emptied: the fixtures check that

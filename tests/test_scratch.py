"""labkit.scratch: a container from scratch (unshare + pivot_root), live on this kernel, busybox rootfs."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit.instruments import shell
from labkit.instruments.cgroups import MIB, CgroupLayout
from labkit.instruments.scratch import ScratchContainer, ScratchSetupError, run_scratch_once

NAMESPACES = ("pid", "net", "mnt", "uts", "ipc")
APPLETS = ("sh", "sleep", "mount", "umount", "hostname", "cat", "true", "false", "tail", "rmdir", "ls")
live = pytest.mark.skipif(os.geteuid() != 0, reason="namespaces, mounts and cgroups need root")


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
        layout = CgroupLayout.from_system()
        left = [h.path / "labkit" / run for h in layout.hierarchies() if (h.path / "labkit" / run).exists()]
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


@live
def test_scratch_container_is_isolated_limited_and_leaves_nothing(rootfs: Path, run_id: str) -> None:
    (rootfs / "tmp/h").unlink(missing_ok=True)
    argv = ["sh", "-c", "hostname > /tmp/h; exec sleep 30"]
    with ScratchContainer(
        rootfs, argv, run_id=run_id, name="iso", hostname="labkit-box", memory_max_bytes=64 * MIB, pids_max=16
    ) as box:
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
        assert pid in box.cgroup.pids()
        assert box.cgroup.memory_current_bytes() > 0
        dirs = box.cgroup.dirs()
        assert all(d.is_dir() for d in dirs)
    _assert_gone(pid, dirs, rootfs)


@live
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


@live
@pytest.mark.parametrize(("argv", "code"), [(["true"], 0), (["false"], 1), (["sh", "-c", "exit 7"], 7)])
def test_run_scratch_once_returns_the_exit_code(
    rootfs: Path, run_id: str, argv: list[str], code: int
) -> None:
    assert run_scratch_once(rootfs, argv, run_id=run_id, name="once", timeout_s=30) == code


@live
def test_the_memory_limit_is_enforced(rootfs: Path, run_id: str) -> None:
    # a string that doubles forever: at 8 MiB the OOM killer ends the shell (exit 128 + SIGKILL)
    hog = ["sh", "-c", "x=0123456789abcdef; while :; do x=$x$x; done"]
    with ScratchContainer(rootfs, hog, run_id=run_id, name="oom", memory_max_bytes=8 * MIB) as box:
        assert box.wait(timeout_s=60) == 137
        assert box.cgroup.memory_events()["oom_kill"] >= 1


@live
def test_run_scratch_once_past_its_timeout_raises_and_cleans_up(rootfs: Path, run_id: str) -> None:
    with pytest.raises(shell.CommandError, match=r"longer than 0\.5 s") as info:
        run_scratch_once(rootfs, ["sleep", "30"], run_id=run_id, name="slow", timeout_s=0.5)
    assert info.value.exit_code is None


@live
def test_a_failing_setup_step_is_reported_and_cleaned_up(tmp_path: Path, run_id: str) -> None:
    broken = make_busybox_rootfs(tmp_path / "broken")
    (broken / "bin/umount").unlink()
    (broken / "bin/umount").symlink_to("missing")  # there, but cannot run after pivot_root
    with pytest.raises(ScratchSetupError, match="detaching the old root"):
        run_scratch_once(broken, ["true"], run_id=run_id, name="broken", timeout_s=30)
    assert [p.name for p in broken.iterdir() if p.name.startswith(".labkit-oldroot")] == []


@live
def test_host_pid_of_a_command_that_already_ended_says_so(rootfs: Path, run_id: str) -> None:
    with ScratchContainer(rootfs, ["true"], run_id=run_id, name="short") as box:
        assert box.wait(timeout_s=30) == 0
        with pytest.raises(RuntimeError, match="ended"):
            _ = box.host_pid


@live
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
        ({"memory_max_bytes": 1024}, "memory_max_bytes"),
        ({"pids_max": 0}, "pids_max"),
        ({"run_id": "../etc"}, "run_id"),
        ({"name": ""}, "name"),
        ({"hostname": "not a hostname"}, "hostname"),
        ({"start_timeout_s": 0}, "start_timeout_s"),
    ],
)
def test_parameters_are_validated_before_anything_starts(
    rootfs: Path, overrides: dict[str, object], param: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{param}"):
        _no_side_effects(rootfs, **overrides)
    assert [p.name for p in rootfs.iterdir() if p.name.startswith(".labkit-oldroot")] == []


@pytest.mark.parametrize(
    ("remove", "message"), [("bin/sh", "no bin/sh"), ("proc", "no proc"), ("bin/umount", "no umount")]
)
def test_the_rootfs_is_checked(tmp_path: Path, remove: str, message: str) -> None:
    root = make_busybox_rootfs(tmp_path / "rootfs")
    target = root / remove
    target.rmdir() if target.is_dir() and not target.is_symlink() else target.unlink()
    with pytest.raises(ValueError, match=message):
        _no_side_effects(root)
    with pytest.raises(ValueError, match="existing directory"):
        _no_side_effects(tmp_path / "absent")

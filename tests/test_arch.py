"""labkit.instruments.arch: the binfmt_misc parser on recorded amd64 and arm64 hosts, the fix for each missing
piece, and the disabled-entry context manager restoring the real entry after a failure, SIGINT and SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from labkit.errors import BadParameter, HostUnsupported
from labkit.instruments import arch, undo
from tests.conftest import default_sigint, missing

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "arch"
ROOT = Path(__file__).resolve().parent.parent


def _host(scenario: str) -> tuple[Path, str]:
    folder = FIXTURES / scenario
    return folder / "binfmt_misc", (folder / "machine").read_text().strip()


def test_amd64_host_emulates_arm64_with_a_fix_binary_entry() -> None:
    root, machine = _host("amd64-debian")
    assert arch.host_platform(machine) == arch.AMD64
    assert arch.foreign_platform(machine) == arch.ARM64
    assert arch.emulator_entry(machine) == "qemu-aarch64"
    state = arch.read_binfmt(root)
    assert state.mounted and state.enabled and list(state.entries) == ["qemu-aarch64"]
    entry = state.entries["qemu-aarch64"]
    assert entry.enabled and entry.fix_binary and entry.flags == "PF"
    assert entry.interpreter == "/usr/libexec/qemu-binfmt/aarch64-binfmt-P"
    assert entry.elf_machine == 183  # EM_AARCH64
    assert state.runs("qemu-aarch64") and not state.runs("qemu-x86_64")
    check = arch.check_emulation(arch.ARM64, root, machine)
    assert check.ok and "aarch64-binfmt-P" in check.detail and "fix-binary" in check.detail
    assert arch.check_emulation(arch.AMD64, root, machine).detail == "native (x86_64)"


def test_arm64_host_emulates_amd64() -> None:
    root, machine = _host("arm64-debian")
    assert arch.host_platform(machine) == arch.ARM64
    assert arch.foreign_platform(machine) == arch.AMD64
    assert arch.emulator_entry(machine) == "qemu-x86_64"
    entry = arch.read_binfmt(root).entries["qemu-x86_64"]
    assert entry.elf_machine == 62  # EM_X86_64
    assert arch.check_emulation(arch.AMD64, root, machine).ok
    assert arch.check_emulation(arch.ARM64, root, machine).detail == "native (aarch64)"
    # The amd64 host's entry is not there: an arm64 host asked to emulate arm64 runs it natively instead.
    assert arch.read_binfmt(root).entry("qemu-aarch64") is None


def test_a_disabled_entry_is_read_as_disabled_and_the_fix_enables_it() -> None:
    root, machine = _host("amd64-disabled")
    state = arch.read_binfmt(root)
    assert state.mounted and not state.entries["qemu-aarch64"].enabled and not state.runs("qemu-aarch64")
    check = arch.check_emulation(arch.ARM64, root, machine)
    assert not check.ok and check.detail == "qemu-aarch64 is registered but disabled"
    assert check.fix.startswith("update-binfmts --enable qemu-aarch64")


def test_binfmt_misc_not_mounted_is_reported_with_the_mount_command() -> None:
    root, machine = _host("not-mounted")
    assert arch.read_binfmt(root) == arch.BinfmtState(mounted=False, enabled=False)
    check = arch.check_emulation(arch.ARM64, root, machine)
    assert not check.ok and "not mounted" in check.detail
    assert f"mount -t binfmt_misc binfmt_misc {root}" in check.fix and "qemu-user-static" in check.fix


def test_no_entry_registered_names_the_packages(tmp_path: Path) -> None:
    (tmp_path / "status").write_text("enabled\n")
    check = arch.check_emulation(arch.ARM64, tmp_path, "x86_64")
    assert not check.ok and check.fix == "apt-get install qemu-user-static binfmt-support && " \
                                         "update-binfmts --enable qemu-aarch64"


def test_unknown_platform_and_machine_are_refused_with_the_choices() -> None:
    with pytest.raises(BadParameter, match=r"(?s)platform='linux/riscv64'.*linux/amd64.*linux/arm64"):
        arch.validate_platform("linux/riscv64")
    with pytest.raises(BadParameter, match="platform='arm64'"):
        arch.check_emulation("arm64")
    with pytest.raises(HostUnsupported, match="'riscv64'"):
        arch.host_platform("riscv64")


def test_a_malformed_entry_is_an_error_not_a_guess() -> None:
    with pytest.raises(ValueError, match="does not start with enabled/disabled"):
        arch.parse_entry("qemu-aarch64", "1\n")


def test_disabling_an_unregistered_entry_is_refused(tmp_path: Path) -> None:
    (tmp_path / "status").write_text("enabled\n")
    refused = pytest.raises(HostUnsupported, match=r"(?s)'qemu-aarch64' is not registered.*labkit setup 11")
    with refused, arch.entry_disabled("qemu-aarch64", tmp_path):
        pass


# ---------------------------------------------------------------- live: the real entry, restored


@pytest.fixture
def live_entry() -> str:
    """The real foreign-platform entry, enabled before the test (these tests toggle it: hold the engine lock)."""
    name = arch.emulator_entry()
    if not arch.read_binfmt().runs(name):
        missing(f"binfmt_misc with {name} enabled (`labkit setup 11`)")
    return name


def _enabled(name: str) -> bool:
    entry = arch.read_binfmt().entry(name)
    return entry is not None and entry.enabled


@pytest.mark.root
def test_entry_is_restored_after_a_failure_in_the_middle(live_entry: str) -> None:
    with pytest.raises(RuntimeError, match="failed in the middle"), arch.entry_disabled(live_entry):
        assert not _enabled(live_entry)
        raise RuntimeError("failed in the middle")
    assert _enabled(live_entry)


CHILD = """
import sys, time
from labkit.instruments import arch, undo
with arch.entry_disabled(sys.argv[1]):
    print("disabled", flush=True)
    time.sleep(60)
"""


def _disabled_child(name: str) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", CHILD, name], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, preexec_fn=default_sigint)
    assert child.stdout is not None and child.stdout.readline().strip() == "disabled"
    assert not _enabled(name)
    return child


def _restore_host(name: str, child: subprocess.Popen[str]) -> None:
    """Whatever the test saw, the host's entry is enabled again before it asserts (no later test pays)."""
    if child.poll() is None:
        child.kill()
        child.wait(timeout=30)
    undo.undo_orphans()
    if not _enabled(name):
        arch.enable_emulation(arch.foreign_platform())


@pytest.mark.root
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_entry_is_restored_after_a_signal(live_entry: str, signum: signal.Signals) -> None:
    child = _disabled_child(live_entry)
    try:
        os.kill(child.pid, signum)
        _, stderr = child.communicate(timeout=30)
        restored_by_the_child = _enabled(live_entry)
        journal_left = [c for c in undo.pending() if c.pid == child.pid]
    finally:
        _restore_host(live_entry, child)
    assert restored_by_the_child, stderr
    assert journal_left == []  # the child's own restore also removed its journal record
    # The signal still ends the process as that signal would: KeyboardInterrupt, or death by SIGTERM.
    assert ("KeyboardInterrupt" in stderr) if signum == signal.SIGINT else child.returncode == -signal.SIGTERM


@pytest.mark.root
def test_entry_disabled_by_a_killed_process_is_restored_by_the_next_labkit_command(live_entry: str) -> None:
    child = _disabled_child(live_entry)
    try:
        child.kill()  # SIGKILL: no finally runs in the child
        child.wait(timeout=30)
        left_disabled = not _enabled(live_entry)
        doctor = subprocess.run([sys.executable, "-m", "labkit", "doctor", "11"], cwd=ROOT, text=True,
                                capture_output=True, timeout=120)
        clean = subprocess.run([sys.executable, "-m", "labkit", "clean"], cwd=ROOT, text=True, capture_output=True,
                               timeout=300)
        restored = _enabled(live_entry)
    finally:
        _restore_host(live_entry, child)
    assert left_disabled
    assert f"labkit left it so (pid {child.pid}" in doctor.stdout and "fix: labkit clean" in doctor.stdout, \
        doctor.stdout
    assert f"binfmt_misc entry {live_entry} disabled (left by pid {child.pid}): undone" in clean.stderr, clean.stderr
    assert restored

"""labkit.instruments.vm and .elf: newc writer, ELF reader, parsers, the KVM verdict and validation offline;
QEMU control with stand-in processes; a real boot.

The live tests download the Debian kernel once into $LABKIT_VM_CACHE (default /tmp/labkit-test-vm) and boot it
with the accelerator that works here (KVM when it runs at hardware speed, else TCG). In CI (CI=true) a missing
`cpio` fails its test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from labkit.errors import BadParameter, NotPrepared
from labkit.instruments import elf, shell, vm
from labkit.instruments.vm import boot, kernel, kvm
from tests.conftest import missing

VM_CACHE = Path(os.environ.get("LABKIT_VM_CACHE", "/tmp/labkit-test-vm"))


# ---------------------------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Member:
    """One member as parsed back from a newc archive, independently of labkit.instruments.vm."""

    name: str
    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    rdev: tuple[int, int]
    data: bytes


def parse_newc(archive: bytes) -> list[Member]:
    """Parse an uncompressed newc cpio archive up to and including its TRAILER!!! member."""
    members: list[Member] = []
    pos = 0
    while True:
        assert pos % 4 == 0, f"member at offset {pos} is not 4-byte aligned"
        header = archive[pos : pos + 110]
        assert header[:6] == b"070701", f"bad magic {header[:6]!r} at offset {pos}"
        f = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = f[11], f[6]
        name_end = pos + 110 + namesize
        assert archive[name_end - 1] == 0, "name is not NUL-terminated"
        name = archive[pos + 110 : name_end - 1].decode()
        data_start = name_end + (-(110 + namesize) % 4)
        data = archive[data_start : data_start + filesize]
        members.append(Member(name, f[0], f[1], f[2], f[3], f[4], f[5], (f[9], f[10]), data))
        pos = data_start + filesize + (-filesize % 4)
        if name == "TRAILER!!!":
            assert pos == len(archive), "bytes after the trailer"
            return members


def fake_elf(*segment_types: int) -> bytes:
    """A minimal x86-64 ELF header plus program headers of the given p_type values (3 = PT_INTERP)."""
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    phnum = len(segment_types)
    header = ident + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, 0x401000, 64, 0, 0, 64, 56, phnum, 64, 0, 0)
    table = b"".join(struct.pack("<II", p_type, 5) + bytes(48) for p_type in segment_types)
    return header + table


PT_LOAD, PT_INTERP, PT_NOTE = 1, 3, 4


@pytest.fixture
def static_busybox(tmp_path: Path) -> Path:
    path = tmp_path / "busybox"
    path.write_bytes(fake_elf(PT_LOAD, PT_NOTE, PT_LOAD))
    return path


@pytest.fixture
def fake_assets(tmp_path: Path) -> vm.VmAssets:
    kernel, initramfs = tmp_path / "vmlinuz-6.1.0-99-amd64", tmp_path / "initramfs.cpio"
    kernel.write_bytes(b"kernel")
    initramfs.write_bytes(b"initramfs")
    return vm.VmAssets(kernel, initramfs, "linux-image-6.1.0-99-amd64", "6.1.0-99-amd64")


@pytest.fixture
def fake_qemu(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], list[subprocess.Popen[str]]]:
    """Replace QEMU by a shell script (started by the real labkit.shell.spawn); returns the processes."""

    def install(script: str) -> list[subprocess.Popen[str]]:
        started: list[subprocess.Popen[str]] = []

        def spawn(argv: list[str], **kwargs: object) -> subprocess.Popen[str]:
            assert argv[0] == vm.QEMU
            proc = shell.spawn(["/bin/sh", "-c", script], **kwargs)
            started.append(proc)
            return proc

        monkeypatch.setattr(boot, "spawn", spawn)
        return started

    return install


# ---------------------------------------------------------------------------------------------- cpio


def test_write_newc_round_trip_keeps_names_modes_data_and_devices() -> None:
    entries = [
        vm.CpioEntry("bin", 0o040755),
        vm.CpioEntry("/bin/tool", 0o100755, b"\x00\x01binary\xff"),
        vm.CpioEntry("bin/sh", 0o120777, b"tool"),
        vm.CpioEntry("dev/console", 0o020600, rdev=(5, 1)),
        vm.CpioEntry("etc-note", 0o100644, b"abc"),  # 3 bytes: data needs padding
    ]
    archive = vm.write_newc(entries)
    members = parse_newc(archive)
    assert [m.name for m in members] == ["bin", "bin/tool", "bin/sh", "dev/console", "etc-note", "TRAILER!!!"]
    by_name = {m.name: m for m in members}
    assert by_name["bin"].mode == 0o040755 and by_name["bin"].nlink == 2
    assert by_name["bin/tool"].mode == 0o100755 and by_name["bin/tool"].data == b"\x00\x01binary\xff"
    assert by_name["bin/sh"].mode == 0o120777 and by_name["bin/sh"].data == b"tool"
    assert by_name["dev/console"].mode == 0o020600 and by_name["dev/console"].rdev == (5, 1)
    assert by_name["etc-note"].data == b"abc"
    assert all(m.uid == 0 and m.gid == 0 and m.mtime == 0 for m in members)
    inodes = [m.ino for m in members[:-1]]
    assert len(set(inodes)) == len(inodes) and 0 not in inodes
    assert vm.write_newc(entries) == archive, "same entries, same bytes"


def test_real_cpio_lists_the_archive(tmp_path: Path, static_busybox: Path) -> None:
    if shutil.which("cpio") is None:
        missing("cpio to check the archive with a real reader (`apt-get install cpio`)")
    archive = tmp_path / "initramfs.cpio"
    archive.write_bytes(vm.write_newc(vm.initramfs_entries(static_busybox)))
    listing = shell.run(["cpio", "-itv", "-F", str(archive)], 30).stdout.splitlines()
    by_name = {line.split()[-1] if "->" not in line else line.split()[-3]: line for line in listing}
    assert by_name["init"].startswith("-rwxr-xr-x")
    assert by_name["bin/busybox"].startswith("-rwxr-xr-x")
    assert by_name["bin/sh"].startswith("lrwxrwxrwx")
    assert by_name["dev/console"].startswith("crw-------")
    assert by_name["proc"].startswith("drwxr-xr-x")


def test_initramfs_holds_busybox_dirs_console_and_an_executable_init(static_busybox: Path) -> None:
    members = {m.name: m for m in parse_newc(vm.write_newc(vm.initramfs_entries(static_busybox)))}
    for directory in ("bin", "dev", "proc", "sys"):
        assert members[directory].mode == 0o040755
    assert members["bin/busybox"].mode == 0o100755
    assert members["bin/busybox"].data == static_busybox.read_bytes()
    assert members["dev/console"].rdev == (5, 1)
    init = members["init"]
    assert init.mode == 0o100755
    script = init.data.decode()
    assert script.startswith("#!/bin/busybox sh\n")
    assert "mount -t proc proc /proc" in script
    assert f'echo "{vm.MARKER} release=$(/bin/busybox uname -r)"' in script
    assert script.rstrip().endswith("/bin/busybox poweroff -f")
    # directories come before what they hold, as the kernel unpacks in order
    names = list(members)
    assert names.index("bin") < names.index("bin/busybox") and names.index("dev") < names.index("dev/console")


def test_is_static_elf_reads_the_program_headers(tmp_path: Path, static_busybox: Path) -> None:
    dynamic = tmp_path / "dynamic"
    dynamic.write_bytes(fake_elf(PT_LOAD, PT_INTERP, PT_LOAD))
    assert elf.is_static_elf(static_busybox) is True
    assert elf.is_static_elf(dynamic) is False
    no_segments = tmp_path / "no-segments"
    no_segments.write_bytes(fake_elf())
    assert elf.is_static_elf(no_segments) is True


def test_is_static_elf_on_real_programs() -> None:
    # Debian's busybox-static (which the VM needs) has no interpreter; dash (/bin/sh) is dynamically linked
    assert elf.is_static_elf(Path(shell.require_program("busybox")).resolve()) is True
    assert elf.is_static_elf(Path("/bin/sh").resolve()) is False


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"#!/bin/sh\n", "not a 64-bit little-endian ELF file"),
        (b"", "not a 64-bit little-endian ELF file"),
        (b"\x7fELF" + bytes([1, 1, 1, 0]) + bytes(56), "not a 64-bit little-endian ELF file"),  # 32-bit
        (fake_elf(PT_LOAD, PT_INTERP)[:-10], "truncated ELF program header table"),
    ],
    ids=["script", "empty", "elf32", "truncated"],
)
def test_is_static_elf_refuses_what_is_not_a_64_bit_elf(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "file"
    path.write_bytes(content)
    with pytest.raises(BadParameter, match=message):
        elf.is_static_elf(path)


def test_a_dynamic_busybox_is_refused_with_the_package_to_install(tmp_path: Path) -> None:
    dynamic = tmp_path / "busybox"
    dynamic.write_bytes(fake_elf(PT_INTERP, PT_LOAD))
    with pytest.raises(vm.VmAssetError, match="dynamically linked") as caught:
        vm.initramfs_entries(dynamic)
    assert isinstance(caught.value, NotPrepared)
    assert "apt-get install busybox-static" in caught.value.hint


def test_a_busybox_that_is_not_elf_is_refused_with_the_package_to_install(tmp_path: Path) -> None:
    wrapper = tmp_path / "busybox"
    wrapper.write_text('#!/bin/sh\nexec /bin/busybox.real "$@"\n')
    with pytest.raises(vm.VmAssetError, match="not a 64-bit little-endian ELF file") as caught:
        vm.initramfs_entries(wrapper)
    assert "apt-get install busybox-static" in caught.value.hint
    assert isinstance(caught.value.__cause__, BadParameter)


# ---------------------------------------------------------------------------------------------- cache files


def test_write_if_changed_replaces_atomically_and_skips_identical_bytes(tmp_path: Path) -> None:
    target = tmp_path / "initramfs.cpio"
    kernel._write_if_changed(target, b"first")
    assert target.read_bytes() == b"first"
    assert target.stat().st_mode & 0o777 == 0o644
    first_inode = target.stat().st_ino
    kernel._write_if_changed(target, b"first")
    assert target.stat().st_ino == first_inode, "identical bytes: the file is left alone"
    kernel._write_if_changed(target, b"second")
    assert target.read_bytes() == b"second"
    assert target.stat().st_ino != first_inode, "new bytes arrive by os.replace of a new file, not in place"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["initramfs.cpio"], "no temporary file left behind"


# ---------------------------------------------------------------------------------------------- apt-cache


BOOKWORM_DEPENDS = """linux-image-amd64
  Depends: linux-image-6.1.0-56-amd64
"""

WITH_ALTERNATIVES = """linux-image-amd64
  Recommends: firmware-linux-free
 |Depends: linux-image-6.12.9+bpo-amd64
  Depends: <linux-image-6.12.9+bpo-amd64-unsigned>
  Suggests: debian-kernel-handbook
"""


def test_kernel_package_from_depends() -> None:
    assert vm.kernel_package_from_depends(BOOKWORM_DEPENDS) == "linux-image-6.1.0-56-amd64"
    assert vm.kernel_package_from_depends(WITH_ALTERNATIVES) == "linux-image-6.12.9+bpo-amd64"


def test_kernel_package_from_depends_without_a_kernel_says_what_to_do() -> None:
    with pytest.raises(vm.VmAssetError, match="names no linux-image") as caught:
        vm.kernel_package_from_depends("linux-image-amd64\n  Recommends: firmware-linux-free\n")
    assert caught.value.hint == "Run `apt-get update` and try again."
    with pytest.raises(vm.VmAssetError):
        vm.kernel_package_from_depends("")


# ---------------------------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"accel": "xen"}, r"accel must be one of 'kvm', 'tcg'"),
        ({"accel": "KVM"}, r"accel must be one of 'kvm', 'tcg'"),
        ({"memory_mib": 63}, r"memory_mib must be >= 64 \(MiB\), got 63"),
        ({"memory_mib": -1}, r"memory_mib"),
        ({"timeout_s": 0}, r"timeout_s must be > 0 \(seconds\)"),
        ({"timeout_s": -5.0}, r"timeout_s"),
        ({"timeout_s": float("nan")}, r"timeout_s"),
    ],
)
def test_boot_once_validates_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    def must_not_start(*args: object, **kw: object) -> None:
        raise AssertionError("QEMU was started although the parameters are invalid")

    monkeypatch.setattr(boot, "spawn", must_not_start)
    monkeypatch.setattr(boot, "probe_kvm", must_not_start)
    # missing files: boot_once would raise VmAssetError, not ValueError, if it looked at them first
    missing = vm.VmAssets(tmp_path / "nope", tmp_path / "nope.cpio", "linux-image-x", "6.1.0-x")
    params: dict[str, object] = {"accel": "tcg", "memory_mib": 256, "timeout_s": 10.0, **kwargs}
    with pytest.raises(BadParameter, match=message):
        vm.boot_once(missing, **params)  # type: ignore[arg-type]


def test_boot_once_wants_prepared_assets(tmp_path: Path) -> None:
    missing = vm.VmAssets(tmp_path / "nope", tmp_path / "nope.cpio", "linux-image-x", "6.1.0-x")
    with pytest.raises(vm.VmAssetError, match="nope is missing") as caught:
        vm.boot_once(missing, "tcg")
    assert "prepare_vm_assets()" in caught.value.hint


def test_qemu_argv_has_no_network_and_the_chosen_accelerator(fake_assets: vm.VmAssets) -> None:
    kvm_argv = vm.qemu_argv(fake_assets, "kvm", 512, "host,-arch-capabilities")
    tcg = vm.qemu_argv(fake_assets, "tcg", 128)
    for argv in (kvm_argv, tcg):
        assert argv[0] == "qemu-system-x86_64"
        assert argv[argv.index("-nic") + 1] == "none"
        assert not {"-netdev", "-net", "-device"} & set(argv)
        assert {"-nographic", "-no-reboot"} <= set(argv)
        assert argv[argv.index("-kernel") + 1] == str(fake_assets.kernel)
        assert argv[argv.index("-initrd") + 1] == str(fake_assets.initramfs)
        append = argv[argv.index("-append") + 1].split()
        assert {"console=ttyS0", "panic=-1"} <= set(append)
    assert kvm_argv[kvm_argv.index("-m") + 1] == "512" and tcg[tcg.index("-m") + 1] == "128"
    assert kvm_argv[1:4] == ["-enable-kvm", "-cpu", "host,-arch-capabilities"] and "-accel" not in kvm_argv
    assert tcg[tcg.index("-accel") + 1] == "tcg" and "-enable-kvm" not in tcg


def test_kvm_probe_firmware_layout() -> None:
    image = vm.kvm_probe_firmware(1000)
    assert len(image) == 0x10000
    assert image[0xFFF0:0xFFF5] == b"\xea\x00\x00\x00\xf0"  # jmp far f000:0000
    assert image[:6] == b"\x66\xb9" + struct.pack("<I", 1000)
    assert b"\xe6\xf4" in image[:32]  # out 0xf4, al
    with pytest.raises(BadParameter, match="iterations"):
        vm.kvm_probe_firmware(0)


# ---------------------------------------------------------------------------------------------- KVM verdict


def stand_in_runs(*runs: vm.ProbeRun) -> Iterator[vm.ProbeRun]:
    """Yield recorded probe runs, failing the test if the verdict asks for more than it needs."""
    yield from runs
    raise AssertionError("the verdict consumed a probe run it did not need")


def test_a_fast_kvm_probe_gives_kvm() -> None:
    probe = vm.kvm_verdict(None, stand_in_runs(vm.ProbeRun("host", "ok")))
    assert probe == vm.KvmProbe("host", True, "KVM runs guest code at hardware speed")
    assert probe.accelerator == "kvm"


def test_a_slow_kvm_probe_gives_tcg() -> None:
    # what our nested kvm_pvm hosts record: -cpu host aborts on MSR 0x10a, the second model starts but crawls
    probe = vm.kvm_verdict(
        None,
        stand_in_runs(
            vm.ProbeRun("host", "failed", "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x20000000"),
            vm.ProbeRun("host,-arch-capabilities", "slow"),
        ),
    )
    assert probe.cpu_model == "host,-arch-capabilities" and probe.fast is False
    assert probe.detail == "KVM runs guest code too slowly (probe not done after 3 s)"
    assert probe.accelerator == "tcg"


def test_the_second_cpu_model_can_give_kvm() -> None:
    probe = vm.kvm_verdict(
        None, stand_in_runs(vm.ProbeRun("host", "failed", "MSR 0x10a"), vm.ProbeRun("host,-arch-capabilities", "ok"))
    )
    assert probe.cpu_model == "host,-arch-capabilities" and probe.accelerator == "kvm"


def test_no_dev_kvm_gives_tcg_without_running_qemu() -> None:
    probe = vm.kvm_verdict("No such file or directory", stand_in_runs())
    assert probe == vm.KvmProbe(None, False, "/dev/kvm cannot be opened read-write: No such file or directory")
    assert probe.accelerator == "tcg"


def test_qemu_failing_with_every_cpu_model_gives_tcg_and_says_why() -> None:
    probe = vm.kvm_verdict(
        None,
        [vm.ProbeRun("host", "failed", "failed to initialize kvm: Permission denied"),
         vm.ProbeRun("host,-arch-capabilities", "failed", "exit status 1")],
    )  # fmt: skip
    assert probe.cpu_model is None and probe.accelerator == "tcg"
    assert probe.detail == (
        "QEMU cannot start a KVM guest: -cpu host: failed to initialize kvm: Permission denied; "
        "-cpu host,-arch-capabilities: exit status 1"
    )


def test_accelerator_follows_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    for probe, expected in [
        (vm.KvmProbe("host", True, "fast"), "kvm"),
        (vm.KvmProbe("host", False, "slow"), "tcg"),
        (vm.KvmProbe(None, False, "no /dev/kvm"), "tcg"),
    ]:
        monkeypatch.setattr(kvm, "probe_kvm", lambda probe=probe: probe)
        assert vm.accelerator() == expected


# ---------------------------------------------------------------------------------------------- QEMU control


def test_boot_once_times_to_the_marker_and_reads_the_guest_release(
    fake_qemu: Callable[[str], list[subprocess.Popen[str]]], fake_assets: vm.VmAssets
) -> None:
    started = fake_qemu(
        r"printf 'SeaBIOS\r\n[    0.0] Linux version 6.1\r\n'; sleep 0.2;"
        rf" printf '{vm.MARKER} release=6.1.0-77-amd64\r\n'; printf 'reboot: Power down\r\n'"
    )
    result = vm.boot_once(fake_assets, "tcg", timeout_s=30)
    assert result.marker_seen is True and result.timed_out is False
    assert result.accelerator == "tcg"
    assert result.kernel_release == "6.1.0-77-amd64"  # what the guest said, not the asset's name
    assert result.wall_s >= 0.2  # a floor the fake guest's sleep sets: the clock runs to the marker
    assert result.console_tail.splitlines() == [
        "SeaBIOS", "[    0.0] Linux version 6.1", f"{vm.MARKER} release=6.1.0-77-amd64", "reboot: Power down",
    ]  # fmt: skip
    assert started[0].returncode == 0


def test_a_boot_that_times_out_is_data_and_qemu_is_killed(
    fake_qemu: Callable[[str], list[subprocess.Popen[str]]], fake_assets: vm.VmAssets
) -> None:
    started = fake_qemu("echo 'Booting from ROM...'; exec sleep 60")
    result = vm.boot_once(fake_assets, "tcg", timeout_s=0.5)
    assert result.marker_seen is False and result.timed_out is True
    assert result.kernel_release == fake_assets.kernel_release
    assert result.wall_s >= 0.5  # a floor: it waited for its timeout before it killed QEMU
    assert "Booting from ROM..." in result.console_tail
    assert started[0].returncode == -9


def test_a_guest_that_stops_without_the_marker_is_data(
    fake_qemu: Callable[[str], list[subprocess.Popen[str]]], fake_assets: vm.VmAssets
) -> None:
    fake_qemu("echo 'Kernel panic - not syncing: No working init found.'; exit 0")
    result = vm.boot_once(fake_assets, "tcg", timeout_s=30)
    assert result.marker_seen is False and result.timed_out is False
    assert result.console_tail.endswith("No working init found.")


def test_qemu_failing_to_start_raises_command_error(
    fake_qemu: Callable[[str], list[subprocess.Popen[str]]], fake_assets: vm.VmAssets
) -> None:
    fake_qemu("echo 'qemu-system-x86_64: failed to initialize kvm: Permission denied' >&2; exit 1")
    with pytest.raises(shell.CommandError) as caught:
        vm.boot_once(fake_assets, "tcg", timeout_s=30)
    assert caught.value.exit_code == 1
    assert "failed to initialize kvm" in caught.value.stderr
    assert caught.value.argv[0] == "qemu-system-x86_64"
    assert "accel='tcg'" in str(caught.value)


def test_qemu_is_killed_on_keyboard_interrupt(
    monkeypatch: pytest.MonkeyPatch,
    fake_qemu: Callable[[str], list[subprocess.Popen[str]]],
    fake_assets: vm.VmAssets,
) -> None:
    started = fake_qemu("exec sleep 60")

    def interrupted(proc: subprocess.Popen[str], deadline_ns: int) -> None:
        assert proc.poll() is None
        raise KeyboardInterrupt

    monkeypatch.setattr(boot, "_watch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        vm.boot_once(fake_assets, "tcg", timeout_s=30)
    assert started[0].returncode == -9


# ---------------------------------------------------------------------------------------------- live


def test_probe_firmware_runs_and_exits_qemu_under_tcg(tmp_path: Path) -> None:
    firmware = tmp_path / "probe.bin"
    firmware.write_bytes(vm.kvm_probe_firmware())
    argv = [
        vm.QEMU, "-accel", "tcg", "-M", "pc", "-m", "16", "-bios", str(firmware), "-display", "none",
        "-nodefaults", "-no-user-config", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
    ]  # fmt: skip
    assert shell.run(argv, 20, check=False).exit_code == 33


@pytest.fixture(scope="module")
def assets() -> vm.VmAssets:
    return vm.prepare_vm_assets(VM_CACHE)


def test_prepare_vm_assets_gives_a_debian_kernel_and_does_not_download_twice(
    assets: vm.VmAssets, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert assets.kernel.is_file() and assets.kernel.name == f"vmlinuz-{assets.kernel_release}"
    assert assets.kernel_package == f"linux-image-{assets.kernel_release}"
    assert assets.kernel.read_bytes()[0x202:0x206] == b"HdrS"  # a bzImage
    members = {m.name: m for m in parse_newc(assets.initramfs.read_bytes())}
    assert members["init"].data == vm.INIT_SCRIPT.encode()

    def no_shell_out(argv: list[str], *args: object, **kwargs: object) -> None:
        raise AssertionError(f"second call ran {argv}")

    monkeypatch.setattr(kernel, "run", no_shell_out)
    assert vm.prepare_vm_assets(VM_CACHE) == assets


def test_a_real_kernel_boots_to_the_marker(assets: vm.VmAssets) -> None:
    accel = vm.accelerator()
    result = vm.boot_once(assets, accel, memory_mib=256, timeout_s=300)
    assert result.marker_seen, f"no {vm.MARKER} with {accel}; console:\n{result.console_tail}"
    assert result.accelerator == accel
    assert result.kernel_release.startswith("6.")
    assert result.kernel_release == assets.kernel_release
    assert result.wall_s > 0 and result.timed_out is False
    assert "reboot: Power down" in result.console_tail  # /init powered the VM off

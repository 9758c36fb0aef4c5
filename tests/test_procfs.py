"""labkit.procfs on /proc files recorded from a real kernel and Docker Engine (fixtures/proc/README.md)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from labkit.instruments import procfs
from labkit.instruments.procfs import (
    CAPABILITY_NAMES,
    NAMESPACE_KINDS,
    CgroupEntry,
    ProcessGone,
    cgroup_path,
    cmdline,
    decode_capabilities,
    interfaces,
    namespaces,
    parse_cgroup,
    parse_cmdline,
    parse_mountinfo,
    parse_net_dev,
    parse_ns_link,
    parse_status,
    read_cgroup,
    read_mountinfo,
    read_net_dev,
    read_status,
)

FIXTURES = Path(__file__).parent / "fixtures" / "proc"
HOST = FIXTURES / "host-v1"
HOST_V2 = FIXTURES / "host-v2"
DEFAULT = FIXTURES / "docker-default"
CAPDROP = FIXTURES / "docker-capdrop-all"

# Docker's default capability set (moby oci/caps/defaults.go), as capsh names it for mask 0xa80425fb.
DOCKER_DEFAULT_CAPS = frozenset(
    {
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_RAW",
        "CAP_SYS_CHROOT",
        "CAP_MKNOD",
        "CAP_AUDIT_WRITE",
        "CAP_SETFCAP",
    }
)


def container_pid(scenario: Path) -> int:
    """The host PID a container scenario was recorded under (its only numeric folder)."""
    pids = [int(p.name) for p in scenario.iterdir() if p.is_dir() and p.name.isdigit()]
    assert len(pids) == 1, f"{scenario} should hold exactly one recorded process, found {pids}"
    return pids[0]


# ---------------------------------------------------------------------------------------------------------
# Capabilities


def test_capability_table_is_complete_and_in_bit_order() -> None:
    assert len(CAPABILITY_NAMES) == 41
    assert CAPABILITY_NAMES[0] == "CAP_CHOWN"
    assert CAPABILITY_NAMES[21] == "CAP_SYS_ADMIN"
    assert CAPABILITY_NAMES[24] == "CAP_SYS_RESOURCE"
    assert CAPABILITY_NAMES[40] == "CAP_CHECKPOINT_RESTORE"
    assert len(set(CAPABILITY_NAMES)) == 41


def test_decode_capabilities_of_zero_is_empty() -> None:
    assert decode_capabilities(0) == frozenset()


def test_decode_capabilities_all_41_bits() -> None:
    assert decode_capabilities(0x1FFFFFFFFFF) == frozenset(CAPABILITY_NAMES)


def test_decode_capabilities_single_bits_and_unknown_bits() -> None:
    assert decode_capabilities(1 << 21) == {"CAP_SYS_ADMIN"}
    assert decode_capabilities((1 << 41) | (1 << 63) | 1) == {"CAP_CHOWN", "CAP_41", "CAP_63"}


def test_decode_capabilities_rejects_negative() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        decode_capabilities(-1)


def test_host_root_has_sys_admin_but_not_sys_resource() -> None:
    status = read_status("self", HOST)
    assert status.uid == 0
    assert "CAP_SYS_ADMIN" in status.effective
    assert "CAP_SYS_ADMIN" in status.permitted
    # a fact of this machine (DESIGN.md): CAP_SYS_RESOURCE is outside the bounding set
    assert "CAP_SYS_RESOURCE" not in status.bounding
    assert status.bounding == frozenset(CAPABILITY_NAMES) - {"CAP_SYS_RESOURCE"}
    assert status.cap_eff == 0x1FFFEFFFFFF


def test_default_container_has_docker_default_caps_only() -> None:
    status = read_status(container_pid(DEFAULT), DEFAULT)
    assert "CAP_SYS_ADMIN" not in status.effective
    assert "CAP_CHOWN" in status.effective
    assert status.effective == DOCKER_DEFAULT_CAPS
    assert status.bounding == DOCKER_DEFAULT_CAPS
    assert status.cap_eff == 0xA80425FB
    assert status.ambient == frozenset()
    assert status.inheritable == frozenset()


def test_capdrop_all_container_has_no_capabilities() -> None:
    status = read_status(container_pid(CAPDROP), CAPDROP)
    assert status.uid == 0  # still root, yet powerless
    assert status.effective == frozenset()
    assert status.permitted == frozenset()
    assert status.bounding == frozenset()


# ---------------------------------------------------------------------------------------------------------
# Seccomp, NSpid and the rest of status


def test_seccomp_modes() -> None:
    default = read_status(container_pid(DEFAULT), DEFAULT)
    capdrop = read_status(container_pid(CAPDROP), CAPDROP)
    host = read_status("self", HOST)
    assert (default.seccomp, default.seccomp_mode) == (2, "filter")
    assert (capdrop.seccomp, capdrop.seccomp_mode) == (0, "disabled")
    assert (host.seccomp, host.seccomp_mode) == (0, "disabled")


def test_container_pid1_has_two_nspid_levels_ending_in_1() -> None:
    pid = container_pid(DEFAULT)
    status = read_status(pid, DEFAULT)
    assert status.name == "sleep"
    assert status.pid == pid
    assert status.nspid == (pid, 1)
    assert status.innermost_pid == 1


def test_host_process_has_one_nspid_level() -> None:
    status = read_status("self", HOST)
    assert status.name == "cat"
    assert status.nspid == (status.pid,)
    assert status.innermost_pid == status.pid
    assert status.ppid > 0
    assert status.state == "R"


def test_reader_accepts_pid_as_int_or_digit_string() -> None:
    pid = container_pid(CAPDROP)
    assert read_status(pid, CAPDROP) == read_status(str(pid), CAPDROP)


def test_parse_status_minimal_text_with_old_kernel_defaults() -> None:
    text = (
        "Name:\tinit\nState:\tS (sleeping)\nPid:\t1\nPPid:\t0\nUid:\t1000\t0\t0\t0\n"
        "CapInh:\t0000000000000000\nCapPrm:\t0000000000000001\nCapEff:\t0000000000000001\n"
        "CapBnd:\t0000003fffffffff\n"
    )
    status = parse_status(text)
    assert status.uid == 1000  # the real uid is the first column
    assert status.effective == {"CAP_CHOWN"}
    assert status.cap_amb == 0
    assert status.seccomp == 0
    assert status.nspid == ()
    assert status.innermost_pid == 1
    assert status.no_new_privs is False


def test_parse_status_missing_required_field_names_it() -> None:
    with pytest.raises(ValueError, match="CapEff"):
        parse_status("Name:\tx\nState:\tR\nPid:\t1\nPPid:\t0\nUid:\t0\t0\t0\t0\nCapInh:\t0\nCapPrm:\t0\n")


# ---------------------------------------------------------------------------------------------------------
# Namespaces


def test_parse_ns_link() -> None:
    assert parse_ns_link("net:[4026531840]") == ("net", 4026531840)
    assert parse_ns_link("pid_for_children:[4026531836]\n") == ("pid_for_children", 4026531836)
    with pytest.raises(ValueError, match="namespace link"):
        parse_ns_link("net:4026531840")


def test_namespaces_report_every_kind_plus_time() -> None:
    ns = namespaces("self", HOST)
    assert set(ns) == {*NAMESPACE_KINDS, "time"}
    assert ns["net"] == 4026531833


@pytest.mark.parametrize("kind", ["pid", "net", "mnt", "uts", "ipc"])
def test_container_namespaces_differ_from_host(kind: str) -> None:
    host = namespaces("self", HOST)
    container = namespaces(container_pid(DEFAULT), DEFAULT)
    assert container[kind] != host[kind]


@pytest.mark.parametrize("kind", ["user", "cgroup", "time"])
def test_docker_20_10_on_cgroup_v1_shares_user_cgroup_and_time_namespaces(kind: str) -> None:
    host = namespaces("self", HOST)
    container = namespaces(container_pid(DEFAULT), DEFAULT)
    assert container[kind] == host[kind]


def test_namespaces_follow_real_symlinks(tmp_path: Path) -> None:
    ns = tmp_path / "42" / "ns"
    ns.mkdir(parents=True)
    for number, kind in enumerate(NAMESPACE_KINDS):
        os.symlink(f"{kind}:[{4026532000 + number}]", ns / kind)  # dangling, like the real ones
    found = namespaces(42, tmp_path)
    assert found == {kind: 4026532000 + n for n, kind in enumerate(NAMESPACE_KINDS)}
    assert "time" not in found


def test_namespaces_reject_a_link_of_the_wrong_kind(tmp_path: Path) -> None:
    ns = tmp_path / "42" / "ns"
    ns.mkdir(parents=True)
    for kind in NAMESPACE_KINDS:
        (ns / kind).write_text(f"{'ipc' if kind == 'net' else kind}:[1]\n")
    with pytest.raises(ValueError, match="expected 'net'"):
        namespaces(42, tmp_path)


# ---------------------------------------------------------------------------------------------------------
# cgroups


def test_parse_cgroup_v1_named_and_v2_lines() -> None:
    entries = parse_cgroup(
        "4:memory:/docker/abc\n2:cpu,cpuacct:/\n1:name=systemd:/init.scope\n0::/user.slice\n"
    )
    assert entries == [
        CgroupEntry(4, ("memory",), "/docker/abc"),
        CgroupEntry(2, ("cpu", "cpuacct"), "/"),
        CgroupEntry(1, ("name=systemd",), "/init.scope"),
        CgroupEntry(0, (), "/user.slice"),
    ]
    assert cgroup_path(entries, "cpuacct") == "/"
    assert cgroup_path(entries, "name=systemd") == "/init.scope"
    assert cgroup_path(entries, None) == "/user.slice"
    assert cgroup_path(entries, "") == "/user.slice"
    assert cgroup_path(entries, "pids") is None


def test_parse_cgroup_keeps_colons_in_the_path() -> None:
    assert parse_cgroup("0::/system.slice/docker-1:2.scope")[0].path == "/system.slice/docker-1:2.scope"


def test_parse_cgroup_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="line 2"):
        parse_cgroup("0::/\nnot a cgroup line\n")


def test_host_v1_hybrid_cgroup() -> None:
    entries = read_cgroup("self", HOST)
    assert len(entries) == 10
    assert cgroup_path(entries, "memory") == "/process_api/e7b5d2810ba1ea91a4c78c7c24cbf4f3"
    assert cgroup_path(entries, "cpu") == "/"
    assert cgroup_path(entries, "name=systemd") == "/"
    assert cgroup_path(entries, None) == "/"
    assert [e.hierarchy_id for e in entries] == list(range(9, -1, -1))


def test_container_v1_cgroup_is_docker_slash_id_in_every_hierarchy() -> None:
    entries = read_cgroup(container_pid(DEFAULT), DEFAULT)
    memory = cgroup_path(entries, "memory")
    assert memory is not None and memory.startswith("/docker/")
    container_id = memory.removeprefix("/docker/")
    assert len(container_id) == 64
    assert {e.path for e in entries} == {memory}
    assert cgroup_path(entries, "") == memory


def test_host_v2_cgroup() -> None:
    entries = read_cgroup("self", HOST_V2)
    assert entries == [CgroupEntry(0, (), "/user.slice/user-1000.slice/session-2.scope")]
    assert entries[0].unified
    assert cgroup_path(entries, None) == "/user.slice/user-1000.slice/session-2.scope"
    assert cgroup_path(entries, "memory") is None


# ---------------------------------------------------------------------------------------------------------
# mountinfo


def test_mountinfo_unescapes_a_real_space_in_a_container_bind_mount() -> None:
    mounts = read_mountinfo(container_pid(DEFAULT), DEFAULT)
    bind = [m for m in mounts if m.mount_point == "/mnt/with space"]
    assert len(bind) == 1
    assert bind[0].read_only
    assert bind[0].root.startswith("/tmp/labkit-fixture.")
    assert bind[0].fs_type == "ext4"


def test_mountinfo_unescapes_tab_newline_and_backslash() -> None:
    line = (
        r"61 28 0:50 /a\134b /mnt/x\011y\012z\040w rw,relatime shared:1 master:3 - tmpfs my\040s rw,size=4k"
    )
    (mount,) = parse_mountinfo(line + "\n")
    assert mount.root == "/a\\b"
    assert mount.mount_point == "/mnt/x\ty\nz w"
    assert mount.optional_fields == ("shared:1", "master:3")
    assert mount.source == "my s"
    assert mount.super_options == ("rw", "size=4k")
    assert mount.super_option("size") == "4k"
    assert mount.super_option("rw") == ""
    assert mount.super_option("mode") is None


def test_container_mountinfo_root_is_overlay() -> None:
    mounts = read_mountinfo(container_pid(DEFAULT), DEFAULT)
    (root,) = [m for m in mounts if m.mount_point == "/"]
    assert root.fs_type == "overlay"
    assert root.optional_fields == ("master:2",)
    lowerdir = root.super_option("lowerdir")
    assert lowerdir is not None and len(lowerdir.split(":")) == 3
    assert (root.super_option("upperdir") or "").endswith("/diff")
    procs = [m for m in mounts if m.mount_point == "/proc/keys"]
    assert procs and procs[0].root == "/null"


def test_host_v1_mountinfo_shows_hybrid_cgroup_mounts() -> None:
    mounts = read_mountinfo("self", HOST)
    by_point = {m.mount_point: m for m in mounts}
    assert by_point["/sys/fs/cgroup/memory"].fs_type == "cgroup"
    assert "memory" in by_point["/sys/fs/cgroup/memory"].super_options
    assert by_point["/sys/fs/cgroup/unified"].fs_type == "cgroup2"
    assert by_point["/var/lib/docker"].optional_fields == ("shared:1",)
    assert by_point["/"].major_minor == "254:0"
    assert by_point["/"].parent_id == 1


def test_host_v2_mountinfo_has_cgroup2_on_sys_fs_cgroup_and_an_escaped_space() -> None:
    mounts = read_mountinfo("self", HOST_V2)
    by_point = {m.mount_point: m for m in mounts}
    cgroup = by_point["/sys/fs/cgroup"]
    assert cgroup.fs_type == "cgroup2"
    assert cgroup.super_option("nsdelegate") == ""
    assert not any(m.fs_type == "cgroup" for m in mounts)
    usb = by_point["/media/alice/My Passport"]
    assert (usb.fs_type, usb.source, usb.major_minor) == ("exfat", "/dev/sdb1", "8:17")


def test_parse_mountinfo_rejects_a_line_without_separator() -> None:
    with pytest.raises(ValueError, match="separator"):
        parse_mountinfo("22 28 0:21 / /sys rw shared:7 sysfs sysfs rw\n")


# ---------------------------------------------------------------------------------------------------------
# net/dev and cmdline


def test_host_interfaces() -> None:
    assert interfaces("self", HOST) == ["lo", "ifb0", "ifb1", "eth0", "docker0"]


def test_container_sees_only_its_own_interfaces() -> None:
    assert interfaces(container_pid(DEFAULT), DEFAULT) == ["lo", "eth0"]


def test_net_dev_counters() -> None:
    lo, *_ = read_net_dev("self", HOST)
    assert (lo.name, lo.rx_bytes, lo.rx_packets, lo.tx_bytes, lo.tx_packets) == ("lo", 3193, 29, 3193, 29)
    docker0 = read_net_dev("self", HOST)[-1]
    assert (docker0.name, docker0.tx_bytes, docker0.tx_packets, docker0.tx_dropped) == ("docker0", 416, 4, 4)


def test_parse_net_dev_rejects_short_lines() -> None:
    with pytest.raises(ValueError, match="16 counters"):
        parse_net_dev("Inter-|\n face |bytes\n  eth0: 1 2 3\n")


def test_cmdline() -> None:
    assert cmdline(container_pid(DEFAULT), DEFAULT) == ["sleep", "60"]
    assert cmdline("self", HOST) == ["cat", "/proc/self/cmdline"]
    assert parse_cmdline(b"") == []
    assert parse_cmdline(b"sh\0-c\0echo  hi\0") == ["sh", "-c", "echo  hi"]


def test_naming_finds_processes_by_a_folder_in_their_arguments(tmp_path: Path) -> None:
    argvs = {11: b"dockerd\0--data-root\0/s/run-ab12/node1/data\0", 12: b"containerd\0--config=/r/ab12/c.toml\0",
             13: b"dockerd\0--data-root\0/s/run-ab123/node1\0", 14: b"", 15: b"sh\0/s/run-ab12\0"}
    for pid, argv in argvs.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(argv)
    (tmp_path / "self").mkdir()  # not a pid: skipped
    assert sorted(procfs.naming(["/s/run-ab12", "/r/ab12/"], tmp_path)) == [11, 12, 15]  # not 13's longer name
    assert procfs.naming(["/elsewhere"], tmp_path) == []


# ---------------------------------------------------------------------------------------------------------
# Missing processes and bad pids

READERS = [read_status, read_cgroup, read_mountinfo, read_net_dev, interfaces, cmdline, namespaces]


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.__name__)
def test_missing_pid_raises_process_gone_naming_it(reader: Callable[..., object]) -> None:
    with pytest.raises(ProcessGone, match="process 999999 ") as caught:
        reader(999999, HOST)
    assert isinstance(caught.value, LookupError)
    assert caught.value.pid == 999999


def test_missing_file_of_a_live_process_is_not_process_gone() -> None:
    # host-v2 has no status file recorded, but the process folder exists
    with pytest.raises(FileNotFoundError) as caught:
        read_status("self", HOST_V2)
    assert not isinstance(caught.value, ProcessGone)


@pytest.mark.parametrize("pid", [0, -1, "../etc", "", True])
def test_bad_pid_is_a_value_error(pid: int | str) -> None:
    with pytest.raises(ValueError, match="pid"):
        read_status(pid, HOST)


# ---------------------------------------------------------------------------------------------------------
# The live kernel (no docker): the readers work on this process's real /proc


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_live_proc_self() -> None:
    assert read_status().pid == os.getpid()
    assert set(namespaces()) >= set(NAMESPACE_KINDS)
    assert "lo" in interfaces()
    assert any(m.mount_point == "/" for m in read_mountinfo())
    assert read_cgroup()
    assert cmdline()[0]


def test_public_names_exist() -> None:
    assert set(procfs.__all__) <= set(dir(procfs))


# ---------------------------------------------------------------------------------------------------------
# Finding processes: children of a pid, processes running one command line


def _fake_process(proc_root: Path, pid: int, ppid: int, argv: list[str]) -> None:
    """A /proc/<pid> with the status lines the readers need and a NUL-separated cmdline."""
    folder = proc_root / str(pid)
    folder.mkdir(parents=True)
    masks = "".join(f"{key}:\t0000000000000000\n" for key in ("CapInh", "CapPrm", "CapEff", "CapBnd"))
    (folder / "status").write_text(f"Name:\t{argv[0]}\nState:\tS (sleeping)\nPid:\t{pid}\nPPid:\t{ppid}\n"
                                   f"Uid:\t0\t0\t0\t0\n{masks}")
    (folder / "cmdline").write_bytes(b"\0".join(arg.encode() for arg in argv) + b"\0")


def test_children_and_running_read_every_process_and_skip_what_is_not_one(tmp_path: Path) -> None:
    # 10 ← 20 ← 30, and 40 (child of 10) runs the same `sleep 300` as 30; `self` and `sys` are not processes, and
    # 50 vanished between the listing and the read (an empty folder, as a process that just ended leaves it).
    _fake_process(tmp_path, 10, 1, ["init"])
    _fake_process(tmp_path, 20, 10, ["python3", "-m", "labkit"])
    _fake_process(tmp_path, 30, 20, ["sleep", "300"])
    _fake_process(tmp_path, 40, 10, ["sleep", "300"])
    (tmp_path / "50").mkdir()
    (tmp_path / "self").mkdir()
    (tmp_path / "sys").mkdir()
    assert sorted(procfs.children(10, tmp_path)) == [20, 40]
    assert procfs.children(20, tmp_path) == [30]
    assert procfs.children(30, tmp_path) == []
    assert sorted(procfs.running(["sleep", "300"], tmp_path)) == [30, 40]
    assert procfs.running(["sleep"], tmp_path) == []  # the whole argument vector, not a prefix


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_this_process_is_a_child_of_its_parent_and_runs_its_command_line() -> None:
    assert os.getpid() in procfs.children(os.getppid())
    assert os.getpid() in procfs.running(procfs.cmdline())

"""Pure parsers over /proc, each with a thin reader.

Every ``parse_*`` function takes the text of one /proc file and returns frozen dataclasses or plain values;
it never touches the file system. Every reader takes ``pid`` (``"self"``, or a process id as ``int`` or digit
string) and ``proc_root`` (``/proc`` by default, or a recorded fixture tree laid out as
``<proc_root>/<pid>/...``) and raises :class:`ProcessGone` when there is no such process.

Used by notebook 01 (namespaces, capabilities, seccomp) and notebook 10 (capabilities, seccomp, PID 1).
Nothing happens at import.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CAPABILITY_NAMES",
    "NAMESPACE_KINDS",
    "SECCOMP_MODES",
    "Ancestor",
    "CgroupEntry",
    "Mount",
    "NetDevice",
    "ProcessGone",
    "ProcessStatus",
    "ancestry",
    "boot_id",
    "cgroup_path",
    "children",
    "cmdline",
    "decode_capabilities",
    "interfaces",
    "namespace_for_children",
    "namespaces",
    "parse_cgroup",
    "parse_cmdline",
    "parse_cpu_flags",
    "parse_meminfo",
    "parse_mountinfo",
    "parse_net_dev",
    "parse_ns_link",
    "parse_status",
    "process_count",
    "read_cgroup",
    "read_meminfo",
    "read_mountinfo",
    "read_net_dev",
    "read_status",
    "running",
    "security_label",
    "stat_fields_after_name",
]

PROC = Path("/proc")

Pid = int | str

# ----------------------------------------------------------------------------------------------------
# Reading files under <proc_root>/<pid>


class ProcessGone(LookupError):
    """No ``<proc_root>/<pid>``: the process exited, or it lives in a PID namespace this /proc cannot see."""

    def __init__(self, pid: Pid, proc_root: Path) -> None:
        self.pid = pid
        self.proc_root = proc_root
        super().__init__(
            f"process {pid} does not exist (no {proc_root / str(pid)}): it has exited, or it is not visible "
            f"in the PID namespace of {proc_root}"
        )


def _pid_dir(pid: Pid, proc_root: Path) -> Path:
    """The folder of ``pid`` under ``proc_root``; ``ValueError`` if ``pid`` is not a process id or "self"."""
    text = str(pid)
    if isinstance(pid, bool) or not (text in ("self", "thread-self") or (text.isdigit() and int(text) > 0)):
        raise ValueError(f"pid must be a positive process id or 'self'/'thread-self', got {pid!r}")
    return Path(proc_root) / text


def _gone_or_raise(pid: Pid, proc_root: Path, err: OSError) -> Exception:
    """What to raise after ``err``: :class:`ProcessGone` if the process folder has vanished, else ``err``."""
    if isinstance(err, ProcessLookupError) or not _pid_dir(pid, proc_root).is_dir():
        gone = ProcessGone(pid, proc_root)
        gone.__cause__ = err
        return gone
    return err


def _read_bytes(pid: Pid, proc_root: Path, relative: str) -> bytes:
    """The raw bytes of ``<proc_root>/<pid>/<relative>``."""
    path = _pid_dir(pid, proc_root) / relative
    try:
        return path.read_bytes()
    except (FileNotFoundError, ProcessLookupError) as err:
        raise _gone_or_raise(pid, proc_root, err) from err


def _read_text(pid: Pid, proc_root: Path, relative: str) -> str:
    """``<proc_root>/<pid>/<relative>`` as text; bytes that are not UTF-8 survive as surrogate escapes."""
    return os.fsdecode(_read_bytes(pid, proc_root, relative))


# ----------------------------------------------------------------------------------------------------
# Namespaces: /proc/<pid>/ns/<kind>

NAMESPACE_KINDS: tuple[str, ...] = ("pid", "net", "mnt", "uts", "ipc", "user", "cgroup")
"""The kinds :func:`namespaces` always reports ("time" is added when the kernel has it, Linux >= 5.6)."""

_OPTIONAL_NAMESPACE_KINDS: tuple[str, ...] = ("time",)

_NS_LINK = re.compile(r"^([a-z_]+):\[(\d+)\]$")


def parse_ns_link(text: str) -> tuple[str, int]:
    """Split a namespace link target such as ``net:[4026531840]`` into its kind and inode number.

    Two processes share a namespace exactly when kind and inode match (inode numbers are reused once a
    namespace is freed, so compare only processes alive at the same time).
    """
    match = _NS_LINK.match(text.strip())
    if match is None:
        raise ValueError(f"not a namespace link like 'net:[4026531840]': {text!r}")
    return match.group(1), int(match.group(2))


def _ns_link_text(path: Path) -> str:
    """The target of a real /proc ns symlink, or the content of a recorded fixture file holding that text."""
    if path.is_symlink():
        return os.readlink(path)
    return path.read_text().strip()


def namespaces(pid: Pid = "self", proc_root: Path = PROC) -> dict[str, int]:
    """Namespace inode numbers of ``pid`` by kind: each of :data:`NAMESPACE_KINDS`, plus "time" if present.

    Reads the links ``<proc_root>/<pid>/ns/<kind>``; in a fixture tree each may be a plain file holding the
    link text. Reading another process's links needs the right to ptrace it (root, or the same user).
    """
    folder = _pid_dir(pid, proc_root) / "ns"
    found: dict[str, int] = {}
    for kind in NAMESPACE_KINDS + _OPTIONAL_NAMESPACE_KINDS:
        path = folder / kind
        try:
            text = _ns_link_text(path)
        except (FileNotFoundError, ProcessLookupError) as err:
            if kind in _OPTIONAL_NAMESPACE_KINDS and _pid_dir(pid, proc_root).is_dir():
                continue
            raise _gone_or_raise(pid, proc_root, err) from err
        link_kind, inode = parse_ns_link(text)
        if link_kind != kind:
            raise ValueError(f"{path} points to a {link_kind!r} namespace, expected {kind!r}: {text!r}")
        found[kind] = inode
    return found


def namespace_for_children(kind: str, pid: Pid = "self", proc_root: Path = PROC) -> int | None:
    """The inode of the `kind` namespace (``pid`` or ``time``) that ``pid``'s next children will be born in
    (``ns/<kind>_for_children``), or None where the kernel has no such link (no time namespaces before Linux 5.6).

    A process cannot move itself into a new pid or time namespace: ``unshare`` changes only this link, so a
    runtime that gave a container its own clock offsets would show it here before the container's own ``ns/time``.
    """
    path = _pid_dir(pid, proc_root) / "ns" / f"{kind}_for_children"
    try:
        text = _ns_link_text(path)
    except (FileNotFoundError, ProcessLookupError) as err:
        if _pid_dir(pid, proc_root).is_dir():
            return None
        raise _gone_or_raise(pid, proc_root, err) from err
    link_kind, inode = parse_ns_link(text)
    if link_kind != kind:
        raise ValueError(f"{path} points to a {link_kind!r} namespace, expected {kind!r}: {text!r}")
    return inode


NO_SECURITY_LABEL = "(none: no security module labels processes)"


def security_label(pid: Pid = "self", proc_root: Path = PROC) -> str:
    """The security module's label of ``pid``: AppArmor's profile and mode (``docker-default (enforce)``,
    ``unconfined``) or an SELinux context. Read from ``attr/apparmor/current`` (Linux >= 5.8) and else
    ``attr/current``; :data:`NO_SECURITY_LABEL` when no module that labels processes is active (the kernel
    answers EINVAL, or the files are absent)."""
    folder = _pid_dir(pid, proc_root) / "attr"
    for path in (folder / "apparmor" / "current", folder / "current"):
        try:
            text = path.read_bytes().decode(errors="replace").strip("\x00\n ")
        except FileNotFoundError:
            continue
        except ProcessLookupError as err:
            raise _gone_or_raise(pid, proc_root, err) from err
        except OSError as err:
            if err.errno == errno.EINVAL:  # the file exists for every process; only an active module answers
                continue
            raise
        if text:
            return text
    if not _pid_dir(pid, proc_root).is_dir():
        raise ProcessGone(pid, proc_root)
    return NO_SECURITY_LABEL


# ----------------------------------------------------------------------------------------------------
# Capabilities and the rest of /proc/<pid>/status

CAPABILITY_NAMES: tuple[str, ...] = (
    "CAP_CHOWN",  # 0
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",  # 5
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",  # 10
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",  # 15
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",  # 20
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",  # 25
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",  # 30
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",  # 35
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",  # 40
)
"""Linux capability names indexed by bit number (``linux/capability.h``, complete up to CAP_LAST_CAP = 40)."""

SECCOMP_MODES: tuple[str, ...] = ("disabled", "strict", "filter")
"""Names of the ``Seccomp:`` values 0, 1 and 2 in /proc/<pid>/status."""


def decode_capabilities(mask: int) -> frozenset[str]:
    """Names of the capabilities set in a bit mask (as printed in hex by CapEff: and friends).

    Bits beyond :data:`CAPABILITY_NAMES` (capabilities newer than this table) become ``CAP_<bit>``.
    """
    if mask < 0:
        raise ValueError(f"a capability mask is a non-negative integer, got {mask}")
    names: set[str] = set()
    bit = 0
    while mask >> bit:
        if (mask >> bit) & 1:
            names.add(CAPABILITY_NAMES[bit] if bit < len(CAPABILITY_NAMES) else f"CAP_{bit}")
        bit += 1
    return frozenset(names)


@dataclass(frozen=True)
class ProcessStatus:
    """The security-relevant part of /proc/<pid>/status.

    ``cap_*`` are the raw capability masks (bit n = capability n); the properties decode them to names.
    ``seccomp`` is 0 (disabled), 1 (strict) or 2 (filter). ``nspid`` lists the process id in each nested PID
    namespace, outermost (the reading /proc's namespace) first; a container's PID 1 seen from the host reads
    ``(host_pid, 1)``. It is empty on kernels older than 4.1, which do not print NSpid.
    """

    name: str
    pid: int
    ppid: int
    uid: int
    cap_inh: int
    cap_prm: int
    cap_eff: int
    cap_bnd: int
    cap_amb: int
    seccomp: int
    nspid: tuple[int, ...]
    state: str
    no_new_privs: bool

    @property
    def inheritable(self) -> frozenset[str]:
        """Names in CapInh."""
        return decode_capabilities(self.cap_inh)

    @property
    def permitted(self) -> frozenset[str]:
        """Names in CapPrm."""
        return decode_capabilities(self.cap_prm)

    @property
    def effective(self) -> frozenset[str]:
        """Names in CapEff: what the kernel checks right now."""
        return decode_capabilities(self.cap_eff)

    @property
    def bounding(self) -> frozenset[str]:
        """Names in CapBnd: the most this process and its children can ever gain through execve."""
        return decode_capabilities(self.cap_bnd)

    @property
    def ambient(self) -> frozenset[str]:
        """Names in CapAmb."""
        return decode_capabilities(self.cap_amb)

    @property
    def seccomp_mode(self) -> str:
        """``"disabled"``, ``"strict"`` or ``"filter"``."""
        if 0 <= self.seccomp < len(SECCOMP_MODES):
            return SECCOMP_MODES[self.seccomp]
        return f"unknown({self.seccomp})"

    @property
    def innermost_pid(self) -> int:
        """The process id as the process itself sees it (last NSpid entry; ``pid`` if NSpid is absent)."""
        return self.nspid[-1] if self.nspid else self.pid


def _status_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def parse_status(text: str) -> ProcessStatus:
    """Parse the text of /proc/<pid>/status.

    Fields a kernel may lack read as what they mean when absent: no ``CapAmb`` (< 4.3) is 0, no ``Seccomp``
    (built without seccomp) is 0, no ``NoNewPrivs`` (< 4.10) is False, no ``NSpid`` (< 4.1) is ``()``.
    Any other missing field raises ``ValueError``.
    """
    fields = _status_fields(text)

    def need(key: str) -> str:
        if key not in fields:
            raise ValueError(f"/proc/<pid>/status text has no {key!r} line")
        return fields[key]

    def hex_mask(key: str) -> int:
        return int(need(key), 16)

    return ProcessStatus(
        name=need("Name"),
        pid=int(need("Pid")),
        ppid=int(need("PPid")),
        uid=int(need("Uid").split()[0]),
        cap_inh=hex_mask("CapInh"),
        cap_prm=hex_mask("CapPrm"),
        cap_eff=hex_mask("CapEff"),
        cap_bnd=hex_mask("CapBnd"),
        cap_amb=int(fields.get("CapAmb", "0"), 16),
        seccomp=int(fields.get("Seccomp", "0")),
        nspid=tuple(int(p) for p in fields.get("NSpid", "").split()),
        state=need("State")[:1],
        no_new_privs=fields.get("NoNewPrivs", "0") == "1",
    )


def read_status(pid: Pid = "self", proc_root: Path = PROC) -> ProcessStatus:
    """Read and parse ``<proc_root>/<pid>/status``."""
    return parse_status(_read_text(pid, proc_root, "status"))


# ----------------------------------------------------------------------------------------------------
# /proc/<pid>/cgroup


@dataclass(frozen=True)
class CgroupEntry:
    """One line of /proc/<pid>/cgroup.

    cgroup v1: ``4:memory:/docker/abc`` (controllers may be several, ``2:cpu,cpuacct:/``, or a named
    hierarchy ``1:name=systemd:/``). cgroup v2: ``0::/user.slice`` (hierarchy 0, no controllers). ``path`` is
    relative to the hierarchy's mount (and to the reader's cgroup namespace).
    """

    hierarchy_id: int
    controllers: tuple[str, ...]
    path: str

    @property
    def unified(self) -> bool:
        """True for the cgroup v2 line."""
        return self.hierarchy_id == 0 and not self.controllers


def parse_cgroup(text: str) -> list[CgroupEntry]:
    """Parse the text of /proc/<pid>/cgroup, one entry per line, in the kernel's order."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[0].isdigit():
            raise ValueError(f"line {number} of /proc/<pid>/cgroup is not 'id:controllers:path': {line!r}")
        hierarchy, controllers, path = parts
        entries.append(
            CgroupEntry(
                hierarchy_id=int(hierarchy),
                controllers=tuple(c for c in controllers.split(",") if c),
                path=path,
            )
        )
    return entries


def cgroup_path(entries: Iterable[CgroupEntry], controller: str | None) -> str | None:
    """The path of v1 ``controller`` ("memory", "name=systemd"), or the v2 unified path for "" or None.

    ``None`` when that hierarchy is not in the list (e.g. "memory" on a pure cgroup v2 host).
    """
    for entry in entries:
        if entry.unified if not controller else controller in entry.controllers:
            return entry.path
    return None


def read_cgroup(pid: Pid = "self", proc_root: Path = PROC) -> list[CgroupEntry]:
    """Read and parse ``<proc_root>/<pid>/cgroup``."""
    return parse_cgroup(_read_text(pid, proc_root, "cgroup"))


# ----------------------------------------------------------------------------------------------------
# /proc/<pid>/mountinfo

_OCTAL_ESCAPE = re.compile(rb"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """Undo the kernel's octal escapes in a mountinfo field.

    ``\\040`` space, ``\\011`` tab, ``\\012`` newline, ``\\134`` backslash.
    """
    if "\\" not in field:
        return field
    raw = os.fsencode(field)
    return os.fsdecode(_OCTAL_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8) & 0xFF]), raw))


def _split_options(field: str) -> tuple[str, ...]:
    return tuple(_unescape(option) for option in field.split(",") if option)


@dataclass(frozen=True)
class Mount:
    """One line of /proc/<pid>/mountinfo, paths unescaped.

    ``root`` is the path inside the file system that is mounted at ``mount_point``; ``optional_fields`` are
    propagation tags such as ``shared:1`` or ``master:2``; ``mount_options`` are per mount (``ro``,
    ``nosuid``), ``super_options`` per file system (``lowerdir=...`` for overlay), both split on commas.
    """

    mount_id: int
    parent_id: int
    major_minor: str
    root: str
    mount_point: str
    mount_options: tuple[str, ...]
    optional_fields: tuple[str, ...]
    fs_type: str
    source: str
    super_options: tuple[str, ...]

    @property
    def read_only(self) -> bool:
        """True when this mount is read-only (``ro`` in the per-mount options)."""
        return "ro" in self.mount_options

    def super_option(self, key: str) -> str | None:
        """The value of ``key=value`` in the super options, "" for a bare flag, None if absent."""
        for option in self.super_options:
            name, sep, value = option.partition("=")
            if name == key:
                return value if sep else ""
        return None


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse the text of /proc/<pid>/mountinfo (proc(5)): a :class:`Mount` per line, kernel order."""
    mounts = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(" ")
        try:
            dash = fields.index("-", 6)
        except ValueError:
            raise ValueError(f"line {number} of mountinfo has no ' - ' separator: {line!r}") from None
        if len(fields) < dash + 3:
            raise ValueError(f"line {number} of mountinfo has too few fields after ' - ': {line!r}")
        mounts.append(
            Mount(
                mount_id=int(fields[0]),
                parent_id=int(fields[1]),
                major_minor=fields[2],
                root=_unescape(fields[3]),
                mount_point=_unescape(fields[4]),
                mount_options=_split_options(fields[5]),
                optional_fields=tuple(fields[6:dash]),
                fs_type=_unescape(fields[dash + 1]),
                source=_unescape(fields[dash + 2]),
                super_options=_split_options(" ".join(fields[dash + 3 :])),
            )
        )
    return mounts


def read_mountinfo(pid: Pid = "self", proc_root: Path = PROC) -> list[Mount]:
    """Read and parse ``<proc_root>/<pid>/mountinfo``: the mounts seen from that process's mount namespace."""
    return parse_mountinfo(_read_text(pid, proc_root, "mountinfo"))


# ----------------------------------------------------------------------------------------------------
# /proc/<pid>/net/dev


@dataclass(frozen=True)
class NetDevice:
    """One interface of /proc/<pid>/net/dev: counters since the interface was created (bytes and packets)."""

    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


def parse_net_dev(text: str) -> list[NetDevice]:
    """Parse the text of /proc/<pid>/net/dev: two header lines, then ``name: 8 rx and 8 tx counters``."""
    devices = []
    for number, line in enumerate(text.splitlines(), start=1):
        name, sep, rest = line.partition(":")
        if not sep or "|" in line:
            continue  # the two header lines
        counters = rest.split()
        if len(counters) != 16:
            raise ValueError(f"line {number} of net/dev does not have 16 counters: {line!r}")
        values = [int(c) for c in counters]
        devices.append(
            NetDevice(
                name=name.strip(),
                rx_bytes=values[0],
                rx_packets=values[1],
                rx_errors=values[2],
                rx_dropped=values[3],
                tx_bytes=values[8],
                tx_packets=values[9],
                tx_errors=values[10],
                tx_dropped=values[11],
            )
        )
    return devices


def read_net_dev(pid: Pid = "self", proc_root: Path = PROC) -> list[NetDevice]:
    """Read and parse ``<proc_root>/<pid>/net/dev`` (the interfaces of that process's network namespace)."""
    return parse_net_dev(_read_text(pid, proc_root, "net/dev"))


def interfaces(pid: Pid = "self", proc_root: Path = PROC) -> list[str]:
    """Names of the network interfaces ``pid`` can see, in the kernel's order."""
    return [device.name for device in read_net_dev(pid, proc_root)]


# ----------------------------------------------------------------------------------------------------
# /proc/<pid>/net/tcp and tcp6

TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
              7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}


@dataclass(frozen=True)
class TcpSocket:
    """One line of /proc/<pid>/net/tcp{,6}: local and remote address (text, e.g. ``127.0.0.1``, ``::``) and
    port, the state's name (``LISTEN`` …), the owner's uid and the socket's inode."""

    local_address: str
    local_port: int
    remote_address: str
    remote_port: int
    state: str
    uid: int
    inode: int


def _hex_address(field: str) -> tuple[str, int]:
    """``0100007F:1F90`` → ("127.0.0.1", 8080): the kernel prints each 32-bit word of the address in host (little
    endian on x86 and arm64) byte order and the port in network order."""
    address, port = field.split(":")
    raw = bytes.fromhex(address)
    host_order = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(host_order)), int(port, 16)


def parse_net_tcp(text: str) -> list[TcpSocket]:
    """Parse the text of /proc/<pid>/net/tcp or tcp6: a header line, then ``sl: local remote st … uid timeout
    inode …`` per socket."""
    sockets = []
    for number, line in enumerate(text.splitlines()[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 10:
            raise ValueError(f"line {number} of net/tcp has {len(fields)} fields: {line!r}")
        (local, local_port), (remote, remote_port) = _hex_address(fields[1]), _hex_address(fields[2])
        state = int(fields[3], 16)
        sockets.append(TcpSocket(local, local_port, remote, remote_port, TCP_STATES.get(state, str(state)),
                                 int(fields[7]), int(fields[9])))
    return sockets


def listening(pid: Pid = "self", proc_root: Path = PROC) -> list[tuple[str, TcpSocket]]:
    """Every listening TCP socket in `pid`'s network namespace, as (``tcp`` or ``tcp6``, socket)."""
    return [(name, s) for name in ("tcp", "tcp6")
            for s in parse_net_tcp(_read_text(pid, proc_root, f"net/{name}")) if s.state == "LISTEN"]


# ----------------------------------------------------------------------------------------------------
# /proc/<pid>/cmdline


def parse_cmdline(data: bytes) -> list[str]:
    """Split the NUL-separated bytes of /proc/<pid>/cmdline into arguments ([] for kernel threads)."""
    if not data:
        return []
    return [os.fsdecode(arg) for arg in data.removesuffix(b"\0").split(b"\0")]


def cmdline(pid: Pid = "self", proc_root: Path = PROC) -> list[str]:
    """The argument vector of ``pid`` from ``<proc_root>/<pid>/cmdline``."""
    return parse_cmdline(_read_bytes(pid, proc_root, "cmdline"))


# ----------------------------------------------------------------------------------------------------
# The parent chain of a process


@dataclass(frozen=True)
class Ancestor:
    """One process on the way from a process up to the root of this /proc's PID namespace."""

    pid: int
    name: str
    command: str


def ancestry(pid: Pid, proc_root: Path = PROC, limit: int = 64) -> list[Ancestor]:
    """``pid`` and its parents, nearest first, up to PID 1 or the first parent this /proc cannot read.

    A container's main process seen from the host reads e.g. ``sleep ← containerd-shim-runc-v2 ← …``: its
    parent is the shim, not the engine and not a VM. Stops after `limit` steps (a cycle would be a kernel bug).
    """
    chain: list[Ancestor] = []
    current: Pid = pid
    for _ in range(limit):
        try:
            status = read_status(current, proc_root)
            command = " ".join(cmdline(current, proc_root))
        except (ProcessGone, PermissionError):
            break
        chain.append(Ancestor(status.pid, status.name, command))
        if status.ppid <= 1 or status.pid == 1:
            break
        current = status.ppid
    return chain


def _processes_where(keep: Callable[[int], bool], proc_root: Path) -> list[int]:
    """PIDs of the processes now in `proc_root` for which `keep(pid)` is true, in /proc's order; a process that
    ends (or turns unreadable) while it is being read is left out."""
    found = []
    for entry in proc_root.iterdir():
        if entry.name.isdigit():
            try:
                if keep(int(entry.name)):
                    found.append(int(entry.name))
            except (ProcessGone, OSError):
                continue
    return found


def children(parent: int, proc_root: Path = PROC) -> list[int]:
    """PIDs of the direct children of `parent` now (e.g. the kernels a notebook runner started)."""
    return _processes_where(lambda pid: read_status(pid, proc_root).ppid == parent, proc_root)


def running(argv: list[str], proc_root: Path = PROC) -> list[int]:
    """PIDs of the processes whose argument vector is exactly `argv` now (e.g. a build's marked RUN step)."""
    return _processes_where(lambda pid: cmdline(pid, proc_root) == argv, proc_root)


def naming(folders: Sequence[str], proc_root: Path = PROC) -> list[int]:
    """PIDs of the processes now whose arguments name a path at or below one of `folders` (e.g. a daemon and its
    helpers, started with their data folders as options); zombies and kernel threads have no arguments."""
    prefixes = tuple(folder.rstrip("/") for folder in folders)

    def names_one(pid: int) -> bool:
        return any(prefix + "/" in arg or arg.endswith(prefix)
                   for arg in cmdline(pid, proc_root) for prefix in prefixes)

    return _processes_where(names_one, proc_root)


def stat_fields_after_name(stat_text: str) -> list[str]:
    """Fields 3 onwards of ``/proc/<pid>/stat`` (state, parent pid, …). The command name (field 2) is in
    parentheses and may hold spaces and parentheses itself, so fields are counted after its last ``)``."""
    return stat_text[stat_text.rindex(")") + 2:].split()


def parse_start_ticks(stat_text: str) -> int:
    """Field 22 of ``/proc/<pid>/stat``: when the process started, in clock ticks since boot."""
    return int(stat_fields_after_name(stat_text)[19])  # field 22 is the 20th after the name


def start_ticks(pid: Pid = "self", proc_root: Path = PROC) -> int:
    """When process `pid` started (clock ticks since boot): with the pid, it names one process even after the
    pid is reused. Raises :class:`ProcessGone` when there is no such process."""
    return parse_start_ticks(_read_text(pid, proc_root, "stat"))


# ----------------------------------------------------------------------------------------------------
# Host-wide files: boot id, CPU flags


def ephemeral_ports(proc_root: Path = PROC) -> tuple[int, int]:
    """The host's ephemeral port range, lowest and highest (``/proc/sys/net/ipv4/ip_local_port_range``): where
    the kernel picks a client's port, and the engine a `-P` publish's host port."""
    low, high = (proc_root / "sys" / "net" / "ipv4" / "ip_local_port_range").read_text().split()
    return int(low), int(high)


def boot_id(proc_root: Path = PROC) -> str:
    """``/proc/sys/kernel/random/boot_id``: a UUID the kernel draws once per boot, the same for every process
    on that kernel, containers included (reading it in a container and on the host tells one kernel from two)."""
    return (proc_root / "sys/kernel/random/boot_id").read_text().strip()


def parse_cpu_flags(cpuinfo_text: str) -> frozenset[str]:
    """The ``flags`` of the first processor in the text of /proc/cpuinfo (x86; empty where there are none)."""
    for line in cpuinfo_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


# ----------------------------------------------------------------------------------------------------
# Host-wide memory and process count (notebook 07: the host before, during and after a stress container)


def parse_meminfo(text: str) -> dict[str, int]:
    """The text of /proc/meminfo → field → bytes (``MemAvailable``, ``SwapTotal`` …); the ``kB`` the kernel
    prints is 1024 bytes; a count without a unit (``HugePages_Total``) is kept as is."""
    out = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        tokens = rest.split()
        if sep and tokens and tokens[0].isdigit():
            out[key.strip()] = int(tokens[0]) * (1024 if tokens[1:] == ["kB"] else 1)
    return out


def read_meminfo(proc_root: Path = PROC) -> dict[str, int]:
    """This host's /proc/meminfo (:func:`parse_meminfo`)."""
    return parse_meminfo((proc_root / "meminfo").read_text())


def process_count(proc_root: Path = PROC) -> int:
    """Processes on the host now: the numeric entries of /proc (threads are not counted)."""
    return sum(1 for entry in proc_root.iterdir() if entry.name.isdigit())

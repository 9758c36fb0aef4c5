"""The host's Linux security modules, read from /sys: whether AppArmor is in the kernel and enabled.

A process's own label (its AppArmor profile) is read from /proc by :func:`labkit.instruments.procfs.security_label`.
Used by notebook 01. Nothing happens at import.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SYS = Path("/sys")
APPARMOR_ENABLED = Path("module/apparmor/parameters/enabled")  # "Y" or "N"; absent when not built into the kernel
APPARMOR_FS = Path("kernel/security/apparmor")  # AppArmor's own folder in securityfs: its profiles, its policy
ACTIVE_LSMS = Path("kernel/security/lsm")  # the modules the kernel runs, comma-separated (Linux >= 4.18)
NOT_IN_KERNEL = "not in this kernel"
NOT_READABLE = "not readable (securityfs not mounted)"


@dataclass(frozen=True)
class HostModules:
    """What /sys says of AppArmor: `apparmor_enabled` is the module's parameter ("Y", "N") or
    :data:`NOT_IN_KERNEL`; `apparmor_fs` whether securityfs holds AppArmor's folder; `active` the kernel's list of
    active modules, or :data:`NOT_READABLE`."""

    apparmor_enabled: str
    apparmor_fs: bool
    active: str

    @property
    def apparmor(self) -> bool:
        """AppArmor is built in and enabled: a runtime can confine a container with a profile."""
        return self.apparmor_enabled == "Y"


def host_modules(sys_root: Path = SYS) -> HostModules:
    """:class:`HostModules` read under `sys_root` (``/sys``, or a fixture tree laid out the same way)."""
    enabled = sys_root / APPARMOR_ENABLED
    active = sys_root / ACTIVE_LSMS
    return HostModules(apparmor_enabled=enabled.read_text().strip() if enabled.exists() else NOT_IN_KERNEL,
                       apparmor_fs=(sys_root / APPARMOR_FS).is_dir(),
                       active=active.read_text().strip() if active.exists() else NOT_READABLE)

"""The lab's declaration: its stem, sections, the guest's size, the probe's limits and criteria, and its tables."""

from __future__ import annotations

from typing import Any

from labkit.core.lab import Lab
from labkit.instruments.vm import guest

STEM = "15-the-lab-machine"
BASE = "busybox"  # the host's probe image; the guest makes the same one from the same busybox-static package
HOST, GUEST = "host", "guest"  # the two machines the probe runs on
MEMORY_MIB = 2048  # the guest's memory
CPUS = 2  # the guest's virtual CPUs
BOOT_TIMEOUT_S = 900.0  # longest one boot and its probe may take before QEMU is killed
MINUTE_S = 60.0  # the chapter's "minutes": a boot of at least one minute
IO_TOLERANCE = 0.15  # a write "at the limit" runs at most 15 % above it
ESCAPED_FROM = 2.0  # a write "escapes" the limit at twice its rate or more
CLOCK_RESOLUTION_S = 0.01  # the probe times writes with /proc/uptime inside the container: 10 ms steps
MARKS = ("kernel", "systemd", "default-target", "docker-ready", "image-ready", "job-done", "off")
"""The timeline of one boot, in order (see labkit.instruments.vm.guest.GuestRun)."""

OOM_COLUMNS = ("machine", "boot", "waited_s", "cgroup", "pid1_running", "oom_killed_flag", "child_exit",
               "oom_events", "oom_kills", "limit_hits", "peak_bytes", "limit_bytes", "swap_limit", "oom_group",
               "pressure_some_us", "pressure_full_us")



def prepare(client: Any) -> list[str]:
    """The lab machine's disk, kernel and initramfs (made once per recipe, about 2 minutes; then reused)."""
    made = guest.ensure_guest()
    return [f"lab machine: {made.folder} (kernel {made.kernel_release}, disk {made.manifest['disk_used_bytes']} "
            f"bytes used, made {made.manifest['made_utc']})"]


LAB = Lab(
    stem=STEM,
    topic="The lab machine: cgroup v2 and the systemd driver, live in a guest",
    bases=(BASE,),
    tables={
        "guest_image": ("recipe", "kernel_package", "kernel_release", "made_utc", "debootstrap_s", "kernel_s",
                        "disk_s", "disk_used_bytes", "docker_version", "systemd_version", "python3_version"),
        "boot_marks": ("boot", "accelerator", "mark", "host_s", "guest_uptime_s"),
        "console": ("boot", "line"),
        "facts": ("machine", "boot", "key", "value"),
        "cgroupns": ("machine", "boot", "mode", "namespace", "shared_with_host", "sees_path", "cgroup_lines"),
        "oom": OOM_COLUMNS,
        "writes": ("machine", "boot", "kind", "limit_bps", "bytes", "seconds", "rate_bps"),
    },
    prepare=prepare,
    headline="machine.vm_minutes",
)

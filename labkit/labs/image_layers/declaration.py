"""The lab's declaration: its stem, sections, Dockerfiles, limits and tables, and the build context every
section builds from."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import docker

from labkit.core.claims import CLAIM_COLUMNS, CLAIMS_TABLE
from labkit.core.lab import ENGINE, ROOT, Lab, Requirement
from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import builds, space
from labkit.instruments.engine import Scope
from labkit.instruments.limits import Limits

STEM = "02-image-layers"
BASE = "debian-minbase"
# The chapter's sections these claims come from, as it spells them, and the notebook's sections of our findings.
SECTION_IMAGE = "The Image — Layered, Cacheable, Reproducible"
SECTION_CONTAINER = "What a Container Actually Is"
SECTION_COPY_UP = "Copy-up"
SECTION_DELETE = "Deleting in a later layer"
SECTION_REPRO = "Reproducibility"
MIB = 2**20
LIMITS = Limits.of(memory_mib=256, pids=64, cpus=1.0)
SLEEP_ARGV = ["sleep", "300"]
SIZE_TOLERANCE = 0.001  # history and tar sizes agree within 0.1 % (the engine counts an imported layer's symlinks)

APP_FILES = {"app/greeting.py": 'GREETING = "Hello"\n', "app/README.md": "# greeter\n"}
SOURCE_TAR = "src.tar"  # the app under src/app/ and an etc/hosts, every entry stamped with SOURCE_DATE_EPOCH
HOSTS = "127.0.0.1 localhost\n"

# One image for sections 1–3: a big file to copy up, the app, a blob written then deleted in a later layer, and
# config-only instructions. {blob_mib} and {big_mib} are MiB of random bytes.
BLOB_IN_TWO_LAYERS = "RUN head -c {blob_mib}M /dev/urandom > /opt/blob.bin\nRUN rm /opt/blob.bin\n"
LAYERED = f"""\
FROM {{base}}
RUN mkdir /data && head -c {{big_mib}}M /dev/urandom > /data/big.bin && echo small > /data/small.txt
COPY app/ /app/
{BLOB_IN_TWO_LAYERS}ENV GREETING=hello
WORKDIR /app
"""
# The same image with the blob written and deleted in one RUN: nothing of it reaches a layer.
ONE_LAYER = LAYERED.replace(BLOB_IN_TWO_LAYERS,
                            "RUN head -c {blob_mib}M /dev/urandom > /opt/blob.bin && rm /opt/blob.bin\n")

# Section 4: built twice with --no-cache. `as is` copies the source folder, writes the build's time and leaves every
# mtime at the moment it was made. `normalised` does what it takes for equal layers: the source comes as a tar whose
# every entry carries SOURCE_DATE_EPOCH (as `git archive` stamps the commit's time), the clock is replaced by
# SOURCE_DATE_EPOCH, each RUN sets the time of what it made to it, and the tar brings an /etc/hosts: without one the
# builder creates a mount point for its own in every RUN and removes it after, which changes /etc's time.
PIN = 'touch -h -d "@$SOURCE_DATE_EPOCH"'
REPRODUCIBLE = {
    "as is": """\
FROM {base}
COPY app/ /src/app/
RUN mkdir /out && cp -r /src/app /out/app && date > /out/built-at.txt
RUN ls -l /out/app > /out/listing.txt
""",
    "normalised": f"""\
FROM {{base}}
ARG SOURCE_DATE_EPOCH
ADD {SOURCE_TAR} /
RUN mkdir /out && cp -r /src/app /out/app && echo "$SOURCE_DATE_EPOCH" > /out/built-at.txt \\
    && find /out -exec {PIN} {{{{}}}} +
RUN ls -l /out/app > /out/listing.txt && find /out -exec {PIN} {{{{}}}} +
""",
}
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
    return []


LAB = Lab(
    stem=STEM,
    topic="The image: layered, cacheable, reproducible",
    requirements=(ENGINE, ROOT, Requirement("program", "debootstrap", "the debian-minbase base")),
    bases=(BASE,),
    tables={
        "layers": ("step", "created_by", "empty_layer", "layer", "history_bytes", "content_bytes", "symlink_bytes",
                   "tar_bytes", "files", "whiteouts", "hidden_bytes", "agree"),
        "images": ("variant", "image_bytes", "blob_bytes"),
        "overlay": ("case", "path", "in_upper", "upper_kind", "in_lower", "in_merged", "upper_bytes", "lower_bytes"),
        "copy_up": ("repeat", "file", "file_bytes", "write", "seconds"),
        "reproducible": ("variant", "build", "step", "created_by", "diff_id", "image_id", "other_mtimes",
                         "example_paths"),
        CLAIMS_TABLE: CLAIM_COLUMNS,
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


def build_variant(scope: Scope, scratch: Path, name: str, dockerfile: str) -> builds.Build:
    """`dockerfile` built from its own context under `scratch`, tagged for this run's `scope`."""
    return builds.build(build_context(scratch / name, dockerfile), f"labkit-exp/{STEM}-{name}:{scope.scope_id}", scope)


def size_in_engine(client: docker.DockerClient, image: str) -> int:
    """The image's size as the engine reports it (bytes, unpacked)."""
    return int(client.images.get(image).attrs["Size"])

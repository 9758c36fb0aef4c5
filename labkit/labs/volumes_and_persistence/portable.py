"""Section 4b: a named volume taken to another host. The other host is a second Docker daemon on this machine, in a
network namespace of its own with its own data-root (:mod:`labkit.instruments.daemons`): no engine state is shared,
only the file system the backup's folder lives on.

The volume holds what a backup can lose: random files, a file owned by uid 1000 with mode 640, a sticky world-
writable folder, a symbolic link and a hard link. Each side lists every entry (name, owner, mode, type, link count,
a link's target) and every file's sha256 in a throwaway busybox container; the two listings are compared as text.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import containers, daemons, images, space
from labkit.labs.volumes_and_persistence.backup import TARBALL
from labkit.labs.volumes_and_persistence.declaration import (
    LAB,
    MIB,
    TAR_BASE,
    check_bind_parent,
    docker_root,
    limits_for,
    log,
    positive_mib,
    require_disk,
    rig,
)

FILES = 4  # random files holding the volume's size
FILL = ("cd /data && for i in $(seq {files}); do head -c {each} /dev/urandom > f$i; done"
        " && mkdir -m 1777 shared && echo key > shared/key && chown 1000:1000 shared/key && chmod 640 shared/key"
        " && ln -s f1 latest && ln f2 f2.hard")
# One line per entry (quoted name with a link's target, owner, mode, type, link count), then every file's sha256.
LISTING_ARGV = ["sh", "-c", "cd /data && find . | sort | while read -r entry; do stat -c '%N %u:%g %a %F %h' "
                "\"$entry\"; done && find . -type f | sort | xargs -r sha256sum"]
SHA256_LINE = re.compile(r"^[0-9a-f]{64}  ")  # sha256sum's lines; stat's start with the entry's name
HERE, THERE = "this engine", "the other engine (node1)"
FILLED, SAME_NAME, BACKED_UP, RESTORED = ("filled", "same name, before the copy", "backed up (tar to a folder)",
                                          "restored (tar from the folder)")
# The second engine's throwaway containers: busybox's tar and sha256sum need little, and no network.
NODE_LIMITS = ["--memory", "64m", "--pids-limit", "64", "--cpus", "1", "--network", "none"]


@dataclass(frozen=True)
class MovedResult:
    """`moved`: one row per step (:data:`FILLED` … :data:`RESTORED`) with the `engine` it ran on, that engine's
    `data_root`, the volume's `mountpoint` there, the `entries` the volume then held (files, folders, links),
    whether its listing equals the original's (`listing_equal`) and the step's wall time (`seconds`, container
    start included; NaN for a step not timed). The volume is listed three times: filled (the reference, so its row
    equals itself), on the other engine before the copy, and after the restore; the backed-up row repeats the
    reference's listing (the backup reads the volume read-only and does not list it again)."""

    moved: pd.DataFrame

    def row(self, step: str) -> pd.Series:
        return self.moved.set_index("step").loc[step]

    @property
    def empty_there_first(self) -> bool:
        """The other engine's volume of the same name held nothing before the copy: the engine moved nothing."""
        return int(self.row(SAME_NAME)["entries"]) == 0

    @property
    def identical_there(self) -> bool:
        """After the restore, the other engine's listing equals the original's, entry for entry."""
        return bool(self.row(RESTORED)["listing_equal"])

    def conclusion(self) -> str:
        filled, restored = self.row(FILLED), self.row(RESTORED)
        return (f"**What we measured.** The volume held {int(filled['entries'])} entries under "
                f"`{filled['mountpoint']}` on this engine. The other engine (data-root `{restored['data_root']}`) "
                f"had {'an empty' if self.empty_there_first else 'a NON-empty'} volume of the same name before "
                f"the copy: the engine itself carries nothing between hosts. After a tar backup here "
                f"({self.row(BACKED_UP)['seconds']:.2f} s) and a restore there ({restored['seconds']:.2f} s), "
                f"its {int(restored['entries'])} entries "
                f"{'matched' if self.identical_there else 'did NOT match'} the original's — names, owners, modes, "
                "link targets, hard-link counts and every file's sha256. Both engines run on this one machine and "
                "share its file system: the tar file crossed no network.")


def _row(step: str, engine: str, data_root: str, mountpoint: str, listing: str, original: str,
         seconds: float) -> dict[str, object]:
    stat_lines = [line for line in listing.splitlines() if line and not SHA256_LINE.match(line)]
    entries = len(stat_lines) - 1  # less the volume's own root, "."
    return {"step": step, "engine": engine, "data_root": data_root, "mountpoint": mountpoint, "entries": entries,
            "listing_equal": listing == original, "seconds": seconds, "listing": listing}


def run_moved(lab: LabSession, size_mib: int = 16, bind_parent: str = "/tmp") -> MovedResult:
    """A named volume of `size_mib` MiB filled on this engine, backed up with a throwaway busybox container into a
    folder, and restored into a volume of the same name on a second engine (a second dockerd on this machine);
    each step's listing compared with the original's."""
    positive_mib(size_mib, "size_mib")
    parent = check_bind_parent(bind_parent)
    size = space.Size("size_mib", size_mib)
    require_disk(lab, parent, {size: 2}, {size: 1})  # the volume on each engine; the tar
    if lab.live:
        daemons.validate(1, daemons.available_mib())

    def experiment() -> pd.DataFrame:
        rows = []
        with rig(lab, parent) as rig_:
            image = images.require_base(rig_.client, TAR_BASE).tag
            volume = rig_.volume("portable")
            folder = rig_.bind_folder("portable")
            root, mountpoint = docker_root(rig_.client), rig_.client.volumes.get(volume).attrs["Mountpoint"]

            def here(argv: list[str], backup_mode: str = "") -> tuple[str, float]:
                mounts = {volume: {"bind": "/data", "mode": "rw"}}
                if backup_mode:
                    mounts[str(folder)] = {"bind": "/backup", "mode": backup_mode}
                started = time.perf_counter()
                output = containers.run_once(rig_.client, rig_.scope, image, argv, limits=limits_for(8),
                                             volumes=mounts).decode()
                return output, time.perf_counter() - started

            _, fill_s = here(["sh", "-c", FILL.format(files=FILES, each=size_mib * MIB // FILES)])
            original, _ = here(LISTING_ARGV)
            rows.append(_row(FILLED, HERE, root, mountpoint, original, original, fill_s))
            _, backup_s = here(["tar", "cf", f"/backup/{TARBALL}", "-C", "/data", "."], "rw")
            rows.append(_row(BACKED_UP, HERE, root, mountpoint, original, original, backup_s))
            with daemons.engines(lab.run_id, 1) as other:
                node = other.nodes[0]
                log.info("second engine %s answers", node.socket)
                daemons.load_images([image], [node])
                labels = [f"--label={key}={value}" for key, value in rig_.scope.labels.items()]
                node.docker(["volume", "create", *labels, volume])
                there_root = node.docker(["info", "--format", "{{.DockerRootDir}}"]).stdout.strip()
                there_mount = node.docker(["volume", "inspect", "--format", "{{.Mountpoint}}", volume]).stdout.strip()

                def there(argv: list[str], backup_mode: str = "") -> tuple[str, float]:
                    mounts = ["-v", f"{volume}:/data"] + (["-v", f"{folder}:/backup:{backup_mode}"]
                                                          if backup_mode else [])
                    started = time.perf_counter()
                    output = node.docker(["run", "--rm", *NODE_LIMITS, *labels, *mounts, image, *argv], 120).stdout
                    return output, time.perf_counter() - started

                before, _ = there(LISTING_ARGV)
                rows.append(_row(SAME_NAME, THERE, there_root, there_mount, before, original, float("nan")))
                _, restore_s = there(["tar", "xf", f"/backup/{TARBALL}", "-C", "/data"], "ro")
                after, _ = there(LISTING_ARGV)
                rows.append(_row(RESTORED, THERE, there_root, there_mount, after, original, restore_s))
        return pd.DataFrame(rows, columns=list(LAB.tables["moved"]))

    return MovedResult(lab.measure("moved", experiment, size_mib=size_mib, files=FILES))

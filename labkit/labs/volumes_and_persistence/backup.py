"""Sections 4 and 5: a named volume backed up and restored the documented way, and who owns what a container
writes into a bind mount."""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import containers, images, measure, space, storage
from labkit.labs.volumes_and_persistence.declaration import (
    LAB,
    MIB,
    PYTHON_BASE,
    TAR_BASE,
    Rig,
    check_bind_parent,
    limits_for,
    positive_mib,
    require_disk,
    rig,
)

FILES = 8  # the volume holds its size in this many files of random bytes
BACKUP, RESTORE = "backup", "restore"
TARBALL = "volume.tar"
CHECKSUMS = ["sh", "-c", "cd /data && find . -type f | sort | xargs sha256sum"]


@dataclass(frozen=True)
class BackupResult:
    """`backup`: per volume size (bytes) and repeat, the backup (a throwaway container tars the volume into a
    bind-mounted folder) and the restore (another untars it into a new volume): wall time of the ``docker run``
    (s, container start included), the tar's bytes, the files, and whether every file's sha256 matched."""

    backup: pd.DataFrame

    @property
    def all_equal(self) -> bool:
        return bool(self.backup["checksums_equal"].all())

    def medians(self) -> pd.DataFrame:
        """size (MiB) × step of the median wall time (s)."""
        table = self.backup.assign(size_mib=self.backup["size_bytes"] / MIB)
        return table.pivot_table(index="size_mib", columns="step", values="seconds", aggfunc="median")

    def per_mib_ms(self, step: str) -> float:
        """The least-squares slope of `step`'s time against size (ms per MiB): what each MiB adds."""
        rows = self.backup[self.backup["step"] == step]
        if rows["size_bytes"].nunique() < 2:
            return float("nan")
        slope, _ = np.polyfit(rows["size_bytes"] / MIB, rows["seconds"], 1)
        return float(slope * 1e3)

    def conclusion(self) -> str:
        medians = self.medians()
        largest = medians.index.max()
        slopes = {step: self.per_mib_ms(step) for step in (BACKUP, RESTORE)}
        if all(slope > 0 for slope in slopes.values()):
            growth = (f"each MiB added about {slopes[BACKUP]:.1f} ms to a backup and {slopes[RESTORE]:.1f} ms to a "
                      "restore (least-squares slope)")
        else:
            growth = ("at these sizes the container's start hides what the size adds (least-squares slopes "
                      f"{slopes[BACKUP]:.1f} and {slopes[RESTORE]:.1f} ms per MiB)")
        return (f"**What we measured.** {len(self.backup) // 2} backups and restores, from "
                f"{medians.index.min():.0f} to {largest:.0f} MiB: the checksums of every restored file "
                f"{'matched' if self.all_equal else 'did NOT all match'} the original's. At {largest:.0f} MiB a "
                f"backup took {medians.loc[largest, BACKUP]:.2f} s and a restore {medians.loc[largest, RESTORE]:.2f} s"
                f" (container start included); {growth}.")


def _tar_run(rig_: Rig, image: str, argv: list[str], volume: str, volume_mode: str, folder: Path,
             folder_mode: str) -> float:
    started = time.perf_counter_ns()
    containers.run_once(rig_.client, rig_.scope, image, argv, limits=limits_for(8),
                        volumes={volume: {"bind": "/data", "mode": volume_mode},
                                 str(folder): {"bind": "/backup", "mode": folder_mode}})
    return (time.perf_counter_ns() - started) / 1e9


def _checksums(rig_: Rig, image: str, volume: str) -> str:
    return containers.run_once(rig_.client, rig_.scope, image, CHECKSUMS, limits=limits_for(8),
                               volumes={volume: {"bind": "/data", "mode": "ro"}}).decode()


def run_backup(lab: LabSession, sizes_mib: tuple[int, ...] = (16, 64, 128), repeats: int = 3,
               bind_parent: str = "/tmp") -> BackupResult:
    """For each size in `sizes_mib`, `repeats` times: a named volume filled with that many MiB, backed up with
    ``docker run --rm -v vol:/data:ro -v <folder>:/backup busybox tar cf /backup/volume.tar -C /data .``,
    restored with ``tar xf`` into a new volume, and both checksummed."""
    measure.validate_repeats(repeats)
    if not sizes_mib:
        raise BadParameter("sizes_mib is empty: nothing to back up.", "E.g. sizes_mib=(16, 64).")
    for size in sizes_mib:
        positive_mib(size, "sizes_mib")
    parent = check_bind_parent(bind_parent)
    largest = space.Size("sizes_mib", max(sizes_mib))
    require_disk(lab, parent, {largest: 2}, {largest: 1})  # the volume and its restored copy; the tar

    def experiment() -> pd.DataFrame:
        rows = []
        with rig(lab, parent) as rig_:
            image = images.require_base(rig_.client, TAR_BASE).tag
            for size in sizes_mib:
                for repeat in range(repeats):
                    original, restored = rig_.volume(f"data-{size}-{repeat}"), rig_.volume(f"restored-{size}-{repeat}")
                    fill = f"for i in $(seq {FILES}); do head -c {size * MIB // FILES} /dev/urandom > /data/f$i; done"
                    containers.run_once(rig_.client, rig_.scope, image, ["sh", "-c", fill], limits=limits_for(8),
                                        volumes={original: {"bind": "/data", "mode": "rw"}})
                    folder = rig_.bind_folder(f"backup-{size}-{repeat}")
                    backup_s = _tar_run(rig_, image, ["tar", "cf", f"/backup/{TARBALL}", "-C", "/data", "."],
                                        original, "ro", folder, "rw")
                    restore_s = _tar_run(rig_, image, ["tar", "xf", f"/backup/{TARBALL}", "-C", "/data"],
                                         restored, "rw", folder, "ro")
                    before, after = _checksums(rig_, image, original), _checksums(rig_, image, restored)
                    files = len(before.splitlines())
                    equal = files == FILES and before == after
                    tar_bytes = (folder / TARBALL).stat().st_size
                    for step, seconds in ((BACKUP, backup_s), (RESTORE, restore_s)):
                        rows.append({"size_bytes": size * MIB, "repeat": repeat, "step": step, "seconds": seconds,
                                     "tar_bytes": tar_bytes, "files": files, "checksums_equal": equal})
                    (folder / TARBALL).unlink()  # one size on disk at a time
                    for volume in (original, restored):
                        rig_.client.volumes.get(volume).remove(force=True)
        return pd.DataFrame(rows, columns=list(LAB.tables["backup"]))

    return BackupResult(lab.measure("backup", experiment, sizes_mib=list(sizes_mib), repeats=repeats, files=FILES))


# ---------------------------------------------------------------- ownership on bind mounts

ROOT_CREATES = "root creates a file"
UID_CREATES = "--user 1000:1000 creates a file (folder mode 777)"
UID_DENIED = "--user 1000:1000 writes into a root-owned folder (mode 755)"
USER = "1000:1000"


@dataclass(frozen=True)
class OwnershipResult:
    """`ownership`: per case, the container's user ('' = the image's, root), the bound folder's mode (octal), the
    errno its open(O_CREAT|O_EXCL) failed with (0 = created) and the created file's uid and gid on the host (-1 when
    there is none)."""

    ownership: pd.DataFrame

    def row(self, case: str) -> pd.Series:
        return self.ownership.set_index("case").loc[case]

    @property
    def as_expected(self) -> bool:
        root, uid, denied = self.row(ROOT_CREATES), self.row(UID_CREATES), self.row(UID_DENIED)
        return bool((root["file_uid"], root["file_gid"]) == (0, 0) and (uid["file_uid"], uid["file_gid"])
                    == (1000, 1000) and int(denied["errno"]) == errno.EACCES and int(denied["file_uid"]) == -1)

    def conclusion(self) -> str:
        root, uid, denied = self.row(ROOT_CREATES), self.row(UID_CREATES), self.row(UID_DENIED)
        code = int(denied["errno"])
        name = errno.errorcode.get(code, "no error") if code else "no error"
        return (f"**What we measured.** On the host, the file root created inside is owned by uid "
                f"{int(root['file_uid'])}, gid {int(root['file_gid'])}; with `--user {USER}` by uid "
                f"{int(uid['file_uid'])}, gid {int(uid['file_gid'])}: the bind mount shows the host the numbers, "
                f"with no mapping. Writing as uid 1000 into the root-owned folder failed with errno {code} "
                f"(**{name}**).")


def run_ownership(lab: LabSession, bind_parent: str = "/tmp") -> OwnershipResult:
    """Three short containers on one bind-mounted folder: root creating a file, uid 1000 creating one in a
    world-writable subfolder, uid 1000 creating one in the root-owned folder itself; ownership read on the host."""
    parent = check_bind_parent(bind_parent)
    lab.require_root("a root-owned bind folder")

    def experiment() -> pd.DataFrame:
        rows = []
        with rig(lab, parent) as rig_:
            image = images.require_base(rig_.client, PYTHON_BASE).tag
            bind = rig_.bind_folder("owned", 0o755)
            open_folder = bind / "open"
            open_folder.mkdir()
            open_folder.chmod(0o777)
            for case, user, inside, folder in ((ROOT_CREATES, "", "by-root", bind),
                                               (UID_CREATES, USER, "open/by-1000", open_folder),
                                               (UID_DENIED, USER, "by-1000", bind)):
                output = containers.run_once(rig_.client, rig_.scope, image,
                                             ["python3", "-c", storage.CREATE_FILE, f"/bind/{inside}"],
                                             limits=limits_for(8), user=user,
                                             volumes={str(bind): {"bind": "/bind", "mode": "rw"}})
                created = bind / inside
                stat = created.stat() if created.exists() else None
                rows.append({"case": case, "user": user, "directory_mode": f"{folder.stat().st_mode & 0o777:o}",
                             "errno": int(output.decode().strip()), "file_uid": stat.st_uid if stat else -1,
                             "file_gid": stat.st_gid if stat else -1})
        return pd.DataFrame(rows, columns=list(LAB.tables["ownership"]))

    return OwnershipResult(lab.measure("ownership", experiment, user=USER))

"""Section 3: root (no USER) against USER 10001: what each does to a bind-mounted host folder, and its capabilities."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import containers, procfs, undo
from labkit.labs.pitfalls_and_security.declaration import (
    limits_for,
    probe_argv,
    probe_images,
    said,
    wait_ready,
)

ROOT_USER = "no USER (root)"
NON_ROOT = "USER 10001"
MOUNTED = "/data"


@dataclass(frozen=True)
class UserResult:
    """`users`: user, uid and euid inside, effective_capabilities (decoded CapEff, comma-joined), capability_count,
    bind_write (a file written into the bind-mounted host folder: ok or the errno), host_owner_uid (its owner on the
    host, -1 when none was made), image_write (a file written to the image's /etc)."""

    users: pd.DataFrame

    def row(self, user: str) -> pd.Series:
        return self.users[self.users["user"] == user].iloc[0]

    def conclusion(self) -> str:
        root, other = self.row(ROOT_USER), self.row(NON_ROOT)
        held = str(root["effective_capabilities"]).replace(",", ", ")
        return (f"**What we measured.** Without `USER` the program runs as uid {root['uid']} and holds "
                f"{root['capability_count']} capabilities ({held}). Into the bind-mounted host folder it wrote a "
                f"file that the host sees owned by uid **{root['host_owner_uid']}**; it could "
                f"also write the image's /etc ({root['image_write']}). As `USER 10001` it runs as uid {other['uid']} "
                f"with **{other['capability_count']}** effective capabilities; the bind-mounted write ended "
                f"**{other['bind_write']}** and /etc {other['image_write']}.")


def run_users(lab: LabSession, memory_limit_mib: int = 64) -> UserResult:
    """The probe image's two stages (no USER, USER 10001) each write into a host folder bind-mounted at /data
    (root-owned, mode 755, under this lab's temporary folder) and into /etc; CapEff read from the host's /proc."""
    limits = limits_for(lab, memory_limit_mib)
    lab.require_root("reading a container's /proc/<pid>/status")

    def experiment() -> pd.DataFrame:
        client = lab.engine
        rows = []
        with undo.temporary_folder("labkit-10-bind-") as bind_source:
            folder = Path(bind_source)
            folder.chmod(0o755)
            with lab.scope() as scope, probe_images(client, scope, nonroot=True) as made:
                for user, image in ((ROOT_USER, made.root), (NON_ROOT, made.nonroot)):
                    name = "root" if image == made.root else "10001"
                    with containers.running(client, scope, image, probe_argv("wait"), stem=f"user-{name}",
                                            limits=limits, volumes={str(folder): {"bind": MOUNTED, "mode": "rw"}}
                                            ) as container:
                        wait_ready(container)
                        status = procfs.read_status(containers.host_pid(client, container.id))
                        _, output = container.exec_run(probe_argv("write", f"{MOUNTED}/by-{name}.txt",
                                                                     f"/etc/by-{name}.txt"))
                        wrote = said(output)
                        made_file = folder / f"by-{name}.txt"
                        rows.append({"user": user, "uid": wrote["uid"], "euid": wrote["euid"],
                                     "effective_capabilities": ",".join(sorted(c.removeprefix("CAP_")
                                                                               for c in status.effective)),
                                     "capability_count": len(status.effective),
                                     "bind_write": wrote["writes"][f"{MOUNTED}/by-{name}.txt"],
                                     "host_owner_uid": os.stat(made_file).st_uid if made_file.exists() else -1,
                                     "image_write": wrote["writes"][f"/etc/by-{name}.txt"]})
        return pd.DataFrame(rows)

    return UserResult(lab.measure("users", experiment, **limits.record()))

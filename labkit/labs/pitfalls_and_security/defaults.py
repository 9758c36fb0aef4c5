"""Section 6: the security defaults, each made to bite and then relaxed or tightened by one docker run option."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from labkit.core.results import rows_where
from labkit.core.session import LabSession
from labkit.instruments import containers, engine, procfs
from labkit.instruments import lsm as host_lsm
from labkit.labs.pitfalls_and_security.declaration import (
    limits_for,
    probe_argv,
    probe_images,
    probe_once,
    wait_ready,
)

RAW_SOCKET, UNSHARE, KEYCTL = "raw socket", "unshare(CLONE_NEWUTS)", "keyctl"
READ_ONLY, NO_NEW_PRIVILEGES = "read-only", "setuid"
DEFAULT = "default"
UNCONFINED = "seccomp=unconfined"
ADD_ADMIN = "--cap-add SYS_ADMIN"
UNCONFINED_ADMIN = "seccomp=unconfined + --cap-add SYS_ADMIN"
ETC, TMP = "/etc/probe.txt", "/tmp/probe.txt"
# check → variant → (image stage, probe command, docker run options as SDK keyword arguments)
CHECKS: dict[str, dict[str, tuple[str, list[str], dict[str, Any]]]] = {
    RAW_SOCKET: {DEFAULT: ("root", probe_argv("raw-socket"), {}),
                 "--cap-drop NET_RAW": ("root", probe_argv("raw-socket"), {"cap_drop": ["NET_RAW"]})},
    # unshare needs CAP_SYS_ADMIN, and the default profile allows it once that capability is added: capabilities
    # and seccomp interlock. keyctl needs no capability, and the default profile refuses it even with CAP_SYS_ADMIN
    # (the capability its conditional rules key on): seccomp alone. (`--cap-add ALL` fails on hosts whose bounding
    # set lacks a capability, as ours lacks CAP_SYS_RESOURCE.)
    UNSHARE: {DEFAULT: ("root", probe_argv("unshare-uts"), {}),
              UNCONFINED: ("root", probe_argv("unshare-uts"), {"security_opt": ["seccomp=unconfined"]}),
              ADD_ADMIN: ("root", probe_argv("unshare-uts"), {"cap_add": ["SYS_ADMIN"]}),
              UNCONFINED_ADMIN: ("root", probe_argv("unshare-uts"),
                                 {"security_opt": ["seccomp=unconfined"], "cap_add": ["SYS_ADMIN"]})},
    KEYCTL: {DEFAULT: ("root", probe_argv("keyctl"), {}),
             ADD_ADMIN: ("root", probe_argv("keyctl"), {"cap_add": ["SYS_ADMIN"]}),
             UNCONFINED: ("root", probe_argv("keyctl"), {"security_opt": ["seccomp=unconfined"]})},
    READ_ONLY: {DEFAULT: ("root", probe_argv("write", ETC, TMP), {}),
                "--read-only --tmpfs /tmp": ("root", probe_argv("write", ETC, TMP),
                                             {"read_only": True, "tmpfs": {"/tmp": "size=8m"}})},
    NO_NEW_PRIVILEGES: {
        DEFAULT: ("nonroot", ["suid-python", "/opt/probe.py", "ids"], {}),
        "--security-opt no-new-privileges": ("nonroot", ["suid-python", "/opt/probe.py", "ids"],
                                             {"security_opt": ["no-new-privileges"]})},
}
SELINUX_ENFORCE = Path("/sys/fs/selinux/enforce")


@dataclass(frozen=True)
class DefaultsResult:
    """`defaults`: check, variant, outcome (opened / ok / an errno; for writes ``/etc: …, /tmp: …``), uid, euid.
    `lsm`: what (a host or engine fact about AppArmor and SELinux), value."""

    defaults: pd.DataFrame
    lsm: pd.DataFrame

    def outcome(self, check: str, variant: str) -> str:
        rows = rows_where(self.defaults, check=check, variant=variant)
        return str(rows["outcome"].iloc[0])

    def euid(self, variant: str) -> int:
        rows = self.defaults[(self.defaults["check"] == NO_NEW_PRIVILEGES) & (self.defaults["variant"] == variant)]
        return int(rows["euid"].iloc[0])

    def fact(self, what: str) -> str:
        return str(self.lsm.loc[self.lsm["what"] == what, "value"].iloc[0])

    @property
    def lsm_active(self) -> list[str]:
        """The Linux security modules that confine containers here: apparmor, selinux, or none."""
        options = self.fact("engine security options")
        return [name for name in ("apparmor", "selinux") if f"name={name}" in options]

    def matrix(self) -> pd.DataFrame:
        """check × variant of outcomes."""
        return self.defaults.pivot(index="variant", columns="check", values="outcome").fillna("")

    def conclusion(self) -> str:
        lsm = ", ".join(self.lsm_active) or "neither AppArmor nor SELinux"
        return (f"**What we measured.** A raw socket: **{self.outcome(RAW_SOCKET, DEFAULT)}** by default, "
                f"**{self.outcome(RAW_SOCKET, '--cap-drop NET_RAW')}** with `--cap-drop NET_RAW`. "
                f"`keyctl` (no capability needed): **{self.outcome(KEYCTL, DEFAULT)}** by default, "
                f"**{self.outcome(KEYCTL, ADD_ADMIN)}** with `{ADD_ADMIN}`, "
                f"**{self.outcome(KEYCTL, UNCONFINED)}** with seccomp unconfined: the default profile alone refuses "
                f"it. `unshare(CLONE_NEWUTS)`: {self.outcome(UNSHARE, DEFAULT)} by default, "
                f"{self.outcome(UNSHARE, UNCONFINED)} with seccomp unconfined alone, "
                f"{self.outcome(UNSHARE, ADD_ADMIN)} with `{ADD_ADMIN}` alone: the default profile lets it through "
                f"once the capability is there. `--read-only --tmpfs /tmp`: "
                f"{self.outcome(READ_ONLY, '--read-only --tmpfs /tmp')} (by default "
                f"{self.outcome(READ_ONLY, DEFAULT)}). A setuid-root program run by uid 10001 got euid "
                f"**{self.euid(DEFAULT)}** by default and **{self.euid('--security-opt no-new-privileges')}** under "
                f"no-new-privileges. Confining containers on this host: {lsm} (kernel: AppArmor "
                f"{self.fact('AppArmor enabled (kernel)')}, SELinux {self.fact('SELinux enforce (kernel)')}).")


def _read_or(path: Path, absent: str) -> str:
    return path.read_text().strip() if path.exists() else absent


def run_defaults(lab: LabSession, memory_limit_mib: int = 64) -> DefaultsResult:
    """Each check of :data:`CHECKS` run once per variant (``docker run --rm`` of the probe), never --privileged;
    then whether AppArmor or SELinux is there, read from the kernel, the engine and a container's
    ``/proc/<pid>/attr/current``."""
    limits = limits_for(lab, memory_limit_mib)

    def experiment() -> dict[str, pd.DataFrame]:
        client = lab.engine
        rows = []
        with lab.scope() as scope, probe_images(client, scope, nonroot=True) as made:
            for check, variants in CHECKS.items():
                for variant, (stage, argv, options) in variants.items():
                    image = made.root if stage == "root" else made.nonroot
                    said = probe_once(client, scope, image, argv, limits, **options)
                    outcome = said.get("raw_socket") or said.get("unshare") or said.get("keyctl") or ", ".join(
                        f"{path.split('/')[1]}: {result}" for path, result in said.get("writes", {}).items()) \
                        or f"euid {said.get('euid')}"
                    rows.append({"check": check, "variant": variant, "outcome": outcome, "uid": said.get("uid", -1),
                                 "euid": said.get("euid", -1)})
            with containers.running(client, scope, made.root, probe_argv("wait"), stem="lsm",
                                    limits=limits) as container:
                wait_ready(container)
                profile = client.api.inspect_container(container.id).get("AppArmorProfile", "") or "(none)"
                label = procfs.security_label(containers.host_pid(client, container.id))
        lsm = {"AppArmor enabled (kernel)": host_lsm.host_modules().apparmor_enabled,
               "SELinux enforce (kernel)": _read_or(SELINUX_ENFORCE, "no selinuxfs"),
               "engine security options": ", ".join(engine.info(client).security_options),
               "container AppArmorProfile": profile, "container /proc/<pid>/attr/current": label}
        return {"defaults": pd.DataFrame(rows),
                "lsm": pd.DataFrame([{"what": what, "value": value} for what, value in lsm.items()])}

    tables = lab.record("defaults", ("defaults", "lsm"), experiment, **limits.record())
    return DefaultsResult(tables["defaults"], tables["lsm"])

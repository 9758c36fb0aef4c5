"""Section 2: privileges, capabilities and seccomp, by ``docker run`` option."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import containers, images, procfs
from labkit.labs.what_a_container_is.declaration import (
    CAP_ADD,
    CAP_DROP_ALL,
    DANGEROUS_CAPABILITIES,
    DEFAULT,
    HOST,
    PRIVILEGE_VARIANTS,
    SLEEP_ARGV,
    UNCONFINED,
    limits_for,
    short_caps,
)


@dataclass(frozen=True)
class PrivilegeResult:
    """`capabilities`: subject, capability, effective, host_effective, seccomp_mode, bounding (one row per
    subject × capability; seccomp_mode 0 disabled, 2 filter)."""

    capabilities: pd.DataFrame

    def effective(self, subject: str) -> set[str]:
        rows = self.capabilities[(self.capabilities["subject"] == subject) & self.capabilities["effective"]]
        return set(rows["capability"])

    def seccomp_mode(self, subject: str) -> int:
        return int(self.capabilities.loc[self.capabilities["subject"] == subject, "seccomp_mode"].iloc[0])

    @cached_property
    def seccomp(self) -> pd.DataFrame:
        """Per subject: seccomp_mode, effective_count, bounding_count."""
        return self.capabilities.groupby("subject", sort=False).agg(
            seccomp_mode=("seccomp_mode", "first"), effective_count=("effective", "sum"),
            bounding_count=("bounding", "sum")).reset_index()

    def matrix(self) -> pd.DataFrame:
        """capability × subject of ✓/· for the capabilities any subject holds."""
        table = self.capabilities.pivot(index="capability", columns="subject", values="effective")
        table = table.loc[table.any(axis=1), list(dict.fromkeys(self.capabilities["subject"]))]
        return table.map(lambda held: "✓" if held else "·")

    @property
    def dangerous_lacking(self) -> set[str]:
        """The dangerous capabilities host root holds and a default container's root does not."""
        return (self.effective(HOST) - self.effective(DEFAULT)) & set(DANGEROUS_CAPABILITIES)

    def conclusion(self) -> str:
        host_caps, default_caps = self.effective(HOST), self.effective(DEFAULT)
        added = self.effective(CAP_ADD) - default_caps
        return (f"**What we measured.** Root on this host holds {len(host_caps)} effective capabilities; root in a "
                f"default container holds {len(default_caps)}: {short_caps(default_caps)}. Among those it lacks are "
                f"the dangerous ones: **{short_caps(self.dangerous_lacking)}**. `{CAP_DROP_ALL}` leaves "
                f"{len(self.effective(CAP_DROP_ALL))}; `{CAP_ADD}` adds {short_caps(added)}. Seccomp mode is "
                f"{self.seccomp_mode(DEFAULT)} (filter) by default and {self.seccomp_mode(UNCONFINED)} with "
                "`seccomp=unconfined`.")


def run_privileges(lab: LabSession, base: str = "busybox", memory_limit_mib: int = 64) -> PrivilegeResult:
    """Effective capabilities and seccomp mode of this lab's root process and of containers with privilege flags."""
    images.validate_base(base)
    limits = limits_for(lab, memory_limit_mib)
    lab.require_root("reading a container's /proc/<pid>/status")

    def experiment() -> pd.DataFrame:
        client = lab.engine
        image = images.require_base(client, base).tag
        statuses = {HOST: procfs.read_status("self")}
        with lab.scope() as scope:
            for index, (subject, options) in enumerate(PRIVILEGE_VARIANTS.items()):
                with containers.running(client, scope, image, SLEEP_ARGV, stem=f"priv-{index}", limits=limits,
                                        **options) as container:
                    statuses[subject] = procfs.read_status(containers.host_pid(client, container.id))
        host_effective = statuses[HOST].effective
        names = sorted(set().union(*(s.effective | s.bounding for s in statuses.values())))
        return pd.DataFrame([
            {"subject": subject, "capability": name, "effective": name in status.effective,
             "host_effective": name in host_effective, "seccomp_mode": status.seccomp,
             "bounding": name in status.bounding}
            for subject, status in statuses.items() for name in names])

    return PrivilegeResult(lab.measure("capabilities", experiment, base=base, **limits.record()))

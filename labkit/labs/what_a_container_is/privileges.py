"""Section 2: privileges, capabilities and seccomp, by ``docker run`` option."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import containers, engine, images, lsm, procfs
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


APPARMOR_DEFAULT_PROFILE = "docker-default"  # the profile Docker loads and applies where AppArmor is enabled


@dataclass(frozen=True)
class ConfinementResult:
    """`confinement`: subject (the host's own process, a default container), apparmor_enabled (the module's
    parameter, or "not in this kernel"), apparmor_fs (AppArmor's folder in securityfs), active_modules (the
    kernel's list of security modules, where readable), label (the process's AppArmor profile or other security
    label, read from /proc/<pid>/attr), engine_security_options (``docker info``'s SecurityOptions, ``;``-joined).
    Empty when replaying a recording made without it."""

    confinement: pd.DataFrame

    @property
    def recorded(self) -> bool:
        return not self.confinement.empty

    def label(self, subject: str) -> str:
        return str(self.confinement.set_index("subject").loc[subject, "label"])

    @property
    def apparmor_enabled(self) -> bool:
        return str(self.confinement["apparmor_enabled"].iloc[0]) == "Y"

    @property
    def engine_options(self) -> list[str]:
        return str(self.confinement["engine_security_options"].iloc[0]).split(";")

    @property
    def engine_lists_apparmor(self) -> bool:
        return any(option.startswith("name=apparmor") for option in self.engine_options)

    @property
    def confined(self) -> bool:
        """A default container runs under Docker's AppArmor profile, in enforce mode."""
        return self.label(DEFAULT).startswith(APPARMOR_DEFAULT_PROFILE) and "(enforce)" in self.label(DEFAULT)

    def conclusion(self) -> str:
        if not self.recorded:
            return ("*AppArmor was not read in the recording this notebook replays (it predates this part): a live "
                    "run reads it.*")
        row = self.confinement.iloc[0]
        host = (f"AppArmor on this host: module parameter **{row['apparmor_enabled']}**, securityfs folder "
                f"{'present' if row['apparmor_fs'] else 'absent'}, active modules: {row['active_modules']}. ")
        engine_text = f"`docker info` lists the security options **{', '.join(self.engine_options)}**. "
        if self.apparmor_enabled:
            found = (f"A default container runs under **{self.label(DEFAULT)}** (this notebook's own process: "
                     f"{self.label(HOST)}): " + ("Docker's profile, enforced, on top of seccomp." if self.confined
                                                 else "NOT Docker's enforced profile."))
        else:
            found = (f"A default container's label reads **{self.label(DEFAULT)}**: with no AppArmor in the "
                     "kernel, Docker applies no profile, and what restricts root in a container here is the "
                     "capability set and the seccomp filter of section 2 (on Debian or Ubuntu with AppArmor, "
                     f"`/proc/<pid>/attr/current` would read `{APPARMOR_DEFAULT_PROFILE} (enforce)`).")
        return (f"**What we measured.** {host}{engine_text}{found} The chapter's claim that AppArmor or SELinux "
                "further restricts a container is judged once, in notebook 10 (`security.lsm_confines`), from these "
                "same facts.")


def run_confinement(lab: LabSession, base: str = "busybox", memory_limit_mib: int = 64) -> ConfinementResult:
    """Whether the kernel has AppArmor enabled (/sys), the security label of this lab's process and of a default
    container (/proc/<pid>/attr), and the security options the engine reports (docker info)."""
    images.validate_base(base)
    limits = limits_for(lab, memory_limit_mib)
    if (missing := lab.unrecorded("confinement")) is not None:
        return ConfinementResult(missing)
    lab.require_root("reading a container's /proc/<pid>/attr")

    def experiment() -> pd.DataFrame:
        client = lab.engine
        image = images.require_base(client, base).tag
        modules = lsm.host_modules()
        options = ";".join(engine.info(client).security_options)
        labels = {HOST: procfs.security_label("self")}
        with lab.scope() as scope, containers.running(client, scope, image, SLEEP_ARGV, stem="confinement",
                                                      limits=limits) as container:
            labels[DEFAULT] = procfs.security_label(containers.host_pid(client, container.id))
        return pd.DataFrame([{"subject": subject, "apparmor_enabled": modules.apparmor_enabled,
                              "apparmor_fs": modules.apparmor_fs, "active_modules": modules.active, "label": label,
                              "engine_security_options": options} for subject, label in labels.items()])

    return ConfinementResult(lab.measure("confinement", experiment, base=base, **limits.record()))

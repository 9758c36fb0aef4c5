"""Section 2: latest is just a tag; section 3: one tag for two platforms (notebook 11's experiment)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from labkit.core.results import rows_where
from labkit.core.session import LabSession
from labkit.instruments import registry
from labkit.instruments.engine import docker_cli
from labkit.instruments.shell import run
from labkit.labs.tags_digests_and_registries.declaration import app_registry, build_app, digest_of, forget


@dataclass(frozen=True)
class LatestResult:
    """`steps`: step, tag, digest (what the registry names for `tag` after the step), names (which version's
    image that digest is: 'version 1', 'version 2')."""

    steps: pd.DataFrame

    def names(self, step: str, tag: str = "latest") -> str:
        rows = rows_where(self.steps, step=step, tag=tag)
        return str(rows["names"].iloc[0])

    @property
    def stayed(self) -> bool:
        """After version 2 was pushed as :2, latest still named version 1; it moved only when pushed itself."""
        return self.names(PUSHED_2) == "version 1" and self.names(MOVED) == "version 2"

    def conclusion(self) -> str:
        return (f"**What we measured.** After pushing version 1 as `:1` and `:latest`, `latest` named "
                f"**{self.names(PUSHED_1)}**. After pushing version 2 as `:2` — the newest image in the repository "
                f"— `latest` still named **{self.names(PUSHED_2)}**; `docker pull` without a tag asks for `latest`, "
                f"so it would get version 1. Only tagging version 2 as `latest` and pushing that tag moved it: "
                f"now **{self.names(MOVED)}**. `latest` is the default tag's name, nothing more: no registry "
                "moves it for you.")


PUSHED_1, PUSHED_2, MOVED = "push version 1 as :1 and :latest", "push version 2 as :2", "push version 2 as :latest"


def run_latest(lab: LabSession, port: int | None = None) -> LatestResult:
    """Push version 1 as ``:1`` and ``:latest``, version 2 as ``:2``, then version 2 as ``:latest``; after each
    step read which digest each tag names in the registry."""
    registry.validate_port(port)

    def experiment() -> pd.DataFrame:
        client = lab.engine
        rows: list[dict[str, str]] = []
        with app_registry(lab, port) as at:
            reg, scope, base, repository = at.reg, at.scope, at.base, at.repository
            pushed: dict[str, str] = {}
            references: list[str] = []
            built = {version: build_app(scope, base, f"app {version}", f"{scope.name('app')}:{version[-1]}").image_id
                     for version in ("version 1", "version 2")}

            def push(version: str, tags: tuple[str, ...], step: str) -> None:
                for tag in tags:
                    reference = reg.reference(repository, tag)
                    run([docker_cli(), "tag", built[version], reference], 30)
                    references.append(reference)
                    run([docker_cli(), "push", reference], 300)
                    pushed[digest_of(reg, repository, tag)] = version
                for tag in sorted(reg.tags(repository)):
                    digest = digest_of(reg, repository, tag)
                    rows.append({"step": step, "tag": tag, "digest": digest, "names": pushed.get(digest, "?")})

            try:
                push("version 1", ("1", "latest"), PUSHED_1)
                push("version 2", ("2",), PUSHED_2)
                push("version 2", ("latest",), MOVED)
            finally:
                forget(client, *references)
        return pd.DataFrame(rows)

    return LatestResult(lab.measure("latest", experiment, port=port))


# ---------------------------------------------------------------- 3. one tag for two platforms


def run_manifest_list(lab: LabSession, port: int | None = None) -> registry.ManifestResult:
    """Notebook 11's experiment: amd64 and arm64 busybox under one tag, pulled once per platform."""
    registry.validate_port(port)

    def experiment() -> pd.DataFrame:
        with lab.scope() as scope:
            return registry.busybox_under_one_tag(lab.engine, scope, port)

    return registry.ManifestResult(lab.measure("manifest", experiment, port=port))


"""Section 2: each service built single-stage and multi-stage, cold and after an edit; the images measured.

The images are measured (``docker save``, their layers read, syft) once every build is done, two at a time: a
build timed while syft ran beside it took 2.5× as long as its twin (seen in a quick run), and syft and
``docker save`` each keep about one core busy, so two measurements side by side take about the time of one.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pandas as pd

from labkit.core.results import rows_where
from labkit.core.session import LabSession
from labkit.instruments import builds, images, layers, measure, undo, wheelhouse
from labkit.labs.multi_stage_builds.declaration import (
    BUILD_COLUMNS,
    COLD,
    COLUMNS,
    EDITED,
    MB,
    MULTI,
    PACKAGE_MANAGERS,
    SERVICES,
    SHELLS,
    SINGLE,
    STEM,
    SYFT_VERSION,
    Service,
    greeter_wheelhouse,
    sbom_packages,
    validate_services,
)


def _context(folder: Path, service: Service, dockerfile: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in service.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    if service.base == "python-runtime":
        shutil.copytree(greeter_wheelhouse(), folder / "wheels", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(wheelhouse.COMPLETE))
    (folder / "Dockerfile").write_text(dockerfile)
    (folder / ".dockerignore").write_text("Dockerfile\n.dockerignore\n")


@dataclass(frozen=True)
class MultiStageResult:
    """`images`: one row per service and variant: builder base, image size (bytes), regular files in the file
    system a container starts with (the layers merged), whether a shell and a package manager are in it, SBOM
    packages (syft) and layers — of the first cold build. `builds`: one row per build — repeat, `cold`
    (``--no-cache``) or `after an edit` (a one-line source edit, the layer cache in use), wall time (s), the steps
    its log reports cached and executed (FROM not counted), the first executed and every executed step."""

    images: pd.DataFrame
    builds: pd.DataFrame

    def row(self, service: str, variant: str) -> pd.Series:
        return self.images.set_index(["service", "variant"]).loc[(service, variant)]

    def ratio(self, service: str) -> float:
        """Single-stage image size over multi-stage's."""
        return float(self.row(service, SINGLE)["image_bytes"] / self.row(service, MULTI)["image_bytes"])

    @property
    def services(self) -> list[str]:
        return list(dict.fromkeys(self.images["service"]))

    def table(self) -> pd.DataFrame:
        view = self.images.set_index(["service", "variant"])
        return view.assign(image_mb=view["image_bytes"] / MB)[
            ["image_mb", "files", "has_shell", "has_package_manager", "sbom_packages"]]

    def times(self) -> pd.DataFrame:
        """Per service, variant and build: builds (n), median wall time (s) with its order-statistic interval, and
        the steps the logs report cached (lowest–highest) and executed on the first repeat."""
        rows = []
        for (service, variant, build), frame in self.builds.groupby(["service", "variant", "build"], sort=False):
            summary = measure.summarize(frame["wall_s"].tolist())
            rows.append({"service": service, "variant": variant, "build": build, "n": summary.n,
                         "median_s": summary.median, "ci_low_s": summary.ci_low, "ci_high_s": summary.ci_high,
                         "coverage": summary.coverage,
                         "cached": f"{frame['cached'].min()}–{frame['cached'].max()}",
                         "executed": frame["executed_steps"].iloc[0]})
        return pd.DataFrame(rows).set_index(["service", "variant", "build"])

    def median_s(self, service: str, variant: str, build: str) -> float:
        rows = rows_where(self.builds, service=service, variant=variant, build=build)
        return float(rows["wall_s"].median())

    def unexpected(self) -> list[str]:
        """Builds whose log contradicts their name: a cold build with a step from the cache that writes files (a
        WORKDIR BuildKit shares between builds of the same base is let through and reported by :meth:`conclusion`),
        or a build after an edit whose first executed step is not the COPY of the edited file. Empty when every
        build was what it is called."""
        found = []
        for build in self.builds.itertuples():
            where = f"{build.service} {build.variant} {build.build} (repeat {build.repeat})"
            # a build with nothing cached has an empty cell, which a replay reads back as NaN
            cached = [step for step in ("" if pd.isna(build.cached_steps) else str(build.cached_steps)).split("; ")
                      if step]
            if build.build == COLD and any(not step.startswith("WORKDIR") for step in cached):
                found.append(f"{where}: from the cache {'; '.join(cached)}")
            if build.build == EDITED and not _copies(str(build.first_executed), SERVICES[str(build.service)]):
                found.append(f"{where}: first executed {build.first_executed!r}")
        return found

    def conclusion(self) -> str:
        parts = []
        for service in self.services:
            single, multi = self.row(service, SINGLE), self.row(service, MULTI)
            timed = "; ".join(
                f"{variant} {build} {self.median_s(service, variant, build):.1f} s"
                for variant in (SINGLE, MULTI) for build in dict.fromkeys(self.builds["build"]))
            parts.append(
                f"**{service}**: {single['image_bytes'] / MB:.1f} MB → **{multi['image_bytes'] / MB:.1f} MB** "
                f"({_smaller(self.ratio(service))}), {int(single['files']):,} → {int(multi['files']):,} files, "
                f"{int(single['sbom_packages'])} → {int(multi['sbom_packages'])} packages in the SBOM; a shell "
                f"{'stays' if multi['has_shell'] else 'is gone'}, a package manager "
                f"{'stays' if multi['has_package_manager'] else 'is gone'}; median build times: {timed}")
        wrong = self.unexpected()
        cold = self.builds[self.builds["build"] == COLD]
        shared = cold[cold["cached"] > 0]
        checked = ("As their logs show, every cold build ran every step that writes files"
                   + (f" (BuildKit still reported `{'`, `'.join(sorted(set(shared['cached_steps'])))}` cached in "
                      f"{len(shared)} of "
                      f"{len(cold)}: an empty folder it had made for an earlier build on the same base)"
                      if len(shared) else "")
                   + (" and every build after an edit re-ran from the `COPY` of the edited file on; for the "
                      "compiled services that includes the whole compile, from an empty compiler cache (Go's lived "
                      "in the previous compile step's container, which no later build sees), so their rebuild "
                      "after an edit costs about what a cold build does" if (self.builds["build"] == EDITED).any()
                      else "")
                   if not wrong else "**Not every build was what it is called**: " + "; ".join(wrong))
        return "**What we measured.** " + "; ".join(parts) + f". {checked}."


def _smaller(ratio: float) -> str:
    """How much smaller the multi-stage image is, given single-stage size / multi-stage size: as a factor from 2×
    on, below that as a percentage (1.01× smaller reads as a misprint; 0.9% smaller does not)."""
    if ratio >= 10:
        return f"{ratio:.0f}× smaller"
    return f"{ratio:.2f}× smaller" if ratio >= 2 else f"{1 - 1 / ratio:.1%} smaller"


def _copies(instruction: str, service: Service) -> bool:
    """Whether `instruction` is a COPY that takes the service's edited file (``COPY . .``, ``COPY app/ app/`` for
    app/greeting.py, ``COPY go.mod main.go ./``)."""
    words = instruction.split()
    if not words or words[0] != "COPY":
        return False
    sources = [w for w in words[1:-1] if not w.startswith("--")]
    return any(s in (".", "./") or service.edited == s or service.edited.startswith(s.rstrip("/") + "/")
               for s in sources)


def _build_row(service: str, variant: str, repeat: int, build: str, made: builds.Build) -> dict[str, Any]:
    ran = [s.instruction for s in made.log.steps if not s.cached and not s.instruction.startswith("FROM ")]
    return {"service": service, "variant": variant, "repeat": repeat, "build": build, "wall_s": made.wall_s,
            "cached": made.log.cached, "executed": made.log.executed, "first_executed": made.log.first_executed or "",
            "executed_steps": "; ".join(ran),
            "cached_steps": "; ".join(s.instruction for s in made.log.steps
                                      if s.cached and not s.instruction.startswith("FROM "))}


def _measure_image(client: docker.DockerClient, name: str, service: Service, variant: str, image_id: str,
                   scratch: Path) -> dict[str, Any]:
    saved_path = layers.save(client, image_id, scratch / f"{name}-{variant}.tar")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="labkit-04-syft") as beside:
        packages = beside.submit(sbom_packages, saved_path)  # syft reads the tarball while Python reads its layers
        saved = layers.read_saved(saved_path)
        view = saved.merged()
        row = {"service": name, "variant": variant, "base": service.base,
               "image_bytes": int(client.images.get(image_id).attrs["Size"]),
               "files": sum(1 for kind in view.values() if kind == "file"),
               "has_shell": any(p in view for p in SHELLS),
               "has_package_manager": any(p in view for p in PACKAGE_MANAGERS),
               "sbom_packages": packages.result(), "sbom_tool": f"syft {SYFT_VERSION}", "layers": len(saved.layers)}
    saved_path.unlink()
    return row


def _measure_images(client: docker.DockerClient, made: list[tuple[str, Service, str, str]],
                    scratch: Path) -> list[dict[str, Any]]:
    """The rows of :func:`_measure_image` for the images `made`, in their order, measured two at a time, the
    single-stage images (hundreds of MB) first so that both workers finish about together. On an error or Ctrl-C
    the measurements not started are dropped and the running ones finish before the scope removes their images."""
    largest_first = sorted(made, key=lambda image: image[2] != SINGLE)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="labkit-04-measure") as workers:
        futures = {image[::2]: workers.submit(_measure_image, client, *image, scratch) for image in largest_first}
        try:
            return [futures[image[::2]].result() for image in made]
        finally:
            for future in futures.values():
                future.cancel()


def run_images(lab: LabSession, services: list[str] | tuple[str, ...] = tuple(SERVICES), rebuild: bool = True,
               repeats: int = 1) -> MultiStageResult:
    """Build each service single-stage and multi-stage (BuildKit) cold with --no-cache, then (when `rebuild`) again
    after appending a comment line to its source, `repeats` times, single- and multi-stage alternating first; the
    images of the first cold builds are measured. Each edit names this experiment, repeat and variant, so no layer
    cached by an earlier run, or by the other variant (both copy the same files onto the same builder base),
    matches it. The logs check both: FROM is never counted (a second stage on the builder's base is reported
    CACHED)."""
    validate_services(services)
    measure.validate_repeats(repeats)

    def experiment() -> dict[str, pd.DataFrame]:
        client = lab.engine
        made: list[tuple[str, Service, str, str]] = []  # the first cold builds: service, its declaration, variant, id
        build_rows: list[dict[str, Any]] = []
        with lab.scope() as scope, undo.temporary_folder("labkit-04-") as scratch:
            for repeat in range(repeats):
                for name in services:
                    service = SERVICES[name]
                    base = images.require_base(client, service.base).tag
                    runtime = images.require_base(client, service.runtime).tag
                    variants = ((SINGLE, service.single), (MULTI, service.multi))
                    for variant, template in (variants if repeat % 2 == 0 else variants[::-1]):
                        folder = Path(scratch) / f"{name}-{variant}-{repeat}"
                        _context(folder, service, template.format(base=base, runtime=runtime))
                        # A line naming this build in the edited file: BuildKit's --no-cache still took the
                        # other variant's just-made COPY of the same files on the same base (seen in a full run).
                        edited = folder / service.edited
                        comment = "#" if name == "python" else "//"
                        edited.write_text(edited.read_text() + f"{comment} {scope.scope_id}-{repeat}-{variant}\n")
                        tag = f"labkit-exp/{STEM}-{name}:{variant}-{repeat}-{scope.scope_id}"
                        cold = builds.build(folder, tag, scope, no_cache=True)
                        build_rows.append(_build_row(name, variant, repeat, COLD, cold))
                        if repeat == 0:
                            made.append((name, service, variant, cold.image_id))
                        if rebuild:
                            edited.write_text(edited.read_text() + f"{comment} edited\n")
                            build_rows.append(_build_row(name, variant, repeat, EDITED,
                                                         builds.build(folder, tag + "-edited", scope)))
                        shutil.rmtree(folder)
            rows = _measure_images(client, made, Path(scratch))
        return {"images": pd.DataFrame(rows, columns=list(COLUMNS)),
                "builds": pd.DataFrame(build_rows, columns=list(BUILD_COLUMNS))}

    tables = lab.record("images", ("images", "builds"), experiment, services=list(services), rebuild=rebuild,
                        repeats=repeats, builder="buildkit")
    return MultiStageResult(tables["images"], tables["builds"])



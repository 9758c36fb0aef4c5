"""Section 1: a moved tag against a pinned digest."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import registry
from labkit.instruments.engine import docker_cli
from labkit.instruments.shell import run
from labkit.labs.tags_digests_and_registries.declaration import app_registry, build_app, digest_of, forget, say


@dataclass(frozen=True)
class MovedTagResult:
    """`steps`: step, reference, kind (push / pull by tag / pull by digest), digest (what the registry named or the
    pull resolved to), image_id, output (what the image printed when run)."""

    steps: pd.DataFrame

    def step(self, name: str) -> pd.Series:
        return self.steps.set_index("step").loc[name]

    @property
    def tag_moved(self) -> bool:
        return str(self.step("push 1.0 (first build)")["digest"]) != str(self.step("push 1.0 (rebuilt)")["digest"])

    @property
    def digest_pinned(self) -> bool:
        """Pulling by the first push's digest, after the tag moved, ran the first build; the tag ran the second."""
        first, second = self.step("push 1.0 (first build)"), self.step("push 1.0 (rebuilt)")
        by_digest, by_tag = self.step("pull by the old digest"), self.step("pull 1.0 by tag")
        return (str(by_digest["output"]) == str(first["output"]) and str(by_tag["output"]) == str(second["output"])
                and str(first["output"]) != str(second["output"]))

    def conclusion(self) -> str:
        first, second = self.step("push 1.0 (first build)"), self.step("push 1.0 (rebuilt)")
        by_tag, by_digest = self.step("pull 1.0 by tag"), self.step("pull by the old digest")
        return (f"**What we measured.** The first push of `app:1.0` named `{first['digest'][:19]}…`; after the "
                f"rebuild the same tag named `{second['digest'][:19]}…` — "
                f"{'the tag moved' if self.tag_moved else 'THE TAG DID NOT MOVE'}. With both images removed "
                f"from the engine, pulling `app:1.0` ran and printed **{by_tag['output']!r}**, while pulling "
                f"`app@{first['digest'][:19]}…` printed **{by_digest['output']!r}**. "
                + ("A digest is the hash of the manifest, so it can only ever name those bytes: pin by digest "
                   "where you need the same image tomorrow, and let a tool update the pin."
                   if self.digest_pinned else "THE DIGEST DID NOT PIN THE OLD IMAGE."))

    def online_commands(self) -> str:
        """The commands that scan and sign this image where the network and keys are available (markdown)."""
        pinned = f"registry.example.com/app@{self.step('push 1.0 (rebuilt)')['digest']}"
        return ("```sh\n"
                "# vulnerabilities: trivy downloads its database (ghcr.io/aquasecurity/trivy-db) on first use\n"
                f"trivy image --severity HIGH,CRITICAL {pinned}\n"
                "# an SBOM, then a scan of it (grype fetches its own database)\n"
                f"syft {pinned} -o spdx-json > app.spdx.json\ngrype sbom:app.spdx.json\n"
                "# sign the digest, never the tag: with a key pair, or keyless through Sigstore's services\n"
                f"cosign generate-key-pair\ncosign sign --key cosign.key {pinned}\n"
                f"cosign verify --key cosign.pub {pinned}\n```")


def run_moved_tag(lab: LabSession, port: int | None = None) -> MovedTagResult:
    """Build and push ``app:1.0``, rebuild it with a change and push ``app:1.0`` again; then, with both images
    removed from the engine, pull the tag and the first push's digest and run each."""
    registry.validate_port(port)

    def experiment() -> pd.DataFrame:
        client = lab.engine
        rows = []
        with app_registry(lab, port) as at:
            reg, scope, base, repository = at.reg, at.scope, at.base, at.repository
            reference = reg.reference(repository, "1.0")
            try:
                for step, message in (("push 1.0 (first build)", "app 1.0, first build"),
                                      ("push 1.0 (rebuilt)", "app 1.0, rebuilt with a change")):
                    built = build_app(scope, base, message, reference)
                    run([docker_cli(), "push", reference], 300)
                    rows.append({"step": step, "reference": reference, "kind": "push",
                                 "digest": digest_of(reg, repository, "1.0"), "image_id": built.image_id,
                                 "output": say(scope, reference)})
                old = f"{reg.address}/{repository}@{rows[0]['digest']}"
                forget(client, reference, rows[0]["image_id"], rows[1]["image_id"])
                for step, pulled in (("pull 1.0 by tag", reference), ("pull by the old digest", old)):
                    run([docker_cli(), "pull", pulled], 300)
                    image = client.images.get(pulled)
                    digests = [d.split("@", 1)[1] for d in image.attrs.get("RepoDigests") or []]
                    rows.append({"step": step, "reference": pulled, "kind": "pull by " + step.split()[-1],
                                 "digest": ";".join(sorted(digests)), "image_id": image.id,
                                 "output": say(scope, pulled)})
            finally:
                forget(client, reference, *(r["reference"] for r in rows if "@" in r["reference"]))
        return pd.DataFrame(rows)

    return MovedTagResult(lab.measure("moved_tag", experiment, port=port))


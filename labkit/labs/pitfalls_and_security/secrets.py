"""Section 7: a secret passed as -e, as a build ARG and as a BuildKit secret mount: where each can be read back."""

from __future__ import annotations

import secrets as random_secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from labkit.core.results import rows_where
from labkit.core.session import LabSession
from labkit.instruments import containers, images, layers, processes, undo
from labkit.labs.pitfalls_and_security.declaration import (
    BASE,
    build_asset,
    limits_for,
    probe_argv,
    probe_images,
    wait_ready,
)

ENV = "docker run -e"
ARG = "build ARG"
MOUNT = "RUN --mount=type=secret"
INSPECT, ENVIRON = "docker inspect (Config.Env)", "/proc/<pid>/environ on the host"
HISTORY, SAVED = "docker history", "the saved image (config and every layer's files)"
USED = "the step used it (/opt/used.txt)"
WAYS = (ENV, ARG, MOUNT)


@dataclass(frozen=True)
class SecretResult:
    """`places`: way (how the secret was passed), place (where we looked), found (the secret's bytes are there),
    detail (where exactly, or what the step wrote). The secret is a random token drawn for each run; the row of
    :data:`USED` says whether the build step read it (it wrote the token's length), not where it is found."""

    places: pd.DataFrame

    def found(self, way: str, place: str) -> bool:
        rows = rows_where(self.places, way=way, place=place)
        return bool(rows["found"].iloc[0])

    def found_anywhere(self, way: str) -> list[str]:
        rows = self.places[(self.places["way"] == way) & self.places["found"] & (self.places["place"] != USED)]
        return list(rows["place"])

    def detail(self, way: str, place: str) -> str:
        rows = rows_where(self.places, way=way, place=place)
        return str(rows["detail"].iloc[0])

    def matrix(self) -> pd.DataFrame:
        """place × way of found (✓) / not found (·) / not looked (blank)."""
        table = self.places.assign(mark=self.places["found"].map({True: "✓", False: "·"}))
        return table.pivot(index="place", columns="way", values="mark").reindex(columns=list(WAYS)).fillna("")

    def conclusion(self) -> str:
        def where(way: str) -> str:
            places = self.found_anywhere(way)
            return f"found in {', '.join(places)}" if places else "found nowhere we looked"
        return (f"**What we measured.** `{ENV}`: {where(ENV)}. `{ARG}`: {where(ARG)} (the history's line: "
                f"`{self.detail(ARG, HISTORY)[:70]}…`; in the saved image: {self.detail(ARG, SAVED)}). `{MOUNT}`: "
                f"**{where(MOUNT)}**, although the step did read it (it "
                f"wrote: \"{self.detail(MOUNT, USED)}\").")


def _holding(entries: Iterable[str], token: str) -> str:
    """The first of `entries` that holds `token`, with the token shown as ``<token>`` (or "nowhere")."""
    return next((entry.replace(token, "<token>") for entry in entries if token in entry), "nowhere")


def run_secrets(lab: LabSession, memory_limit_mib: int = 64) -> SecretResult:
    """A fresh random token passed three ways, then looked for as bytes: docker inspect and the host's
    /proc/<pid>/environ for -e; docker history and the saved image (config and layer tars, read with the layer
    reader) for the two builds; the token file lives in this lab's temporary folder only while the build runs."""
    limits = limits_for(lab, memory_limit_mib)
    lab.require_root("reading a container's /proc/<pid>/environ")

    def experiment() -> pd.DataFrame:
        client = lab.engine
        token = f"labkit-token-{random_secrets.token_hex(16)}"
        rows = []
        with lab.scope() as scope, undo.temporary_folder("labkit-10-secrets-") as folder:
            with probe_images(client, scope) as made, containers.running(
                    client, scope, made.root, probe_argv("wait"), stem="secret-env", limits=limits,
                    environment={"API_TOKEN": token}) as container:
                wait_ready(container)
                env = client.api.inspect_container(container.id)["Config"]["Env"]
                environ = processes.environ(containers.host_pid(client, container.id))
                rows += [{"way": ENV, "place": place, "found": any(token in e for e in entries),
                          "detail": _holding(entries, token)}
                         for place, entries in ((INSPECT, env), (ENVIRON, environ))]
            base = images.require_base(client, BASE).tag
            token_file = Path(folder) / "api_token"
            token_file.write_text(token)
            built = {ARG: build_asset(scope, Path(folder), "Dockerfile.arg-secret", "secret-arg", base,
                                      build_args={"API_TOKEN": token}),
                     MOUNT: build_asset(scope, Path(folder), "Dockerfile.mount-secret", "secret-mount", base,
                                        secrets={"api_token": token_file})}
            token_file.unlink()
            for way, image in built.items():
                history = layers.engine_history(client, image.tag)
                saved = layers.places_holding(layers.save(client, image.tag, Path(folder) / f"{len(rows)}.tar"),
                                              token.encode())
                used = containers.run_once(client, scope, image.tag, ["cat", "/opt/used.txt"], limits=limits)
                rows += [{"way": way, "place": HISTORY, "found": history["created_by"].str.contains(token).any(),
                          "detail": _holding(history["created_by"], token)},
                         {"way": way, "place": SAVED, "found": bool(saved), "detail": "; ".join(saved) or "nowhere"},
                         {"way": way, "place": USED, "found": used.startswith(b"token of"),
                          "detail": used.decode().strip()}]
        return pd.DataFrame(rows)

    return SecretResult(lab.measure("secrets", experiment, **limits.record()))

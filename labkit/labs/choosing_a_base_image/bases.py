"""Section 1: what each base holds: size, compressed size, packages, push and pull time through a local registry."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import docker
import docker.errors
import pandas as pd

from labkit.core.claims import Verdict, verdict
from labkit.core.session import LabSession
from labkit.errors import BadParameter, EngineError
from labkit.instruments import containers, images, inventory, measure, registry
from labkit.instruments.engine import docker_cli
from labkit.instruments.shell import run
from labkit.labs.choosing_a_base_image.declaration import (
    CHAPTER_TABLE,
    LAB,
    LIMITS,
    MB,
    NODE_FAMILY,
    QUICK_BASES,
    SIZE_TOLERANCE,
    app_argv,
    validate_bases,
    validate_extra_images,
)


@dataclass(frozen=True)
class BaseTable:
    """`bases`: one row per base — base, image, stands_in_for, size_bytes (unpacked, as the engine counts it),
    compressed_bytes (its layers gzipped as the registry stores them, plus its config), layers, files and
    file_bytes (regular files), setuid_files and setuid_paths (setuid or setgid), shells and package_managers
    present (';'-joined), packages (installed per dpkg), user (the image's USER; '' is root), app (the command
    timed) and app_output (what it printed).

    `transfers`: base, action (push / pull), repeat, wall_s, compressed_bytes, size_bytes, same_image (the pulled
    image has the pushed image's id)."""

    bases: pd.DataFrame
    transfers: pd.DataFrame

    def row(self, base: str) -> pd.Series:
        return self.bases.set_index("base").loc[base]

    def has(self, base: str) -> bool:
        return base in set(self.bases["base"])

    def mb(self, base: str, column: str = "size_bytes") -> float:
        return float(self.row(base)[column]) / MB

    @property
    def cold_pulls(self) -> pd.DataFrame:
        """The pulls that fetched every layer (none was already in the engine)."""
        t = self.transfers
        return t[(t["action"] == "pull") & (t["layers_reused"] == 0)]

    @property
    def warm_pulls(self) -> list[str]:
        """Bases with a pull that found a layer already in the engine (e.g. one BuildKit's build cache still holds
        after the image was removed): those pulls are left out of the pull times and the fit."""
        t = self.transfers
        return sorted(set(t.loc[(t["action"] == "pull") & (t["layers_reused"] > 0), "base"]))

    @cached_property
    def sizes(self) -> pd.DataFrame:
        """Per base, largest first: size_mb, compressed_mb, compression (size / compressed), median push_s and
        pull_s (cold pulls only; NaN when none was cold), files, packages, setuid_files, shell, package manager."""
        pulls = self.cold_pulls.groupby("base")["wall_s"].median()
        pushes = self.transfers[self.transfers["action"] == "push"].groupby("base")["wall_s"].median()
        b = self.bases.set_index("base")
        table = pd.DataFrame({
            "stands_in_for": b["stands_in_for"], "size_mb": b["size_bytes"] / MB,
            "compressed_mb": b["compressed_bytes"] / MB, "compression": b["size_bytes"] / b["compressed_bytes"],
            "push_s": pushes, "pull_s": pulls, "files": b["files"], "packages": b["packages"],
            "setuid_files": b["setuid_files"], "shell": b["shells"].fillna("").astype(str),
            "package_manager": b["package_managers"].fillna("").astype(str),
            "user": b["user"].fillna("").astype(str).replace("", "root")})
        return table.sort_values("size_mb", ascending=False)

    @cached_property
    def chapter(self) -> pd.DataFrame:
        """The chapter's table beside ours: image, chapter_mb, base, measured_mb, factor (measured over the
        chapter's size), rank_agrees (same place in the order among the rows measured), verdict and why.

        A row with a size holds when its stand-in is within :data:`SIZE_TOLERANCE`× of the chapter's size and does
        not hold otherwise; the scratch row (the base adds nothing) holds with the caveat that one program on
        FROM scratch is all there is by construction; a row without a stand-in here is inconclusive."""
        measured = [r for r in CHAPTER_TABLE if r.base and self.has(r.base)]
        ours = {r.image: self.mb(r.base) for r in measured}
        chapter_order = [r.image for r in sorted(measured, key=lambda r: -r.chapter_mb)]
        our_order = sorted(ours, key=lambda image: -ours[image])
        rows = []
        for r in CHAPTER_TABLE:
            if r.image not in ours:
                why = r.why_not or f"base {r.base} was not measured in this run (quick mode measures fewer)"
                rows.append({"image": r.image, "chapter_mb": r.chapter_mb, "base": r.base or "—",
                             "measured_mb": math.nan, "factor": math.nan, "rank_agrees": False,
                             "verdict": Verdict.INCONCLUSIVE.value, "why": why})
                continue
            rank_agrees = chapter_order.index(r.image) == our_order.index(r.image)
            if r.chapter_mb == 0:
                files = int(self.row(r.base)["files"])
                factor = math.nan
                row_verdict = verdict(files == 1, caveat=True)
                why = (f"by construction: FROM scratch and the {ours[r.image]:.1f} MB program alone ({files} file); "
                       "the base adds nothing")
            else:
                factor = ours[r.image] / r.chapter_mb
                row_verdict = verdict(1 / SIZE_TOLERANCE <= factor <= SIZE_TOLERANCE)
                why = (f"{ours[r.image]:.0f} MB against the chapter's ~{r.chapter_mb:.0f} MB ({factor:.2f}×); "
                       f"the stand-in: {r.stand_in}")
            rows.append({"image": r.image, "chapter_mb": r.chapter_mb, "base": r.base, "measured_mb": ours[r.image],
                         "factor": factor, "rank_agrees": rank_agrees, "verdict": row_verdict.value, "why": why})
        return pd.DataFrame(rows)

    @property
    def sized_rows(self) -> pd.DataFrame:
        """The rows of :attr:`chapter` with a size in the chapter and a stand-in measured here."""
        c = self.chapter
        return c[(c["chapter_mb"] > 0) & c["measured_mb"].notna()]

    @property
    def node_family_measured(self) -> list[str]:
        return [b for b in NODE_FAMILY if self.has(b)]

    @property
    def node_family_ordered(self) -> bool:
        """Each measured base of the node family is smaller than the one before it (full > slim > distroless >
        scratch)."""
        sizes = [self.mb(b) for b in self.node_family_measured]
        return len(sizes) >= 2 and all(a > b for a, b in itertools.pairwise(sizes))

    def conclusion(self) -> str:
        s = self.sizes
        largest, smallest = s.index[0], s.index[-1]
        order = " > ".join(f"{b} {r.size_mb:.1f}" for b, r in s.iterrows())
        compression = s["compression"]
        return (f"**What we measured** ({len(s)} bases, MB unpacked): {order}. The largest, **{largest}**, is "
                f"{s['size_mb'].iloc[0] / s['size_mb'].iloc[-1]:.0f}× the smallest, **{smallest}**. Gzipped as the "
                f"registry stores them, the layers shrink {compression.min():.1f}× to {compression.max():.1f}× "
                f"(median {compression.median():.1f}×): what crosses the network is the compressed size, what "
                "fills the disk is the unpacked one.")

    def chapter_conclusion(self) -> str:
        c, sized = self.chapter, self.sized_rows
        judged = c[c["verdict"] != Verdict.INCONCLUSIVE.value]
        close = sized[sized["verdict"] == Verdict.HOLDS.value]
        off = sized[sized["verdict"] != Verdict.HOLDS.value]
        missing = ", ".join(c.loc[c["verdict"] == Verdict.INCONCLUSIVE.value, "image"]) or "none"
        return (f"**Beside the chapter.** Of the {len(sized)} rows with a size that we could measure, **{len(close)}** "
                f"come within {SIZE_TOLERANCE:g}× of the chapter's: "
                + ("; ".join(f"{r.image} {r.factor:.2f}×" for r in close.itertuples()) or "none")
                + (". Off by more: " + "; ".join(f"{r.image}, {r.why}" for r in off.itertuples()) if len(off) else "")
                + f". {int(judged['rank_agrees'].sum())} of {len(judged)} rows sit in the chapter's order, which is "
                "certain here by construction: each stand-in holds a subset of the one before it. Registry images are "
                f"built apart from one another, so only they can test the order. Not measured here: {missing}.")

    def surface_conclusion(self) -> str:
        s = self.sizes
        without_shell = [b for b, r in s.iterrows() if not r["shell"]]
        with_setuid = {b: int(r.setuid_files) for b, r in s.iterrows() if r.setuid_files}
        setuid = ", ".join(f"{b} {n}" for b, n in with_setuid.items()) or "none"
        return (f"**What we measured.** Files: from {int(s['files'].max())} ({s['files'].idxmax()}) down to "
                f"{int(s['files'].min())} ({s['files'].idxmin()}); installed packages from "
                f"{int(s['packages'].max())} down to {int(s['packages'].min())}. Setuid/setgid programs — the "
                f"ones a local attacker tries first — per base: {setuid}. No shell at all in: "
                f"**{', '.join(without_shell) or 'none'}**; a package manager in: "
                f"{', '.join(b for b, r in s.iterrows() if r['package_manager']) or 'none'}. A program left out is "
                "one an intruder cannot use. The distroless-style stand-ins are not free of libraries: they keep the "
                "shared libraries their runtime loads (its ldd closure, copied from the slim image: the C library, "
                "and for node its TLS and Unicode libraries among them), only without the package records, so a "
                "scanner that reads those records cannot *see* them, let alone flag their vulnerabilities.")


def stands_in_for(description: str) -> str:
    """What a recipe's `description` says its base stands in for: the text of its last ``(stands in for …)``, with
    only that parenthesis's closing ")" taken off (the name itself may end in one of its own)."""
    named = description.rsplit("(stands in for ", 1)[-1]
    return named.removesuffix(")")


@contextmanager
def _cold(client: docker.DockerClient, base: images.BaseImage, reference: str) -> Iterator[None]:
    """Remove `base`'s image from the engine entirely (its tag and the registry reference), so that the next pull
    fetches every layer; afterwards the pulled image carries the base's tag again, whatever happened."""
    run([docker_cli(), "rmi", reference, base.tag], 120)
    try:
        kept = client.images.get(base.image_id)
    except docker.errors.ImageNotFound:
        pass
    else:  # another tag or an image built on it keeps it: give it its tag back and say why a pull cannot be cold
        run([docker_cli(), "tag", base.image_id, base.tag], 30)
        raise EngineError(f"{base.tag} stays in the engine (tags {kept.tags}, or images built on it), so a pull "
                          "would not be cold.", "Remove those tags or images first (`docker images` lists them).")
    try:
        yield
    finally:
        try:
            client.images.get(reference)
        except docker.errors.ImageNotFound:
            pass  # the pull failed: `labkit setup 05` makes the base again
        else:
            run([docker_cli(), "tag", reference, base.tag], 30)


def _timed_cli(action: str, reference: str) -> tuple[float, str]:
    """``docker push`` or ``docker pull`` of `reference`: wall time (s) and what the CLI printed."""
    started = time.perf_counter_ns()
    done = run([docker_cli(), action, reference], 1800)
    return (time.perf_counter_ns() - started) / 1e9, done.stdout


def _reused(output: str) -> int:
    """Layers a push or pull did not transfer because the other side already had them (the CLI says so per
    layer: "Layer already exists" on push, "Already exists" on pull)."""
    return sum(1 for line in output.splitlines() if line.rstrip().lower().endswith("already exists"))


def _pushed_bytes(reg: registry.Registry, repository: str, tag: str) -> tuple[int, int]:
    """(compressed bytes, layers) of what the registry stores for `repository`:`tag`: its layers and config."""
    manifest = reg.manifest(repository, tag)
    layers = manifest.get("layers", [])
    return sum(int(layer["size"]) for layer in layers) + int(manifest["config"]["size"]), len(layers)


def run_bases(lab: LabSession, bases: Sequence[str] = QUICK_BASES, pull_repeats: int = 1,
              extra_images: Sequence[str] = (), extra_argv: Sequence[str] = (), port: int | None = None) -> BaseTable:
    """For each base (and each of `extra_images`, already pulled by the reader, run with `extra_argv`): its size,
    what its filesystem holds, the app's output, one push to a fresh local registry on 127.0.0.1 (`port` or a
    free one) and `pull_repeats` cold pulls, each after the image was removed from the engine."""
    chosen = validate_bases(bases)
    measure.validate_repeats(pull_repeats, names=("pull_repeats", "warmup"))
    registry.validate_port(port)
    extra = validate_extra_images(lab.client if lab.live else None, extra_images)
    if extra and not extra_argv:
        raise BadParameter("extra_images needs extra_argv: the command that prints a line in them.",
                           "E.g. extra_argv=['node', '-e', \"console.log('hello')\"].")

    def experiment() -> dict[str, pd.DataFrame]:
        client = lab.engine
        made = {name: images.require_base(client, name) for name in chosen}
        rows, transfers = [], []
        with registry.running(port) as reg, lab.scope() as scope:
            for name in [*chosen, *extra]:
                base = made.get(name)
                tag = base.tag if base else name
                image = client.images.get(tag)
                argv = app_argv(name, tuple(extra_argv))
                found = inventory.inventory(client, tag, scope.labels)
                output = run(containers.cli_run_argv(scope, tag, argv, limits=LIMITS), 120).stdout.strip()
                repository = f"labkit/{scope.scope_id}/{name.replace(':', '-').replace('/', '-')}"
                reference = reg.reference(repository, "1")
                run([docker_cli(), "tag", tag, reference], 30)
                try:
                    push_s, pushed = _timed_cli("push", reference)
                    compressed, layer_count = _pushed_bytes(reg, repository, "1")
                    common = {"base": name, "compressed_bytes": compressed, "size_bytes": int(image.attrs["Size"])}
                    transfers.append({**common, "action": "push", "repeat": 0, "wall_s": push_s, "same_image": True,
                                      "layers_reused": _reused(pushed)})
                    for repeat in range(pull_repeats):
                        owned = base if base else images.BaseImage(name, tag, image.id, "", 0, 0.0)
                        with _cold(client, owned, reference):
                            pull_s, pulled = _timed_cli("pull", reference)
                        same = client.images.get(tag).id == image.id
                        transfers.append({**common, "action": "pull", "repeat": repeat, "wall_s": pull_s,
                                          "same_image": same, "layers_reused": _reused(pulled)})
                finally:
                    run([docker_cli(), "rmi", reference], 60, check=False)
                config = image.attrs.get("Config") or {}
                rows.append({
                    "base": name, "image": tag,
                    "stands_in_for": stands_in_for(images.recipe(name).description) if base
                    else "itself (pulled by the reader)",
                    "size_bytes": int(image.attrs["Size"]), "compressed_bytes": compressed, "layers": layer_count,
                    "files": found.files, "file_bytes": found.file_bytes, "setuid_files": len(found.setuid),
                    "setuid_paths": ";".join(found.setuid), "shells": ";".join(found.shells),
                    "package_managers": ";".join(found.package_managers), "packages": found.packages,
                    "user": str(config.get("User") or ""), "app": " ".join(argv), "app_output": output})
        return {"bases": pd.DataFrame(rows), "transfers": pd.DataFrame(transfers)[list(LAB.tables["transfers"])]}

    tables = lab.record("bases", ("bases", "transfers"), experiment, bases=list(chosen), pull_repeats=pull_repeats,
                        extra_images=list(extra), port=port)
    return BaseTable(tables["bases"], tables["transfers"])

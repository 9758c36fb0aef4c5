"""Section 1: what each base holds: size, compressed size, packages, push and pull time through a local registry."""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import docker
import docker.errors
import pandas as pd

from labkit.core.claims import Verdict, verdict
from labkit.core.session import LabSession
from labkit.errors import BadParameter, EngineError
from labkit.instruments import containers, diskquiet, images, inventory, measure, registry
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

    `transfers`: base, action (push / pull), repeat (the round of pulls), position (in its round's order), wall_s,
    compressed_bytes, size_bytes, same_image (the pulled image has the pushed image's id), layers_reused (layers the
    CLI reported "Already exists") and layers_before (the image's layers the engine held as the pull began, checked
    after the image was removed; 0 for a cold pull, -1 where the engine's layer store cannot be read, empty in a
    recording made before it was checked), settle_s (how long the pull waited for the disk to go quiet after the
    removal, the sync included) and quiet (whether it did within the limit; empty where nothing was watched)."""

    bases: pd.DataFrame
    transfers: pd.DataFrame

    def row(self, base: str) -> pd.Series:
        return self.bases.set_index("base").loc[base]

    def has(self, base: str) -> bool:
        return base in set(self.bases["base"])

    def mb(self, base: str, column: str = "size_bytes") -> float:
        return float(self.row(base)[column]) / MB

    @property
    def _warm(self) -> pd.Series:
        """Pulls that did not start from nothing: a layer was in the engine before, or the CLI found one there."""
        t = self.transfers
        return (t["action"] == "pull") & ((t["layers_reused"] > 0) | (t["layers_before"] > 0))

    @property
    def cold_pulls(self) -> pd.DataFrame:
        """The pulls that fetched every layer: none of the image's layers was in the engine before (checked) and
        the CLI reported none already there."""
        t = self.transfers
        return t[(t["action"] == "pull") & ~self._warm]

    @property
    def checked_cold(self) -> int:
        """Cold pulls whose start was checked: the image gone and none of its layers in the engine's layer store."""
        return int((self.cold_pulls["layers_before"] == 0).sum())

    @property
    def settles(self) -> pd.DataFrame:
        """Per cold pull: settle_s and quiet, how long it waited for a quiet disk and whether it got one (NaN in a
        recording made before pulls settled)."""
        return self.cold_pulls[["settle_s", "quiet"]]

    @property
    def warm_pulls(self) -> list[str]:
        """Bases with a pull that found a layer already in the engine (e.g. one BuildKit's build cache still holds
        after the image was removed): those pulls are left out of the pull times and the fit."""
        return sorted(set(self.transfers.loc[self._warm, "base"]))

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
            "setuid_files": b["setuid_files"], "shell": _text(b["shells"]),
            "package_manager": _text(b["package_managers"]), "user": _text(b["user"]).replace("", "root")})
        return table.sort_values("size_mb", ascending=False)

    @cached_property
    def chapter(self) -> pd.DataFrame:
        """The chapter's table beside ours: image, chapter_mb, base, measured_mb, factor (measured over the
        chapter's size), rank_agrees (same place in the order among the rows measured), verdict and why.

        A row with a size holds when its stand-in is within :data:`SIZE_TOLERANCE`× of the chapter's size and does
        not hold otherwise; the scratch row (the base adds nothing) holds with the caveat that one program on
        FROM scratch is all there is by construction; a row without a stand-in here, or whose stand-in lacks what
        the chapter's image carries (its size shown, `why` says what is missing), is inconclusive."""
        measured = [r for r in CHAPTER_TABLE if r.base and self.has(r.base) and not r.not_judged]
        ours = {r.image: self.mb(r.base) for r in measured}
        chapter_order = [r.image for r in sorted(measured, key=lambda r: -r.chapter_mb)]
        our_order = sorted(ours, key=lambda image: -ours[image])
        rows = []
        for r in CHAPTER_TABLE:
            if r.not_judged and self.has(r.base):
                rows.append({"image": r.image, "chapter_mb": r.chapter_mb, "base": r.base,
                             "measured_mb": self.mb(r.base), "factor": math.nan, "rank_agrees": False,
                             "verdict": Verdict.INCONCLUSIVE.value,
                             "why": f"{self.mb(r.base):.1f} MB, not judged: {r.not_judged}; the stand-in: "
                                    f"{r.stand_in}"})
                continue
            if r.image not in ours:
                why = r.why_not or f"base {r.base} was not among the bases this run measured"
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
        """The rows of :attr:`chapter` with a size in the chapter and a stand-in measured and judged here."""
        c = self.chapter
        return c[(c["chapter_mb"] > 0) & c["measured_mb"].notna() & (c["verdict"] != Verdict.INCONCLUSIVE.value)]

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
        missing = " ".join(f"**{r.image}**: {r.why}." for r in c[c["verdict"] == Verdict.INCONCLUSIVE.value]
                           .itertuples()) or "none."
        return (f"**Beside the chapter.** Of the {len(sized)} rows with a size that we could measure, **{len(close)}** "
                f"come within {SIZE_TOLERANCE:g}× of the chapter's: "
                + ("; ".join(f"{r.image} {r.factor:.2f}×" for r in close.itertuples()) or "none")
                + (". Off by more: " + "; ".join(f"{r.image}, {r.why}" for r in off.itertuples()) if len(off) else "")
                + f". {int(judged['rank_agrees'].sum())} of {len(judged)} rows sit in the chapter's order, which is "
                "certain here by construction: each stand-in holds a subset of the one before it. Registry images are "
                f"built apart from one another, so only they can test the order. Not judged here: {missing}")

    def surface_conclusion(self) -> str:
        s = self.sizes
        without_shell = [b for b, r in s.iterrows() if not r["shell"]]
        with_setuid = {b: int(r.setuid_files) for b, r in s.iterrows() if r.setuid_files}
        setuid = ", ".join(f"{b} {n}" for b, n in with_setuid.items()) or "none"
        return (f"**What we measured.** Files: from {int(s['files'].max()):,} ({s['files'].idxmax()}) down to "
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
    """Remove `base`'s image from the engine entirely (its tag and the registry reference) and check that it is
    gone, so that the next pull of it must start from nothing; afterwards the pulled image carries the base's tag
    again, whatever happened. Only this one image is removed, so a failure leaves every other base in place."""
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


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The engine's names for an image's layer stack (OCI chain IDs): the first layer's diff ID, then
    sha256 of "<chain below> <diff ID>" for each next layer."""
    chain: list[str] = []
    for diff_id in diff_ids:
        chain.append(diff_id if not chain else
                     "sha256:" + hashlib.sha256(f"{chain[-1]} {diff_id}".encode()).hexdigest())
    return chain


def layers_in_engine(client: docker.DockerClient, diff_ids: Sequence[str]) -> int:
    """How many of an image's layers (its diff IDs) the engine holds: a folder per chain ID in its layer store
    (<DockerRootDir>/image/<driver>/layerdb/sha256/), read on this host; -1 when that store is not readable here
    (a remote engine, or not root)."""
    info = client.info()
    store = Path(info["DockerRootDir"]) / "image" / info["Driver"] / "layerdb" / "sha256"
    if not os.access(store, os.R_OK | os.X_OK):
        return -1
    return sum((store / chain.removeprefix("sha256:")).is_dir() for chain in chain_ids(diff_ids))


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
              extra_images: Sequence[str] = (), extra_argv: Sequence[str] = (), port: int | None = None,
              settle_timeout_s: float = 10.0) -> BaseTable:
    """For each base (and each of `extra_images`, already pulled by the reader, run with `extra_argv`): its size,
    what its filesystem holds, the app's output and one push to a fresh local registry on 127.0.0.1 (`port` or a
    free one); then `pull_repeats` rounds of cold pulls, every base once per round in an order rotated by one place
    each round. Before each pull the image is removed from the engine (checked gone), the disk under the engine's
    storage is given up to `settle_timeout_s` seconds to go quiet, and none of the image's layers may be left in
    the engine (counted)."""
    chosen = validate_bases(bases)
    measure.validate_repeats(pull_repeats, names=("pull_repeats", "warmup"))
    registry.validate_port(port)
    if not 0 < settle_timeout_s < math.inf:
        raise BadParameter(f"settle_timeout_s={settle_timeout_s!r}: need a positive number of seconds.",
                           "E.g. settle_timeout_s=10.0 (the longest a round waits for the disk to go quiet).")
    extra = validate_extra_images(lab.client if lab.live else None, extra_images)
    if extra and not extra_argv:
        raise BadParameter("extra_images needs extra_argv: the command that prints a line in them.",
                           "E.g. extra_argv=['node', '-e', \"console.log('hello')\"].")

    def experiment() -> dict[str, pd.DataFrame]:
        client = lab.engine
        made = {name: images.require_base(client, name) for name in chosen}
        rows, transfers = [], []
        # base → (its image, its registry reference, the columns every transfer of it shares, its diff IDs)
        pushed: dict[str, tuple[images.BaseImage, str, dict[str, object], list[str]]] = {}
        with registry.running(port) as reg, lab.scope() as scope, ExitStack() as untag_afterwards:
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
                untag_afterwards.callback(run, [docker_cli(), "rmi", reference], 60, check=False)
                push_s, push_output = _timed_cli("push", reference)
                compressed, layer_count = _pushed_bytes(reg, repository, "1")
                common = {"base": name, "compressed_bytes": compressed, "size_bytes": int(image.attrs["Size"])}
                transfers.append({**common, "action": "push", "repeat": 0, "position": len(pushed), "wall_s": push_s,
                                  "same_image": True, "layers_reused": _reused(push_output), "layers_before": -1,
                                  "settle_s": math.nan, "quiet": None})
                pushed[name] = (base or images.BaseImage(name, tag, image.id, "", 0, 0.0), reference, common,
                                image.attrs["RootFS"]["Layers"])
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
            # Every base once per round, the order rotated by one place each round: a drift over the run (a disk
            # or cache that fills, a busier machine) falls on every base alike, not on the ones pulled last. Each
            # pull waits for the disk to settle after its image's removal, so that it does not compete with the
            # work the removal leaves behind (writeback, and the discards of a file system mounted with `discard`).
            names, root = list(pushed), Path(client.info()["DockerRootDir"])
            for repeat in range(pull_repeats):
                shift = repeat % len(names)
                for position, name in enumerate(names[shift:] + names[:shift]):
                    owned, reference, common, layers = pushed[name]
                    with _cold(client, owned, reference):
                        settled = (diskquiet.settle(root, timeout_s=settle_timeout_s) if root.is_dir()
                                   else diskquiet.Settled(0.0, None))
                        layers_before = layers_in_engine(client, layers)
                        pull_s, pulled = _timed_cli("pull", reference)
                    transfers.append({
                        **common, "action": "pull", "repeat": repeat, "position": position, "wall_s": pull_s,
                        "same_image": client.images.get(owned.tag).id == owned.image_id,
                        "layers_reused": _reused(pulled), "layers_before": layers_before,
                        "settle_s": settled.waited_s, "quiet": settled.quiet})
        return {"bases": pd.DataFrame(rows), "transfers": pd.DataFrame(transfers)[list(LAB.tables["transfers"])]}

    tables = lab.record("bases", ("bases", "transfers"), experiment, bases=list(chosen), pull_repeats=pull_repeats,
                        extra_images=list(extra), port=port, settle_timeout_s=settle_timeout_s)
    # A recording made before a column existed replays with that column empty (NaN).
    return BaseTable(tables["bases"], tables["transfers"].reindex(columns=list(LAB.tables["transfers"])))


def _text(column: pd.Series) -> pd.Series:
    """`column` as text with "" for a missing value (read back from CSV, a column of only blanks is float NaN)."""
    return column.astype("string").fillna("").astype(str)

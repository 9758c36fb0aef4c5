"""Notebook 05, choosing a base image: size, compressed size, push and pull time, start time and attack surface
per base, the chapter's size table beside ours, and pull time against compressed size.

Every base is a labkit recipe made offline (``labkit setup 05``), each standing in for a registry image it names;
an image the reader pulled themselves (e.g. ``node:20``) can be measured beside them with `extra_images`. Pushes
and pulls go to Debian's docker-registry on 127.0.0.1 for the run only. Every ``run_*`` takes the notebook's
:class:`~labkit.core.session.LabSession` and returns a frozen result whose numbers and sentences are computed
from its tables.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any

import docker
import docker.errors
import numpy as np
import pandas as pd

from labkit.core.claims import CLAIM_COLUMNS, CLAIMS_TABLE, ClaimLedger, Source, Verdict, verdict
from labkit.core.lab import ENGINE, Lab, Requirement
from labkit.core.session import LabSession
from labkit.errors import BadParameter, EngineError, NotPrepared
from labkit.instruments import containers, images, inventory, measure, registry
from labkit.instruments.engine import docker_cli
from labkit.instruments.limits import Limits
from labkit.instruments.shell import run

STEM = "05-choosing-a-base-image"
SECTION = "Multi-Stage Builds — Small Images for Compiled Apps"  # the chapter's section (its base image table)
SECTION_START = "Start time"  # the notebook's section of our finding

LIMITS = Limits.of(memory_mib=256, pids=64, cpus=1.0)  # every container of this notebook runs under these
MB = 1e6  # sizes are quoted in MB (10^6 bytes), as `docker images` and registries quote them
GREETING = "hello"

# The same app on every base: print one greeting with the base's own runtime.
SHELL_APP = ("/bin/sh", "-c", f"echo {GREETING}")
PYTHON_APP = ("/usr/bin/python3", "-c", f"print('{GREETING}')")
NODE_APP = ("/usr/bin/node", "-e", f"console.log('{GREETING}')")
APP_ARGV: dict[str, tuple[str, ...]] = {
    "debian-full": SHELL_APP, "debian-slim": SHELL_APP, "busybox": SHELL_APP,
    "python-slim": PYTHON_APP, "python-distroless": PYTHON_APP,
    "node-full": NODE_APP, "node-slim": NODE_APP, "node-distroless": NODE_APP,
    "scratch-static": ("/app",),
}
BASES = tuple(APP_ARGV)
RUNTIME_NAMES = {"/bin/sh": "sh", "/usr/bin/python3": "python3", "/usr/bin/node": "node", "/app": "a static binary"}
QUICK_BASES = ("scratch-static", "node-distroless", "debian-slim", "node-slim")
# The node family and its static-binary neighbour, from the largest to the smallest as the chapter orders them.
NODE_FAMILY = ("node-full", "node-slim", "node-distroless", "scratch-static")


@dataclass(frozen=True)
class ChapterRow:
    """One row of the chapter's size table (its size in MB) and the labkit base that stands in for it here, with
    what that stand-in is (`stand_in`), or '' and `why_not` when none can be made offline."""

    image: str
    chapter_mb: float
    base: str
    why_not: str = ""
    stand_in: str = ""


CHAPTER_TABLE = (
    ChapterRow("node:20", 1000, "node-full", stand_in="a full Debian install with Debian's nodejs 18, without the "
                                                      "compilers, headers, git and npm that node:20 carries"),
    ChapterRow("node:20-slim", 250, "node-slim", stand_in="a slim Debian with Debian's nodejs 18, without npm"),
    ChapterRow("node:20-alpine", 150, "", "Alpine's musl packages come only from Alpine's own mirror, which labkit "
                                          "never contacts; busybox (the userland Alpine is built on) is measured "
                                          "as a base below, without node"),
    ChapterRow("gcr.io/distroless/nodejs20", 120, "node-distroless",
               stand_in="the node binary and the libraries ldd says it loads, on FROM scratch"),
    ChapterRow("scratch + a static binary", 0, "scratch-static"),
)
SIZE_TOLERANCE = 2.0  # a stand-in's size agrees with the chapter's within this factor either way


def prepare(client: docker.DockerClient) -> list[str]:
    return []


LAB = Lab(
    stem=STEM,
    topic="Choosing a base image",
    requirements=(
        ENGINE,
        Requirement("program", "debootstrap", "the Debian, python and node bases"),
        Requirement("program", "busybox", "the busybox base"),
        Requirement("registry", purpose="push and pull times on a registry at 127.0.0.1"),
    ),
    bases=BASES,
    tables={
        "bases": ("base", "image", "stands_in_for", "size_bytes", "compressed_bytes", "layers", "files",
                  "file_bytes", "setuid_files", "setuid_paths", "shells", "package_managers", "packages", "user",
                  "app", "app_output"),
        "transfers": ("base", "action", "repeat", "wall_s", "compressed_bytes", "size_bytes", "same_image",
                      "layers_reused"),
        "startup": ("method", "repeat", "position", "wall_s"),
        CLAIMS_TABLE: CLAIM_COLUMNS,
    },
    prepare=prepare,
    headline="size.chapter_sizes",
)


def validate_bases(bases: Sequence[str]) -> tuple[str, ...]:
    """`bases` if each is one of notebook 05's and none repeats; BadParameter naming the choices otherwise."""
    if isinstance(bases, str) or not bases:
        raise BadParameter(f"bases={bases!r}: need a non-empty list of base names.", f"E.g. {list(QUICK_BASES)}.")
    unknown = [b for b in bases if b not in APP_ARGV]
    if unknown:
        raise BadParameter(f"bases names {unknown}, which notebook 05 does not make.", f"Choose from {list(BASES)}.")
    if len(set(bases)) != len(bases):
        raise BadParameter(f"bases={list(bases)} names a base twice.", "Name each base once.")
    return tuple(bases)


def validate_extra_images(client: docker.DockerClient | None, extra: Sequence[str]) -> tuple[str, ...]:
    """Images the reader pulled themselves, measured beside the bases: each must already be in the engine (labkit
    never pulls from an outside registry); NotPrepared with the command that fetches it otherwise."""
    extra = tuple(extra)
    if client is None:
        return extra
    for reference in extra:
        try:
            client.images.get(reference)
        except docker.errors.ImageNotFound as exc:
            raise NotPrepared(f"extra image {reference!r} is not in the engine; labkit never pulls it for you.",
                              f"Where a registry is reachable: `docker pull {reference}`, then run again; "
                              "or leave extra_images empty.") from exc
    return extra


def _app_argv(name: str, extra_argv: tuple[str, ...]) -> tuple[str, ...]:
    return APP_ARGV.get(name, extra_argv)


# ---------------------------------------------------------------- 1. what each base holds


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
                "one an intruder cannot use; a library kept without its package metadata (the distroless-style "
                "stand-ins) is still there, only hidden from a scanner's package count.")


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
                argv = _app_argv(name, tuple(extra_argv))
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
                    "stands_in_for": images.recipe(name).description.rsplit("(stands in for ", 1)[-1].rstrip(")")
                    if base else "itself (pulled by the reader)",
                    "size_bytes": int(image.attrs["Size"]), "compressed_bytes": compressed, "layers": layer_count,
                    "files": found.files, "file_bytes": found.file_bytes, "setuid_files": len(found.setuid),
                    "setuid_paths": ";".join(found.setuid), "shells": ";".join(found.shells),
                    "package_managers": ";".join(found.package_managers), "packages": found.packages,
                    "user": str(config.get("User") or ""), "app": " ".join(argv), "app_output": output})
        return {"bases": pd.DataFrame(rows), "transfers": pd.DataFrame(transfers)[list(LAB.tables["transfers"])]}

    tables = lab.record("bases", ("bases", "transfers"), experiment, bases=list(chosen), pull_repeats=pull_repeats,
                        extra_images=list(extra), port=port)
    return BaseTable(tables["bases"], tables["transfers"])


# ---------------------------------------------------------------- 2. pull time against compressed size


@dataclass(frozen=True)
class PullFit:
    """A least-squares line through every cold pull: wall_s = intercept_s + slope_s_per_mb × compressed MB.

    `points`: base, compressed_mb, files, wall_s, predicted_s, residual_s (one per pull)."""

    intercept_s: float
    slope_s_per_mb: float
    r_squared: float
    points: pd.DataFrame
    left_out: tuple[str, ...] = ()  # bases whose pulls were not cold

    @property
    def throughput_mb_s(self) -> float:
        """MB of compressed layers per second beyond the fixed cost (the inverse of the slope)."""
        return 1 / self.slope_s_per_mb if self.slope_s_per_mb > 0 else math.inf

    @cached_property
    def per_base(self) -> pd.DataFrame:
        """Per base, smallest first: compressed_mb, files, median wall_s, predicted_s, median residual_s, and
        fixed_share (:attr:`fixed_cost_s` over its median pull time)."""
        table = self.points.groupby("base").agg(compressed_mb=("compressed_mb", "first"), files=("files", "first"),
                                                wall_s=("wall_s", "median"), predicted_s=("predicted_s", "first"),
                                                residual_s=("residual_s", "median")).sort_values("compressed_mb")
        table["fixed_share"] = float(table["wall_s"].iloc[0]) / table["wall_s"]
        return table

    @property
    def smallest(self) -> str:
        return str(self.per_base.index[0])

    @property
    def fixed_cost_s(self) -> float:
        """The median pull of the smallest image (s): an upper bound of what every pull costs whatever its size,
        measured rather than extrapolated (the line's intercept is an extrapolation, and can even be negative)."""
        return float(self.per_base["wall_s"].iloc[0])

    @staticmethod
    def _rank_correlation(a: pd.Series, b: pd.Series) -> float:
        return float(a.rank().corr(b.rank())) if len(a) >= 3 else math.nan

    @property
    def rank_correlation(self) -> float:
        """Spearman's rank correlation of compressed size and median pull time over the bases (NaN below 3)."""
        return self._rank_correlation(self.per_base["compressed_mb"], self.per_base["wall_s"])

    @property
    def residual_files_correlation(self) -> float:
        """Spearman's rank correlation of each base's residual and its file count: positive when images with more
        files pull slower than their compressed size predicts."""
        return self._rank_correlation(self.per_base["residual_s"], self.per_base["files"])

    def conclusion(self) -> str:
        t = self.per_base
        above, below = t["residual_s"].idxmax(), t["residual_s"].idxmin()
        files = (f"The residuals follow the file count (rank correlation {self.residual_files_correlation:.2f}): "
                 f"**{above}** ({int(t.loc[above, 'files'])} files) pulled {t.loc[above, 'residual_s']:+.2f} s off the "
                 f"line and **{below}** ({int(t.loc[below, 'files'])} files) {t.loc[below, 'residual_s']:+.2f} s — "
                 "every file is unpacked and written, so bytes are not the whole cost."
                 if self.residual_files_correlation >= 0.5 else
                 f"The residuals do not follow the file count (rank correlation "
                 f"{self.residual_files_correlation:.2f}).")
        return (f"**What we measured** ({len(self.points)} cold pulls of {len(t)} bases): pull time ≈ "
                f"**{self.intercept_s:.2f} s + {self.slope_s_per_mb * 1e3:.1f} ms per compressed MB** "
                f"(R² = {self.r_squared:.2f}; about {self.throughput_mb_s:.0f} MB/s of compressed layers fetched, "
                f"decompressed and written). Rank correlation of size and pull time: {self.rank_correlation:.2f}. "
                f"The smallest image, **{self.smallest}** ({t['compressed_mb'].iloc[0]:.2f} MB), pulled in "
                f"{self.fixed_cost_s:.2f} s: that bounds the fixed cost of a pull (registry round trips for the "
                f"manifest, config and each layer, and the engine's bookkeeping), "
                f"{t['fixed_share'].iloc[1]:.0%} of the next smallest image's pull. On a loopback registry it is "
                f"small; across a real network each round trip adds latency to it, and bandwidth to the slope. "
                f"{files}"
                + (f" Left out: {', '.join(self.left_out)}, whose pulls found layers already in the engine (a "
                   "build cache still held them), so they were not cold." if self.left_out else ""))


def fit_pulls(table: BaseTable) -> PullFit:
    """Fit pull time against compressed size over the cold pulls in `table` (two sizes at least); a pull that
    found a layer already in the engine (:attr:`BaseTable.warm_pulls`) is left out."""
    pulls = table.cold_pulls
    if pulls["compressed_bytes"].nunique() < 2:
        raise BadParameter("a fit needs cold pulls of at least two images of different sizes.",
                           "Measure two bases or more (bases=[...]) whose layers nothing else in the engine holds.")
    x = pulls["compressed_bytes"].to_numpy(dtype=float) / MB
    y = pulls["wall_s"].to_numpy(dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    predicted = intercept + slope * x
    residual = y - predicted
    total = float(((y - y.mean()) ** 2).sum())
    r_squared = 1 - float((residual ** 2).sum()) / total if total > 0 else math.nan
    files = table.bases.set_index("base")["files"]
    points = pd.DataFrame({"base": pulls["base"].to_numpy(), "compressed_mb": x,
                           "files": files.loc[pulls["base"]].to_numpy(), "wall_s": y, "predicted_s": predicted,
                           "residual_s": residual})
    return PullFit(float(intercept), float(slope), r_squared, points, tuple(table.warm_pulls))


# ---------------------------------------------------------------- 3. start time


@dataclass(frozen=True)
class StartResult:
    """`samples`: method (the base), repeat, position, wall_s — ``docker run --rm`` of the base's app (the same
    greeting with its own runtime), interleaved round by round."""

    samples: pd.DataFrame

    @cached_property
    def summary(self) -> pd.DataFrame:
        """Per base: n, median, q1, q3, ci_low, ci_high (s), coverage, and ratio_to_floor (to the fastest)."""
        medians = self.samples.groupby("method")["wall_s"].median()
        return measure.summary_table(self.samples, floor=str(medians.idxmin()))

    def ms(self, base: str, column: str = "median") -> float:
        return float(self.summary.loc[base, column]) * 1e3

    def node_family(self) -> list[str]:
        return [b for b in NODE_FAMILY[:3] if b in self.summary.index]

    @property
    def size_decides(self) -> bool | None:
        """Within the node family (one runtime, one app): whether the largest image's start interval lies wholly
        above the smallest's. None when fewer than two of them were measured."""
        family = self.node_family()
        if len(family) < 2:
            return None
        largest, smallest = family[0], family[-1]
        return self.ms(largest, "ci_low") > self.ms(smallest, "ci_high")

    def conclusion(self, table: BaseTable) -> str:
        s = self.summary
        parts = "; ".join(f"{b} {r['median'] * 1e3:.0f} ms [{r['ci_low'] * 1e3:.0f}, {r['ci_high'] * 1e3:.0f}]"
                          for b, r in s.sort_values("median").iterrows())
        family = self.node_family()
        if self.size_decides is None:
            node = "Fewer than two node images were measured, so size and runtime cannot be told apart here."
        else:
            sizes = ", ".join(f"{b} {table.mb(b):.0f} MB" for b in family)
            node = (f"The node images ({sizes}) run the same app with the same runtime: "
                    + ("the largest starts measurably slower than the smallest."
                       if self.size_decides else
                       "their start intervals overlap — a container's root filesystem is an overlay mount of "
                       "layers already on disk, so nothing is copied at start and size barely matters."))
        runtimes = self.by_runtime_ms()
        runtime_text = ", ".join(f"{name} {ms:.0f} ms" for name, ms in runtimes.items())
        return (f"**What we measured** (n = {int(s['n'].min())} starts per base, interleaved; median with an "
                f"order-statistic interval of coverage {s['coverage'].min():.1%}): {parts}. {node} By the runtime "
                f"that prints the greeting (median over its bases): {runtime_text} — the spread between runtimes, "
                f"{max(runtimes.values()) - min(runtimes.values()):.0f} ms, is what start time depends on here.")

    def by_runtime_ms(self) -> dict[str, float]:
        """Median start (ms) per runtime (the program the app runs: sh, python3, node, a static binary), each the
        median of its bases' medians, fastest first."""
        runtime = {base: RUNTIME_NAMES.get(argv[0], argv[0]) for base, argv in APP_ARGV.items()}
        medians = self.summary["median"].groupby(lambda base: runtime.get(str(base), str(base))).median() * 1e3
        return {str(name): float(ms) for name, ms in medians.sort_values().items()}


def run_startup(lab: LabSession, bases: Sequence[str] = QUICK_BASES, repeats: int = 5, warmup: int = 1,
                extra_images: Sequence[str] = (), extra_argv: Sequence[str] = ()) -> StartResult:
    """Wall time (s) of ``docker run --rm`` of each base's app, `repeats` interleaved rounds after `warmup`."""
    chosen = validate_bases(bases)
    measure.validate_repeats(repeats, warmup)
    extra = validate_extra_images(lab.client if lab.live else None, extra_images)

    def experiment() -> pd.DataFrame:
        client = lab.engine
        tags = {name: images.require_base(client, name).tag for name in chosen} | {name: name for name in extra}
        with lab.scope() as scope:
            starters: dict[str, Callable[[], Any]] = {
                name: partial(run, containers.cli_run_argv(scope, tag, _app_argv(name, tuple(extra_argv)),
                                                           limits=LIMITS), 120)
                for name, tag in tags.items()}
            return measure.compare(starters, repeats, warmup)

    return StartResult(lab.measure("startup", experiment, bases=list(chosen), repeats=repeats, warmup=warmup,
                                   extra_images=list(extra)))


# ---------------------------------------------------------------- claims


def check_claims(ledger: ClaimLedger, table: BaseTable, fit: PullFit, start: StartResult) -> None:
    """The chapter's claims about bases and our findings beyond them, each with a criterion and a verdict computed
    from this notebook's measurements."""
    chapter = table.chapter
    judged = chapter[chapter["verdict"] != Verdict.INCONCLUSIVE.value]
    family = table.node_family_measured
    if len(family) < 2:
        order_verdict, order_caveat = Verdict.INCONCLUSIVE, "fewer than two of the node family were measured"
    else:
        order_verdict = verdict(table.node_family_ordered and bool(judged["rank_agrees"].all()), caveat=True)
        order_caveat = ("certain by construction: each stand-in holds a subset of the one before it (slim leaves "
                        "out docs and extras, distroless keeps the runtime and its libraries, scratch one binary); "
                        "registry images are built apart, so only they could come out in another order")
    ledger.check(
        "size.base_ordering", source=Source.CHAPTER, section=SECTION,
        claim="A leaner base makes a smaller image: full, then slim, then distroless, then scratch",
        value=float(judged["rank_agrees"].sum()), unit="chapter rows in the chapter's order",
        measured="; ".join(f"{b} {table.mb(b):.1f} MB" for b in family),
        criterion="each measured node-family base is smaller than the one before it and every measured row sits "
                  "in the chapter's order",
        verdict=order_verdict, caveat=order_caveat, tables=("bases",))

    sized = table.sized_rows
    close = sized["verdict"] == Verdict.HOLDS.value
    if sized.empty:
        size_verdict, size_caveat = Verdict.INCONCLUSIVE, "no stand-in for a row with a size was measured"
    else:
        size_verdict = verdict(bool(close.any()), caveat=not close.all())
        size_caveat = "; ".join(f"{r.image}: {r.why}" for r in sized[~close].itertuples())
    ledger.check(
        "size.chapter_sizes", source=Source.CHAPTER, section=SECTION,
        claim="The node bases weigh about what the chapter's table gives: ~1 GB full, ~250 MB slim, ~120 MB "
              "distroless",
        value=float(close.sum()), unit=f"of {len(sized)} sized rows within {SIZE_TOLERANCE:g}×",
        measured="; ".join(f"{r.image}: {r.measured_mb:.0f} MB against ~{r.chapter_mb:.0f} MB ({r.factor:.2f}×)"
                           for r in sized.itertuples()) or "no sized row measured",
        criterion=f"each stand-in is within {SIZE_TOLERANCE:g}× of the chapter's size for the image it stands in "
                  "for: all of them holds, some holds with caveat, none does not hold",
        verdict=size_verdict, caveat=size_caveat, tables=("bases",))

    faster = fit.slope_s_per_mb > 0 and fit.rank_correlation >= 0.8
    files_matter = fit.residual_files_correlation >= 0.5
    ledger.check(
        "pull.smaller_faster", source=Source.CHAPTER, section=SECTION,
        claim="The smaller the image, the faster it is pulled",
        value=fit.slope_s_per_mb * 1e3, unit="ms per compressed MB (fitted slope)",
        measured=f"pull ≈ {fit.intercept_s:.2f} s + {fit.slope_s_per_mb * 1e3:.1f} ms/MB (R² {fit.r_squared:.2f}, "
                 f"rank correlation {fit.rank_correlation:.2f}); the smallest image pulled in {fit.fixed_cost_s:.2f} "
                 f"s; residuals against file count: rank correlation {fit.residual_files_correlation:.2f}",
        criterion="the fitted slope is positive and the rank correlation of compressed size and median pull time "
                  "is ≥ 0.8; residuals that follow the file count (rank correlation ≥ 0.5) are a caveat",
        verdict=verdict(faster, caveat=files_matter),
        caveat="bytes are not the whole cost: at equal compressed size, an image with more files pulls slower"
        if faster and files_matter else "", tables=("transfers", "bases"))

    surface = table.sizes
    pairs = [(slim, lean) for slim, lean in (("node-slim", "node-distroless"), ("python-slim", "python-distroless"))
             if table.has(slim) and table.has(lean)]
    if pairs:
        smaller = all(not surface.loc[lean, "shell"] and not surface.loc[lean, "package_manager"]
                      and surface.loc[lean, "files"] < surface.loc[slim, "files"]
                      and surface.loc[lean, "setuid_files"] <= surface.loc[slim, "setuid_files"]
                      for slim, lean in pairs)
        ledger.check(
            "surface.distroless_smaller", source=Source.CHAPTER, section=SECTION,
            claim="A distroless base leaves an attacker less to use: no shell and no package manager",
            value=float(sum(surface.loc[slim, "files"] - surface.loc[lean, "files"] for slim, lean in pairs)),
            unit="fewer files than the slim image (summed over pairs)",
            measured="; ".join(f"{lean}: {int(surface.loc[lean, 'files'])} files, "
                               f"{int(surface.loc[lean, 'setuid_files'])} setuid, shell "
                               f"{surface.loc[lean, 'shell'] or 'none'} against {slim}: "
                               f"{int(surface.loc[slim, 'files'])} files, {int(surface.loc[slim, 'setuid_files'])} "
                               f"setuid, shell {surface.loc[slim, 'shell'] or 'none'}" for slim, lean in pairs),
            criterion="the distroless-style image has no shell and no package manager, fewer files and no more "
                      "setuid programs than the slim image of the same runtime",
            verdict=verdict(smaller, caveat=True),
            caveat="by construction: the stand-in is the runtime and the libraries it loads, copied onto FROM "
                   "scratch, so nothing else is there to count; its libraries carry no package metadata, so a "
                   "scanner sees fewer packages than it holds", tables=("bases",))

    decides = start.size_decides
    family = start.node_family()
    ledger.check(
        "start.smaller_faster", source=Source.FINDING, section=SECTION_START,
        claim="A smaller base image makes a container start faster",
        value=start.ms(family[0]) - start.ms(family[-1]) if family else math.nan,
        unit="ms (largest minus smallest node image, median start)",
        measured="; ".join(f"{b} {start.ms(b):.0f} ms [{start.ms(b, 'ci_low'):.0f}, {start.ms(b, 'ci_high'):.0f}]"
                           for b in family) or "fewer than two node images measured",
        criterion="within the node family (same runtime, same app) the largest image's start interval lies wholly "
                  "above the smallest's",
        verdict=Verdict.INCONCLUSIVE if decides is None else verdict(decides),
        caveat="fewer than two node images were measured" if decides is None else "", tables=("startup",))

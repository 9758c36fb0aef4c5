"""Notebook 02, the image: layered, cacheable, reproducible.

One image built here is taken apart two ways (the engine's history, the layer tars of ``docker save``); a running
container's overlayfs directories are read from the host; the first write to a big file from a lower layer (a
copy-up) is timed against the second; a file deleted in a later layer is found as a whiteout; and the same
Dockerfile is built twice with ``--no-cache`` to see which layers come out byte-identical, and what it takes to
make them all match.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pandas as pd

from labkit.core.claims import CLAIM_COLUMNS, CLAIMS_TABLE, ClaimLedger, Source, demonstration, verdict
from labkit.core.lab import ENGINE, ROOT, Lab, Requirement
from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import builds, containers, images, layers, measure, space
from labkit.instruments.engine import Scope
from labkit.instruments.limits import Limits

STEM = "02-image-layers"
BASE = "debian-minbase"
# The chapter's sections these claims come from, as it spells them, and the notebook's sections of our findings.
SECTION_IMAGE = "The Image — Layered, Cacheable, Reproducible"
SECTION_CONTAINER = "What a Container Actually Is"
SECTION_COPY_UP = "Copy-up"
SECTION_DELETE = "Deleting in a later layer"
SECTION_REPRO = "Reproducibility"
MIB = 2**20
LIMITS = Limits.of(memory_mib=256, pids=64, cpus=1.0)
SLEEP_ARGV = ["sleep", "300"]
SIZE_TOLERANCE = 0.001  # history and tar sizes agree within 0.1 % (the engine counts an imported layer's symlinks)

APP_FILES = {"app/greeting.py": 'GREETING = "Hello"\n', "app/README.md": "# greeter\n"}
SOURCE_TAR = "src.tar"  # the app under src/app/ and an etc/hosts, every entry stamped with SOURCE_DATE_EPOCH
HOSTS = "127.0.0.1 localhost\n"

# One image for sections 1–3: a big file to copy up, the app, a blob written then deleted in a later layer, and
# config-only instructions. {blob_mib} and {big_mib} are MiB of random bytes.
BLOB_IN_TWO_LAYERS = "RUN head -c {blob_mib}M /dev/urandom > /opt/blob.bin\nRUN rm /opt/blob.bin\n"
LAYERED = f"""\
FROM {{base}}
RUN mkdir /data && head -c {{big_mib}}M /dev/urandom > /data/big.bin && echo small > /data/small.txt
COPY app/ /app/
{BLOB_IN_TWO_LAYERS}ENV GREETING=hello
WORKDIR /app
"""
# The same image with the blob written and deleted in one RUN: nothing of it reaches a layer.
ONE_LAYER = LAYERED.replace(BLOB_IN_TWO_LAYERS,
                            "RUN head -c {blob_mib}M /dev/urandom > /opt/blob.bin && rm /opt/blob.bin\n")

# Section 4: built twice with --no-cache. `as is` copies the source folder, writes the build's time and leaves every
# mtime at the moment it was made. `normalised` does what it takes for equal layers: the source comes as a tar whose
# every entry carries SOURCE_DATE_EPOCH (as `git archive` stamps the commit's time), the clock is replaced by
# SOURCE_DATE_EPOCH, each RUN sets the time of what it made to it, and the tar brings an /etc/hosts: without one the
# builder creates a mount point for its own in every RUN and removes it after, which changes /etc's time.
PIN = 'touch -h -d "@$SOURCE_DATE_EPOCH"'
REPRODUCIBLE = {
    "as is": """\
FROM {base}
COPY app/ /src/app/
RUN mkdir /out && cp -r /src/app /out/app && date > /out/built-at.txt
RUN ls -l /out/app > /out/listing.txt
""",
    "normalised": f"""\
FROM {{base}}
ARG SOURCE_DATE_EPOCH
ADD {SOURCE_TAR} /
RUN mkdir /out && cp -r /src/app /out/app && echo "$SOURCE_DATE_EPOCH" > /out/built-at.txt \\
    && find /out -exec {PIN} {{{{}}}} +
RUN ls -l /out/app > /out/listing.txt && find /out -exec {PIN} {{{{}}}} +
""",
}
SOURCE_DATE_EPOCH = "1700000000"  # any fixed instant; the one a release would take from its last commit


def _positive_mib(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadParameter(f"{name}={value!r}: need a whole number of MiB >= 1.", f"E.g. {name}=16.")
    return value


def _require_big_file_space(lab: LabSession, big_mib: int) -> None:
    """Refuse, in a live session, a `big_mib` the engine's disk cannot hold twice: the file's layer, and the copy of
    it that a container's first write puts in its upper directory (one container at a time)."""
    if lab.live:
        space.require_disk((space.engine_storage(lab.engine), {space.Size("big_mib", big_mib): 2}))


def prepare(client: docker.DockerClient) -> list[str]:
    return []


LAB = Lab(
    stem=STEM,
    topic="The image: layered, cacheable, reproducible",
    requirements=(ENGINE, ROOT, Requirement("program", "debootstrap", "the debian-minbase base")),
    bases=(BASE,),
    tables={
        "layers": ("step", "created_by", "empty_layer", "layer", "history_bytes", "content_bytes", "symlink_bytes",
                   "tar_bytes", "files", "whiteouts", "hidden_bytes", "agree"),
        "images": ("variant", "image_bytes", "blob_bytes"),
        "overlay": ("case", "path", "in_upper", "upper_kind", "in_lower", "in_merged", "upper_bytes", "lower_bytes"),
        "copy_up": ("repeat", "file", "file_bytes", "write", "seconds"),
        "reproducible": ("variant", "build", "step", "created_by", "diff_id", "image_id", "other_mtimes",
                         "example_paths"),
        CLAIMS_TABLE: CLAIM_COLUMNS,
    },
    prepare=prepare,
)


def _context(folder: Path, dockerfile: str) -> Path:
    """The app's files, :data:`SOURCE_TAR` and `dockerfile` in a new `folder`."""
    folder.mkdir(parents=True)
    for name, text in APP_FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    files = {"etc/hosts": HOSTS, **{f"src/{name}": text for name, text in APP_FILES.items()}}
    with tarfile.open(folder / SOURCE_TAR, "w") as archive:
        for name in ["etc", "src", "src/app", *sorted(files)]:
            entry = tarfile.TarInfo(name)
            entry.mtime = int(SOURCE_DATE_EPOCH)
            data = files.get(name, "").encode()
            if name in files:
                entry.size, entry.mode = len(data), 0o644
            else:
                entry.type, entry.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(entry, io.BytesIO(data) if entry.isfile() else None)
    (folder / "Dockerfile").write_text(dockerfile)
    (folder / ".dockerignore").write_text("Dockerfile\n.dockerignore\n")
    return folder


def _build(scope: Scope, scratch: Path, name: str, dockerfile: str) -> builds.Build:
    return builds.build(_context(scratch / name, dockerfile), f"labkit-exp/{STEM}-{name}:{scope.scope_id}", scope)


def _image_bytes(client: docker.DockerClient, image: str) -> int:
    return int(client.images.get(image).attrs["Size"])


# ---------------------------------------------------------------- layers two ways, and a deletion


@dataclass(frozen=True)
class LayerResult:
    """`layers`: one row per Dockerfile instruction of the image (oldest first): the engine's history size
    (bytes), the layer tar's regular-file bytes, symlink bytes and tar size, files, whiteouts, the bytes of lower
    layers its whiteouts hide, and whether the two sizes agree. `images`: the image with the blob deleted in a later
    layer against the one that deletes it in the same RUN (bytes)."""

    layers: pd.DataFrame
    images: pd.DataFrame

    def table(self) -> pd.DataFrame:
        """The layer table as the notebook shows it: one row per instruction, indexed ``<step> <instruction>``
        (shortened), sizes in MB."""
        view = self.layers[["step", "created_by", "history_bytes", "content_bytes", "files", "whiteouts",
                            "agree"]].copy()
        instruction = (view["created_by"].fillna("").str.replace("/bin/sh -c ", "", regex=False)
                       .str.replace(" # buildkit", "", regex=False))
        view.index = pd.Index([f"{step} {text[:40] or '(the base, docker import)'}"
                               for step, text in zip(view["step"], instruction, strict=True)],
                              name="instruction")
        for column in ("history_bytes", "content_bytes"):
            view[column.replace("_bytes", "_mb")] = view.pop(column) / 1e6
        return view[["history_mb", "content_mb", "files", "whiteouts", "agree"]]

    @property
    def all_agree(self) -> bool:
        return bool(self.layers["agree"].all())

    @property
    def largest_gap_bytes(self) -> int:
        return int((self.layers["history_bytes"] - self.layers["content_bytes"]).abs().max())

    @property
    def wasted_bytes(self) -> int:
        return int(self.layers["hidden_bytes"].sum())

    def image_bytes(self, variant: str) -> int:
        return int(self.images.set_index("variant").loc[variant, "image_bytes"])

    @property
    def blob_bytes(self) -> int:
        return int(self.images["blob_bytes"].iloc[0])

    def conclusion(self) -> str:
        kept = self.image_bytes("deleted in a later layer") - self.image_bytes("deleted in the same RUN")
        whiteout = self.layers[self.layers["whiteouts"] > 0].iloc[0]
        config_only = ", ".join(f"`{c}`" for c in self.layers.loc[self.layers["empty_layer"], "created_by"]) or "none"
        return (f"**What we measured.** {int((~self.layers['empty_layer']).sum())} of the {len(self.layers)} "
                f"history entries (the imported base and each instruction) made a layer; only {config_only} changed "
                f"the image's config alone. The history and the "
                f"layer tars {'agree on every layer' if self.all_agree else 'do **not** agree'} (largest gap "
                f"{self.largest_gap_bytes:,} bytes: the symlinks of the imported base, which the engine counts "
                f"there and nowhere else). The `rm` layer holds {int(whiteout['whiteouts'])} whiteout(s) and "
                f"{int(whiteout['content_bytes'])} bytes, and hides **{self.wasted_bytes / MIB:.1f} MiB** that the "
                f"image still carries: it is {kept / MIB:.1f} MiB larger than the same blob written and deleted in "
                f"one RUN (the blob: {self.blob_bytes / MIB:.0f} MiB).")


def run_layers(lab: LabSession, blob_mib: int = 32, big_mib: int = 64) -> LayerResult:
    """Build the layered image (a `blob_mib` MiB blob deleted a layer later, a `big_mib` MiB file) and the one-RUN
    variant; read its layers from the engine's history and from `docker save`."""
    images.validate_base(BASE)
    _positive_mib(blob_mib, "blob_mib")
    _positive_mib(big_mib, "big_mib")
    if lab.live:
        blob, big = space.Size("blob_mib", blob_mib), space.Size("big_mib", big_mib)
        # In the engine at once, at most: each file's layer (the one-RUN variant shares big.bin's through the cache)
        # and one more of each, either the one-RUN variant's blob before its `rm` or the copy `docker save` stages in
        # the engine's temp folder; and the saved tarball in ours.
        space.require_disk((space.engine_storage(lab.engine), {blob: 2, big: 2}),
                           (Path(tempfile.gettempdir()), {blob: 1, big: 1}))

    def experiment() -> dict[str, pd.DataFrame]:
        client = lab.engine
        base = images.require_base(client, BASE).tag
        with lab.scope() as scope, tempfile.TemporaryDirectory(prefix="labkit-02-") as scratch:
            layered = _build(scope, Path(scratch), "layered",
                             LAYERED.format(base=base, blob_mib=blob_mib, big_mib=big_mib))
            one = _build(scope, Path(scratch), "one-layer",
                         ONE_LAYER.format(base=base, blob_mib=blob_mib, big_mib=big_mib))
            saved = layers.read_saved(layers.save(client, layered.image_id, Path(scratch) / "image.tar"))
            history = layers.engine_history(client, layered.image_id)
            sizes = {"deleted in a later layer": _image_bytes(client, layered.image_id),
                     "deleted in the same RUN": _image_bytes(client, one.image_id)}
        frame = saved.frame()
        frame["history_bytes"] = history["size_bytes"]
        frame["hidden_bytes"] = [saved.hidden_bytes(saved.layers[i]) if i >= 0 else 0 for i in frame["layer"]]
        gap = (frame["history_bytes"] - frame["content_bytes"]).abs()
        frame["agree"] = gap <= (frame["history_bytes"] * SIZE_TOLERANCE).clip(lower=0)
        image_rows = pd.DataFrame([{"variant": v, "image_bytes": b, "blob_bytes": blob_mib * MIB}
                                   for v, b in sizes.items()])
        return {"layers": frame[list(LAB.tables["layers"])], "images": image_rows}

    tables = lab.record("layers", ("layers", "images"), experiment, base=BASE, blob_mib=blob_mib, big_mib=big_mib)
    return LayerResult(tables["layers"], tables["images"])


# ---------------------------------------------------------------- overlayfs in a running container


@dataclass(frozen=True)
class OverlayResult:
    """`overlay`: per case, a path inside the container and whether it is in the container's UpperDir (and as
    what), in any LowerDir, and in the MergedDir the container sees, with sizes (bytes) in upper and lower."""

    overlay: pd.DataFrame

    def row(self, case: str) -> pd.Series:
        return self.overlay.set_index("case").loc[case]

    def conclusion(self) -> str:
        written, read = self.row("written inside"), self.row("only read")
        appended, deleted = self.row("appended to"), self.row("deleted inside")
        return (f"**What we measured.** The file written inside is in the upper directory "
                f"({'yes' if written['in_upper'] else 'no'}) and in no lower one "
                f"({'none' if not written['in_lower'] else 'found!'}). The file only read stays in the image's "
                f"layers (upper: {'yes' if read['in_upper'] else 'no'}). Appending one byte to "
                f"`{appended['path']}` put a whole copy of it in the upper directory: "
                f"{int(appended['upper_bytes']):,} bytes against {int(appended['lower_bytes']):,} below. Deleting "
                f"`{deleted['path']}` left a `{deleted['upper_kind']}` in the upper directory; the merged view "
                f"{'still shows it' if deleted['in_merged'] else 'no longer shows it'}, the lower layer still has it.")


def _kind(path: Path) -> str:
    if not os.path.lexists(path):
        return ""
    mode = path.lstat().st_mode
    if (mode & 0o170000) == 0o020000 and path.lstat().st_rdev == 0:
        return "whiteout (char device 0/0)"
    return "directory" if path.is_dir() else "file"


def _size(path: Path) -> int:
    return path.lstat().st_size if _kind(path) == "file" else 0


def run_overlay(lab: LabSession, big_mib: int = 64) -> OverlayResult:
    """Start a container of the layered image; inside it write a new file, append to the big file, delete a file;
    then read the container's overlayfs directories (from `docker inspect`) on the host."""
    _positive_mib(big_mib, "big_mib")
    lab.require_root("reading the engine's overlayfs directories")
    _require_big_file_space(lab, big_mib)

    def experiment() -> pd.DataFrame:
        client = lab.engine
        base = images.require_base(client, BASE).tag
        cases = {"written inside": "tmp/written-inside.txt", "only read": "app/greeting.py",
                 "appended to": "data/big.bin", "deleted inside": "app/README.md"}
        with lab.scope() as scope, tempfile.TemporaryDirectory(prefix="labkit-02-") as scratch:
            layered = _build(scope, Path(scratch), "layered",
                             LAYERED.format(base=base, blob_mib=1, big_mib=big_mib))
            with containers.running(client, scope, layered.image_id, SLEEP_ARGV, stem="overlay",
                                    limits=LIMITS) as container:
                containers.exec_text(container, ["sh", "-c", "echo inside > /tmp/written-inside.txt && "
                                                 "cat /app/greeting.py && printf x >> /data/big.bin && "
                                                 "rm /app/README.md"])
                data = client.api.inspect_container(container.id)["GraphDriver"]["Data"]
                upper, merged = Path(data["UpperDir"]), Path(data["MergedDir"])
                lowers = [Path(p) for p in data["LowerDir"].split(":")]
                rows = []
                for case, path in cases.items():
                    below = next((lower / path for lower in lowers if os.path.lexists(lower / path)), None)
                    rows.append({"case": case, "path": "/" + path, "in_upper": os.path.lexists(upper / path),
                                 "upper_kind": _kind(upper / path), "in_lower": below is not None,
                                 "in_merged": os.path.lexists(merged / path), "upper_bytes": _size(upper / path),
                                 "lower_bytes": _size(below) if below is not None else 0})
        return pd.DataFrame(rows, columns=list(LAB.tables["overlay"]))

    return OverlayResult(lab.measure("overlay", experiment, base=BASE, big_mib=big_mib, **LIMITS.record()))


# ---------------------------------------------------------------- copy-up


@dataclass(frozen=True)
class CopyUpResult:
    """`copy_up`: per repeat (a fresh container each), file (big or small, from a lower layer) and write (first or
    second append of one byte), the time the append took inside the container (s)."""

    copy_up: pd.DataFrame

    def median_ms(self, file: str, write: str) -> float:
        rows = self.copy_up[(self.copy_up["file"] == file) & (self.copy_up["write"] == write)]
        return float(rows["seconds"].median() * 1e3)

    @property
    def big_bytes(self) -> int:
        return int(self.copy_up.loc[self.copy_up["file"] == "big", "file_bytes"].iloc[0])

    def samples_ms(self) -> pd.DataFrame:
        return self.copy_up.assign(method=self.copy_up["file"] + ", " + self.copy_up["write"] + " write",
                                   wall_ms=self.copy_up["seconds"] * 1e3)

    def conclusion(self) -> str:
        first, second = self.median_ms("big", "first"), self.median_ms("big", "second")
        return (f"**What we measured.** The first one-byte append to the {self.big_bytes / MIB:.0f} MiB file took a "
                f"median **{first:.1f} ms**, the second **{second:.2f} ms** ({first / second:.0f}×): the first write "
                f"copies the whole file up from its layer, the second writes to the copy. For the small file the "
                f"first write took {self.median_ms('small', 'first'):.2f} ms: copy-up costs what the file weighs.")


# Inside the container: the time of each append, in ns, measured with date around it (both pay the same fork).
COPY_UP_SCRIPT = ('for f in /data/big.bin /data/small.txt; do a=$(date +%s%N); printf x >> $f; b=$(date +%s%N); '
                  'printf x >> $f; c=$(date +%s%N); echo $f $((b-a)) $((c-b)); done')


def run_copy_up(lab: LabSession, repeats: int = 10, big_mib: int = 64) -> CopyUpResult:
    """In `repeats` fresh containers of the layered image, time the first and second one-byte append to a `big_mib`
    MiB file and to a small file, both from a lower layer."""
    measure.validate_repeats(repeats)
    _positive_mib(big_mib, "big_mib")
    _require_big_file_space(lab, big_mib)

    def experiment() -> pd.DataFrame:
        client = lab.engine
        base = images.require_base(client, BASE).tag
        rows = []
        with lab.scope() as scope, tempfile.TemporaryDirectory(prefix="labkit-02-") as scratch:
            layered = _build(scope, Path(scratch), "layered",
                             LAYERED.format(base=base, blob_mib=1, big_mib=big_mib))
            sizes = {"big": big_mib * MIB, "small": len("small\n")}
            for repeat in range(repeats):
                output = containers.run_once(client, scope, layered.image_id, ["sh", "-c", COPY_UP_SCRIPT],
                                             limits=LIMITS).decode()
                for line in output.splitlines():
                    path, first_ns, second_ns = line.split()
                    file = "big" if path.endswith("big.bin") else "small"
                    for write, ns in (("first", first_ns), ("second", second_ns)):
                        rows.append({"repeat": repeat, "file": file, "file_bytes": sizes[file], "write": write,
                                     "seconds": int(ns) / 1e9})
        return pd.DataFrame(rows, columns=list(LAB.tables["copy_up"]))

    return CopyUpResult(lab.measure("copy_up", experiment, repeats=repeats, big_mib=big_mib, **LIMITS.record()))


# ---------------------------------------------------------------- reproducibility


@dataclass(frozen=True)
class ReproducibleResult:
    """`reproducible`: per variant, build (0 or 1, each --no-cache, from the same folder) and Dockerfile step (the
    base's own steps left out), the layer's diff id ('' for a config-only step) and the image id; on the second
    build's rows, how many of the layer's paths carry another mtime than in the first, and up to three of them."""

    reproducible: pd.DataFrame

    def comparison(self) -> pd.DataFrame:
        """variant × step: whether the two builds made the same layer ('same', 'differs', or 'no layer'), and the
        paths whose mtime differed."""
        frame = self.reproducible.fillna({"diff_id": "", "example_paths": ""})
        first = frame[frame["build"] == 0].set_index(["variant", "step"])
        second = frame[frame["build"] == 1].set_index(["variant", "step"])
        outcome = (first["diff_id"] == second["diff_id"]).map({True: "same", False: "differs"})
        table = pd.DataFrame({"created_by": first["created_by"],
                              "layer": outcome.where(first["diff_id"] != "", "no layer"),
                              "other_mtimes": second["other_mtimes"], "example_paths": second["example_paths"]})
        return table.reset_index()

    def differing(self, variant: str) -> list[str]:
        table = self.comparison()
        rows = table[(table["variant"] == variant) & (table["layer"] == "differs")]
        return [str(c) for c in rows["created_by"]]

    def layers_made(self, variant: str) -> int:
        table = self.comparison()
        return int(((table["variant"] == variant) & (table["layer"] != "no layer")).sum())

    def same_image(self, variant: str) -> bool:
        ids = self.reproducible[self.reproducible["variant"] == variant].groupby("build")["image_id"].first()
        return bool(ids.nunique() == 1)

    def reasons(self, variant: str) -> list[str]:
        """Paths whose recorded mtime differed between the two builds, over the layers that differed."""
        table = self.comparison()
        rows = table[(table["variant"] == variant) & (table["layer"] == "differs")]
        return sorted({path for paths in rows["example_paths"] for path in str(paths).split()})

    def conclusion(self) -> str:
        as_is, normalised = self.differing("as is"), self.differing("normalised")
        paths = ", ".join(f"`/{p}`" for p in self.reasons("as is")) or "none"
        left = (f": {', '.join(f'`{s[:50]}`' for s in normalised)}, at {', '.join(self.reasons('normalised'))}"
                if normalised else "")
        return (f"**What we measured.** Built twice as is, **{len(as_is)} of {self.layers_made('as is')}** layers "
                f"differed. Each time the recorded modification times differed ({paths} among them), besides the "
                f"clock written into `built-at.txt`: the directories `COPY` creates, what a `RUN` makes, and `/etc`, "
                f"where the builder creates and removes a mount point for `/etc/hosts` in every `RUN`. Normalised — "
                f"the source in a tar whose entries carry `SOURCE_DATE_EPOCH`, the time of everything a `RUN` made "
                f"set to it, the clock replaced by it, and an `/etc/hosts` of the image's own — **{len(normalised)} "
                f"of {self.layers_made('normalised')}** differed{left}. The image ids were "
                f"{'the same' if self.same_image('normalised') else '**still different**'}: the image's config "
                f"records when each step ran, which this engine's builder (BuildKit v0.8) does not take from "
                f"`SOURCE_DATE_EPOCH`.")


def _mtime_differences(first: layers.Layer, second: layers.Layer) -> list[str]:
    """Paths both layers hold whose recorded modification times differ."""
    times = {e.path: e.mtime for e in first.entries}
    return [e.path for e in second.entries if e.path in times and times[e.path] != e.mtime]


def run_reproducible(lab: LabSession) -> ReproducibleResult:
    """Build each Dockerfile of :data:`REPRODUCIBLE` twice from the same folder with --no-cache (BuildKit); read each
    layer's diff id, and for a layer of the second build the paths whose recorded mtime differs from the first's."""

    def experiment() -> pd.DataFrame:
        client = lab.engine
        base = images.require_base(client, BASE).tag
        base_steps = len(client.api.history(base))
        rows: list[dict[str, Any]] = []
        with lab.scope() as scope, tempfile.TemporaryDirectory(prefix="labkit-02-") as scratch:
            for variant, dockerfile in REPRODUCIBLE.items():
                folder = _context(Path(scratch) / f"repro-{variant.replace(' ', '-')}", dockerfile.format(base=base))
                saved: list[layers.SavedImage] = []
                for build in (0, 1):
                    made = builds.build(folder, f"labkit-exp/{STEM}-repro:{len(rows)}-{scope.scope_id}", scope,
                                        no_cache=True, build_args={"SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH})
                    saved.append(layers.read_saved(layers.save(client, made.image_id, Path(scratch) / "image.tar")))
                    for row in saved[build].frame().itertuples():
                        if row.step < base_steps:
                            continue  # the base's own layers: the same image both times
                        changed = (_mtime_differences(saved[0].layers[row.layer], saved[1].layers[row.layer])
                                   if build == 1 and row.layer >= 0 else [])
                        rows.append({"variant": variant, "build": build, "step": row.step,
                                     "created_by": row.created_by,
                                     "diff_id": saved[build].layers[row.layer].diff_id if row.layer >= 0 else "",
                                     "image_id": made.image_id, "other_mtimes": len(changed),
                                     "example_paths": " ".join(changed[:3])})
        return pd.DataFrame(rows, columns=list(LAB.tables["reproducible"]))

    return ReproducibleResult(lab.measure("reproducible", experiment, base=BASE,
                                          source_date_epoch=SOURCE_DATE_EPOCH))


# ---------------------------------------------------------------- claims


def check_claims(ledger: ClaimLedger, layered: LayerResult, overlay: OverlayResult, copy_up: CopyUpResult,
                 repro: ReproducibleResult) -> None:
    """The chapter's claims about layers and our findings beyond them, each with a criterion and a verdict computed
    from this notebook's measurements."""
    made = int((~layered.layers["empty_layer"]).sum())
    config_only = ", ".join(layered.layers.loc[layered.layers["empty_layer"], "created_by"].fillna("")) or "none"
    ledger.check(
        "layers.per_instruction", source=Source.CHAPTER, section=SECTION_IMAGE,
        claim="An image is a stack of read-only layers, each made by one Dockerfile instruction",
        value=made, unit="layers",
        measured=f"{made} layers for {len(layered.layers)} history entries (the imported base and each "
                 f"instruction); no layer for {config_only}; history and layer contents agree on "
                 f"{int(layered.layers['agree'].sum())} of {len(layered.layers)} (largest gap "
                 f"{layered.largest_gap_bytes:,} bytes)",
        criterion=f"every layer tar of docker save belongs to one instruction of the engine's history: its "
                  f"instruction's history size matches the bytes of the files in the tar within "
                  f"{SIZE_TOLERANCE:.1%}",
        verdict=verdict(layered.all_agree), tables=("layers",))

    written, read = overlay.row("written inside"), overlay.row("only read")
    union = bool(written["in_upper"] and not written["in_lower"] and written["in_merged"]
                 and read["in_lower"] and not read["in_upper"] and read["in_merged"])
    ledger.check(
        "overlay.union", source=Source.CHAPTER, section=SECTION_CONTAINER,
        claim="A container adds a thin writable layer over the image's read-only layers",
        value=float(union), unit="1 = as described",
        measured=f"written inside: upper {bool(written['in_upper'])}, lower {bool(written['in_lower'])}, merged "
                 f"{bool(written['in_merged'])}; only read: upper {bool(read['in_upper'])}, lower "
                 f"{bool(read['in_lower'])}, merged {bool(read['in_merged'])}",
        criterion=demonstration("how overlayfs stacks directories", "a file written inside appears in UpperDir "
                                "only, a file only read stays in a LowerDir only, and the merged directory shows both"),
        verdict=verdict(union), tables=("overlay",))

    first, second = copy_up.median_ms("big", "first"), copy_up.median_ms("big", "second")
    small_first = copy_up.median_ms("small", "first")
    appended = overlay.row("appended to")
    full_copy = int(appended["upper_bytes"]) == int(appended["lower_bytes"]) + 1
    costly = first > 2 * second and first > 2 * small_first
    ledger.check(
        "overlay.copy_up", source=Source.FINDING, section=SECTION_COPY_UP,
        claim="The first write to a file from the image copies the whole file into the container's layer",
        value=first / second, unit="× (first write over second, median)",
        measured=f"after a one-byte append UpperDir holds {int(appended['upper_bytes']):,} bytes of a "
                 f"{int(appended['lower_bytes']):,}-byte file; first append {first:.1f} ms, second {second:.2f} ms, "
                 f"first append to a small file {small_first:.2f} ms ({copy_up.big_bytes / MIB:.0f} MiB file)",
        criterion="UpperDir holds the whole file plus the byte, and the first append's median is more than twice "
                  "both the second append's and the first append to a small file's",
        verdict=verdict(full_copy and costly), tables=("overlay", "copy_up"))

    kept = layered.image_bytes("deleted in a later layer") - layered.image_bytes("deleted in the same RUN")
    ledger.check(
        "layers.delete_does_not_shrink", source=Source.FINDING, section=SECTION_DELETE,
        claim="Deleting a file in a later layer does not make the image smaller",
        value=kept / MIB, unit="MiB kept",
        measured=f"the image is {kept / MIB:.1f} MiB larger than the one-RUN variant; the whiteout hides "
                 f"{layered.wasted_bytes / MIB:.1f} MiB of a {layered.blob_bytes / MIB:.0f} MiB blob",
        criterion=demonstration("read-only layers: a later layer can only hide a file", "the image with the "
                                "later-layer delete is larger than the one-RUN variant by ≥ 90 % of the blob"),
        verdict=verdict(kept >= 0.9 * layered.blob_bytes), tables=("images", "layers"))

    as_is, normalised = repro.differing("as is"), repro.differing("normalised")
    ledger.check(
        "repro.timestamps", source=Source.FINDING, section=SECTION_REPRO,
        claim="The same Dockerfile built twice gives the same layers only once its timestamps are pinned",
        value=len(normalised), unit="layers that differed (normalised)",
        measured=f"as is: {len(as_is)} of {repro.layers_made('as is')} layers differed; with SOURCE_DATE_EPOCH, "
                 f"mtimes pinned, the source as a stamped tar and an /etc/hosts of its own: {len(normalised)} of "
                 f"{repro.layers_made('normalised')}; image ids "
                 f"{'equal' if repro.same_image('normalised') else 'still differ'}",
        criterion="the as-is builds differ in a layer (certain by construction: they write the build's date into "
                  "one) and the normalised builds in none; different image ids are a caveat",
        verdict=verdict(bool(as_is) and not normalised, caveat=not repro.same_image("normalised")),
        caveat="the layers match but the image ids do not; the image configs, which hold creation times, were not "
               "compared" if not repro.same_image("normalised") else "", tables=("reproducible",))

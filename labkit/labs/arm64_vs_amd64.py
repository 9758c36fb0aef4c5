"""Notebook 11, arm64 against amd64: exec format error, the cost of emulation, cross-building, one tag for two.

Every ``run_*`` takes the notebook's :class:`~labkit.core.session.LabSession`, measures live (or replays the
recorded tables) and returns a frozen result holding tidy DataFrames; the numbers and sentences the notebook
quotes are properties and methods of those results. "Native" is this host's platform and "foreign" the other
one (arm64 on an amd64 host, amd64 on an arm64 host), so the notebook runs in both directions.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import docker
import pandas as pd

from labkit import assets
from labkit.core.claims import CLAIM_COLUMNS, CLAIMS_TABLE, ClaimLedger, Source, Verdict, demonstration, verdict
from labkit.core.lab import ENGINE, ROOT, Lab, Requirement
from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import arch, containers, images, measure, registry, space
from labkit.instruments.arch import require_emulation
from labkit.instruments.engine import Scope, docker_cli
from labkit.instruments.images import busybox_base
from labkit.instruments.limits import Limits
from labkit.instruments.shell import run

STEM = "11-arm64-vs-amd64"
# The chapter's section these claims come from ("Build for the right architecture" sits in it), as it spells it,
# and the notebook's sections of our findings.
SECTION = "Registries — Where Images Live Between Build and Run"
SECTION_COST = "The cost of emulation"
SECTION_BUILD = "Building for the other architecture"
MUCH_SLOWER = 2.0  # "much slower": at least twice the native time

EXEC_FORMAT_ERROR = "exec format error"
UNAME = ["uname", "-m"]
LIMITS = Limits.of(memory_mib=256, pids=64, cpus=1.0)  # every container of this notebook runs under these

# The emulation workloads: what each runs (busybox applets, the same binary for both platforms) and what its
# size parameter counts.
LOOP, HASH, GZIP, START = "interpreter loop", "sha256 of a buffer", "gzip of a buffer", "process start-up"
WORKLOADS = (LOOP, HASH, GZIP, START)
CPU_BOUND = (LOOP, HASH, GZIP)
SIZE_UNIT = {LOOP: "iterations", HASH: "bytes", GZIP: "bytes", START: "processes"}

NATIVE_BUILD, EMULATED_BUILD, CROSS_BUILD = "native build", "emulated build", "cross build"
BUILD_METHODS = (NATIVE_BUILD, EMULATED_BUILD, CROSS_BUILD)
DEFAULT_PLATFORM = "(none)"


def _foreign_base(kind: str) -> str:
    return f"{kind}-{arch.DEBIAN_ARCH[arch.foreign_platform(_known_machine())]}"


def _known_machine() -> str:
    # An unknown machine is reported by doctor and refused by every run_*; the declaration itself must not fail.
    machine = os.uname().machine
    return machine if machine in arch.PLATFORM_OF_MACHINE else "x86_64"


def builder_base(platform: str) -> str:
    """The labkit base with Debian's build-essential for `platform`."""
    return "c-builder" if arch.validate_platform(platform) == arch.AMD64 else "c-builder-arm64"


def cross_compiler(target: str) -> str:
    """Debian's cross gcc that runs natively here and emits `target` code, e.g. ``aarch64-linux-gnu-gcc``."""
    return f"{arch.UNAME_MACHINE[arch.validate_platform(target)]}-linux-gnu-gcc"


def prepare(client: docker.DockerClient) -> list[str]:
    """Emulation for the foreign platform (binfmt_misc mounted, its qemu entry enabled) and the busybox trees."""
    foreign = arch.foreign_platform()
    check = arch.enable_emulation(foreign)
    return [f"binfmt {arch.emulator_entry()}: {check.detail}",
            *(f"rootfs {name}: {images.rootfs_dir(name)}" for name in (busybox_base(p) for p in arch.PLATFORMS))]


LAB = Lab(
    stem=STEM,
    topic="arm64 vs amd64",
    requirements=(
        ENGINE, ROOT,
        Requirement("binfmt", arch.emulator_entry(), "running the other architecture's binaries under qemu"),
        Requirement("program", cross_compiler(arch.foreign_platform(_known_machine())),
                    "cross-compiling for the other architecture"),
        Requirement("program", "debootstrap", "the Debian build-essential bases"),
        Requirement("program", "dpkg-deb", "unpacking busybox-static for both architectures"),
        Requirement("registry", purpose="the manifest list (one tag, two architectures)"),
    ),
    bases=("busybox-amd64", "busybox-arm64", "c-builder", "c-builder-arm64"),
    tables={
        "exec_format": ("entry_state", "platform", "native", "image", "command", "exit_code", "output",
                        "exec_format_error"),
        "emulation": ("workload", "size", "unit", "platform", "emulated", "repeat", "position", "wall_s",
                      "output_sha256"),
        "builds": ("method", "platform", "repeat", "wall_s", "compile_s", "image_architecture", "output",
                   "functions"),
        "default_platform": ("platform_flag", "binary_platform", "image_architecture"),
        "manifest": registry.MANIFEST_COLUMNS,
        CLAIMS_TABLE: CLAIM_COLUMNS,
    },
    prepare=prepare,
    headline="run.exec_format_error",
)


def _platforms() -> tuple[str, str]:
    """(native, foreign) for this host."""
    return arch.host_platform(), arch.foreign_platform()


# ---------------------------------------------------------------- 1. exec format error


@dataclass(frozen=True)
class ExecFormatResult:
    """`runs`: entry_state (the emulator's binfmt entry disabled / enabled), platform, native, image, command,
    exit_code, output (stdout and stderr as the CLI printed them), exec_format_error."""

    runs: pd.DataFrame

    def row(self, entry_state: str, native: bool) -> pd.Series:
        rows = self.runs[(self.runs["entry_state"] == entry_state) & (self.runs["native"] == native)]
        return rows.iloc[0]

    @property
    def failed_without_emulator(self) -> bool:
        r = self.row("disabled", native=False)
        return int(r["exit_code"]) != 0 and bool(r["exec_format_error"])

    @property
    def recovered(self) -> bool:
        """With the entry enabled again the foreign image ran and `uname -m` named the foreign machine."""
        r = self.row("enabled", native=False)
        return int(r["exit_code"]) == 0 and str(r["output"]) == arch.UNAME_MACHINE[str(r["platform"])]

    def conclusion(self) -> str:
        off, on = self.row("disabled", native=False), self.row("enabled", native=False)
        native = self.row("disabled", native=True)
        return (f"**What we measured.** With the emulator's entry disabled, `docker run --platform {off['platform']}` "
                f"exited **{off['exit_code']}** and said: `{off['output']}`. The native image ran meanwhile and "
                f"printed `{native['output']}`: only the foreign binary failed, at `execve`, before any of its code "
                f"ran. With the entry enabled again the same image exited {on['exit_code']} and `uname -m` printed "
                f"**{on['output']}**: the kernel handed the binary to qemu, which reports the machine it emulates.")


def run_exec_format(lab: LabSession) -> ExecFormatResult:
    """`uname -m` in the native and the foreign busybox image, with the foreign platform's binfmt entry disabled
    (restored afterwards, whatever happens) and enabled."""
    lab.require_root("disabling a binfmt_misc entry")

    def experiment() -> pd.DataFrame:
        require_emulation()  # enabled before, so that the run after the restore can show the recovery
        native, foreign = _platforms()
        entry = arch.emulator_entry()
        rows = []
        with lab.scope() as scope:
            def attempt(state: str) -> None:
                for platform in (native, foreign):
                    image = images.require_base(lab.engine, busybox_base(platform)).tag
                    done = containers.run_on_platform(scope, image, platform, UNAME, limits=LIMITS)
                    said = containers.said(done)
                    rows.append({"entry_state": state, "platform": platform, "native": platform == native,
                                 "image": image, "command": " ".join(UNAME), "exit_code": done.exit_code,
                                 "output": said, "exec_format_error": EXEC_FORMAT_ERROR in said})

            with arch.entry_disabled(entry):
                attempt("disabled")
            attempt("enabled")
        return pd.DataFrame(rows)

    return ExecFormatResult(lab.measure("exec_format", experiment))


# ---------------------------------------------------------------- 2. the cost of emulation


def validate_sizes(sizes: dict[str, int]) -> dict[str, int]:
    """`sizes` if every workload is known and its size a whole number ≥ 1; BadParameter with the fix otherwise."""
    unknown = sorted(set(sizes) - set(WORKLOADS))
    if unknown:
        raise BadParameter(f"sizes names unknown workloads {unknown}.", f"Use {list(WORKLOADS)}.")
    for workload, size in sizes.items():
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise BadParameter(f"sizes[{workload!r}]={size!r}: a workload needs a size ≥ 1 "
                               f"({SIZE_UNIT[workload]}).", f"E.g. {workload!r}: {QUICK_SIZES[workload]}.")
    return sizes


# How many copies of its buffer each workload holds in this process at once while the experiment makes it: the hash
# buffer is drawn as one big integer, then turned into bytes (2); the text grows in a bytearray, which is sliced,
# then made bytes (3). The two are made one after the other, then written side by side in one temp folder.
BUFFER_COPIES_IN_MEMORY = {HASH: 2, GZIP: 3}


def _require_space(sizes: dict[str, int]) -> None:
    """BadParameter when the buffers of `sizes` (bytes) do not fit in this host's free memory or temp folder."""
    buffers = {space.Size(f"sizes[{workload!r}]", sizes[workload], "bytes"): copies
               for workload, copies in BUFFER_COPIES_IN_MEMORY.items() if workload in sizes}
    for buffer, copies in buffers.items():
        space.require_memory({buffer: copies})
    space.require_disk((Path(tempfile.gettempdir()), dict.fromkeys(buffers, 1)))


QUICK_SIZES = {LOOP: 100_000, HASH: 4 * 2**20, GZIP: 2 * 2**20, START: 1}
FULL_SIZES = {LOOP: 300_000, HASH: 16 * 2**20, GZIP: 8 * 2**20, START: 1}


def _compressible(size: int) -> bytes:
    """`size` bytes of text-like data (seeded words: compresses about 3:1, like source code)."""
    rng = random.Random(11)
    words = ["".join(rng.choice("etaoinshrdlucmfwyp") for _ in range(rng.randint(2, 9))) for _ in range(2000)]
    text = bytearray()
    while len(text) < size:
        text += (" ".join(rng.choices(words, k=64)) + "\n").encode()
    return bytes(text[:size])


def _workload_argv(busybox: Path, workload: str, size: int, folder: Path) -> list[str]:
    """The command line of `workload` with this `busybox` binary: every process in it is that binary."""
    if workload == LOOP:
        return [str(busybox), "awk", f"BEGIN {{ s = 0; for (i = 0; i < {size}; i++) s += i % 7; print s }}"]
    if workload == HASH:
        return [str(busybox), "sha256sum", str(folder / "buffer.bin")]
    if workload == GZIP:
        return [str(busybox), "sh", "-c", f"{busybox} gzip -c -6 {folder / 'text.txt'} | {busybox} wc -c"]
    return [str(busybox), "true"]


@dataclass(frozen=True)
class EmulationResult:
    """`samples`: workload, size, unit, platform, emulated, repeat, position, wall_s (s, one run of busybox with
    the workload, started from this process), output_sha256 (of what it printed).

    Native and emulated runs of one workload alternate round by round, so each round gives one paired ratio."""

    samples: pd.DataFrame

    @cached_property
    def ratios(self) -> pd.DataFrame:
        """workload, repeat, slowdown: emulated wall time over native wall time in the same round."""
        wide = self.samples.pivot_table(index=["workload", "repeat"], columns="emulated", values="wall_s")
        return (wide[True] / wide[False]).rename("slowdown").reset_index()

    @cached_property
    def summary(self) -> pd.DataFrame:
        """Per workload: native and emulated medians (s), the median paired slowdown with its order-statistic
        interval (`ci_low`, `ci_high`) and that interval's coverage, n, and whether both printed the same."""
        rows = {}
        for workload in dict.fromkeys(self.samples["workload"]):
            runs = self.samples[self.samples["workload"] == workload]
            ratio = measure.summarize(self.ratios.loc[self.ratios["workload"] == workload, "slowdown"].tolist())
            rows[workload] = {
                "native_s": runs.loc[~runs["emulated"], "wall_s"].median(),
                "emulated_s": runs.loc[runs["emulated"], "wall_s"].median(),
                "slowdown": ratio.median, "ci_low": ratio.ci_low, "ci_high": ratio.ci_high,
                "coverage": ratio.coverage, "n": ratio.n, "same_output": runs["output_sha256"].nunique() == 1}
        table = pd.DataFrame.from_dict(rows, orient="index")
        table.index.name = "workload"
        return table

    def slowdown(self, workload: str) -> float:
        return float(self.summary.loc[workload, "slowdown"])

    @property
    def much_slower(self) -> Verdict:
        """Whether emulation is much slower (≥ :data:`MUCH_SLOWER`×) for CPU-bound work: holds if every CPU-bound
        workload's interval lies at or above it, does not hold if one lies wholly below it, inconclusive else."""
        cpu_bound = self.summary.loc[list(CPU_BOUND)]
        if (cpu_bound["ci_low"] >= MUCH_SLOWER).all():
            return Verdict.HOLDS
        return Verdict.FAILS if (cpu_bound["ci_high"] < MUCH_SLOWER).any() else Verdict.INCONCLUSIVE

    @property
    def cpu_bound_least(self) -> str:
        """The CPU-bound workload with the smallest slowdown."""
        return str(self.summary.loc[list(CPU_BOUND), "slowdown"].idxmin())

    @property
    def emulated_platform(self) -> str:
        return str(self.samples.loc[self.samples["emulated"], "platform"].iloc[0])

    def conclusion(self) -> str:
        s = self.summary
        parts = "; ".join(f"{w}: **{r.slowdown:.1f}×** [{r.ci_low:.1f}, {r.ci_high:.1f}]" for w, r in s.iterrows())
        same = "every workload printed the same output on both" if s["same_output"].all() else \
            "SOME OUTPUTS DIFFERED between the two"
        return (f"**What we measured** (n = {int(s['n'].min())} paired rounds per workload; median slowdown of "
                f"{self.emulated_platform} under qemu against native, with an order-statistic interval of "
                f"coverage {s['coverage'].min():.1%}): {parts}. {same.capitalize()}. The {s['slowdown'].idxmax()} "
                f"suffered most and the {s['slowdown'].idxmin()} least. qemu translates each block of guest "
                "instructions into host instructions once and caches it: short, branchy code such as an "
                "interpreter's dispatch loop pays most per useful instruction, and every new process pays for "
                "starting qemu itself.")


def run_emulation_cost(lab: LabSession, sizes: dict[str, int] | None = None, repeats: int = 5,
                       warmup: int = 1) -> EmulationResult:
    """Wall time (s) of each workload with the native and the foreign busybox-static (the same Debian version),
    interleaved per round; the foreign binary runs under qemu through binfmt_misc, as in a container."""
    sizes = validate_sizes(dict(sizes or FULL_SIZES))
    measure.validate_repeats(repeats, warmup)
    if lab.live:
        _require_space(sizes)

    def experiment() -> pd.DataFrame:
        require_emulation()
        native, foreign = _platforms()
        binaries = {p: images.rootfs_dir(busybox_base(p)) / "bin" / "busybox" for p in (native, foreign)}
        frames = []
        with tempfile.TemporaryDirectory(prefix="labkit-emulation-") as folder:
            (Path(folder) / "buffer.bin").write_bytes(random.Random(7).randbytes(sizes.get(HASH, 1)))
            (Path(folder) / "text.txt").write_bytes(_compressible(sizes.get(GZIP, 1)))
            outputs: dict[tuple[str, str], str] = {}

            def runner(workload: str, platform: str) -> Callable[[], None]:
                argv = _workload_argv(binaries[platform], workload, sizes[workload], Path(folder))

                def once() -> None:
                    printed = run(argv, 600).stdout.split()[:1]  # the result, without the file name sha256sum adds
                    outputs[workload, platform] = hashlib.sha256(" ".join(printed).encode()).hexdigest()

                return once

            for workload, size in sizes.items():
                samples = measure.compare({p: runner(workload, p) for p in (native, foreign)}, repeats, warmup)
                frames.append(samples.rename(columns={"method": "platform"}).assign(
                    workload=workload, size=size, unit=SIZE_UNIT[workload],
                    emulated=lambda f: f["platform"] == foreign,
                    output_sha256=lambda f, w=workload: [outputs[w, p] for p in f["platform"]]))
        columns = list(LAB.tables["emulation"])
        return pd.concat(frames, ignore_index=True)[columns]

    return EmulationResult(lab.measure("emulation", experiment, sizes=sizes, repeats=repeats, warmup=warmup))


# ---------------------------------------------------------------- 3. building for the other architecture


# The generated C program (program_source) built in its image, or cross-compiled and copied in (labkit/assets/program/).
BUILD_DOCKERFILE = assets.text("program/Dockerfile.build-in-image")
CROSS_DOCKERFILE = assets.text("program/Dockerfile.cross-built")


def program_source(functions: int) -> str:
    """A C program of `functions` small functions (compile time grows with it); it prints one checksum that is
    the same on every architecture."""
    if not isinstance(functions, int) or isinstance(functions, bool) or functions < 1:
        raise BadParameter(f"functions={functions!r}: the program needs at least one function.",
                           "E.g. functions=150 (quick) or 500 (full).")
    bodies = "\n".join(
        f"static unsigned long f{i}(unsigned long x) {{ for (int k = 0; k < {i % 13 + 3}; k++) "
        f"x = x * {2 * i + 3}UL + (x >> {i % 7 + 1}) + {i}UL; return x ^ {i * 2654435761 % 2**32}UL; }}"
        for i in range(functions))
    calls = "\n".join(f"    x = f{i}(x);" for i in range(functions))
    return (f"#include <stdio.h>\n{bodies}\nint main(void) {{\n    unsigned long x = 11;\n{calls}\n"
            f'    printf("checksum %lu\\n", x);\n    return 0;\n}}\n')


@dataclass(frozen=True)
class BuildResult:
    """`builds`: method (native / emulated / cross build), platform, repeat, wall_s (the whole build, s),
    compile_s (the cross compiler alone, s; NaN for builds in the builder image), image_architecture (what the
    engine recorded), output (what the built program printed, run as that platform), functions.

    `default_platform`: platform_flag (``(none)`` or the value passed), binary_platform (what the binary inside
    is built for), image_architecture — what `docker build` records with and without ``--platform``."""

    builds: pd.DataFrame
    default_platform: pd.DataFrame

    @cached_property
    def summary(self) -> pd.DataFrame:
        """Per method: platform, n, median wall time (s), its ratio to the native build, image architecture."""
        grouped = self.builds.groupby("method", sort=False)
        table = grouped.agg(platform=("platform", "first"), n=("wall_s", "size"), median_s=("wall_s", "median"),
                            image_architecture=("image_architecture", "first"), output=("output", "first"))
        table["ratio_to_native"] = table["median_s"] / table.loc[NATIVE_BUILD, "median_s"]
        return table

    def median_s(self, method: str) -> float:
        return float(self.summary.loc[method, "median_s"])

    @property
    def same_output(self) -> bool:
        return self.builds["output"].nunique() == 1

    @property
    def emulated_over_cross(self) -> float:
        return self.median_s(EMULATED_BUILD) / self.median_s(CROSS_BUILD)

    @property
    def cross_always_faster(self) -> bool:
        """Every cross build took less time than every emulated build."""
        wall = self.builds.groupby("method")["wall_s"]
        return bool(wall.max()[CROSS_BUILD] < wall.min()[EMULATED_BUILD])

    def range_s(self, method: str) -> str:
        """The wall times of `method`'s builds, e.g. ``3.8–5.1 s (median 4.3, n 3)``."""
        wall = self.builds.loc[self.builds["method"] == method, "wall_s"]
        return f"{wall.min():.1f}–{wall.max():.1f} s (median {wall.median():.1f}, n {len(wall)})"

    def _cross_versus_emulated(self) -> str:
        ratio = self.emulated_over_cross
        return (f"{ratio:.1f}× faster than emulating the compiler" if ratio >= 1 else
                f"{1 / ratio:.1f}× SLOWER than emulating the compiler")

    def recorded(self, flag: str) -> str:
        return str(self.default_platform.set_index("platform_flag").loc[flag, "image_architecture"])

    def binary_platform(self, flag: str) -> str:
        return str(self.default_platform.set_index("platform_flag").loc[flag, "binary_platform"])

    def conclusion(self) -> str:
        s = self.summary
        return (f"**What we measured** (median of {int(s['n'].min())} build(s) each, no cache). The same Dockerfile "
                f"took **{self.median_s(NATIVE_BUILD):.1f} s** for {s.loc[NATIVE_BUILD, 'platform']} and "
                f"**{self.median_s(EMULATED_BUILD):.1f} s** for {s.loc[EMULATED_BUILD, 'platform']} with its `RUN "
                f"gcc` under qemu ({s.loc[EMULATED_BUILD, 'ratio_to_native']:.1f}× native). Cross-compiling the "
                f"same program with Debian's cross gcc and copying it into a `FROM scratch` image took "
                f"**{self.median_s(CROSS_BUILD):.1f} s**: {self._cross_versus_emulated()}. The engine recorded the "
                f"architectures {', '.join(s['image_architecture'])}, and the three "
                f"programs printed {'the same line' if self.same_output else 'DIFFERENT lines'}: "
                f"`{s['output'].iloc[0]}`.")

    def default_conclusion(self) -> str:
        return (f"Without `--platform` the engine recorded **{self.recorded(DEFAULT_PLATFORM)}** for an image whose "
                f"only binary is built for {self.binary_platform(DEFAULT_PLATFORM)}: `docker build` labels an image "
                f"with the builder's platform, not with what is inside it. With `--platform "
                f"{self.binary_platform(DEFAULT_PLATFORM)}` it recorded "
                f"**{self.recorded(self.binary_platform(DEFAULT_PLATFORM))}**.")


def _build(context: Path, tag: str, scope: Scope, platform: str | None, build_args: dict[str, str]) -> float:
    """`docker build` (BuildKit, no cache, never pulling) of `context`; wall time in seconds."""
    argv = [docker_cli(), "build", "--pull=false", "--no-cache", "--progress=plain", *scope.label_args(),
            *(["--platform", platform] if platform else []),
            *(arg for key, value in build_args.items() for arg in ("--build-arg", f"{key}={value}")), "-t", tag,
            str(context)]
    started = measure.time_calls(lambda: run(argv, 3600, env=_buildkit_env()), repeats=1, warmup=0)
    return started[0]


def _buildkit_env() -> dict[str, str]:
    return {**os.environ, "DOCKER_BUILDKIT": "1"}


def run_builds(lab: LabSession, functions: int = 500, repeats: int = 3) -> BuildResult:
    """Build the same program three ways, `repeats` times each, without cache: the Dockerfile with `RUN gcc` for
    the native platform and for the foreign one (RUN under qemu), and a cross build (the cross gcc on this host,
    then a FROM scratch image for the foreign platform). Then the cross-built binary's image again without
    ``--platform``, to see what the engine records by default."""
    source = program_source(functions)
    measure.validate_repeats(repeats)

    def experiment() -> dict[str, pd.DataFrame]:
        require_emulation()
        native, foreign = _platforms()
        client = lab.engine
        bases = {p: images.require_base(client, builder_base(p)).tag for p in (native, foreign)}
        rows, defaults = [], []
        with lab.scope() as scope, tempfile.TemporaryDirectory(prefix="labkit-builds-") as folder:
            in_image, cross = Path(folder) / "in-image", Path(folder) / "cross"
            for context, dockerfile in ((in_image, BUILD_DOCKERFILE), (cross, CROSS_DOCKERFILE)):
                context.mkdir()
                (context / "Dockerfile").write_text(dockerfile)
            (in_image / "program.c").write_text(source)
            (cross / "program.c").write_text(source)
            compiler = cross_compiler(foreign)
            for repeat in range(repeats):
                for method, platform in ((NATIVE_BUILD, native), (EMULATED_BUILD, foreign), (CROSS_BUILD, foreign)):
                    tag = f"{scope.name(method.split()[0])}:{repeat}"
                    compile_s = float("nan")
                    if method == CROSS_BUILD:
                        compile_s = measure.time_calls(lambda: run(
                            [compiler, "-O2", "-static", "-o", str(cross / "program"), str(cross / "program.c")],
                            600), repeats=1, warmup=0)[0]
                        wall_s = compile_s + _build(cross, tag, scope, platform, {})
                    else:
                        wall_s = _build(in_image, tag, scope, platform, {"BASE": bases[platform]})
                    image = client.images.get(tag)
                    ran = containers.run_on_platform(scope, tag, platform, ["/usr/local/bin/program"], limits=LIMITS)
                    output = containers.said(ran)
                    rows.append({"method": method, "platform": platform, "repeat": repeat, "wall_s": wall_s,
                                 "compile_s": compile_s, "image_architecture": image.attrs["Architecture"],
                                 "output": output, "functions": functions})
            for flag in (None, foreign):
                tag = f"{scope.name('default')}:{'none' if flag is None else 'explicit'}"
                _build(cross, tag, scope, flag, {})
                defaults.append({"platform_flag": flag or DEFAULT_PLATFORM, "binary_platform": foreign,
                                 "image_architecture": client.images.get(tag).attrs["Architecture"]})
        return {"builds": pd.DataFrame(rows), "default_platform": pd.DataFrame(defaults)}

    tables = lab.record("builds", ("builds", "default_platform"), experiment, functions=functions, repeats=repeats)
    return BuildResult(tables["builds"], tables["default_platform"])


# ---------------------------------------------------------------- 4. one tag, two architectures


def run_manifest_list(lab: LabSession, port: int | None = None) -> registry.ManifestResult:
    """Push the amd64 and arm64 busybox images to a local registry (127.0.0.1, `port` or a free one), join them
    under one tag with a manifest list, then pull that tag once per platform and read what came back."""
    registry.validate_port(port)

    def experiment() -> pd.DataFrame:
        with lab.scope() as scope:
            return registry.busybox_under_one_tag(lab.engine, scope, port)

    return registry.ManifestResult(lab.measure("manifest", experiment, port=port))


# ---------------------------------------------------------------- claims


def check_claims(ledger: ClaimLedger, exec_format: ExecFormatResult, cost: EmulationResult, builds: BuildResult,
                 manifest: registry.ManifestResult) -> None:
    """The chapter's claims about architectures and our findings beyond them, each with a criterion and a verdict
    computed from this notebook's measurements."""
    native_arch = builds.summary.loc[NATIVE_BUILD, "image_architecture"]
    default_arch = builds.recorded(DEFAULT_PLATFORM)
    ledger.check(
        "build.host_architecture_by_default", source=Source.CHAPTER, section=SECTION,
        claim="Without --platform, docker build makes an image for the machine it runs on",
        value=float(default_arch == native_arch), unit="1 = host architecture recorded",
        measured=f"without --platform the engine recorded {default_arch} (host: {native_arch}) for an image whose "
                 f"binary is {builds.binary_platform(DEFAULT_PLATFORM)}",
        criterion=demonstration("how the builder labels an image", "an image built without --platform is recorded "
                                "with the host's architecture"),
        verdict=verdict(default_arch == native_arch), tables=("default_platform", "builds"))

    off = exec_format.row("disabled", native=False)
    ledger.check(
        "run.exec_format_error", source=Source.CHAPTER, section=SECTION,
        claim="An image built for another architecture fails to start with exec format error",
        value=float(off["exit_code"]), unit="exit code (no emulator registered)",
        measured=f"exit {off['exit_code']}: {off['output']}; with qemu registered it ran and printed "
                 f"{exec_format.row('enabled', native=False)['output']}",
        criterion=demonstration("the kernel's binfmt loader once the emulator entry is off", "without an emulator "
                                "entry the foreign image exits non-zero with 'exec format error'; that it runs once "
                                "qemu is registered in binfmt_misc is a caveat"),
        verdict=verdict(exec_format.failed_without_emulator, caveat=exec_format.recovered),
        caveat="only where no emulator is registered: with qemu-user in binfmt_misc (Docker Desktop, this host "
               "after `labkit setup`) it runs, emulated" if exec_format.recovered else "",
        tables=("exec_format",))

    requested = builds.binary_platform(DEFAULT_PLATFORM)
    explicit_ok = builds.recorded(requested) == requested.split("/")[1] and default_arch != requested.split("/")[1]
    ledger.check(
        "build.explicit_platform", source=Source.CHAPTER, section=SECTION,
        claim="Passing --platform in CI builds for the servers' architecture whatever the runner is",
        value=float(explicit_ok), unit="1 = only the explicit flag recorded the binary's platform",
        measured=f"the same {requested} binary was recorded as {default_arch} without --platform and as "
                 f"{builds.recorded(requested)} with --platform {requested}",
        criterion=demonstration("how the builder labels an image", "with --platform the recorded architecture is "
                                "the requested one, and without it the host's (so a default build on another CI "
                                "runner would record something else)"),
        verdict=verdict(explicit_ok), tables=("default_platform",))

    cpu_bound = cost.summary.loc[list(CPU_BOUND)]
    straddling = cpu_bound.index[(cpu_bound["ci_low"] < MUCH_SLOWER) & (cpu_bound["ci_high"] >= MUCH_SLOWER)]
    least = cost.cpu_bound_least
    ledger.check(
        "emulation.slower", source=Source.FINDING, section=SECTION_COST,
        claim=f"Running another architecture's programs under emulation is much slower (≥ {MUCH_SLOWER:g}×)",
        value=float(cost.summary.loc[least, "slowdown"]), unit="× native (median, least-affected CPU-bound workload)",
        measured="; ".join(f"{w} {r.slowdown:.1f}× [{r.ci_low:.1f}, {r.ci_high:.1f}]"
                           for w, r in cost.summary.iterrows()),
        criterion=f"holds if every CPU-bound workload's slowdown interval lies at or above {MUCH_SLOWER:g}×; does "
                  f"not hold if one lies wholly below it; otherwise inconclusive",
        verdict=cost.much_slower,
        caveat=f"the interval of {', '.join(straddling)} reaches below {MUCH_SLOWER:g}×"
        if cost.much_slower == Verdict.INCONCLUSIVE else "", tables=("emulation",))

    ledger.check(
        "build.cross_faster_than_emulated", source=Source.FINDING, section=SECTION_BUILD,
        claim="Cross-compiling on the host beats building the same program under emulation",
        value=builds.emulated_over_cross, unit="× (emulated build time / cross build time, medians)",
        measured=f"emulated builds {builds.range_s(EMULATED_BUILD)}, cross builds {builds.range_s(CROSS_BUILD)}, "
                 f"native builds {builds.range_s(NATIVE_BUILD)}; outputs "
                 f"{'identical' if builds.same_output else 'DIFFERENT'}",
        criterion="the slowest cross build is faster than the fastest emulated one, and its binary prints the same "
                  "output",
        verdict=verdict(builds.cross_always_faster and builds.same_output), tables=("builds",))

    ledger.check(
        "manifest.one_tag_two_architectures", source=Source.CHAPTER, section=SECTION,
        claim="Under one tag, a manifest list gives each machine the image for its own architecture",
        value=float(manifest.resolves), unit="1 = every pull resolved to its platform",
        measured="; ".join(f"{r.platform} → {r.pulled_architecture} ({r.uname_m})"
                           for r in manifest.pulls.itertuples()),
        criterion=demonstration("how a manifest list is resolved", "for every platform, pull --platform of the one "
                                "tag gives that platform's image (same id as the one pushed), recorded with its "
                                "architecture, and uname -m in it prints that machine"),
        verdict=verdict(manifest.resolves), tables=("manifest",))

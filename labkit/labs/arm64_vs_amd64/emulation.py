"""Section 2: the cost of emulation — the same busybox workloads run natively and under qemu, interleaved
round by round; the slowdown per workload with its interval."""

from __future__ import annotations

import hashlib
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from labkit.core.claims import Verdict
from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import images, measure, space, undo
from labkit.instruments.arch import require_emulation
from labkit.instruments.images import busybox_base
from labkit.instruments.shell import run
from labkit.labs.arm64_vs_amd64.declaration import (
    CPU_BOUND,
    GZIP,
    HASH,
    LAB,
    LOOP,
    MUCH_SLOWER,
    SIZE_UNIT,
    START,
    WORKLOADS,
    platforms,
)


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
        native, foreign = platforms()
        binaries = {p: images.rootfs_dir(busybox_base(p)) / "bin" / "busybox" for p in (native, foreign)}
        frames = []
        with undo.temporary_folder("labkit-emulation-") as folder:
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

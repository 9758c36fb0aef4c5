"""Section 3: building for the other architecture — one Dockerfile built natively and with its `RUN gcc`
emulated, against a cross build; and what `docker build` records without `--platform`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from labkit import assets
from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import containers, images, measure, undo
from labkit.instruments.arch import require_emulation
from labkit.instruments.engine import Scope, docker_cli
from labkit.instruments.shell import run
from labkit.labs.arm64_vs_amd64.declaration import (
    CROSS_BUILD,
    DEFAULT_PLATFORM,
    EMULATED_BUILD,
    LIMITS,
    NATIVE_BUILD,
    builder_base,
    cross_compiler,
    platforms,
)

# The generated C program (program_source) built in its image, or cross-compiled and copied in
# (labkit/assets/arm64_vs_amd64/).
BUILD_DOCKERFILE = assets.text("arm64_vs_amd64/Dockerfile.build-in-image")
CROSS_DOCKERFILE = assets.text("arm64_vs_amd64/Dockerfile.cross-built")


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
        native, foreign = platforms()
        client = lab.engine
        bases = {p: images.require_base(client, builder_base(p)).tag for p in (native, foreign)}
        rows, defaults = [], []
        with lab.scope() as scope, undo.temporary_folder("labkit-builds-") as folder:
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

"""Section 3: musl and native modules. One small C module is built three ways on this host — with musl-gcc, with
gcc, and with gcc and Debian's hardening flags — and loaded by a program built for the base's own C library: on
the musl base (the Alpine stand-in) and on a glibc base (debian-slim).

What stands in for what: the program is the interpreter (node or python, built against the base's C library as
Alpine's are built against musl) and the module a native extension (a Python extension's .so, a node addon's
.node: shared objects the interpreter opens with dlopen). A glibc build on the musl base is what an image gets when
it installs a wheel or a prebuilt addon made on a glibc distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from labkit import assets
from labkit.core.results import rows_where
from labkit.core.session import LabSession
from labkit.instruments import containers, images, undo
from labkit.instruments.shell import run
from labkit.labs.choosing_a_base_image.declaration import GREETING, LAB, LIMITS

TABLE = "native_modules"
LIBC_OF_BASE = {"musl-busybox": "musl", "debian-slim": "glibc"}  # each base and the only C library it holds
COMPILER = {"musl": "musl-gcc", "glibc": "gcc"}
MOUNT = "/native"  # where the built programs and modules are mounted (read-only) in each container
EXPECTED_OUTPUT = f"native module says {GREETING}"  # what module.c's greet(GREETING) returns
RUN_TIMEOUT_S = 60


@dataclass(frozen=True)
class ModuleBuild:
    """One build of module.c: against `libc`, with Debian's hardening flags (`hardened`, dpkg-buildflags: -O2,
    -D_FORTIFY_SOURCE=2, a stack protector …) or with plain ``-O2``."""

    libc: str
    hardened: bool = False

    @property
    def name(self) -> str:
        return f"{self.libc}{'-hardened' if self.hardened else ''}"

    @property
    def file(self) -> str:
        return f"module-{self.name}.so"


BUILDS = (ModuleBuild("musl"), ModuleBuild("glibc"), ModuleBuild("glibc", hardened=True))


def _debian_hardening_flags() -> list[str]:
    """The flags Debian builds its packages' C code with (dpkg-buildflags: CPPFLAGS, CFLAGS, LDFLAGS)."""
    return [flag for part in ("CPPFLAGS", "CFLAGS", "LDFLAGS")
            for flag in run(["dpkg-buildflags", "--get", part], 30).stdout.split()]


def _build(folder: Path) -> dict[str, str]:
    """Compile the loader once per C library and the module once per :data:`BUILDS` into `folder`; return each
    module's undefined dynamic symbols (what it needs from the C library, ``nm -D --undefined-only``), ';'-joined."""
    for name in ("module.c", "loader.c"):
        (folder / name).write_text(assets.text(f"native_module/{name}"))
    for libc, compiler in COMPILER.items():
        run([compiler, "-O2", "-o", str(folder / f"loader-{libc}"), str(folder / "loader.c")], 120)
    needs = {}
    for build in BUILDS:
        flags = _debian_hardening_flags() if build.hardened else ["-O2"]
        out = folder / build.file
        run([COMPILER[build.libc], *flags, "-fPIC", "-shared", "-o", str(out), str(folder / "module.c")], 120)
        listed = run(["nm", "-D", "--undefined-only", str(out)], 30).stdout.split("\n")
        needs[build.name] = ";".join(line.split()[-1] for line in listed if line.strip().startswith("U "))
    return needs


@dataclass(frozen=True)
class NativeResult:
    """`modules`: one row per base and module build — base, base_libc, loader_libc (the C library the loading
    program was built against: the base's), module, module_libc, hardened, libc_symbols (what the module needs
    from the C library, ';'-joined, with glibc's symbol versions), exit_code, loaded (exit 0 and the module's
    greeting printed) and output (the greeting, or the dynamic loader's error).

    `recorded` is False when a replayed recording was made before this section existed (then `modules` is
    empty)."""

    modules: pd.DataFrame
    recorded: bool = True

    @cached_property
    def matrix(self) -> pd.DataFrame:
        """loaded, base by module (True/False)."""
        return self.modules.pivot(index="base", columns="module", values="loaded")

    def row(self, base: str, module: str) -> pd.Series:
        return rows_where(self.modules, base=base, module=module).iloc[0]

    @property
    def musl_base(self) -> str:
        return next(b for b, libc in LIBC_OF_BASE.items() if libc == "musl")

    @property
    def glibc_base(self) -> str:
        return next(b for b, libc in LIBC_OF_BASE.items() if libc == "glibc")

    @property
    def glibc_builds(self) -> list[str]:
        return [b.name for b in BUILDS if b.libc == "glibc"]

    @property
    def musl_build_loads_on_musl(self) -> bool:
        return bool(self.row(self.musl_base, "musl")["loaded"])

    @property
    def glibc_builds_failing_on_musl(self) -> list[str]:
        return [b for b in self.glibc_builds if not self.row(self.musl_base, b)["loaded"]]

    @property
    def glibc_builds_load_on_glibc(self) -> bool:
        """The control: every glibc build works where it was made for, so a failure elsewhere is the C library's."""
        return all(bool(self.row(self.glibc_base, b)["loaded"]) for b in self.glibc_builds)

    def only_glibc_has(self, module: str) -> list[str]:
        """The C-library symbols `module` needs that the musl build of the same source does not (names without
        glibc's version suffix)."""
        def names(build: str) -> set[str]:
            return {s.split("@")[0] for s in str(self.row(self.musl_base, build)["libc_symbols"]).split(";") if s}
        return sorted(names(module) - names("musl"))

    def conclusion(self) -> str:
        if not self.recorded:
            return ("**Not in this recording.** The replayed results were recorded before this section existed; a "
                    "live run (or a new recording) measures it.")
        musl, glibc = self.musl_base, self.glibc_base
        parts = []
        for build in self.glibc_builds:
            r = self.row(musl, build)
            extra = ", ".join(f"`{s}`" for s in self.only_glibc_has(build)) or "none"
            outcome = (f"loaded and printed “{r.output}”" if r.loaded else f"**failed**: `{r.output}`")
            parts.append(f"the {build} build (C-library symbols the musl build does not need: {extra}) {outcome}")
        plain_loads = bool(self.row(musl, "glibc")["loaded"])
        glibc_only = sorted({s for b in self.glibc_builds_failing_on_musl for s in self.only_glibc_has(b)})
        checked = (", the checked variant gcc calls under `-D_FORTIFY_SOURCE`, one of Debian's hardening flags"
                   if glibc_only and all(s.endswith("_chk") for s in glibc_only) else "")
        why_plain = (" musl's loader answers a module's need for glibc's `libc.so.6` with itself, so a glibc build "
                     "that calls only functions both libraries define loads; one that calls a function only glibc "
                     f"defines does not: here {', '.join(f'`{s}`' for s in glibc_only)}{checked}."
                     if plain_loads and glibc_only else "")
        back = self.row(glibc, "musl")
        return (f"**What we measured.** On **{musl}** the musl build "
                + (f"loaded and printed “{self.row(musl, 'musl')['output']}”" if self.musl_build_loads_on_musl
                   else f"**failed**: `{self.row(musl, 'musl')['output']}`")
                + "; " + "; ".join(parts) + "." + why_plain
                + f" On **{glibc}** the glibc builds "
                + ("all loaded" if self.glibc_builds_load_on_glibc else "**did not all load**")
                + " and the musl build "
                + (f"failed as well (`{back.output}`): the mismatch trips in both directions."
                   if not back.loaded else "loaded.")
                + f" {len(self.glibc_builds_failing_on_musl)} of {len(self.glibc_builds)} glibc builds of one "
                  "source tripped on musl: whether a build does depends on what it takes from glibc beyond what "
                  "both C libraries define.")


def run_native_modules(lab: LabSession) -> NativeResult:
    """Build module.c and its loader on this host (musl-gcc and gcc) and load every module build on the musl and
    the glibc base, each in its own container (no network, the build folder mounted read-only)."""
    if (missing := lab.unrecorded(TABLE)) is not None:
        return NativeResult(missing, recorded=False)

    def experiment() -> pd.DataFrame:
        client = lab.engine
        made = {base: images.require_base(client, base) for base in LIBC_OF_BASE}
        rows = []
        with undo.temporary_folder("labkit-native-") as folder, lab.scope() as scope:
            needs = _build(Path(folder))
            for base, libc in LIBC_OF_BASE.items():
                for build in BUILDS:
                    argv = [f"{MOUNT}/loader-{libc}", f"{MOUNT}/{build.file}", GREETING]
                    with containers.running(client, scope, made[base].tag, argv, stem=f"native-{base}-{build.name}",
                                            limits=LIMITS, network_disabled=True,
                                            volumes={folder: {"bind": MOUNT, "mode": "ro"}}) as container:
                        exit_code = int(container.wait(timeout=RUN_TIMEOUT_S)["StatusCode"])
                        output = container.logs(stdout=True, stderr=True).decode(errors="replace").strip()
                    rows.append({"base": base, "base_libc": libc, "loader_libc": libc, "module": build.name,
                                 "module_libc": build.libc, "hardened": build.hardened,
                                 "libc_symbols": needs[build.name], "exit_code": exit_code,
                                 "loaded": exit_code == 0 and output == EXPECTED_OUTPUT, "output": output})
        return pd.DataFrame(rows, columns=list(LAB.tables[TABLE]))

    return NativeResult(lab.measure(TABLE, experiment, bases=list(LIBC_OF_BASE),
                                    builds=[b.name for b in BUILDS]))

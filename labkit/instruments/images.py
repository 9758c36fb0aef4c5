"""Offline base images made from recipes, cached by recipe hash; never pulled from a registry.

A recipe says how to make a base from what this machine has (Debian packages, debootstrap). Its hash
covers everything that changes the result, so an image labelled with the same hash is reused and a
rootfs tarball under the cache folder is never made twice. Packages are downloaded once into a shared
cache; a Debian base with packages of its own starts from a copy of its variant's cached root filesystem.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import posixpath
import shutil
import tarfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path, PurePosixPath

import docker
import docker.errors

from labkit import assets, paths
from labkit.errors import BadParameter, HostUnsupported, LabkitError, NotPrepared
from labkit.instruments import arch, undo
from labkit.instruments.engine import LABEL_BASE, LABEL_RECIPE, docker_cli, sdk_errors
from labkit.instruments.shell import run

log = logging.getLogger("labkit.images")

RECIPE_VERSION = "1"  # bump when a recipe's steps change in a way its inputs do not show
DEBIAN_SUITE = "bookworm"
BUSYBOX_BINARY = Path("/bin/busybox")


@dataclass(frozen=True)
class Recipe:
    """How one base is made; `inputs` is everything that changes the result."""

    name: str
    description: str
    inputs: tuple[tuple[str, str], ...]

    @property
    def digest(self) -> str:
        """sha256 of the recipe inputs, 16 hex digits (the cache key and image label)."""
        text = "\n".join(f"{k}={v}" for k, v in (("recipe", self.name), ("v", RECIPE_VERSION), *self.inputs))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def tag(self) -> str:
        return f"labkit/{self.name}:{self.digest}"


@dataclass(frozen=True)
class BaseImage:
    """A base image present in the engine. `made_s` is 0.0 when it was reused."""

    name: str
    tag: str
    image_id: str
    recipe_digest: str
    size_bytes: int
    made_s: float


def _busybox_recipe() -> Recipe:
    if not BUSYBOX_BINARY.exists():
        raise HostUnsupported(f"{BUSYBOX_BINARY} is missing.", "`apt-get install busybox-static` (or `make lab`).")
    return Recipe("busybox", "busybox-static from Debian on FROM scratch",
                  (("busybox_sha256", _sha256(BUSYBOX_BINARY)), ("dockerfile", BUSYBOX_DOCKERFILE)))


@dataclass(frozen=True)
class DebianBase:
    """A base made with ``debootstrap --variant=minbase`` plus `packages`, imported as one layer (one with packages
    of its own starts from a copy of its variant's cached root and installs them with apt-get: see :func:`root_of`).

    `stands_in_for` names the registry image it replaces here (made offline, not the same bytes); `command` is the
    image's CMD.
    """

    packages: tuple[str, ...]
    stands_in_for: str
    command: str = "/bin/bash"
    arch: str = "amd64"  # Debian's name; another than the host's is made with --foreign and finished under qemu
    variant: str = "minbase"  # debootstrap's --variant; "default" is its default set (required + important)
    slim: bool = False  # without docs, man pages, locales and apt lists, as debian:bookworm-slim is made
    # Installed with apt-get in the finished root (which resolves the virtual packages that debootstrap's --include
    # leaves out: npm's dependencies name several), without recommends.
    apt_packages: tuple[str, ...] = ()

    @property
    def platform(self) -> str:
        return _platform_of_debian_arch(self.arch)

    @property
    def is_root(self) -> bool:
        """Whether this base is its variant's plain root filesystem, which other bases start from."""
        return not (self.packages or self.apt_packages or self.slim)

    def recipe(self, name: str, root: Recipe | None = None) -> Recipe:
        """The recipe; `root`, the recipe of the base whose cached root this one is a copy of, if any."""
        inputs: tuple[tuple[str, str], ...] = (("suite", DEBIAN_SUITE), ("variant", self.variant), ("arch", self.arch))
        if self.packages or self.variant != "minbase":  # debian-minbase keeps the digest it had before packages
            inputs += (("packages", ",".join(self.packages)), ("command", self.command))
        if self.slim:
            inputs += (("slim", ",".join(SLIM_EXCLUDED)),)
        if self.apt_packages:
            inputs += (("apt_packages", ",".join(self.apt_packages)),)
        if root is not None:
            inputs += (("root", root.digest), ("apt_leftovers", ",".join(APT_LEFTOVERS)))
        added = (*self.packages, *self.apt_packages)
        extra = f" + {', '.join(added)}{' by apt-get' if root else ''}" if added else ""
        how = "debootstrap's default variant" if self.variant == "default" else f"debootstrap --variant={self.variant}"
        how = f"from a copy of {root.name}'s root ({how})" if root is not None else f"with {how}"
        slim = f", without {', '.join(SLIM_EXCLUDED)}" if self.slim else ""
        return Recipe(name, f"Debian {DEBIAN_SUITE} made {how}{extra}{slim}, imported "
                            f"(stands in for {self.stands_in_for})", inputs)


# What debian:bookworm-slim leaves out (its dpkg path-excludes; copyright files stay), and apt's package lists.
SLIM_EXCLUDED = ("usr/share/doc", "usr/share/man", "usr/share/groff", "usr/share/info", "usr/share/lintian",
                 "usr/share/linda", "usr/share/locale", "var/cache/man", "var/lib/apt/lists")
SLIM_DPKG_CONFIG = "".join(f"path-exclude /{folder}/*\n" for folder in SLIM_EXCLUDED[:-1]) + \
    "path-include /usr/share/doc/*/copyright\n"

# What apt leaves behind that our bases do not carry: downloaded packages, package lists, its binary caches (two
# files of about 39 MB each; Debian's docker images delete these and the packages after every apt run, with
# apt.conf.d/docker-clean, and ship without lists), its logs and its auto-installed marks.
APT_LEFTOVERS = ("var/cache/apt/archives/*", "var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/log/apt/*",
                 "var/lib/apt/extended_states")


# Every Debian base, by name: the roots debootstrapped, the others copies of their root (root_of) with packages
# added. Add a base by adding a line; `labkit setup` makes what a lab declares.
DEBIAN_BASES = {
    "debian-minbase": DebianBase((), "debian:bookworm-slim"),
    "python-runtime": DebianBase(("python3", "python3-venv"), "python:3.11-slim", command="/usr/bin/python3"),
    "c-builder": DebianBase(("build-essential",), "gcc:12"),
    "go-builder": DebianBase(("golang-go",), "golang:1.19"),
    "c-builder-arm64": DebianBase(("build-essential",), "gcc:12 for linux/arm64", arch="arm64"),
    # Notebook 05's bases: the chapter's node family and its neighbours, each made offline.
    "debian-full": DebianBase((), "a full Debian userland: debian:bookworm plus its 'important' packages, the "
                                  "start of buildpack-deps:bookworm that node:20 builds on", variant="default"),
    "debian-slim": DebianBase((), "debian:bookworm-slim", slim=True),
    "python-slim": DebianBase(("python3",), "python:3.11-slim", command="/usr/bin/python3", slim=True),
    "node-full": DebianBase(("nodejs",), "node:20 (Debian's nodejs 18, without npm and buildpack-deps' compilers)",
                            command="/usr/bin/node", variant="default"),
    "node-slim": DebianBase(("nodejs",), "node:20-slim (Debian's nodejs 18, without npm)", command="/usr/bin/node",
                            slim=True),
    # Notebook 14's: 05's node-full and node-slim with Debian's npm (9.2), which node:20 and node:20-slim carry.
    "node-full-npm": DebianBase(("nodejs",), "node:20 (Debian's nodejs 18 and npm 9, without buildpack-deps' "
                                             "compilers)", command="/usr/bin/node", variant="default",
                                apt_packages=("npm",)),
    "node-slim-npm": DebianBase(("nodejs",), "node:20-slim (Debian's nodejs 18 and npm 9)", command="/usr/bin/node",
                                slim=True, apt_packages=("npm",)),
    # Notebooks 12 and 13's service stand-ins: Debian's own server packages (notebook 12's thin image on top adds
    # the first-start entrypoint and the non-root user the registry images run as).
    "postgres-15": DebianBase(("postgresql-15",), "postgres:16-alpine (Debian's PostgreSQL 15)", slim=True),
    "redis-7": DebianBase(("redis-server",), "redis:7-alpine (Debian's Redis 7)", command="/usr/bin/redis-server",
                          slim=True),
}


@dataclass(frozen=True)
class DebianPackageBase:
    """A base holding one static Debian package for `arch`, taken from its .deb (no emulation needed to make it)."""

    package: str
    arch: str
    binary: str  # the static executable inside the package, e.g. bin/busybox
    stands_in_for: str

    @property
    def platform(self) -> str:
        return _platform_of_debian_arch(self.arch)

    def recipe(self, name: str) -> Recipe:
        return Recipe(name, f"Debian {DEBIAN_SUITE}'s {self.package} for {self.arch} on FROM scratch (stands in for "
                            f"{self.stands_in_for})",
                      (("suite", DEBIAN_SUITE), ("package", self.package), ("arch", self.arch),
                       ("dockerfile", ROOTFS_DOCKERFILE)))


# Bases made from one Debian package of another architecture than the host's may need (notebook 11).
DEBIAN_PACKAGE_BASES = {
    "busybox-arm64": DebianPackageBase("busybox-static", "arm64", "bin/busybox", "busybox for linux/arm64"),
    "busybox-amd64": DebianPackageBase("busybox-static", "amd64", "bin/busybox", "busybox for linux/amd64"),
}


@dataclass(frozen=True)
class UnpackedPackagesBase:
    """Debian `packages` unpacked side by side (dpkg-deb -x: no maintainer scripts, no dpkg records) with an applet
    link per command of the static `binary`, imported from a tarball as one layer on FROM scratch (a pulled copy
    fetches it whole: a layer BuildKit made would stay in its build cache)."""

    packages: tuple[str, ...]
    binary: str  # the static executable whose commands get links in /bin, e.g. bin/busybox
    stands_in_for: str
    arch: str = "amd64"
    command: str = "/bin/sh"

    def recipe(self, name: str) -> Recipe:
        return Recipe(name, f"Debian {DEBIAN_SUITE}'s {' and '.join(self.packages)} for {self.arch}, unpacked on "
                            f"FROM scratch (stands in for {self.stands_in_for})",
                      (("suite", DEBIAN_SUITE), ("packages", ",".join(self.packages)), ("arch", self.arch),
                       ("binary", self.binary), ("made_by", "dpkg-deb -x, docker import")))


# Notebook 05's Alpine stand-in: Alpine's two building blocks, the musl C library (its dynamic loader too) and busybox.
UNPACKED_PACKAGE_BASES = {
    "musl-busybox": UnpackedPackagesBase(("musl", "busybox-static"), "bin/busybox",
                                         "alpine, the base of node:20-alpine: musl libc and busybox, without apk "
                                         "and without node"),
}


@dataclass(frozen=True)
class DistrolessBase:
    """A runtime and nothing else on FROM scratch, taken from the rootfs of Debian base `source`: `programs`,
    whole `trees` (a language's library folders), the ``ldd`` closure of every ELF file among them, an
    ``/etc/passwd`` with root and `user`, and ``USER <user>:<user>``: no shell, no package manager."""

    source: str
    programs: tuple[str, ...]
    trees: tuple[str, ...]
    stands_in_for: str
    user: int = 65532  # distroless's "nonroot"

    @property
    def command(self) -> str:
        return "/" + self.programs[0]

    def recipe(self, name: str) -> Recipe:
        return Recipe(name, f"{', '.join('/' + p for p in self.programs)} with "
                            f"{', '.join('/' + t for t in self.trees) or 'no library folder'} and their ldd closure "
                            f"from {self.source}, numeric USER {self.user}, on FROM scratch (stands in for "
                            f"{self.stands_in_for})",
                      (("source", recipe(self.source).digest), ("programs", ",".join(self.programs)),
                       ("trees", ",".join(self.trees)), ("user", str(self.user)), ("made_by", "docker import")))


DISTROLESS_BASES = {
    "python-distroless": DistrolessBase("python-slim", ("usr/bin/python3",), ("usr/lib/python3.11", "etc/python3.11"),
                                        "gcr.io/distroless/python3-debian12"),
    # Debian's node loads some of its built-in modules (acorn, cjs-module-lexer, undici) from /usr/share/nodejs.
    "node-distroless": DistrolessBase("node-slim", ("usr/bin/node",), ("usr/share/nodejs",),
                                      "gcr.io/distroless/nodejs20-debian12"),
}


@dataclass(frozen=True)
class StaticBinaryBase:
    """One statically linked program built in the labkit base `builder` and copied onto FROM scratch."""

    builder: str
    source_name: str
    source: str
    build_command: str  # run in the builder with the source in its working folder /src; writes /src/app
    stands_in_for: str

    def recipe(self, name: str) -> Recipe:
        return Recipe(name, f"a static binary built from {self.source_name} in {self.builder}, alone on FROM scratch "
                            f"(stands in for {self.stands_in_for})",
                      (("builder", recipe(self.builder).digest), ("source", self.source),
                       ("build", self.build_command), ("made_by", "docker run, docker import")))


HELLO_GO = 'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("hello")\n}\n'
STATIC_BASES = {
    "scratch-static": StaticBinaryBase("go-builder", "hello.go", HELLO_GO,
                                       "CGO_ENABLED=0 go build -trimpath -ldflags=-s -o app hello.go",
                                       "FROM scratch + a static Go binary"),
}


def _platform_of_debian_arch(debian_arch: str) -> str:
    return next(p for p, a in arch.DEBIAN_ARCH.items() if a == debian_arch)


def _foreign(debian_arch: str) -> bool:
    """Whether `debian_arch` is not this host's own (its executables run here only under emulation)."""
    return arch.DEBIAN_ARCH[arch.host_platform()] != debian_arch


def root_of(name: str) -> str | None:
    """The Debian base whose cached root filesystem base `name` starts from: the root of its architecture and
    debootstrap variant (debian-minbase, debian-full). None for a root itself, for a base with no root of its kind,
    and for one of another architecture than the host's (its packages configure only under emulation: it is
    debootstrapped, second stage and all)."""
    base = DEBIAN_BASES[name]
    if base.is_root or _foreign(base.arch):
        return None
    return next((other for other, candidate in DEBIAN_BASES.items()
                 if candidate.is_root and (candidate.arch, candidate.variant) == (base.arch, base.variant)), None)


def _debian_recipe(name: str) -> Recipe:
    root = root_of(name)
    return DEBIAN_BASES[name].recipe(name, None if root is None else _debian_recipe(root))


RECIPES: dict[str, Callable[[], Recipe]] = {"busybox": _busybox_recipe,
                                            **{name: partial(_debian_recipe, name) for name in DEBIAN_BASES},
                                            **{name: partial(DEBIAN_PACKAGE_BASES[name].recipe, name)
                                               for name in DEBIAN_PACKAGE_BASES},
                                            **{name: partial(UNPACKED_PACKAGE_BASES[name].recipe, name)
                                               for name in UNPACKED_PACKAGE_BASES},
                                            **{name: partial(DISTROLESS_BASES[name].recipe, name)
                                               for name in DISTROLESS_BASES},
                                            **{name: partial(STATIC_BASES[name].recipe, name) for name in STATIC_BASES}}

BUSYBOX_DOCKERFILE = assets.text("bases/Dockerfile.busybox")

# A root filesystem tree (the build context's rootfs/) or tarball as an image for one platform: BuildKit records
# the platform passed with --platform, where `docker import --platform` records the host's on engine 20.10.
ROOTFS_DOCKERFILE = assets.text("bases/Dockerfile.rootfs")  # {source}: the tree or tarball; {command}: its CMD

# Distroless-style and static bases are imported from a tarball rather than built: a layer BuildKit made stays in
# its build cache after the image is removed, so a later pull of it would not fetch it (notebook 05 times cold pulls).


def known_bases() -> list[str]:
    return sorted(RECIPES)


def validate_base(name: str) -> None:
    """BadParameter naming the known bases unless labkit can make base `name` (needs nothing installed)."""
    if name not in RECIPES:
        raise BadParameter(f"base={name!r} is not a base labkit can make.", f"Choose one of {known_bases()}.")


def recipe(name: str) -> Recipe:
    """The recipe for base `name` (reads its inputs, e.g. the host's busybox binary)."""
    validate_base(name)
    return RECIPES[name]()


def find(client: docker.DockerClient, name: str) -> BaseImage | None:
    """The engine's image for base `name` made from the current recipe, if there is one."""
    return _find(client, recipe(name))


def _find(client: docker.DockerClient, wanted: Recipe) -> BaseImage | None:
    """The image tagged ``wanted.tag`` when its recipe label matches. By tag, not by label: every image built
    FROM a base inherits the base's labels, so a label search also finds the labs' own images."""
    with sdk_errors(f"looking up base {wanted.name!r} (docker images)"):
        try:
            image = client.images.get(wanted.tag)
        except docker.errors.ImageNotFound:
            return None
    if image.labels.get(LABEL_RECIPE) != wanted.digest:
        return None
    return BaseImage(wanted.name, wanted.tag, image.id, wanted.digest, int(image.attrs.get("Size", 0)), 0.0)


@contextmanager
def _made_alone(kind: str, name: str) -> Iterator[None]:
    """Held while this thread makes the `kind` ("image", "rootfs", "tarball") of base `name`: another worker of
    :func:`make_bases`, or another `labkit setup`, waits here and then finds it made. Locks are taken in the order
    a base depends on another (image, then tarball, then rootfs, then the rootfs it is a copy of), never twice for
    one name and kind; the package lists' lock ("apt-lists") is taken last: no other is taken while it is held."""
    folder = paths.cache_dir() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{kind}-{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def ensure_base(client: docker.DockerClient, name: str) -> BaseImage:
    """Return base `name`, making it offline if the engine does not hold one from the same recipe."""
    wanted = recipe(name)  # validates the name before anything happens
    existing = _find(client, wanted)
    if existing is not None:
        return existing
    with _made_alone("image", name):
        return _find(client, wanted) or _make_base(client, name, wanted)


def _make_base(client: docker.DockerClient, name: str, wanted: Recipe) -> BaseImage:
    started = time.perf_counter_ns()
    if name == "busybox":
        _build_busybox(wanted)
    elif name in DISTROLESS_BASES:
        _build_distroless(wanted, DISTROLESS_BASES[name])
    elif name in STATIC_BASES:
        _build_static(client, wanted, STATIC_BASES[name])
    elif name in DEBIAN_PACKAGE_BASES:
        _build_rootfs_image(wanted, rootfs_dir(name), DEBIAN_PACKAGE_BASES[name].platform, "/bin/sh")
    elif name in UNPACKED_PACKAGE_BASES:
        _import_rootfs(wanted, rootfs_tarball(name), UNPACKED_PACKAGE_BASES[name].command)
    elif _foreign(DEBIAN_BASES[name].arch):
        base = DEBIAN_BASES[name]
        _build_rootfs_image(wanted, rootfs_tarball(name), base.platform, base.command)
    else:
        _import_rootfs(wanted, rootfs_tarball(name))
    made_s = (time.perf_counter_ns() - started) / 1e9
    made = _find(client, wanted)
    if made is None:
        raise RuntimeError(f"made {wanted.tag} but the engine does not list it with label {wanted.digest}")
    log.info("made base %s in %.1f s", wanted.tag, made_s)
    return replace(made, made_s=made_s)


def _made_from(name: str) -> tuple[str, ...]:
    """The bases whose rootfs (a distroless base's source, a Debian base's root) or image (a static base's
    builder) `name` is made from."""
    if name in DISTROLESS_BASES:
        return (DISTROLESS_BASES[name].source,)
    if name in STATIC_BASES:
        return (STATIC_BASES[name].builder,)
    if name in DEBIAN_BASES and (root := root_of(name)) is not None:
        return (root,)
    return ()


def roots_needed(client: docker.DockerClient, names: Sequence[str]) -> list[str]:
    """The Debian bases whose root filesystem making `names` will make (a debootstrap, or a copy of a root and
    apt-get): those missing from the engine, and the sources, roots and builders they are made from, whose rootfs
    is not cached yet. In the order first needed."""
    needed: list[str] = []

    def visit(name: str, rootfs_wanted: bool) -> None:
        if not rootfs_wanted and find(client, name) is not None:
            return
        cached = (_rootfs_target(name) / ".labkit-complete").exists()
        if name in DEBIAN_BASES and not cached and name not in needed:
            needed.append(name)
        for source in _made_from(name) if not cached else ():
            visit(source, rootfs_wanted=name in DISTROLESS_BASES or name in DEBIAN_BASES)

    for name in names:
        visit(name, rootfs_wanted=False)
    return needed


def package_sets(names: Sequence[str]) -> dict[str, DebianBase]:
    """For Debian bases `names`, one download for each architecture and debootstrap variant: a base holding the
    union of their packages, keyed "<arch> <variant>" (e.g. "amd64 minbase"), in the order first needed."""
    sets: dict[str, list[str]] = {}
    for name in names:
        packages = sets.setdefault(_package_set(name), [])
        packages += [package for package in DEBIAN_BASES[name].packages if package not in packages]
    return {group: DebianBase(tuple(packages), f"the packages of every {group} base", arch=group.split()[0],
                              variant=group.split()[1])
            for group, packages in sets.items()}


def _package_set(name: str) -> str:
    return f"{DEBIAN_BASES[name].arch} {DEBIAN_BASES[name].variant}"


def fetch_packages(union: DebianBase) -> float:
    """Download every package `union` (see :func:`package_sets`) needs into the shared .deb cache (``debootstrap
    --download-only``: one resolution and one package index for many bases), so that bases made side by side never
    download one file at once; seconds it took."""
    started = time.perf_counter()
    with undo.temporary_folder("labkit-fetch-") as target:
        run(_debootstrap_argv(union, Path(target), download_only=True), 1800, hint=MIRROR_HINT)
    return time.perf_counter() - started


BASE_WORKERS = 2  # bases made side by side: dpkg and the engine's import each keep about one core busy


def _slow_first(name: str) -> int:
    """The order bases are handed to workers, so that the longest does not start last: a foreign base (its second
    stage runs under emulation: c-builder-arm64 took 143.2 s cold), then the roots other bases are copies of (a
    debootstrap each: 27-54 s), then the rest, each group in the order asked."""
    base = DEBIAN_BASES.get(name)
    return 2 if base is None else 0 if _foreign(base.arch) else 1 if base.is_root else 2


@dataclass(frozen=True)
class BasesMade:
    """What :func:`make_bases` did: each base by name (its `made_s` 0.0 when it was reused), and the seconds each
    download of packages took, by "<arch> <variant>" (`fetched_s`, see :func:`package_sets`)."""

    bases: dict[str, BaseImage]
    fetched_s: dict[str, float]


def make_bases(client: docker.DockerClient, names: Sequence[str], report: Callable[[str], None],
               workers: int = BASE_WORKERS) -> BasesMade:
    """Every base in `names`, made where the engine lacks it: first the packages of every debootstrap downloaded
    (once for each architecture and variant), then the bases made `workers` at a time (a base made from another
    waits for it). `report` gets a line as each step starts and ends. The first failure stops new work and is
    raised once the running ones end; an interrupt is raised at once (each worker's programs die with this
    process)."""
    for name in names:
        validate_base(name)
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:  # one line at a time, whichever worker says it
            report(line)

    fetched_s = {}
    needed = roots_needed(client, names)
    for group, union in package_sets(needed).items():
        say(f"packages for {group} ({', '.join(n for n in needed if _package_set(n) == group)}): downloading …")
        fetched_s[group] = fetch_packages(union)
        say(f"packages for {group}: in the cache ({fetched_s[group]:.1f} s)")
    waiting = sorted(dict.fromkeys(names), key=_slow_first)
    made: dict[str, BaseImage] = {}
    failures: list[Exception] = []

    def worker() -> None:
        while True:
            with lock:
                if not waiting or failures:
                    return
                name = waiting.pop(0)
            try:
                if find(client, name) is None:  # making one takes minutes: say so before it starts
                    say(f"base {name}: making it — {recipe(name).description} …")
                base = ensure_base(client, name)
            except Exception as exc:  # handed to the caller's thread below
                with lock:
                    failures.append(exc)
                return
            how = f"made in {base.made_s:.1f} s" if base.made_s else "reused"
            say(f"base {name}: {base.tag} ({base.size_bytes / 1e6:.1f} MB, {how})")
            with lock:
                made[name] = base

    # Daemon threads: an interrupt ends this process without waiting for them, and their programs die with it.
    threads = [threading.Thread(target=worker, name=f"labkit-base-{i}", daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.5)  # short waits: the main thread stays ready for Ctrl-C
    if failures:
        raise failures[0]
    return BasesMade({name: made[name] for name in dict.fromkeys(names)}, fetched_s)


def require_base(client: docker.DockerClient, name: str) -> BaseImage:
    """Return base `name` if it is already made; otherwise say how to make it (never pull)."""
    found = find(client, name)
    if found is None:
        raise NotPrepared(f"base image {name!r} is not made yet.", "Run `labkit setup` (or `make lab`).")
    return found


def _label_args(wanted: Recipe) -> list[str]:
    return ["--label", f"{LABEL_BASE}={wanted.name}", "--label", f"{LABEL_RECIPE}={wanted.digest}"]


def _build_busybox(wanted: Recipe) -> None:
    with undo.temporary_folder("labkit-busybox-") as context:
        shutil.copy2(BUSYBOX_BINARY, Path(context) / "busybox")
        (Path(context) / "Dockerfile").write_text(BUSYBOX_DOCKERFILE)
        # BuildKit, and no `# syntax=` line: FROM scratch needs no registry at all.
        run([docker_cli(), "build", "--pull=false", "--progress=plain", *_label_args(wanted), "-t", wanted.tag,
             context], 600, env={**os.environ, "DOCKER_BUILDKIT": "1"})


def _build_rootfs_image(wanted: Recipe, source: Path, platform: str, command: str) -> None:
    """Build `source` (a rootfs folder or tarball) into an image for `platform` with BuildKit, no RUN steps."""
    with undo.temporary_folder("labkit-rootfs-image-") as context:
        name = "rootfs.tar" if source.is_file() else "rootfs/"
        target = Path(context) / name.rstrip("/")
        if source.is_file():
            shutil.copy2(source, target)
        else:
            shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns(".labkit-complete"))
        (Path(context) / "Dockerfile").write_text(ROOTFS_DOCKERFILE.format(source=name, command=command))
        run([docker_cli(), "build", "--pull=false", "--progress=plain", "--platform", platform, *_label_args(wanted),
             "-t", wanted.tag, context], 1800, env={**os.environ, "DOCKER_BUILDKIT": "1"})


def _import_rootfs(wanted: Recipe, tarball: Path, command: str = "", extra_changes: tuple[str, ...] = ()) -> None:
    command = command or DEBIAN_BASES[wanted.name].command
    changes = [f"LABEL {LABEL_BASE}={wanted.name}", f"LABEL {LABEL_RECIPE}={wanted.digest}", *extra_changes,
               f'CMD ["{command}"]']
    args = [arg for change in changes for arg in ("--change", change)]
    run([docker_cli(), "import", *args, "--message", wanted.description, str(tarball), wanted.tag], 600)


def _tar_tree(root: Path, tarball: Path) -> Path:
    """A tar of everything under `root` (modes and symlinks kept, owned by root)."""
    with tarfile.open(tarball, "w") as archive:
        for entry in sorted(root.iterdir()):
            archive.add(entry, arcname=entry.name, filter=_owned_by_root)
    return tarball


def _owned_by_root(member: tarfile.TarInfo) -> tarfile.TarInfo:
    member.uid = member.gid = 0
    member.uname = member.gname = "root"
    return member


def rootfs_dir(name: str = "debian-minbase") -> Path:
    """An unpacked root filesystem for base `name`, made once and cached under the recipe's hash.

    `busybox`: the same static binary as the image, with its applet links; the others: debootstrap.
    """
    target = _rootfs_target(name)
    if (target / ".labkit-complete").exists():
        return target
    with _made_alone("rootfs", name):
        if not (target / ".labkit-complete").exists():
            _make_rootfs(name, target)
    return target


def _rootfs_target(name: str) -> Path:
    return paths.cache_dir() / "rootfs" / f"{name}-{recipe(name).digest}"


def _make_rootfs(name: str, target: Path) -> None:
    staging = target.with_name(target.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    if name == "busybox":
        _unpack_busybox(staging)
    elif name in DEBIAN_PACKAGE_BASES:
        _unpack_debian_package(staging, DEBIAN_PACKAGE_BASES[name])
    elif name in UNPACKED_PACKAGE_BASES:
        _unpack_debian_package(staging, UNPACKED_PACKAGE_BASES[name])
    elif name in DEBIAN_BASES and (root := root_of(name)) is not None:
        _derive(staging, rootfs_dir(root), DEBIAN_BASES[name])
    elif name in DEBIAN_BASES:
        _debootstrap(staging, DEBIAN_BASES[name])
    else:
        raise BadParameter(f"base {name!r} is built into an image directly: it has no root filesystem tree.",
                           "Ask for one of "
                           f"{sorted(['busybox', *DEBIAN_BASES, *DEBIAN_PACKAGE_BASES, *UNPACKED_PACKAGE_BASES])}.")
    (staging / ".labkit-complete").write_text(recipe(name).digest + "\n")
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)


BUSYBOX_APPLETS = ("sh", "true", "false", "sleep", "cat", "hostname", "uname", "mount", "umount", "ls", "ps", "head")


def _unpack_busybox(staging: Path) -> None:
    for folder in ("bin", "proc", "dev", "sys", "tmp", "etc"):
        (staging / folder).mkdir(parents=True)
    shutil.copy2(BUSYBOX_BINARY, staging / "bin" / "busybox")
    for applet in BUSYBOX_APPLETS:
        (staging / "bin" / applet).symlink_to("busybox")


def mirror() -> str:
    """The Debian mirror debootstrap and apt use (LABKIT_DEBIAN_MIRROR overrides deb.debian.org)."""
    return os.environ.get("LABKIT_DEBIAN_MIRROR", "http://deb.debian.org/debian")


MIRROR_HINT = "debootstrap and apt need Debian's package mirror; set LABKIT_DEBIAN_MIRROR to one you can reach."


def deb_cache(debian_arch: str) -> Path:
    """The .deb files debootstrap downloaded for `debian_arch`, kept for every recipe: a package is fetched once
    (debootstrap and apt-get check each cached file against the mirror's index before they use it)."""
    folder = paths.cache_dir() / "debs" / f"{DEBIAN_SUITE}-{debian_arch}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _debootstrap_argv(base: DebianBase, target: Path, *, download_only: bool = False) -> list[str]:
    include = [f"--include={','.join(base.packages)}"] if base.packages else []
    variant = [] if base.variant == "default" else [f"--variant={base.variant}"]
    stage = ["--download-only"] if download_only else ["--foreign"] if _foreign(base.arch) else []
    return ["debootstrap", *variant, f"--arch={base.arch}", *stage, *include,
            f"--cache-dir={deb_cache(base.arch)}", DEBIAN_SUITE, str(target), mirror()]


def _debootstrap(staging: Path, base: DebianBase) -> None:
    debian_arch = base.arch
    run(_debootstrap_argv(base, staging), 1800, hint=MIRROR_HINT)
    if _foreign(debian_arch):
        # The second stage runs the target's own dpkg and maintainer scripts: under qemu, through binfmt_misc.
        arch.enable_emulation(_platform_of_debian_arch(debian_arch))
        run(["chroot", str(staging), "/debootstrap/debootstrap", "--second-stage"], 3600,
            hint="The second stage runs under qemu-user: `labkit doctor 11` checks binfmt_misc.")
    _finish_root(staging, base, base.apt_packages)


def _derive(staging: Path, root: Path, base: DebianBase) -> None:
    """A copy of the cached `root` (owners, modes and links kept) with `base`'s packages installed by apt-get from
    the shared .deb cache: seconds where a debootstrap of its own unpacked and configured every package again."""
    run(["cp", "-a", str(root), str(staging)], 600)
    (staging / ".labkit-complete").unlink()
    archives = staging / "var" / "cache" / "apt" / "archives"
    for deb in deb_cache(base.arch).glob("*.deb"):
        try:
            os.link(deb, archives / deb.name)  # the cache and the rootfs share the cache folder's file system
        except OSError:
            shutil.copy2(deb, archives / deb.name)
    _finish_root(staging, base, (*base.packages, *base.apt_packages))


def _in_root(root: Path) -> list[str]:
    """The argv prefix that runs a program chrooted in `root` with a /proc of its own, as debootstrap gives the
    packages' maintainer scripts: mounted in a mount namespace of its own, so it goes when the program ends, even
    when labkit is killed."""
    return ["unshare", "--mount", "--pid", "--fork", "--kill-child", f"--mount-proc={root / 'proc'}", "chroot",
            str(root)]


def _finish_root(staging: Path, base: DebianBase, apt_packages: Sequence[str]) -> None:
    """Install `apt_packages` with apt-get (it resolves the virtual packages that debootstrap's --include leaves
    out), without recommends; remove :data:`APT_LEFTOVERS`; slim the root if `base` is a slim one."""
    if apt_packages:
        apt_update(staging, base.arch)
        run([*_in_root(staging), "apt-get", "install", "-y", "-q", "--no-install-recommends", *apt_packages],
            1800, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, hint=MIRROR_HINT)
    for pattern in APT_LEFTOVERS:
        for entry in staging.glob(pattern):
            if entry.is_file():
                entry.unlink()
    if base.slim:
        _slim(staging)


def apt_update(root: Path, debian_arch: str) -> str:
    """``apt-get update`` in `root`, starting from the package lists that the last update for the same architecture
    and sources left in the cache: apt still asks the mirror for its signed Release file, but fetches only the lists
    that changed since (most times none), so the lists (about 15 MB) cross the network once, not once per base.
    The lists are kept again after the update, one root at a time (a lock per architecture and sources). Returns
    apt's output, with a ``Get:`` line for each file it fetched."""
    sources = hashlib.sha256((root / "etc" / "apt" / "sources.list").read_bytes()).hexdigest()[:16]
    key = f"{DEBIAN_SUITE}-{debian_arch}-{sources}"
    kept, lists = paths.cache_dir() / "apt-lists" / key, root / "var" / "lib" / "apt" / "lists"
    with _made_alone("apt-lists", key):
        _copy_lists(kept, lists)
        done = run([*_in_root(root), "apt-get", "update", "-q"], 600, hint=MIRROR_HINT)
        staging = kept.with_name(kept.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        _copy_lists(lists, staging)
        shutil.rmtree(kept, ignore_errors=True)
        staging.rename(kept)
    return done.stdout


def _copy_lists(source: Path, target: Path) -> None:
    """The package lists in `source` (the files directly in it; not apt's lock) copied into `target`."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.glob("*") if source.is_dir() else ():
        if entry.is_file() and entry.name != "lock":
            shutil.copy2(entry, target / entry.name)


def _slim(root: Path) -> None:
    """Remove what debian:bookworm-slim leaves out (copyright files stay) and tell dpkg to leave it out of
    packages installed later, as the slim image does."""
    for folder in SLIM_EXCLUDED:
        for entry in (root / folder).glob("*"):
            if folder == "usr/share/doc" and entry.is_dir() and (entry / "copyright").exists():
                for inner in entry.iterdir():
                    if inner.name != "copyright":
                        shutil.rmtree(inner) if inner.is_dir() and not inner.is_symlink() else inner.unlink()
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    config = root / "etc" / "dpkg" / "dpkg.cfg.d" / "labkit-slim"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(SLIM_DPKG_CONFIG)


def _build_distroless(wanted: Recipe, base: DistrolessBase) -> None:
    """Copy the runtime, its trees and their ldd closure out of the source rootfs and import them as an image."""
    source = rootfs_dir(base.source)
    with undo.temporary_folder("labkit-distroless-") as context:
        root = Path(context) / "rootfs"
        root.mkdir()
        wanted_paths = ["/" + p for p in (*base.programs, *base.trees)]
        for path in wanted_paths:
            _place(source, root, path)
        elf_files = [f for f in root.rglob("*") if f.is_file() and not f.is_symlink() and _is_elf(f)]
        for library in sorted({lib for f in elf_files for lib in _ldd(source, "/" + str(f.relative_to(root)))}):
            _place(source, root, library)
        (root / "etc").mkdir(exist_ok=True)
        (root / "etc" / "passwd").write_text(f"root:x:0:0:root:/root:/sbin/nologin\n"
                                             f"nonroot:x:{base.user}:{base.user}:nonroot:/home/nonroot:/sbin/nologin\n")
        (root / "etc" / "group").write_text(f"root:x:0:\nnonroot:x:{base.user}:\n")
        for folder in ("tmp", "home/nonroot"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        (root / "tmp").chmod(0o1777)
        _import_rootfs(wanted, _tar_tree(root, Path(context) / "rootfs.tar"), base.command,
                       (f"USER {base.user}:{base.user}",))


def _is_elf(path: Path) -> bool:
    with path.open("rb") as head:
        return head.read(4) == b"\x7fELF"


def _ldd(root: Path, path: str) -> list[str]:
    """The shared objects `path` loads, as paths inside `root` (``ldd`` run in a chroot of it)."""
    done = run(["chroot", str(root), "/usr/bin/ldd", path], 60, check=False)
    if "not a dynamic executable" in done.stdout + done.stderr:
        return []
    if done.exit_code != 0:
        raise RuntimeError(f"ldd {path} in {root} exited {done.exit_code}: {done.stderr.strip()}")
    found = []
    for line in done.stdout.splitlines():
        words = line.split()
        if "=>" in words and len(words) > words.index("=>") + 1 and words[words.index("=>") + 1].startswith("/"):
            found.append(words[words.index("=>") + 1])
        elif words and words[0].startswith("/"):
            found.append(words[0])  # the dynamic loader, named by its own path
        elif "not found" in line:
            raise RuntimeError(f"ldd {path} in {root}: {line.strip()}")
    return found


def _place(source: Path, target: Path, path: str, hops: int = 0) -> None:
    """Copy `path` (absolute inside `source`) to the same place under `target`, recreating every symlink on
    the way (merged /usr: /lib → usr/lib) and copying the file or folder it ends in, symlinks kept."""
    if hops > 40:
        raise RuntimeError(f"too many symlinks resolving {path} in {source}")
    parts = PurePosixPath(posixpath.normpath(path)).parts[1:]
    for index in range(len(parts)):
        relative = PurePosixPath(*parts[:index + 1])
        here = source / relative
        if here.is_symlink():
            link = target / relative
            if not link.is_symlink():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(os.readlink(here))
            pointed = os.readlink(here)
            base = "/" if pointed.startswith("/") else "/" + str(relative.parent)
            _place(source, target, posixpath.join(base, pointed, *parts[index + 1:]), hops + 1)
            return
    relative = PurePosixPath(*parts)
    origin, copy = source / relative, target / relative
    if origin.is_dir():
        shutil.copytree(origin, copy, symlinks=True, dirs_exist_ok=True)
    elif not copy.exists():
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, copy)


def _build_static(client: docker.DockerClient, wanted: Recipe, base: StaticBinaryBase) -> None:
    """Build the program in a container of the builder base (no network), then import it alone as an image."""
    builder = ensure_base(client, base.builder)
    with undo.temporary_folder("labkit-static-") as folder:
        source, root = Path(folder) / "src", Path(folder) / "rootfs"
        source.mkdir()
        root.mkdir()
        (source / base.source_name).write_text(base.source)
        run([docker_cli(), "run", "--rm", "--pull=never", "--network", "none", "-v", f"{source}:/src", "-w", "/src",
             builder.tag, "sh", "-c", base.build_command], 1800)
        shutil.copy2(source / "app", root / "app")
        _import_rootfs(wanted, _tar_tree(root, Path(folder) / "rootfs.tar"), "/app")


def debian_package_file(package: str, debian_arch: str, folder: Path) -> Path:
    """Download Debian `package` for `debian_arch` into `folder` and check its SHA256; return the .deb.

    apt-get resolves it with a private state folder under the cache (the host's apt sources, architectures and
    status stay as they are); the file comes from the same mirror and is checked against the index's hash."""
    state = paths.cache_dir() / "apt" / f"{DEBIAN_SUITE}-{debian_arch}"
    for sub in ("lists/partial", "cache/archives/partial"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "status").touch()
    (state / "sources.list").write_text(f"deb {mirror()} {DEBIAN_SUITE} main\n")
    options = [f"-oAPT::Architecture={debian_arch}", f"-oAPT::Architectures={debian_arch}", f"-oDir::State={state}",
               f"-oDir::State::status={state / 'status'}", f"-oDir::Cache={state / 'cache'}",
               f"-oDir::Etc::SourceList={state / 'sources.list'}", "-oDir::Etc::SourceParts=-"]
    run(["apt-get", *options, "update", "-q"], 600, hint=MIRROR_HINT)
    printed = run(["apt-get", *options, "download", "--print-uris", package], 60).stdout.split()
    uri, file_name, checksum = printed[0].strip("'"), printed[1], printed[3]
    target = folder / file_name
    try:
        urllib.request.urlretrieve(uri, target)
    except OSError as exc:  # urllib's URLError and HTTPError are OSErrors
        raise LabkitError(f"downloading {uri} failed: {exc}", MIRROR_HINT) from exc
    algorithm, _, expected = checksum.partition(":")
    if algorithm != "SHA256" or _sha256(target) != expected:
        raise LabkitError(f"{file_name}: its SHA256 is not the {expected} that the index names.",
                          f"The mirror served another file than its index names: run `labkit setup` again. "
                          f"{MIRROR_HINT}")
    return target


def _unpack_debian_package(staging: Path, base: DebianPackageBase | UnpackedPackagesBase) -> None:
    """The packages' files (dpkg-deb -x) with an applet link per command the binary lists for itself."""
    packages = base.packages if isinstance(base, UnpackedPackagesBase) else (base.package,)
    with undo.temporary_folder("labkit-deb-") as folder:
        for package in packages:
            run(["dpkg-deb", "-x", str(debian_package_file(package, base.arch, Path(folder))), str(staging)], 120)
    binary = staging / base.binary
    if _foreign(base.arch):
        arch.enable_emulation(_platform_of_debian_arch(base.arch))
    for folder_name in ("bin", "proc", "dev", "sys", "tmp", "etc"):
        (staging / folder_name).mkdir(exist_ok=True)
    for applet in run([str(binary), "--list"], 60).stdout.split():
        link = staging / "bin" / applet
        if not link.exists():
            link.symlink_to(binary.name)


def rootfs_tarball(name: str = "debian-minbase") -> Path:
    """A tar of :func:`rootfs_dir` (numeric owners kept), cached beside it."""
    tarball = _rootfs_target(name).with_suffix(".tar")
    if tarball.exists():
        return tarball
    with _made_alone("tarball", name):
        folder = rootfs_dir(name)
        if not tarball.exists():
            partial = tarball.with_suffix(".tar.partial")
            with tarfile.open(partial, "w") as archive:
                for entry in sorted(folder.iterdir()):
                    if entry.name != ".labkit-complete":
                        archive.add(entry, arcname=entry.name)
            partial.rename(tarball)
    return tarball


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def busybox_base(platform: str) -> str:
    """The labkit base holding Debian's busybox-static for `platform` (the same version for both)."""
    return f"busybox-{arch.DEBIAN_ARCH[arch.validate_platform(platform)]}"

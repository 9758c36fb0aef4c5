"""npm packages for a few lockfiles, fetched once and cached, so that an image build installs them with
``npm ci --offline`` from that cache and never reaches the network.

The fetch runs ``npm ci`` in a container of an image that has npm (a labkit base), on the engine's default network:
the host needs no npm of its own (a host's own node, e.g. NodeSource's, would conflict with Debian's npm package).
The cache folder is keyed by the manifests (``package.json`` and ``package-lock.json``, bytes) it was filled from: a
changed lockfile is a new folder. It holds ``cache/`` (npm's own content-addressed cache, what ``npm ci --cache
<folder> --offline`` reads) and ``node_modules/`` (the first manifest's install, as a developer's checkout has one).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path

from labkit.instruments.engine import docker_cli
from labkit.instruments.shell import run
from labkit.paths import cache_dir

COMPLETE = ".labkit-complete"  # written last: a folder without it is a fetch that did not finish
MANIFESTS = ("package.json", "package-lock.json")
NPM_CACHE = "cache"
NODE_MODULES = "node_modules"
FETCH_TIMEOUT_S = 600.0


def key(manifests: Sequence[Path]) -> str:
    """sha256 (16 hex digits) of each manifest folder's package.json and package-lock.json, in order."""
    digest = hashlib.sha256()
    for folder in manifests:
        for name in MANIFESTS:
            digest.update(name.encode() + b"\0" + (folder / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def folder(manifests: Sequence[Path]) -> Path:
    """Where the packages of `manifests` (folders holding a package.json and its package-lock.json) are cached."""
    return cache_dir() / "npm" / key(manifests)


HOST_AUTHORITIES = Path("/etc/ssl/certs/ca-certificates.crt")  # Debian's bundle of the CAs this host trusts


def _host_authorities() -> list[str]:
    """docker run arguments that make node in the container trust the host's CAs beside its own (a proxy that
    re-signs TLS with a local CA, as some networks do, is then trusted as it is on the host); none without them."""
    if not HOST_AUTHORITIES.exists():
        return []
    return ["-v", f"{HOST_AUTHORITIES}:/etc/labkit-host-ca.crt:ro", "-e", "NODE_EXTRA_CA_CERTS=/etc/labkit-host-ca.crt"]


def fetch(manifests: Sequence[Path], image: str, run_args: Sequence[str]) -> Path:
    """The cache folder for `manifests`, filled the first time by ``npm ci`` of each (install scripts off) against
    the registry in a ``docker run --rm`` of `image` with `run_args` (the caller's labels and limits), and reused
    after."""
    target = folder(manifests)
    if (target / COMPLETE).exists():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for index, manifest in enumerate(manifests):
        install = partial / "installs" / str(index)
        install.mkdir(parents=True)
        for name in MANIFESTS:
            shutil.copy2(manifest / name, install / name)
        run([docker_cli(), "run", "--rm", "--pull=never", *run_args, *_host_authorities(), "-v", f"{partial}:/fetch",
             "-w", f"/fetch/installs/{index}", image, "npm", "ci", "--cache", "/fetch/" + NPM_CACHE,
             "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"], FETCH_TIMEOUT_S,
            hint="The npm packages are fetched once from the npm registry, in a container on the engine's default "
                 "network: check that this machine reaches registry.npmjs.org.")
    (partial / "installs" / "0" / NODE_MODULES).rename(partial / NODE_MODULES)
    shutil.rmtree(partial / "installs")
    shutil.rmtree(partial / NPM_CACHE / "_logs", ignore_errors=True)  # npm's debug logs: not packages
    (partial / COMPLETE).write_text("\n".join(str(m) for m in manifests) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target

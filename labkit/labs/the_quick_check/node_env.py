"""Section 4 of notebook 14: the chapter's "setting NODE_ENV=production so npm prunes dev deps automatically". The
dependencies stage of the multi-stage step built three ways from the same manifests — plain ``npm ci``, ``npm ci``
under ``ENV NODE_ENV=production``, and ``npm ci --omit=dev`` (the flag the chapter's answer uses) — and the dev
dependency's files counted in each image, with the npm version that decided it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from labkit import assets
from labkit.core.session import LabSession
from labkit.errors import NotPrepared
from labkit.instruments import builds, containers, npmcache, undo
from labkit.instruments.limits import Limits
from labkit.labs.the_quick_check.declaration import (
    DEV_DEPENDENCY,
    SLIM,
    base_tags,
    build_cache_image,
    manifests,
)

TABLE = "node_env"
PLAIN, NODE_ENV, OMIT_DEV = "npm ci", "NODE_ENV=production, npm ci", "npm ci --omit=dev"
# What each variant adds to the same dependencies stage: an ENV line before the install, flags after `npm ci`.
VARIANTS = {PLAIN: ("", ""), NODE_ENV: ("ENV NODE_ENV=production\n", ""), OMIT_DEV: ("", " --omit=dev")}
DOCKERFILE = assets.text("quick_check/Dockerfile.node-env")
LIMITS = Limits.of(memory_mib=256, pids=64, cpus=1.0)
# Run by node in a container of each image: the files under the dev dependency and under all of node_modules.
COUNT_ALL = (
    "const fs = require('fs'), path = require('path');"
    "const count = (d) => { let n = 0; if (!fs.existsSync(d)) return 0;"
    " for (const e of fs.readdirSync(d, {withFileTypes: true})) {"
    " if (e.isDirectory()) n += count(path.join(d, e.name)); else if (e.isFile()) n++; } return n; };"
    f"console.log(JSON.stringify({{dev: count('/app/node_modules/{DEV_DEPENDENCY}'),"
    " all: count('/app/node_modules')}));"
)


@dataclass(frozen=True)
class NodeEnvResult:
    """`variants`: one row per way of installing — variant, dockerfile_env (the ENV line, or ""), npm_flags,
    npm_version (of the slim npm base), dev_dependency_files (files under /app/node_modules/typescript) and
    node_modules_files (all files under /app/node_modules, counted the same way)."""

    variants: pd.DataFrame

    @property
    def recorded(self) -> bool:
        """False in a replay of a recording made before the section existed."""
        return not self.variants.empty

    def dev_files(self, variant: str) -> int:
        return int(self.variants.set_index("variant").loc[variant, "dev_dependency_files"])

    @property
    def npm_version(self) -> str:
        return str(self.variants["npm_version"].iloc[0])

    def prunes(self) -> bool:
        """NODE_ENV=production alone left the dev dependency out, where plain `npm ci` installed it."""
        return self.dev_files(PLAIN) > 0 and self.dev_files(NODE_ENV) == 0

    def conclusion(self) -> str:
        if not self.recorded:
            return "Not recorded: this recording was made before the section existed."
        plain, env, omit = self.dev_files(PLAIN), self.dev_files(NODE_ENV), self.dev_files(OMIT_DEV)
        said = ("so NODE_ENV=production alone keeps the dev dependencies out, as `--omit=dev` does" if self.prunes()
                else "so NODE_ENV=production alone did not keep them out here")
        return (f"With npm {self.npm_version}: plain `npm ci` installed {plain} files of {DEV_DEPENDENCY}; under "
                f"`NODE_ENV=production` {env}; with `--omit=dev` {omit} — {said}.")


def _dockerfile(variant: str, base: str, cache_image: str) -> str:
    env, flags = VARIANTS[variant]
    return DOCKERFILE.format(base=base, env=env, npm_cache=cache_image, flags=flags)


def run_node_env(lab: LabSession) -> NodeEnvResult:
    """Each variant of the dependencies stage built with ``--network none`` from the npm cache, and its
    node_modules counted by node inside a container of the image."""
    if (missing := lab.unrecorded(TABLE)) is not None:
        return NodeEnvResult(missing)
    if lab.live and not (npmcache.folder(manifests()) / npmcache.COMPLETE).exists():
        raise NotPrepared("the npm cache of notebook 14's app is not fetched yet.", "Run `labkit setup 14`.")

    def experiment() -> pd.DataFrame:
        client = lab.engine
        base = base_tags(client)[SLIM]
        rows = []
        with lab.scope() as scope, undo.temporary_folder("labkit-quick-check-") as scratch:
            folder = Path(scratch)
            cache_image = build_cache_image(folder, scope, npmcache.folder(manifests()))
            npm_version = containers.run_once(client, scope, base, ["npm", "--version"], limits=LIMITS,
                                              network_mode="none").decode().strip()
            for index, variant in enumerate(VARIANTS):
                context = folder / f"variant-{index}"
                context.mkdir()
                for name in npmcache.MANIFESTS:
                    (context / name).write_bytes((manifests()[0] / name).read_bytes())
                (context / "Dockerfile").write_text(_dockerfile(variant, base, cache_image))
                built = builds.build(context, f"labkit-quick-check-node-env-{index}:{scope.scope_id}", scope)
                inside = json.loads(containers.run_once(client, scope, built.image_id, ["node", "-e", COUNT_ALL],
                                                        limits=LIMITS, network_mode="none"))
                env, flags = VARIANTS[variant]
                rows.append({"variant": variant, "dockerfile_env": env.strip(), "npm_flags": flags.strip(),
                             "npm_version": npm_version, "dev_dependency_files": int(inside["dev"]),
                             "node_modules_files": int(inside["all"])})
        return pd.DataFrame(rows)

    return NodeEnvResult(lab.measure(TABLE, experiment, variants=list(VARIANTS)))

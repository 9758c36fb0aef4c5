"""Section 4: one tag, two architectures — a manifest list in a local registry, resolved by `pull --platform`."""

from __future__ import annotations

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import registry


def run_manifest_list(lab: LabSession, port: int | None = None) -> registry.ManifestResult:
    """Push the amd64 and arm64 busybox images to a local registry (127.0.0.1, `port` or a free one), join them
    under one tag with a manifest list, then pull that tag once per platform and read what came back."""
    registry.validate_port(port)

    def experiment() -> pd.DataFrame:
        with lab.scope() as scope:
            return registry.busybox_under_one_tag(lab.engine, scope, port)

    return registry.ManifestResult(lab.measure("manifest", experiment, port=port))

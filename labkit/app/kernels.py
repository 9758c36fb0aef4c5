"""The kernels labkit starts (papermill's, JupyterLab's): where their sockets go and over which transport.

Shared by the runner (one kernel per executed notebook) and the JupyterLab launcher (the server's kernels).
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

from traitlets.config import Config

log = logging.getLogger("labkit.jupyter")

IPC_PATH_MAX = 107  # bytes in a Unix socket path (sizeof sockaddr_un.sun_path, less its terminating NUL)


def runtime_dir() -> Path:
    """Jupyter's private runtime folder (JUPYTER_RUNTIME_DIR or ~/.local/share/jupyter/runtime)."""
    from jupyter_core.paths import jupyter_runtime_dir

    return Path(os.environ.get("JUPYTER_RUNTIME_DIR") or jupyter_runtime_dir())


def kernel_transport() -> str:
    """"ipc" (Unix sockets in Jupyter's private runtime folder) where the socket paths fit, else "tcp".

    Over TCP any local user can reach a kernel's ports, and ipykernel warns about it on every start; Unix sockets
    are guarded by the folder's permissions. Their paths are limited to 107 bytes (sockaddr_un), which a deep
    JUPYTER_RUNTIME_DIR can exceed: then the kernels use TCP on 127.0.0.1, and the log says why.
    """
    # Each kernel's sockets are named after its connection file, kernel-<uuid>.json: kernel-<uuid>-ipc-1 … -5.
    longest = f"{runtime_dir()}/kernel-{uuid.UUID(int=0)}-ipc-5"
    if len(os.fsencode(longest)) <= IPC_PATH_MAX:
        return "ipc"
    log.warning("kernels use TCP on 127.0.0.1: their Unix socket paths in %s would exceed %d bytes", runtime_dir(),
                IPC_PATH_MAX)
    return "tcp"


def kernel_config() -> Config:
    """Settings for the kernel of one papermill execution (see :func:`kernel_transport`).

    Over IPC the kernel's connection file is named here, in the runtime folder: the sockets are named after it.
    Left unnamed, jupyter_client calls them ``kernel-ipc-N`` relative to the kernel's working folder — the
    notebooks' folder — where they would litter the checkout and collide between kernels running at once.
    """
    transport = kernel_transport()
    if transport == "tcp":
        return Config({"KernelManager": {"transport": "tcp"}})
    runtime_dir().mkdir(mode=0o700, parents=True, exist_ok=True)
    connection = runtime_dir() / f"kernel-{uuid.uuid4()}.json"
    return Config({"KernelManager": {"transport": "ipc", "connection_file": str(connection)}})

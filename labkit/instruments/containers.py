"""Containers an experiment starts: labelled on the run's scope, under limits, with no outside DNS, removed after.

Every container goes through here so that each carries the scope's labels (swept by ``labkit clean`` if all
else fails), runs under a :class:`~labkit.instruments.limits.Limits`, and resolves no outside name
(``--dns 127.0.0.1``: nothing an experiment starts sends traffic off this machine).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import docker

from labkit.errors import LabkitError
from labkit.instruments.engine import Scope, docker_cli, ignore_gone
from labkit.instruments.limits import Limits
from labkit.instruments.shell import Completed, run

NO_DNS = "127.0.0.1"


@contextmanager
def running(client: docker.DockerClient, scope: Scope, image: str, argv: Sequence[str], *, stem: str,
            limits: Limits, **options: Any) -> Iterator[Any]:
    """A detached container running `argv` under `limits`, named ``labkit-<stem>-<scope>``; removed (with its
    anonymous volumes) when the block ends, also on an exception or Ctrl-C. `options` are SDK keyword arguments
    (``pid_mode="host"``, ``cap_drop=["ALL"]`` …); they override `limits`' own (``mem_limit=0``: no memory limit of
    its own, for a container bounded by the group its ``cgroup_parent`` names)."""
    name = scope.name(stem)
    try:
        container = client.containers.run(image, list(argv), detach=True, labels=scope.labels, name=name,
                                          dns=[NO_DNS], **{**limits.sdk_kwargs(), **options})
    except BaseException:
        # Ctrl-C between the engine's create and its start (or while start runs) leaves a container this block
        # never got hold of; its processes would keep the caller's cgroup busy until the scope's sweep.
        ignore_gone(lambda: client.api.remove_container(name, force=True, v=True), going=True)
        raise
    try:
        yield container
    finally:
        container.remove(force=True, v=True)


def run_once(client: docker.DockerClient, scope: Scope, image: str, argv: Sequence[str], *, limits: Limits,
             **options: Any) -> bytes:
    """``docker run --rm`` through the SDK: start `argv`, wait for it, return its output; the engine removes it."""
    output: bytes = client.containers.run(image, list(argv), remove=True, labels=scope.labels, dns=[NO_DNS],
                                          **limits.sdk_kwargs(), **options)
    return output


def cli_run_argv(scope: Scope, image: str, argv: Sequence[str], *, limits: Limits) -> list[str]:
    """The same ``docker run --rm`` as :func:`run_once`, as a docker CLI command line (never pulls)."""
    return [docker_cli(), "run", "--rm", "--pull=never", *scope.label_args(), "--dns", NO_DNS, *limits.cli_args(),
            image, *argv]


def run_on_platform(scope: Scope, image: str, platform: str, argv: Sequence[str], *, limits: Limits) -> Completed:
    """``docker run --rm --platform`` through the CLI, never pulling; a failure is data, not an exception."""
    command = cli_run_argv(scope, image, argv, limits=limits)
    return run([command[0], command[1], "--platform", platform, *command[2:]], 120, check=False)


def said(done: Completed) -> str:
    """What the container printed when it ran; when it did not, the CLI's error without its warnings (the CLI
    warns about ``--dns 127.0.0.1`` on every run)."""
    if done.exit_code == 0:
        return done.stdout.strip()
    return "\n".join(line for line in done.stderr.strip().splitlines() if not line.startswith("WARNING:"))


def host_pid(client: docker.DockerClient, container_id: str) -> int:
    """Host PID of a running container's main process."""
    state: Mapping[str, Any] = client.api.inspect_container(container_id)["State"]
    pid = int(state.get("Pid", 0))
    if not state.get("Running") or pid == 0:
        raise LabkitError(f"container {container_id[:12]} is not running (status {state.get('Status')}).",
                          "Its command ended early: read `docker logs` of it, or the experiment's argv.")
    return pid


def health(client: docker.DockerClient, container_id: str) -> str:
    """The engine's word on a container's health check now: "starting", "healthy", "unhealthy", or "" when the
    container has no check."""
    state: Mapping[str, Any] = client.api.inspect_container(container_id)["State"]
    return str(state.get("Health", {}).get("Status", ""))


def exec_text(container: Any, argv: Sequence[str]) -> str:
    """Run `argv` inside a running container and return its stripped output; LabkitError on a non-zero exit."""
    exit_code, output = container.exec_run(list(argv))
    if exit_code != 0:
        raise LabkitError(f"{list(argv)} in container {container.name} exited {exit_code}: {output!r}",
                          "The image may lack that program: check the base's recipe.")
    return str(output.decode().strip())

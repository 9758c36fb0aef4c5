"""Notebook 15's probe: what the engine and the kernel's cgroups do, read on the machine it runs on.

It runs unchanged on the host (cgroup v1 or v2) and inside the lab machine (cgroup v2, the systemd
driver), so that the two columns of the notebook's table come from the same code. Standard library and the
docker CLI only: the guest has no labkit. Every container it makes carries the LABELS and is removed
before it exits, also when a step fails.

Usage: ``python3 probe.py IMAGE LABELS WRITE_DEVICE OUT.json``; LABELS is ``key=value[,key=value…]``.
IMAGE has busybox's applets (sh, tail, dd, readlink).
WRITE_DEVICE is the block device under the engine's data-root (for ``--device-write-bps``). OUT gets one JSON
object: ``facts``, ``cgroupns`` (one row per mode), ``oom`` and ``writes`` (one row per write kind and limit,
the unlimited first).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

MEMORY_LIMIT = 64 * 1024 * 1024  # bytes: the OOM container's memory limit (swap limit the same: no swap)
WRITE_LIMIT_BPS = 1024 * 1024  # bytes/s: --device-write-bps for the write rows
WRITE_MIB = 2  # MiB each write row writes
WRITE_KINDS = (("buffered, then sync", "", " && sync"), ("buffered + fsync", "conv=fsync", ""),
               ("direct", "oflag=direct", ""))
"""Each kind of write: its name, dd's flags, and what runs after dd."""
OOM_WAIT_S = 60.0  # longest wait for the OOM kill
STEP_TIMEOUT_S = 120.0  # longest any one docker command may take
CGROUPNS_MODES = ("default", "host", "private")  # --cgroupns modes, the engine's default (no flag) first


def docker(*args: str, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return ""


def keyed(text: str) -> dict[str, int]:
    """`key value` lines (memory.events, memory.oom_control) as a dict."""
    pairs = (line.split() for line in text.splitlines())
    return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].lstrip("-").isdigit()}


def stall_us(pressure: str, kind: str) -> int | None:
    """The `total=` microseconds of the `some` or `full` line of a PSI file (memory.pressure); None without PSI."""
    match = re.search(rf"^{kind} .*total=(\d+)", pressure, re.MULTILINE)
    return int(match.group(1)) if match else None


def facts() -> dict[str, object]:
    info = json.loads(docker("info", "--format", "{{json .}}"))
    mount_type = subprocess.run(["stat", "-fc", "%T", "/sys/fs/cgroup"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
    return {"cgroup_fs": mount_type, "cgroup_driver": info.get("CgroupDriver"),
            "cgroup_version": str(info.get("CgroupVersion", "")), "server_version": info.get("ServerVersion"),
            "kernel": os.uname().release, "operating_system": info.get("OperatingSystem"),
            "own_cgroupns": os.readlink("/proc/self/ns/cgroup")}


def cgroupns(image: str, label: list[str]) -> list[dict[str, object]]:
    """One row per --cgroupns mode (the engine's default first): the container's cgroup namespace and the path
    it sees for itself in /proc/self/cgroup. The three containers run side by side: nothing here is timed, and
    under TCG a `docker run` costs seconds."""
    own = os.readlink("/proc/self/ns/cgroup")

    def seen(mode: str) -> dict[str, object]:
        flag = [] if mode == "default" else ["--cgroupns", mode]
        out = docker("run", "--rm", *label, "--network", "none", *flag, image,
                     "sh", "-c", "readlink /proc/self/ns/cgroup; cat /proc/self/cgroup").split("\n")
        paths = [line.split(":", 2)[2] for line in out[1:] if line.count(":") >= 2]
        return {"mode": mode, "namespace": out[0], "shared_with_host": out[0] == own,
                "sees_path": paths[0] if paths else "", "cgroup_lines": len(paths)}

    with ThreadPoolExecutor(max_workers=len(CGROUPNS_MODES)) as pool:  # waits for all three, also on an error
        return list(pool.map(seen, CGROUPNS_MODES))


def _cgroup_dir(pid: int, version: str) -> str:
    """The folder of `pid`'s memory cgroup as the host sees it."""
    for line in read(f"/proc/{pid}/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        if version == "2" and controllers == "":
            return "/sys/fs/cgroup" + path
        if version == "1" and "memory" in controllers.split(","):
            return "/sys/fs/cgroup/memory" + path
    raise RuntimeError(f"no memory cgroup for pid {pid}")


def v2_memory(folder: str) -> dict[str, object]:
    """The OOM container's cgroup v2 memory files: its events, peak, limits, oom.group and stall (PSI) totals."""
    events = keyed(read(f"{folder}/memory.events"))
    pressure = read(f"{folder}/memory.pressure")
    return {"oom_events": events.get("oom"), "oom_kills": events.get("oom_kill"), "limit_hits": events.get("max"),
            "peak_bytes": int(read(f"{folder}/memory.peak") or -1), "limit_bytes": read(f"{folder}/memory.max"),
            "swap_limit": read(f"{folder}/memory.swap.max"), "oom_group": read(f"{folder}/memory.oom.group"),
            "pressure_some_us": stall_us(pressure, "some"), "pressure_full_us": stall_us(pressure, "full")}


def v1_memory(folder: str) -> dict[str, object]:
    """The OOM container's cgroup v1 memory files. `limit_hits` adds memory.memsw.failcnt (where swap is
    accounted) to memory.failcnt: with --memory-swap equal to --memory the kernel charges memory+swap first, so a
    charge fails at that counter and memory.failcnt stays 0 at the limit (both stayed 0 on kernel 6.18: see
    labkit.instruments.cgroups.Cgroup.memory_events)."""
    control = keyed(read(f"{folder}/memory.oom_control"))
    failures = [read(f"{folder}/{name}") for name in ("memory.failcnt", "memory.memsw.failcnt")]
    return {"oom_events": None, "oom_kills": control.get("oom_kill"),
            "limit_hits": sum(int(count) for count in failures if count) if failures[0] else -1,
            "peak_bytes": int(read(f"{folder}/memory.max_usage_in_bytes") or -1),
            "limit_bytes": read(f"{folder}/memory.limit_in_bytes"),
            "swap_limit": read(f"{folder}/memory.memsw.limit_in_bytes"), "oom_group": "",
            "pressure_some_us": None, "pressure_full_us": None}


def oom(image: str, label: list[str], version: str) -> dict[str, object]:
    """A child (`tail /dev/zero`, which keeps growing one line) of the container's PID 1 runs into the memory
    limit. Read the container's cgroup before it is removed: what counted the kill, the peak, and whether the
    kernel killed the child alone or the whole group. The engine's State.OOMKilled is read in the same inspect as
    State.Running, so while PID 1 still runs its `sleep`, not after the container has exited."""
    name = f"labkit-probe-oom-{os.getpid()}"
    limit = str(MEMORY_LIMIT)
    docker("run", "-d", "--name", name, *label, "--network", "none", "--memory", limit,
           "--memory-swap", limit, "--pids-limit", "16", "--cpus", "1", image,
           "sh", "-c", "tail /dev/zero; echo child-exit=$?; sleep 60")
    try:
        pid = int(docker("inspect", "-f", "{{.State.Pid}}", name).strip())
        folder = _cgroup_dir(pid, version)
        started = time.monotonic()
        logs = ""
        while time.monotonic() - started < OOM_WAIT_S:  # bounded: the kill comes within seconds
            logs = docker("logs", name)
            running = docker("inspect", "-f", "{{.State.Running}}", name).strip() == "true"
            if "child-exit=" in logs or not running:
                break
            time.sleep(0.2)
        waited_s = time.monotonic() - started
        state = json.loads(docker("inspect", "-f", "{{json .State}}", name))
        row: dict[str, object] = {"waited_s": round(waited_s, 3), "cgroup": folder,
                                  "pid1_running": state["Running"], "oom_killed_flag": state["OOMKilled"]}
        match = re.search(r"child-exit=(\d+)", logs)
        row["child_exit"] = int(match.group(1)) if match else None
        row.update(v2_memory(folder) if version == "2" else v1_memory(folder))
        return row
    finally:
        docker("rm", "-f", name, check=False)


def writes(image: str, label: list[str], device: str) -> list[dict[str, object]]:
    """WRITE_MIB MiB written through the page cache and then `sync` (the kernel's flusher writes them back), through
    the page cache with an fsync (the writer's own task writes them back), and with O_DIRECT: the three in turn in
    one container without a limit and in one with --device-write-bps WRITE_LIMIT_BPS on `device` (one container
    each, not one a write: under TCG a `docker run` costs seconds). Seconds from /proc/uptime read before and after
    each write inside the container (busybox's date has no sub-second field; /proc/uptime steps by 10 ms: a write
    under one step reads 0). Nothing is left dirty between two writes: `sync`, fsync and O_DIRECT each end with the
    data written back."""
    timed = " && ".join(f"cat /proc/uptime && dd if=/dev/zero of=/written{index} bs=1M count={WRITE_MIB} {flags} "
                        f"2>/dev/null{after} && cat /proc/uptime"
                        for index, (_, flags, after) in enumerate(WRITE_KINDS))
    rows = []
    for limited in (False, True):
        limit = ["--device-write-bps", f"{device}:{WRITE_LIMIT_BPS}"] if limited else []
        out = subprocess.run(["docker", "run", "--rm", *label, "--network", "none", *limit, image, "sh", "-c", timed],
                             capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
        stamps = [float(line.split()[0]) for line in out.stdout.splitlines() if line.strip()]
        if out.returncode != 0 or len(stamps) != 2 * len(WRITE_KINDS):
            raise RuntimeError(f"dd (limited={limited}): exit {out.returncode}: {out.stdout.strip()} "
                               f"{out.stderr.strip()}")
        for index, (kind, _, _) in enumerate(WRITE_KINDS):
            seconds = round(stamps[2 * index + 1] - stamps[2 * index], 2)
            rows.append({"kind": kind, "limit_bps": WRITE_LIMIT_BPS if limited else 0, "bytes": WRITE_MIB << 20,
                         "seconds": seconds, "rate_bps": (WRITE_MIB << 20) / seconds if seconds > 0 else None})
    return rows


def main(image: str, labels: str, device: str, out: str) -> None:
    label = [arg for pair in labels.split(",") for arg in ("--label", pair)]
    found = facts()
    # The cgroupns containers and the OOM container run side by side: neither is timed, and under TCG each
    # `docker run` costs seconds. The writes are timed, so they run alone, after both.
    with ThreadPoolExecutor(max_workers=2) as pool:  # waits for both, also on an error
        namespaces = pool.submit(cgroupns, image, label)
        killed = pool.submit(oom, image, label, str(found["cgroup_version"]))
        result = {"facts": found, "cgroupns": namespaces.result(), "oom": killed.result()}
    result["writes"] = writes(image, label, device)
    with open(out, "w") as handle:
        json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:5])

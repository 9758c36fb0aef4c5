"""Storage workloads a container (or the host) runs on one folder, and what they print, read back.

:data:`WORKLOAD` is a Python program (standard library only, run with ``python3 -c``) that, in the folder it is
given, times inside itself with ``perf_counter_ns``, so no ``docker exec`` or interpreter start is counted:

- a sequential write of a file in 1 MiB blocks with one ``fsync`` at the end;
- a cold read of that file — its pages dropped from the page cache first with ``posix_fadvise(DONTNEED)`` on this
  file only (never the host-wide ``drop_caches``), and the fraction of its pages still resident checked with
  ``mincore(2)`` just before the read — then a warm read of the same file, residency checked again;
- one 4 KiB ``write`` + ``fsync`` per commit, each latency kept (a database's commit pattern);
- creating many 1 KiB files (write + close, no fsync) and deleting them.

It prints one JSON object; :func:`parse_workload` turns it into a :class:`WorkloadRun`. :func:`percentile` is the
nearest-rank percentile the fsync latencies are summarised with.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from labkit.errors import BadParameter

BLOCK_BYTES = 2**20  # the sequential write's and the reads' block
COMMIT_BYTES = 4096  # one fsync'd write
SMALL_FILE_BYTES = 1024

WORKLOAD = r'''
import ctypes, json, os, sys, time
folder, size, commits, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
BLOCK, PAGE = 1 << 20, os.sysconf("SC_PAGE_SIZE")
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
now = time.perf_counter_ns

def resident(path):
    length = os.path.getsize(path)
    pages = (length + PAGE - 1) // PAGE
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, length, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
        if address in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        vector = (ctypes.c_ubyte * pages)()
        if libc.mincore(address, length, vector) != 0:
            raise OSError(ctypes.get_errno(), "mincore failed")
        libc.munmap(address, length)
    finally:
        os.close(fd)
    return sum(byte & 1 for byte in vector) / pages

def read_all(path):
    started = now()
    with open(path, "rb", buffering=0) as f:
        while f.read(BLOCK):
            pass
    return now() - started

out = {}
big, block = os.path.join(folder, "big.bin"), os.urandom(BLOCK)
started = now()
with open(big, "wb", buffering=0) as f:
    for _ in range(size // BLOCK):
        f.write(block)
    os.fsync(f.fileno())
out["seq_write_ns"] = now() - started
fd = os.open(big, os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
os.close(fd)
out["cold_resident"] = resident(big)
out["cold_read_ns"] = read_all(big)
out["warm_resident"] = resident(big)
out["warm_read_ns"] = read_all(big)
os.remove(big)
journal, page, latencies = os.path.join(folder, "journal.bin"), os.urandom(4096), []
fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
for _ in range(commits):
    started = now()
    os.write(fd, page)
    os.fsync(fd)
    latencies.append(now() - started)
os.close(fd)
os.remove(journal)
out["fsync_ns"] = latencies
small, payload = os.path.join(folder, "small"), b"s" * 1024
os.mkdir(small)
started = now()
for i in range(files):
    with open(os.path.join(small, str(i)), "wb") as f:
        f.write(payload)
out["create_ns"] = now() - started
started = now()
for i in range(files):
    os.remove(os.path.join(small, str(i)))
out["delete_ns"] = now() - started
os.rmdir(small)
print(json.dumps(out))
'''


def workload_argv(python: str, folder: str, size_bytes: int, commits: int, files: int) -> list[str]:
    """The command that runs :data:`WORKLOAD` with interpreter `python` in `folder`: a `size_bytes` file (a whole
    number of MiB), `commits` fsync'd 4 KiB writes, `files` small files."""
    if size_bytes < BLOCK_BYTES or size_bytes % BLOCK_BYTES:
        raise BadParameter(f"size_bytes={size_bytes}: need a whole number of MiB >= 1.", "E.g. 16 MiB.")
    return [python, "-c", WORKLOAD, folder, str(size_bytes), str(commits), str(files)]


@dataclass(frozen=True)
class WorkloadRun:
    """What one run of :data:`WORKLOAD` printed: times in seconds, residencies as fractions of the file's pages
    (0 = none in the page cache, 1 = all), one latency per fsync'd commit (s)."""

    seq_write_s: float
    cold_resident: float
    cold_read_s: float
    warm_resident: float
    warm_read_s: float
    fsync_s: tuple[float, ...]
    create_s: float
    delete_s: float


def parse_workload(text: str) -> WorkloadRun:
    """The :class:`WorkloadRun` in `text`, the workload's output (its last line is the JSON object)."""
    lines = text.strip().splitlines()
    if not lines:
        raise ValueError("the storage workload printed nothing")
    found = json.loads(lines[-1])
    return WorkloadRun(
        seq_write_s=found["seq_write_ns"] / 1e9, cold_resident=float(found["cold_resident"]),
        cold_read_s=found["cold_read_ns"] / 1e9, warm_resident=float(found["warm_resident"]),
        warm_read_s=found["warm_read_ns"] / 1e9, fsync_s=tuple(ns / 1e9 for ns in found["fsync_ns"]),
        create_s=found["create_ns"] / 1e9, delete_s=found["delete_ns"] / 1e9)


def percentile(samples: Sequence[float], percent: float) -> float:
    """The nearest-rank `percent` percentile: the smallest sample with at least `percent` % of the samples at or
    below it (for 1..100, p50 is 50 and p99 is 99; for 10 samples, p99 is the largest)."""
    if not samples:
        raise BadParameter("samples is empty: no percentile.", "Measure at least one sample.")
    if not 0 < percent <= 100:
        raise BadParameter(f"percent={percent!r}: need 0 < percent <= 100.", "E.g. 50 or 99.")
    ordered = sorted(samples)
    return float(ordered[math.ceil(percent / 100 * len(ordered)) - 1])


# Timing a one-byte append twice to the same file: the first to a file from an image's lower layer copies it up.
APPEND_TWICE = r'''
import sys, time
path, times = sys.argv[1], []
for _ in range(2):
    started = time.perf_counter_ns()
    with open(path, "ab") as f:
        f.write(b"x")
    times.append(time.perf_counter_ns() - started)
print(*times)
'''


def parse_appends(text: str) -> tuple[float, float]:
    """(first, second) append time in seconds, from :data:`APPEND_TWICE`'s output."""
    first, second = text.split()
    return int(first) / 1e9, int(second) / 1e9


# Creating one file as whoever the process is: prints 0, or the errno the open failed with (13 is EACCES).
CREATE_FILE = r'''
import sys
try:
    open(sys.argv[1], "x").close()
    print(0)
except OSError as error:
    print(error.errno)
'''

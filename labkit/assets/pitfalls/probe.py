"""Notebook 10's program inside its containers: one action per pitfall, each printing one JSON line of results.

Standard library only (it runs in the python-slim base). Outcomes are data: an errno is printed by its name
(``EPERM``), never raised. Every loop is bounded in count and time.
"""

import ctypes
import errno
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

CLONE_NEWUTS = 0x04000000  # <linux/sched.h>: a new hostname namespace, which needs CAP_SYS_ADMIN
# keyctl(2) needs no capability, and Docker's default seccomp profile refuses it whatever the container's capabilities
# (the kernel keyring is not namespaced). Its number per architecture (<asm/unistd.h>); KEYCTL_GET_KEYRING_ID of the
# session keyring, made if missing (<linux/keyctl.h>).
SYS_KEYCTL = {"x86_64": 250, "aarch64": 219}
KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING = 0, -3
LONGEST_WAIT_S = 600  # a waiting container ends by itself if nobody stops it


def say(**fields):
    print(json.dumps(fields), flush=True)


def errno_name(exc):
    return errno.errorcode.get(exc.errno, str(exc.errno))


def wait(exit_on_sigterm=False):
    """Sleep until stopped; with `exit_on_sigterm`, a SIGTERM handler ends the program with exit code 0."""
    if exit_on_sigterm:
        signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(0))
    say(ready=True, pid=os.getpid(), handler=exit_on_sigterm)
    time.sleep(LONGEST_WAIT_S)


def orphans(count, interval_s):
    """Start `count` children, one per `interval_s`, each of which starts a grandchild and exits. Like most programs
    this one waits for the children it started, but never for anything else: each grandchild, orphaned, is adopted by
    PID 1 and, once it exits, stays a zombie unless PID 1 reaps it."""
    for _ in range(count):
        child = os.fork()
        if child == 0:
            if os.fork() == 0:
                time.sleep(0.05)  # the grandchild outlives its parent, so PID 1 adopts it
            os._exit(0)
        os.waitpid(child, 0)
        time.sleep(interval_s)
    say(started=count)
    time.sleep(LONGEST_WAIT_S)


def raw_socket():
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
        say(raw_socket="opened")
    except OSError as exc:
        say(raw_socket=errno_name(exc))


def unshare_uts():
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.unshare(CLONE_NEWUTS)
    say(unshare="ok" if result == 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno())))


def keyctl():
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.syscall(SYS_KEYCTL[os.uname().machine], KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 1)
    say(keyctl="ok" if result >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno())))


def write(*paths):
    outcomes = {}
    for path in paths:
        try:
            with open(path, "w") as out:
                out.write("written\n")
            outcomes[path] = "ok"
        except OSError as exc:
            outcomes[path] = errno_name(exc)
    say(uid=os.getuid(), euid=os.geteuid(), writes=outcomes)


def ids():
    say(uid=os.getuid(), euid=os.geteuid())


def clock():
    """Read the clock, then try to set it to the time just read: never a jump, and without CAP_SYS_TIME it fails."""
    now_ns = time.clock_gettime_ns(time.CLOCK_REALTIME)
    try:
        time.clock_settime_ns(time.CLOCK_REALTIME, time.clock_gettime_ns(time.CLOCK_REALTIME))
        outcome = "ok"
    except OSError as exc:
        outcome = errno_name(exc)
    local = time.localtime(now_ns // 10**9)
    say(realtime_ns=now_ns, set_clock=outcome, tz=os.environ.get("TZ", ""), shown=time.strftime("%H:%M:%S %Z", local),
        utc_offset_s=local.tm_gmtoff)


def chatter(total_bytes, duration_s, line_bytes):
    """Write `total_bytes` to stdout in lines of `line_bytes`, spread evenly over `duration_s`, then stop."""
    lines = max(1, total_bytes // line_bytes)
    line = "x" * (line_bytes - 1)
    started = time.monotonic()
    for index in range(lines):
        print(line, flush=index % 64 == 63)
        ahead = started + duration_s * (index + 1) / lines - time.monotonic()
        if ahead > 0.01:
            time.sleep(ahead)
    sys.stdout.flush()


def log_both(log_file):
    print("to stdout", flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    with open(log_file, "a") as out:
        out.write("to the log file\n")
    say(ready=True)
    time.sleep(LONGEST_WAIT_S)


ACTIONS: dict[str, Callable[..., None]] = {
    "wait": lambda *a: wait("--exit-on-sigterm" in a), "orphans": lambda n, s: orphans(int(n), float(s)),
    "raw-socket": raw_socket, "unshare-uts": unshare_uts, "keyctl": keyctl, "write": write, "ids": ids,
    "clock": clock,
    "chatter": lambda t, d, n: chatter(int(t), float(d), int(n)), "log-both": log_both,
}

if __name__ == "__main__":
    ACTIONS[sys.argv[1]](*sys.argv[2:])

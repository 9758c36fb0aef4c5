"""A bounded HTTP load client: a fixed number of requests at a fixed concurrency under a time limit.

Pure Python (threads + ``http.client``), on purpose: the same file runs wherever a path starts — in this process
on the host, inside a neighbour's network namespace (``ip netns exec … python3 loadclient.py``) and inside a
container from labkit's python base (the file mounted read-only) — so every path is measured by the same code,
and each request's own latency is kept (``ab`` and ``wrk`` report summaries; ``wrk`` is not packaged for Debian
12 and ``ab`` is not in any of labkit's images). The module imports only the standard library at the top for
that reason; the summaries (percentile intervals) are computed by the caller on the host.

Every request opens its own connection (like ``ab`` without ``-k``), so a latency is connect + request + the whole
response, in seconds from ``perf_counter_ns``. A request that fails (refused, reset, timed out, not 2xx) is kept
as an error row, never dropped; the run stops starting requests at the time limit and reports how many it never
started.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import asdict, dataclass

MAX_REQUESTS = 1_000_000
MAX_CONCURRENCY = 256
CHUNK_BYTES = 1 << 16


class BadLoad(ValueError):
    """A load the client refuses before sending anything (the message names the parameter and what is allowed)."""


@dataclass(frozen=True)
class Request:
    """One request: its `index`, `latency_s` (connect to last byte), `status` (0 when no response), `bytes`
    received, `error` ('' when it succeeded) and `started_s`, when it started, in seconds since the load
    started (where in a load its failures fell)."""

    index: int
    latency_s: float
    status: int
    bytes: int
    error: str
    started_s: float = 0.0


@dataclass(frozen=True)
class Load:
    """What :func:`run_load` did: each request it started, and how many it never started (time limit)."""

    requests: list[Request]
    not_started: int
    wall_s: float


def validate(url: str, count: int, concurrency: int, time_limit_s: float) -> tuple[str, int, str]:
    """(host, port, path) of `url`; BadLoad for zero or too many requests, a concurrency outside
    1..min(count, MAX_CONCURRENCY), a time limit <= 0 or a url that is not http://host:port/path."""
    for name, value in (("count", count), ("concurrency", concurrency)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BadLoad(f"{name}={value!r}: need a whole number >= 1.")
    if count > MAX_REQUESTS:
        raise BadLoad(f"count={count}: at most {MAX_REQUESTS} requests per load.")
    if concurrency > count:
        raise BadLoad(f"concurrency={concurrency} is above count={count}: a worker would have nothing to send. "
                      f"Use concurrency <= count.")
    if concurrency > MAX_CONCURRENCY:
        raise BadLoad(f"concurrency={concurrency}: at most {MAX_CONCURRENCY}.")
    if not isinstance(time_limit_s, (int, float)) or not 0 < time_limit_s < math.inf:
        raise BadLoad(f"time_limit_s={time_limit_s!r}: need a number of seconds > 0.")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise BadLoad(f"url={url!r}: need http://host[:port]/path.")
    return parts.hostname, parts.port or 80, parts.path or "/"


def _one(host: str, port: int, path: str, index: int, timeout_s: float, load_started_ns: int = 0) -> Request:
    started = time.perf_counter_ns()
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        received = 0
        while chunk := response.read(CHUNK_BYTES):
            received += len(chunk)
        error = "" if 200 <= response.status < 300 else f"HTTP {response.status}"
        status = response.status
    except (OSError, http.client.HTTPException) as exc:
        received, status, error = 0, 0, f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()
    return Request(index, (time.perf_counter_ns() - started) / 1e9, status, received, error,
                   (started - load_started_ns) / 1e9 if load_started_ns else 0.0)


def run_load(url: str, count: int, concurrency: int, time_limit_s: float,
             request_timeout_s: float | None = None, stop: threading.Event | None = None) -> Load:
    """Send `count` GETs to `url` from `concurrency` threads; no request starts after `time_limit_s` seconds, and
    none waits longer than what is left of it (so the whole load ends within about the limit), nor longer than
    `request_timeout_s` when given (a request to an address that went silent then fails instead of holding its
    worker to the end). Once `stop` is set, no request starts either (the caller ends the load early)."""
    host, port, path = validate(url, count, concurrency, time_limit_s)
    if request_timeout_s is not None and not 0 < request_timeout_s < math.inf:
        raise BadLoad(f"request_timeout_s={request_timeout_s!r}: need a number of seconds > 0, or None.")
    started = time.perf_counter()
    started_ns = time.perf_counter_ns()
    deadline = started + time_limit_s
    next_index = iter(range(count))
    lock = threading.Lock()
    done: list[Request] = []

    def worker() -> None:
        while True:
            left = deadline - time.perf_counter()
            with lock:
                index = next(next_index, None) if left > 0 and not (stop and stop.is_set()) else None
            if index is None:
                return
            finished = _one(host, port, path, index, min(left, request_timeout_s or left), started_ns)
            with lock:
                done.append(finished)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(time_limit_s + 5)
    with lock:
        requests = sorted(done, key=lambda r: r.index)
    return Load(requests, count - len(requests), time.perf_counter() - started)


def percentile_interval(samples: Sequence[float], q: float, confidence: float = 0.95) -> tuple[float, float, float]:
    """The `q`-quantile of `samples` (0 < q < 1) with a distribution-free interval from order statistics:
    (estimate, low, high). [x(j), x(k)] holds the population quantile with probability P(j <= B < k),
    B ~ Binomial(n, q); the narrowest symmetric-in-rank pair reaching `confidence` is taken, or [min, max] when
    even that falls short (then the interval is wider than it claims to be: too few samples for that quantile)."""
    values = sorted(float(v) for v in samples)
    n = len(values)
    if n == 0 or not 0 < q < 1:
        raise BadLoad(f"need samples and 0 < q < 1 (got {n} samples, q={q!r}).")
    cdf = [0.0] * (n + 1)  # cdf[i] = P(B <= i - 1), from log-probabilities (q**n underflows for large n)
    for i in range(n):
        log_pmf = math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(q) \
            + (n - i) * math.log1p(-q)
        cdf[i + 1] = cdf[i] + math.exp(log_pmf)
    center = q * n
    for width in range(n):
        j = max(1, math.floor(center) - width)
        k = min(n, math.ceil(center) + width + 1)
        if cdf[k] - cdf[j] >= confidence or (j == 1 and k == n):
            break
    estimate = values[min(n - 1, max(0, math.ceil(q * n) - 1))]  # the nearest-rank quantile
    return estimate, values[j - 1], values[k - 1]


def bulk(url: str, time_limit_s: float) -> Request:
    """One GET of a large body, read to the end: its bytes and seconds give the path's throughput."""
    host, port, path = validate(url, 1, 1, time_limit_s)
    return _one(host, port, path, 0, time_limit_s)


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 loadclient.py URL --count N --concurrency C --time-limit S [--bulk]``: print the load as JSON
    (``{"requests": [...], "not_started": n, "wall_s": s}``); exit 2 on a refused load. SIGTERM ends the load
    early: no request starts after it, and what was done is printed as usual."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=10.0)
    parser.add_argument("--bulk", action="store_true", help="one GET of a large body (throughput)")
    parser.add_argument("--request-timeout", type=float, default=None, help="seconds one request may take")
    args = parser.parse_args(argv)
    try:
        if args.bulk:
            started = time.perf_counter()
            load = Load([bulk(args.url, args.time_limit)], 0, time.perf_counter() - started)
        else:
            load = run_load(args.url, args.count, args.concurrency, args.time_limit, args.request_timeout, stop)
    except BadLoad as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    json.dump({"requests": [asdict(r) for r in load.requests], "not_started": load.not_started,
               "wall_s": load.wall_s}, sys.stdout)
    return 0


def parse_output(text: str) -> Load:
    """The :class:`Load` that :func:`main` printed (read back by the caller of a client run elsewhere)."""
    found = json.loads(text)
    return Load([Request(**r) for r in found["requests"]], int(found["not_started"]), float(found["wall_s"]))


if __name__ == "__main__":
    sys.exit(main())

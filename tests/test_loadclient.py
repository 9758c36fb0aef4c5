"""The bounded load client: percentiles and their intervals on hand-made samples, refused loads, and real loads
against a local server (answered, refused, bounded by count and time)."""

from __future__ import annotations

import http.server
import socket
import sys
import threading
from collections.abc import Iterator

import pytest

from labkit.instruments import loadclient, measure
from labkit.instruments.shell import run

BODY = b"hello from the test server\n"


def test_the_median_interval_of_1_to_100_is_ranks_40_and_61() -> None:
    # Textbook value (e.g. Conover, Practical Nonparametric Statistics, table A3): for n = 100 the 95 % interval
    # of the median runs from the 40th to the 61st order statistic (coverage 96.5 %); the nearest-rank median is 50.
    assert loadclient.percentile_interval(range(1, 101), 0.5) == (50.0, 40.0, 61.0)
    low, high, _ = measure.median_interval(list(range(1, 101)))
    assert (low, high) == (40.0, 61.0)


def test_nearest_rank_percentiles_of_a_hand_made_sample() -> None:
    sample = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 9.0, 8.0, 7.0, 6.0]  # 1 … 10, shuffled
    # Nearest rank: the ceil(q·n)-th smallest. p50 → 5th = 5; p90 → 9th = 9; p99 → ceil(9.9) = 10th = 10.
    assert [loadclient.percentile_interval(sample, q)[0] for q in (0.5, 0.9, 0.99)] == [5.0, 9.0, 10.0]


def test_too_few_samples_give_the_whole_range() -> None:
    # n = 5: even [min, max] covers the median with only 1 - 2/32 = 93.75 % < 95 %; so [min, max] is all there is.
    assert loadclient.percentile_interval([3, 1, 2, 5, 4], 0.5) == (3.0, 1.0, 5.0)
    # p99 of 100 samples: the interval cannot close above the largest value, so it spans the sample.
    assert loadclient.percentile_interval(range(1, 101), 0.99)[1:] == (1.0, 100.0)


@pytest.mark.parametrize(("count", "concurrency", "limit", "url", "message"), [
    (0, 1, 1.0, "http://127.0.0.1/", "count=0"),
    (5, 6, 1.0, "http://127.0.0.1/", "concurrency=6 is above count=5"),
    (5, 0, 1.0, "http://127.0.0.1/", "concurrency=0"),
    (5, 1, 0.0, "http://127.0.0.1/", "time_limit_s=0.0"),
    (5, 1, 1.0, "https://127.0.0.1/", "http://host"),
])
def test_bad_loads_are_refused_before_anything_is_sent(count: int, concurrency: int, limit: float, url: str,
                                                        message: str) -> None:
    with pytest.raises(loadclient.BadLoad, match=message):
        loadclient.run_load(url, count, concurrency, limit)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_load_sends_exactly_count_requests_and_reads_every_byte(server: str) -> None:
    load = loadclient.run_load(server, 40, 4, 30.0)
    assert [r.index for r in load.requests] == list(range(40)) and load.not_started == 0
    assert all(r.status == 200 and r.bytes == len(BODY) and not r.error and r.latency_s > 0 for r in load.requests)


def test_a_refused_port_is_an_error_row_not_an_exception() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound but not listening: connections are refused
        load = loadclient.run_load(f"http://127.0.0.1:{port}/", 3, 1, 5.0)
    assert len(load.requests) == 3 and all("ConnectionRefused" in r.error and r.status == 0 for r in load.requests)


def test_the_time_limit_stops_new_requests() -> None:
    with socket.socket() as silent:  # listens but never answers: each request waits out what is left
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        load = loadclient.run_load(f"http://127.0.0.1:{silent.getsockname()[1]}/", 1000, 2, 0.5)
    assert load.wall_s < 5 and load.not_started > 900
    assert all(r.error for r in load.requests)


def test_the_command_line_prints_the_load_and_refuses_bad_ones(server: str) -> None:
    done = run([sys.executable, loadclient.__file__, server, "--count", "3", "--concurrency", "3"], 60)
    load = loadclient.parse_output(done.stdout)
    assert len(load.requests) == 3 and all(r.status == 200 for r in load.requests)
    refused = run([sys.executable, loadclient.__file__, server, "--count", "2", "--concurrency", "3"], 60,
                  check=False)
    assert refused.exit_code == 2 and "concurrency=3 is above count=2" in refused.stderr

"""The daemon's HTTP server against slow and hostile clients, and SIGHUP: a real `pgwatch-cpa run` process."""

from __future__ import annotations

import contextlib
import resource
import signal
import socket
import time
import urllib.request

import pytest

pytestmark = pytest.mark.integration

HEADER_TIMEOUT = 10.0  # as documented (README, "Running the daemon"): pgwatch_cpa.daemon.http_guard's constants
MAX_CONNECTIONS = 256

STALLED = 600
MALFORMED = [
    b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",  # a header line without a colon
    b"GET /\x00x HTTP/1.1\r\n\r\n",  # a NUL in the target
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",  # a request line over 8190 bytes
]


@contextlib.contextmanager
def fd_limit(soft: int):
    """Start the daemon under the soft open-files limit most hosts give a service (1024), as it is deployed."""
    old_soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (old_soft, hard))


def start(daemon_factory):
    with fd_limit(1024):
        daemon = daemon_factory({})  # no target: the HTTP server alone
    daemon.wait_ready()
    return daemon


def timed_get(daemon, path: str = "/metrics") -> tuple[int, float]:
    started = time.monotonic()
    with urllib.request.urlopen(daemon.base_url + path, timeout=5) as response:
        response.read()
        return response.status, time.monotonic() - started


def closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


def test_stalled_requests_neither_starve_metrics_nor_flood_the_log_and_are_closed(daemon_factory):
    daemon = start(daemon_factory)
    lines_before = len(daemon.log().splitlines())
    sockets = []
    try:
        opened = time.monotonic()
        for _ in range(STALLED):
            sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=5)
            sock.sendall(b"GET /metr")  # half a request line, then nothing
            sockets.append(sock)
        latencies = []
        while time.monotonic() - opened < 4:
            status, seconds = timed_get(daemon)
            assert status == 200
            latencies.append(seconds)
            time.sleep(0.5)
        assert max(latencies) < 4.5, latencies  # before the fix: no answer within the 5 s timeout at all

        deadline = opened + HEADER_TIMEOUT + 10
        while not all(closed_by_server(s) for s in sockets) and time.monotonic() < deadline:
            time.sleep(0.5)
        still_open = sum(1 for s in sockets if not closed_by_server(s))
        assert still_open == 0, f"{still_open} of {STALLED} stalled connections still open after {HEADER_TIMEOUT} s"
    finally:
        for sock in sockets:
            sock.close()

    assert timed_get(daemon)[0] == 200
    log = daemon.log()
    added = log.splitlines()[lines_before:]
    assert "Traceback" not in log
    assert len(added) <= 6, "\n".join(added[:20])
    closed = {reason: daemon.sample("pgwatch_http_connections_closed_early_total", reason=reason)
              for reason in ("limit", "header_timeout")}
    assert closed["limit"] >= STALLED - MAX_CONNECTIONS and closed["header_timeout"] >= 1, closed


def test_a_malformed_request_is_one_rate_limited_line_not_a_traceback(daemon_factory):
    daemon = start(daemon_factory)
    lines_before = len(daemon.log().splitlines())
    for _ in range(10):
        for request in MALFORMED:
            with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as sock:
                sock.sendall(request)
                assert sock.recv(64).startswith(b"HTTP/1.0 400 Bad Request") or request.startswith(b"GET /aaa")
    assert timed_get(daemon, "/healthz")[0] == 200
    added = daemon.log().splitlines()[lines_before:]
    assert "Traceback" not in daemon.log()
    assert 1 <= len(added) <= 2, "\n".join(added)
    assert "malformed request" in added[0]


def test_sighup_reloads_and_the_daemon_keeps_serving(daemon_factory):
    daemon = start(daemon_factory)
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for(lambda: "configuration reloaded (SIGHUP)" in daemon.log(), 5, "the first reload")
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for(lambda: daemon.log().count("configuration reloaded (SIGHUP)") == 2, 5, "the second reload")
    assert daemon.process.poll() is None, daemon.log()
    assert timed_get(daemon)[0] == 200
    assert daemon.stop() == 0

"""The daemon skeleton against real servers: reachability, restarts, shutdown, secrets, bad input."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import psycopg
import pytest

pytestmark = pytest.mark.integration


def pg_config(pg, **extra) -> dict:
    return {"interval": "1s", "postgres": [{"name": "main", "dsn": pg.dsn(), "connect_timeout": "2s", **extra}]}


def test_pg_up_follows_the_server_without_restarting_the_daemon(pg_server, daemon_factory):
    daemon = daemon_factory(pg_config(pg_server))
    daemon.wait_ready()
    assert daemon.wait_for(lambda: daemon.sample("pg_up", target="main") == 1.0, what="pg_up 1")
    assert daemon.sample("pgwatch_build_info") == 1.0

    pg_server.stop()
    daemon.wait_for(lambda: daemon.sample("pg_up", target="main") == 0.0, what="pg_up 0 after stop")
    pg_server.start_again()
    daemon.wait_for(lambda: daemon.sample("pg_up", target="main") == 1.0, what="pg_up 1 after restart")

    log = daemon.log()
    assert log.count("target main (postgres) is down") == 1, log
    assert daemon.sample("pgwatch_connection_errors_total", target="main") >= 1


def cluster_pids(postmaster: int) -> list[int]:
    """The postmaster and its children (backends, checkpointer, walwriter, ...)."""
    children = []
    for entry in Path("/proc").iterdir():
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == postmaster:
            children.append(int(entry.name))
    return [postmaster, *children]


def test_a_frozen_server_is_down_and_polling_goes_on(pg_server, daemon_factory):
    """SIGSTOP leaves every socket open and never answers: only a client-side deadline can tell."""
    daemon = daemon_factory(pg_config(pg_server, statement_timeout="1s"))
    daemon.wait_for(lambda: daemon.sample("pg_up", target="main") == 1.0, what="pg_up 1")
    daemon.wait_for(lambda: daemon.sample("pgwatch_collector_success", target="main", collector="database") == 1.0,
                    what="a reused connection (the probe and collectors have run once)")
    pids = cluster_pids(pg_server.pid)
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        daemon.wait_for(lambda: daemon.sample("pg_up", target="main") == 0.0, 15, "pg_up 0 while frozen")
        attempts = daemon.sample("pgwatch_connection_attempts_total", target="main")
        daemon.wait_for(lambda: daemon.sample("pgwatch_connection_attempts_total", target="main") > attempts + 1,
                        15, "probes going on while frozen")
        assert daemon.sample("pg_up", target="main") == 0.0
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    daemon.wait_for(lambda: daemon.sample("pg_up", target="main") == 1.0, 30, "pg_up 1 once thawed")


def test_redis_up_follows_the_server(redis_server, daemon_factory):
    daemon = daemon_factory({"interval": "1s", "redis": [{"name": "cache", "url": redis_server.url,
                                                           "timeout": "1s"}]})
    daemon.wait_for(lambda: daemon.sample("redis_up", target="cache") == 1.0, what="redis_up 1")
    redis_server.stop()
    daemon.wait_for(lambda: daemon.sample("redis_up", target="cache") == 0.0, what="redis_up 0")
    redis_server.start_again()
    daemon.wait_for(lambda: daemon.sample("redis_up", target="cache") == 1.0, what="redis_up 1 again")


def test_unreachable_target_at_start_serves_zero_and_recovers(daemon_factory, tmp_path):
    from pgwatch_cpa.sandbox import free_port

    port = free_port()
    daemon = daemon_factory({"interval": "1s", "postgres": [
        {"name": "late", "dsn": f"postgresql://postgres@127.0.0.1:{port}/postgres", "connect_timeout": "1s"}]})
    daemon.wait_ready()
    assert daemon.sample("pg_up", target="late") == 0.0
    time.sleep(3)  # several failed cycles: still one log line
    assert daemon.log().count("target late (postgres) is down") == 1


def test_sigterm_exits_zero_within_five_seconds(pg_server, redis_server, daemon_factory):
    config = pg_config(pg_server)
    config["redis"] = [{"name": "cache", "url": redis_server.url}]
    daemon = daemon_factory(config)
    daemon.wait_ready()
    before = _our_backends(pg_server)
    assert before >= 1
    started = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(5) == 0
    assert time.monotonic() - started < 5
    # The pool was closed: the server sees no pgwatch-cpa backend any more.
    deadline = time.monotonic() + 3
    while _our_backends(pg_server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _our_backends(pg_server) == 0


def _our_backends(pg) -> int:
    with psycopg.connect(pg.dsn()) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgwatch-cpa'"
                            ).fetchone()[0]


def test_password_never_appears_in_any_output(pg_server, daemon_factory):
    secret = "Wr0ngButS3cret"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE leaky LOGIN PASSWORD '{secret}x'")  # the daemon's password is wrong
    try:
        daemon = daemon_factory({"interval": "1s", "postgres": [
            {"name": "main", "dsn": f"postgresql://leaky:{secret}@127.0.0.1:{pg_server.port}/postgres"}]},
            "--log-level", "debug")
        daemon.wait_ready()
        daemon.wait_for(lambda: "is down" in daemon.log(), what="the auth failure to be logged")
        outputs = [daemon.metrics(), daemon.get("/readyz")[1], daemon.get("/healthz")[1], daemon.get("/")[1]]
        daemon.stop()
        outputs.append(daemon.log())
        assert "password authentication failed" in outputs[-1]
        for text in outputs:
            assert secret not in text
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            conn.execute("DROP ROLE leaky")


def test_port_in_use_is_a_clear_error(daemon_factory):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        daemon = daemon_factory({"listen": f"127.0.0.1:{port}"})
        code = daemon.process.wait(15)
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in daemon.log()


def test_invalid_config_starts_nothing(daemon_factory):
    daemon = daemon_factory({"interval": "15x", "bogus": True})
    assert daemon.process.wait(15) == 2
    log = daemon.log()
    assert "interval: invalid duration" in log and "bogus: unknown key" in log
    assert "listening" not in log


def test_openmetrics_negotiation(pg_server, daemon_factory):
    daemon = daemon_factory(pg_config(pg_server))
    daemon.wait_ready()
    status, body = daemon.get("/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert status == 200 and body.endswith("# EOF\n") and body.count("# EOF") == 1
    assert 'pg_up{target="main"} 1.0' in body
    status, body = daemon.get("/metrics")
    assert status == 200 and "# EOF" not in body

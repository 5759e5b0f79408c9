"""Alerting end to end: a real fact in PostgreSQL -> the daemon's rule engine -> a real Alertmanager -> a webhook.

The rule is the shipped PostgresConnectionsHigh with its `for` shortened so the test takes seconds, not minutes;
that the shipped expressions match Prometheus's own evaluation is proven by the differential test.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
import yaml

from pgwatch_cpa.demo.sink import WebhookSink
from pgwatch_cpa.sandbox import PostgresSandbox, free_port
from tests.conftest import PG_BUILDS, require, require_tool

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def alertmanager(tmp_path):
    binary = require_tool("prometheus-alertmanager", "alertmanager")
    port = free_port()
    with WebhookSink().serve_in_thread() as sink:
        config = {
            "route": {"receiver": "sink", "group_by": ["alertname", "target"], "group_wait": "1s",
                      "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [{"name": "sink", "webhook_configs": [{"url": sink.url, "send_resolved": True}]}],
        }
        (tmp_path / "am.yml").write_text(yaml.safe_dump(config))
        process = subprocess.Popen([binary, f"--config.file={tmp_path / 'am.yml'}",
                                    f"--storage.path={tmp_path / 'am'}", f"--web.listen-address=127.0.0.1:{port}",
                                    "--cluster.listen-address="], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_http(url + "/-/ready")
            yield url, sink
        finally:
            process.terminate()
            process.wait(10)


def _wait_http(url: str, timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


def shipped_rule_with_short_for(tmp_path: Path, name: str, for_: str) -> Path:
    doc = yaml.safe_load((ROOT / "alerts.yml").read_text())
    rules = [dict(r, **{"for": for_}) for g in doc["groups"] for r in g["rules"] if r["alert"] == name]
    assert len(rules) == 1
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "e2e", "rules": rules}]}))
    return path


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_connection_spike_reaches_alertmanager_and_resolves(tmp_path, alertmanager, daemon_factory):
    if not PG_BUILDS:
        require("a PostgreSQL build")
    am_url, sink = alertmanager
    rules = shipped_rule_with_short_for(tmp_path, "PostgresConnectionsHigh", "2s")
    with PostgresSandbox(build=PG_BUILDS[0], settings={"max_connections": "20"}) as pg:
        daemon = daemon_factory({
            "interval": "1s",
            "postgres": [{"name": "cpa", "dsn": pg.dsn()}],
            "alerting": {"rules": [str(rules)], "state_file": str(tmp_path / "state.json"),
                         "receivers": [{"name": "am", "type": "alertmanager", "urls": [am_url]}]},
        })
        daemon.wait_ready()
        spike = [psycopg.connect(pg.dsn()) for _ in range(15)]  # 16 of 17 usable slots with ours
        try:
            firing = wait_until(lambda: sink.alerts("PostgresConnectionsHigh", "firing"), 60, "the firing alert")
            assert firing[0]["labels"]["target"] == "cpa"
            assert firing[0]["labels"]["severity"] == "warning"
            assert "of its available connections" in firing[0]["annotations"]["summary"]
            status, body = daemon.get("/alerts")
            assert status == 200 and json.loads(body)["data"]["alerts"][0]["state"] == "firing"
        finally:
            for conn in spike:
                conn.close()
        resolved = wait_until(lambda: sink.alerts("PostgresConnectionsHigh", "resolved"), 60, "the resolve")
        assert resolved[0]["labels"]["target"] == "cpa"
        assert daemon.sample("pgwatch_notifications_total", receiver="am") >= 2

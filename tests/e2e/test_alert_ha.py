"""Alert HA end to end: two daemon replicas watching the same PostgreSQL push to a two-peer Alertmanager cluster.

Both replicas evaluate the same rule over the same database and send the same alert (same labels: nothing in them
names the replica) to both Alertmanager peers. The peers gossip their notification log, so on-call gets one
FIRING notification and one RESOLVED, not one per replica or per peer.

The alert's condition is a table the test creates and drops: a custom query counts it in pg_class.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest
import yaml

from pgwatch_cpa.demo.sink import WebhookSink
from pgwatch_cpa.sandbox import free_port
from tests.conftest import require_tool
from tests.e2e.test_alerting_e2e import _wait_http, wait_until

pytestmark = pytest.mark.e2e

ALERT = "HaFlagRaised"
FLAG_TABLE = "pgwatch_ha_flag"
PEER_TIMEOUT = 3.0  # the second peer waits this long for the first one's notification log entry before sending
# Longer than PEER_TIMEOUT: the second peer's notification carries the alerts of when its wait began, so with a
# shorter group_interval it would send a stale FIRING after the first peer's RESOLVED (alertmanager#2447).
GROUP_INTERVAL = 10.0
QUIET = GROUP_INTERVAL + 2 * PEER_TIMEOUT  # how long no second notification may arrive after the first


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture
def alertmanager_cluster(tmp_path) -> Iterator[tuple[list[str], WebhookSink]]:
    """Two clustered prometheus-alertmanager peers on loopback, both notifying one webhook sink."""
    binary = require_tool("prometheus-alertmanager", "alertmanager")
    web_ports, gossip_ports = [free_port(), free_port()], [free_port(), free_port()]
    with WebhookSink().serve_in_thread() as sink, ExitStack() as stack:
        config = {
            "route": {"receiver": "sink", "group_by": ["alertname", "target"], "group_wait": "1s",
                      "group_interval": f"{GROUP_INTERVAL:g}s", "repeat_interval": "1h"},
            "receivers": [{"name": "sink", "webhook_configs": [{"url": sink.url, "send_resolved": True}]}],
        }
        (tmp_path / "am.yml").write_text(yaml.safe_dump(config))
        for peer, (web_port, gossip_port) in enumerate(zip(web_ports, gossip_ports, strict=True)):
            other = gossip_ports[1 - peer]
            log = stack.enter_context((tmp_path / f"am{peer}.log").open("wb"))
            process = subprocess.Popen(
                [binary, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / f'am{peer}'}",
                 f"--web.listen-address=127.0.0.1:{web_port}",
                 f"--cluster.listen-address=127.0.0.1:{gossip_port}", f"--cluster.peer=127.0.0.1:{other}",
                 f"--cluster.peer-timeout={PEER_TIMEOUT:g}s"],
                stdout=log, stderr=subprocess.STDOUT)
            stack.callback(_stop, process)
        urls = [f"http://127.0.0.1:{port}" for port in web_ports]
        for url in urls:
            _wait_http(url + "/-/ready")
        for url in urls:  # gossip settled: each peer sees both and calls the cluster ready
            wait_until(lambda url=url: _cluster_ready(url), 60,
                       f"the Alertmanager at {url} to join a ready two-peer cluster "
                       f"(logs: {tmp_path}/am0.log, am1.log)")
        yield urls, sink


def _cluster_ready(url: str) -> bool:
    cluster = _get_json(url + "/api/v2/status")["cluster"]  # type: ignore[index]
    return cluster["status"] == "ready" and len(cluster.get("peers") or []) == 2


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _flag_rule_and_query(tmp_path: Path) -> tuple[Path, Path]:
    queries = tmp_path / "ha_queries.yaml"
    queries.write_text(yaml.safe_dump({"ha_flag": {
        "query": f"SELECT count(*) AS raised FROM pg_catalog.pg_class WHERE relname = '{FLAG_TABLE}'",
        "master": True,
        "metrics": [{"raised": {"usage": "GAUGE", "description": "1 while the HA test's flag table exists"}}],
    }}))
    rules = tmp_path / "ha_rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "ha", "rules": [{
        "alert": ALERT, "expr": "ha_flag_raised > 0", "for": "0s", "labels": {"severity": "warning"},
        "annotations": {"summary": "the HA test raised its flag on {{ $labels.target }}"},
    }]}]}))
    return rules, queries


def _peer_alerts(url: str) -> list[dict]:
    alerts = _get_json(url + f"/api/v2/alerts?filter=alertname%3D%22{ALERT}%22")
    assert isinstance(alerts, list)
    return alerts


def _notifications(sink: WebhookSink) -> list[dict]:
    """The sink's notifications about ALERT, each with its status and alerts."""
    bodies = [r.body for r in list(sink.requests) if r.answered == 200 and isinstance(r.body, dict)]
    return [b for b in bodies if b.get("groupLabels", {}).get("alertname") == ALERT]


def test_two_replicas_one_notification_per_alert_and_one_resolve(tmp_path, pg_server, alertmanager_cluster,
                                                                  daemon_factory):
    am_urls, sink = alertmanager_cluster
    rules, queries = _flag_rule_and_query(tmp_path)
    config = {
        "interval": "1s",
        "postgres": [{"name": "cpa", "dsn": pg_server.dsn(), "custom_queries": [str(queries)]}],
        # resend_delay longer than the test: a replica re-sending FIRING in the second after the other replica
        # resolved would reopen the alert (Alertmanager keeps the youngest update), as in a Prometheus HA pair.
        "alerting": {"rules": [str(rules)], "receivers": [
            {"name": "am", "type": "alertmanager", "urls": am_urls, "resend_delay": "10m"}]},
    }
    replicas = [daemon_factory(config), daemon_factory(config)]
    for replica in replicas:
        replica.wait_ready()
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {FLAG_TABLE}")
        conn.execute(f"CREATE TABLE {FLAG_TABLE} ()")
        try:
            for replica in replicas:  # both replicas fire and push to both peers, or the test proves nothing
                replica.wait_for(lambda r=replica: (r.sample("pgwatch_notifications_total", receiver="am") or 0) >= 2,
                                 60, "the replica to push its firing alert to both Alertmanager peers")
            wait_until(lambda: _notifications(sink), 60, "the FIRING notification at the sink")
            for url in am_urls:  # each peer holds one alert: the two replicas' pushes merged by their labels
                alerts = _peer_alerts(url)
                assert len(alerts) == 1, f"{url} holds {len(alerts)} {ALERT} alerts: {alerts}"
                assert alerts[0]["labels"] == {"alertname": ALERT, "target": "cpa", "severity": "warning"}
            time.sleep(QUIET)  # a duplicate from the second peer or the second replica would arrive by now
            firing = _notifications(sink)
            assert [n["status"] for n in firing] == ["firing"], f"expected one FIRING notification: {firing}"
            assert len(firing[0]["alerts"]) == 1
        finally:
            conn.execute(f"DROP TABLE IF EXISTS {FLAG_TABLE}")
    wait_until(lambda: len(_notifications(sink)) > 1, 60, "the RESOLVED notification at the sink")
    time.sleep(QUIET)
    notifications = _notifications(sink)
    assert [n["status"] for n in notifications] == ["firing", "resolved"], notifications
    assert sink.alerts(ALERT, "firing") == firing[0]["alerts"]
    assert len(sink.alerts(ALERT, "resolved")) == 1

"""The daemon's in-process alerting: state that survives a restart, and rule files that are refused."""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest
import yaml

from pgwatch_cpa.cli import main

pytestmark = pytest.mark.integration

FOR_SECONDS = 8


def write_rules(tmp_path, rules: list[dict]):
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "t", "rules": rules}]}))
    return path


def current_alerts(daemon) -> list[dict]:
    status, body = daemon.get("/alerts")
    assert status == 200
    return json.loads(body)["data"]["alerts"]


def active_at(alert: dict) -> float:
    return datetime.fromisoformat(alert["activeAt"].replace("Z", "+00:00")).timestamp()


def test_restart_mid_for_resumes_the_timer(pg_server, daemon_factory, tmp_path):
    rules = write_rules(tmp_path, [{"alert": "Up", "expr": "pg_up == 1", "for": f"{FOR_SECONDS}s"}])
    config = {"interval": "1s", "postgres": [{"name": "main", "dsn": pg_server.dsn()}],
              "alerting": {"rules": [str(rules)], "state_file": str(tmp_path / "state.json")}}
    first = daemon_factory(config)
    pending = first.wait_for(lambda: [a for a in current_alerts(first) if a["state"] == "pending"], 30, "pending")
    started = active_at(pending[0])
    assert first.stop() == 0
    time.sleep(2)

    second = daemon_factory(config)
    second.wait_for(lambda: current_alerts(second), 30, "the restored alert")
    restored = current_alerts(second)[0]
    assert active_at(restored) == pytest.approx(started, abs=0.01), "the for timer kept its start"
    firing = second.wait_for(lambda: [a for a in current_alerts(second) if a["state"] == "firing"], 30, "firing")
    fired_seen = time.time()
    # It fired on the original schedule, not FOR_SECONDS after the restart.
    assert fired_seen - started < FOR_SECONDS + 6
    assert active_at(firing[0]) == pytest.approx(started, abs=0.01)


def test_malformed_rule_file_is_refused_with_file_rule_and_reason(tmp_path, capsys, daemon_factory):
    rules = write_rules(tmp_path, [
        {"alert": "Quantiles", "expr": "histogram_quantile(0.9, rate(x_bucket[5m])) > 1"},
        {"alert": "Broken", "expr": "sum(rate(x[5m]) > "},
    ])
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"alerting": {"rules": [str(rules)]}}))
    assert main(["check-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(rules) in err
    assert "Quantiles" in err and "histogram_quantile" in err
    assert "Broken" in err

    daemon = daemon_factory({"alerting": {"rules": [str(rules)]}})
    assert daemon.process.wait(15) == 2
    assert "histogram_quantile" in daemon.log() and "listening" not in daemon.log()

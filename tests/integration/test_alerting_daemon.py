"""The daemon's in-process alerting: state that survives a restart, and rule files that are refused."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import datetime

import pytest
import yaml

from pgwatch_cpa.cli import main
from pgwatch_cpa.demo.sink import WebhookSink

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


async def until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll without blocking the loop (the sink answers the daemon from this loop)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except OSError:  # the daemon is not listening yet
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def delivered_groups(state_file) -> dict:
    try:
        return json.loads(state_file.read_text()).get("notifier", {}).get("oncall", {})
    except (OSError, ValueError):
        return {}


async def test_restart_while_firing_does_not_notify_again_before_repeat_interval(pg_server, daemon_factory,
                                                                                   tmp_path):
    sink = await WebhookSink(printer=lambda _line: None).start()
    rules = write_rules(tmp_path, [{"alert": "Up", "expr": "pg_up == 1"}])
    receiver = {"type": "webhook", "name": "oncall", "url": sink.url, "group_wait": "1s", "group_interval": "2s",
                "repeat_interval": "1h"}

    def config(state_file) -> dict:
        return {"interval": "1s", "postgres": [{"name": "main", "dsn": pg_server.dsn()}],
                "alerting": {"rules": [str(rules)], "state_file": str(state_file), "receivers": [receiver]}}

    state = tmp_path / "state.json"
    try:
        first = daemon_factory(config(state))
        await until(lambda: sink.notifications == 1, 30, "the first notification")
        await until(lambda: delivered_groups(state), 10, "the delivery saved with the alert state")
        assert first.stop() == 0

        second = daemon_factory(config(state))
        await until(lambda: [a for a in current_alerts(second) if a["state"] == "firing"], 30, "firing again")
        await asyncio.sleep(6)  # group_wait + group_interval, twice over
        assert sink.notifications == 1, "a restart re-sent a group that was delivered before it"
        assert second.stop() == 0

        # Control: the same restart without the saved state does notify (so the check above can fail).
        third = daemon_factory(config(tmp_path / "fresh-state.json"))
        await until(lambda: sink.notifications == 2, 30, "a notification from a daemon without saved state")
        assert third.stop() == 0
    finally:
        await sink.close()


def test_malformed_rule_file_is_refused_with_file_rule_and_reason(tmp_path, capsys, daemon_factory):
    rules = write_rules(tmp_path, [
        {"alert": "Quantiles", "expr": "quantile_over_time(0.9, x[5m]) > 1"},
        {"alert": "Broken", "expr": "sum(rate(x[5m]) > "},
    ])
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"alerting": {"rules": [str(rules)]}}))
    assert main(["check-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(rules) in err
    assert "Quantiles" in err and "quantile_over_time" in err
    assert "Broken" in err

    daemon = daemon_factory({"alerting": {"rules": [str(rules)]}})
    assert daemon.process.wait(15) == 2
    assert "quantile_over_time" in daemon.log() and "listening" not in daemon.log()

"""The alert state file as a hostile or damaged input: checked whole on load, moved aside when bad, and a failing
save that is counted on every evaluation but logged once."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from pgwatch_cpa.alerts import engine as engine_module
from pgwatch_cpa.alerts.engine import AlertEngine, AlertStateError
from pgwatch_cpa.alerts.history import History
from pgwatch_cpa.alerts.rules import parse_rules
from pgwatch_cpa.config.alerting import AlertingSettings
from pgwatch_cpa.daemon.alerting import AlertingService
from pgwatch_cpa.daemon.snapshot import SnapshotStore

RULES = """
groups:
  - name: g
    rules:
      - alert: Down
        expr: up == 0
        for: 1m
"""
NOW = 1_800_000_000.0


def good_alert(**changes: object) -> dict:
    alert = {"rule": "Down", "group": "g", "labels": {"alertname": "Down", "target": "db1"}, "annotations": {},
             "state": "firing", "active_at": NOW - 120, "value": 0.0, "fired_at": NOW - 60, "resolved_at": None,
             "keep_firing_since": None}
    alert.update(changes)
    return alert


def state(*alerts: dict, **changes: object) -> dict:
    return {"version": 1, "saved_at": NOW - 10, "alerts": list(alerts), "notifier": {}, **changes}


def engine() -> AlertEngine:
    rules = parse_rules(RULES)
    return AlertEngine(rules, History.for_rules(rules))


BAD_DOCUMENTS = {
    "active_at a string": state(good_alert(active_at="yesterday")),
    "active_at NaN": state(good_alert(active_at=math.nan)),
    "active_at past year 9999": state(good_alert(active_at=1e300)),
    "fired_at a string": state(good_alert(fired_at="soon")),
    "value a string": state(good_alert(value="0")),
    "value a bool": state(good_alert(value=True)),
    "a label value a number": state(good_alert(labels={"alertname": "Down", "target": 1})),
    "annotations a list": state(good_alert(annotations=["summary"])),
    "an unknown state": state(good_alert(state="exploded")),
    "rule missing": state({k: v for k, v in good_alert().items() if k != "rule"}),
    "an alert that is a string": state("Down"),
    "alerts an object": state(alerts={"Down": good_alert()}),
    "saved_at missing": {"version": 1, "alerts": [good_alert()]},
    "another version": state(good_alert(), version=2),
    "notifier a list": state(good_alert(), notifier=[]),
    "a list at the top": [good_alert()],
}


@pytest.mark.parametrize("doc", BAD_DOCUMENTS.values(), ids=BAD_DOCUMENTS.keys())
def test_a_wrong_typed_state_is_refused_whole_and_restores_nothing(tmp_path: Path, doc: object) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps(doc, allow_nan=True))
    e = engine()
    with pytest.raises(AlertStateError, match=str(path)):
        e.load(path, now=NOW)
    assert e.alerts() == [] and e.restored_notifier_state == {}
    assert e.api_alerts()["data"]["alerts"] == []


@pytest.mark.parametrize("raw", [b"[" * 200_000, b'{"a":' * 200_000, b"\xff\xfe{}", b"{nope"],
                         ids=["nested lists", "nested objects", "not UTF-8", "not JSON"])
def test_deep_or_broken_json_is_an_alert_state_error(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(raw)
    with pytest.raises(AlertStateError):
        engine().load(path, now=NOW)


def test_a_state_file_over_the_size_bound_is_not_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "MAX_STATE_BYTES", 1024)
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state(*[good_alert(labels={"alertname": "Down", "target": f"db{i}"})
                                       for i in range(20)])))
    with pytest.raises(AlertStateError, match="larger than"):
        engine().load(path, now=NOW)


def test_a_good_state_file_still_restores(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state(good_alert(), good_alert(labels={"alertname": "Down", "target": "db2"},
                                                              state="pending", fired_at=None, extra="dropped"))))
    e = engine()
    assert e.load(path, now=NOW) == 2
    assert {a["state"] for a in e.api_alerts()["data"]["alerts"]} == {"firing", "pending"}


def service(tmp_path: Path, state_file: Path, registry: CollectorRegistry | None = None) -> AlertingService:
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    settings = AlertingSettings.model_validate({"rules": [str(rules)], "state_file": str(state_file)},
                                               context={"environ": {}, "base_dir": tmp_path})
    return AlertingService(settings, SnapshotStore(), 15.0, registry or CollectorRegistry())


@pytest.mark.parametrize("raw", [json.dumps(state(good_alert(active_at="yesterday"))).encode(), b"[" * 200_000],
                         ids=["wrong type", "nested 200,000 deep"])
def test_the_daemon_moves_a_bad_state_file_aside_and_starts_clean(tmp_path: Path, raw: bytes,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(raw)
    with caplog.at_level(logging.INFO, logger="pgwatch_cpa"):
        svc = service(tmp_path, path)
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and errors[0].levelno == logging.ERROR, [r.getMessage() for r in caplog.records]
    aside = list(tmp_path.glob("state.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == raw, "kept, unchanged, for a post-mortem"
    assert str(aside[0]) in errors[0].getMessage() and "\n" not in errors[0].getMessage()
    assert not path.exists()
    assert svc.engine.alerts() == [] and svc.engine.api_alerts()["status"] == "success"

    svc.evaluate(NOW)  # the next save writes a clean file, not the bad value back
    assert engine().load(path, now=NOW) == 0
    assert json.loads(path.read_text())["alerts"] == []


def test_a_failing_save_is_counted_every_time_and_logged_once(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    registry = CollectorRegistry()
    svc = service(tmp_path, path, registry)
    path.mkdir()  # the state file's name is now a directory: os.replace fails
    with caplog.at_level(logging.INFO, logger="pgwatch_cpa"):
        for i in range(5):
            svc.evaluate(NOW + i)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].count("cannot save alert state") == 1, warnings[0]
    assert str(path) in warnings[0]
    assert registry.get_sample_value("pgwatch_alert_state_save_failures_total") == 5

    path.rmdir()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pgwatch_cpa"):
        svc.evaluate(NOW + 10)
        svc.evaluate(NOW + 11)
    assert path.is_file()
    assert [r.levelno for r in caplog.records] == [logging.INFO], "one line: saved again"
    assert registry.get_sample_value("pgwatch_alert_state_save_failures_total") == 5

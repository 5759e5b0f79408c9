"""The `report:` section: off by default; schedule, timezone, directory, receivers and sizes refused with their path."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry

from pgwatch_cpa.config import load_settings, settings_from_mapping
from pgwatch_cpa.config.report import parse_size
from pgwatch_cpa.daemon.reporting import ReportingService
from pgwatch_cpa.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
HOOKS = {"receivers": [{"name": "oncall", "type": "webhook", "url": "https://hooks.example/a"},
                       {"name": "team", "type": "webhook", "url": "https://hooks.example/b"},
                       {"name": "am", "type": "alertmanager", "urls": ["http://am:9093"]}]}


def settings(report: dict, **extra):
    return settings_from_mapping({"report": report, **extra}, {})


def problems_of(report: dict, **extra) -> list[str]:
    with pytest.raises(ConfigError) as info:
        settings(report, **extra)
    return info.value.problems


def test_off_by_default_and_the_example_config_documents_it():
    default = settings_from_mapping({}, {}).report
    assert (default.schedule, default.timezone, default.directory, default.keep, default.receivers,
            default.host_memory) == (None, "UTC", None, 12, [], None)
    example = load_settings(ROOT / "config.example.yaml", environ={}).report
    assert example.schedule is None
    text = (ROOT / "config.example.yaml").read_text()
    for key in ("schedule:", "timezone:", "directory:", "keep:", "receivers:", "host_memory:", "0 9 * * 1"):
        assert key in text.split("\nreport:", 1)[1], key


def test_a_full_section_is_accepted(tmp_path):
    report = settings({"schedule": "0 9 * * 1", "timezone": "Europe/Berlin", "directory": str(tmp_path),
                       "keep": 4, "receivers": ["team", "oncall"], "host_memory": "16GiB"}, alerting=HOOKS).report
    assert report.schedule == "0 9 * * 1"
    assert report.zone == ZoneInfo("Europe/Berlin")
    assert report.directory == tmp_path
    assert report.receivers == ["team", "oncall"]
    assert report.host_memory == 16 * 1024**3


@pytest.mark.parametrize("schedule", ["0 9 * * 1", "* * * * *", "*/15 8-18 * * mon-fri", "@weekly", " 0  9 * * 1 "])
def test_cron_schedules(schedule):
    assert settings({"schedule": schedule}).report.schedule == " ".join(schedule.split())


@pytest.mark.parametrize(("schedule", "message"), [
    ("61 9 * * 1", "report.schedule: '61 9 * * 1' is not a valid cron expression"),
    ("0 9 * * funday", "report.schedule: '0 9 * * funday' is not a valid cron expression"),
    ("every monday", "report.schedule: 'every monday' is not a cron expression of five fields"),
    ("0 0 9 * * 1", "report.schedule: '0 0 9 * * 1' is not a cron expression of five fields"),
    ("", "report.schedule: '' is not a cron expression of five fields"),
])
def test_bad_schedules_are_refused_with_their_path(schedule, message):
    problems = problems_of({"schedule": schedule})
    assert len(problems) == 1 and problems[0].startswith(message), problems


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "../etc/passwd", "UTC+2"])
def test_unknown_timezones_are_refused(zone):
    assert problems_of({"schedule": "0 9 * * 1", "timezone": zone}) == [
        f"report.timezone: unknown time zone {zone!r}: use an IANA name such as UTC or Europe/Berlin"]


def test_receivers_must_name_webhook_receivers_each_with_its_index():
    problems = problems_of({"schedule": "0 9 * * 1", "receivers": ["team", "nobody", "am"]}, alerting=HOOKS)
    assert problems == [
        "report.receivers[1]: no webhook receiver named 'nobody' in alerting.receivers "
        "(webhook receivers: oncall, team)",
        "report.receivers[2]: receiver 'am' is of type 'alertmanager': reports go to webhook receivers only "
        "(webhook receivers: oncall, team)",
    ]
    assert problems_of({"schedule": "0 9 * * 1", "receivers": ["x"]}) == [
        "report.receivers[0]: no webhook receiver named 'x' in alerting.receivers (there is none)"]


def test_receivers_and_directory_need_a_schedule(tmp_path):
    assert problems_of({"receivers": ["team"]}, alerting=HOOKS) == [
        "report.receivers: reports are sent on a schedule only: set report.schedule"]
    assert problems_of({"directory": str(tmp_path)}) == [
        "report.directory: only scheduled reports are saved: set report.schedule"]


def test_directory_must_exist_and_be_writable_and_is_relative_to_the_config(tmp_path):
    missing = tmp_path / "nope"
    assert problems_of({"schedule": "@daily", "directory": str(missing)}) == [
        f"report.directory: {missing} is not an existing directory"]
    (tmp_path / "reports").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text("report: {schedule: '@daily', directory: reports}\n")
    assert load_settings(config, environ={}).report.directory == tmp_path / "reports"
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        assert problems_of({"schedule": "@daily", "directory": str(locked)}) == [
            f"report.directory: {locked} is not writable"]


def test_keep_is_bounded():
    assert problems_of({"keep": 0})[0].startswith("report.keep: Input should be greater than or equal to 1")
    assert problems_of({"keep": 100_000})[0].startswith("report.keep: Input should be less than or equal to")


@pytest.mark.parametrize(("text", "size"), [
    ("16GiB", 16 * 1024**3), ("16GB", 16 * 1024**3), ("512MB", 512 * 1024**2), ("1.5 TiB", int(1.5 * 1024**4)),
    ("4096", 4096), (8192, 8192), ("64kB", 64 * 1024),
])
def test_host_memory_sizes(text, size):
    assert parse_size(text) == size
    assert settings({"host_memory": text}).report.host_memory == size


@pytest.mark.parametrize("text", ["sixteen", "16 parsecs", "-1GB", "0", True])
def test_bad_host_memory_is_refused_with_its_path(text):
    problems = problems_of({"host_memory": text})
    assert len(problems) == 1 and problems[0].startswith("report.host_memory: "), problems


def test_unknown_keys_are_refused():
    assert problems_of({"schedul": "@daily"}) == ["report.schedul: unknown key"]


def test_the_schedule_is_read_in_its_timezone():
    def next_run(schedule: str, zone: str, after: datetime) -> datetime:
        service = ReportingService(settings({"schedule": schedule, "timezone": zone}), CollectorRegistry())
        return datetime.fromtimestamp(service.next_run(after.timestamp()), ZoneInfo(zone))

    berlin = ZoneInfo("Europe/Berlin")
    # Sunday 2026-03-29 is the day Berlin moves to summer time: Monday 09:00 is 07:00 UTC, not 08:00.
    got = next_run("0 9 * * 1", "Europe/Berlin", datetime(2026, 3, 28, 12, 0, tzinfo=berlin))
    assert (got.year, got.month, got.day, got.hour, got.minute) == (2026, 3, 30, 9, 0)
    assert got.utcoffset().total_seconds() == 7200
    # Exactly on a scheduled minute: the next one, not the same one again.
    got = next_run("* * * * *", "UTC", datetime(2026, 1, 5, 9, 0, tzinfo=ZoneInfo("UTC")))
    assert (got.hour, got.minute) == (9, 1)


@pytest.mark.parametrize("receivers", [5, [{"type": "webhook", "name": ["a"], "url": "http://127.0.0.1:1/hook"}]])
def test_malformed_alerting_receivers_beside_report_receivers_are_reported_not_crashed(receivers):
    raw = {"alerting": {"receivers": receivers}, "report": {"schedule": "0 9 * * 1", "receivers": ["oncall"]}}
    with pytest.raises(ConfigError) as err:
        settings_from_mapping(raw, {})
    assert "report.receivers[0]: no webhook receiver named 'oncall'" in str(err.value)
    assert "alerting.receivers" in str(err.value).split("report.receivers[0]")[1]

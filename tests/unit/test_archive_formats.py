"""The archiver's formats and helpers without a server: stats wire format, export + manifest, destination writes,
schedule, policy selection, the collector's metric families and the CLI's parsing."""

from __future__ import annotations

import asyncio
import gzip
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from pgwatch_cpa.cli import build_parser
from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.collectors.redis.cpa_archive_stats import export_snapshot
from pgwatch_cpa.cpa.archive import export as ex
from pgwatch_cpa.cpa.archive import policies, stats
from pgwatch_cpa.cpa.archive.destination import Destination, DestinationError
from pgwatch_cpa.cpa.archive.schedule import run_on_schedule, schedule_period


def snapshot(**policy_fields: object) -> dict:
    entry = {**stats.empty_policy(), "last_success_at": 1.0e9, "rows_archived": 5, **policy_fields}
    return stats.build_snapshot(published_at=1.0e9, schedule_period_seconds=86400.0, policies={"tasks": entry})


# ---------------------------------------------------------------- stats wire format


def test_stats_round_trip_and_unknown_fields_are_dropped() -> None:
    doc = snapshot()
    doc["future_field"] = {"x": 1}
    doc["policies"]["tasks"]["future_counter"] = 3
    parsed = stats.parse_snapshot(stats.dump_snapshot(doc))
    assert parsed == snapshot()


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(version=2), "unsupported version 2"),
    (lambda d: d.update(schema="cpa-cache-stats"), "schema is not"),
    (lambda d: d.update(schedule_period_seconds=0), "schedule_period_seconds must be positive"),
    (lambda d: d.update(published_at="now"), "published_at must be a non-negative number"),
    (lambda d: d["policies"]["tasks"].update(rows_archived=-1), "policies.tasks.rows_archived must be a non-negative"),
    (lambda d: d["policies"]["tasks"].update(failures=1.5), "policies.tasks.failures must be a non-negative integer"),
    (lambda d: d["policies"]["tasks"].update(last_success_at="yesterday"), "policies.tasks.last_success_at"),
    (lambda d: d["policies"].update({"Bad Name": {}}), "policies: name 'Bad Name' must match"),
    (lambda d: d["policies"].update({f"p_{chr(97 + i)}": stats.empty_policy() for i in range(16)}),
     "at most 16 policies"),
])
def test_stats_parser_names_the_bad_field(change, message: str) -> None:
    doc = snapshot()
    change(doc)
    with pytest.raises(stats.SnapshotError, match=message):
        stats.parse_snapshot(orjson.dumps(doc))


def test_stats_parser_refuses_non_json() -> None:
    with pytest.raises(stats.SnapshotError, match="not JSON"):
        stats.parse_snapshot(b"\xff{")


def test_collector_exports_by_policy_only_and_no_success_no_timestamp() -> None:
    doc = stats.parse_snapshot(stats.dump_snapshot(snapshot(last_success_at=None, failures=2)))
    out = MetricSet()
    export_snapshot(doc, now=1.0e9 + 10, out=out)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in out.families() for s in f.samples}
    assert samples[("cpa_archive_rows_archived_total", (("policy", "tasks"),))] == 5
    assert samples[("cpa_archive_failures_total", (("policy", "tasks"),))] == 2
    assert samples[("cpa_archive_snapshot_age_seconds", ())] == 10
    assert not any(name == "cpa_archive_last_success_timestamp_seconds" for name, _ in samples)
    assert {k for _, labels in samples for k, _v in labels} == {"policy"}


# ---------------------------------------------------------------- export and manifest


def manifest_for(export: ex.Export) -> dict:
    return ex.build_manifest(batch_id="tasks-1", policy="tasks", table="tasks", organization_id="org_1",
                             export=export, created_at=datetime(2026, 1, 1, tzinfo=UTC))


def test_export_round_trip_is_deterministic() -> None:
    lines = ['{"id": "t1", "title": "a\\nb"}', '{"id": "t2", "title": "é"}']
    first, second = ex.encode(lines), ex.encode(lines)
    assert first.data == second.data and gzip.decompress(first.data).decode() == "\n".join(lines) + "\n"
    manifest = ex.parse_manifest(ex.dump_manifest(manifest_for(first)))
    assert ex.decode(first.data, manifest).lines == tuple(lines)
    assert manifest["row_count"] == 2 and manifest["compressed_bytes"] == len(first.data)


def test_decode_refuses_a_changed_export() -> None:
    manifest = manifest_for(ex.encode(['{"id": "t1"}']))
    with pytest.raises(ex.ExportError, match="sha256"):
        ex.decode(ex.encode(['{"id": "t2"}']).data, manifest)
    with pytest.raises(ex.ExportError, match="not gzip"):
        ex.decode(b"plain text", manifest)
    with pytest.raises(ex.ExportError, match="2 rows, manifest says 1"):
        ex.decode(ex.encode(['{"id": "t1"}', '{"id": "t2"}']).data,
                  {**manifest, "sha256": ex.encode(['{"id": "t1"}', '{"id": "t2"}']).sha256})


@pytest.mark.parametrize(("key", "value", "message"), [
    ("version", 2, "unsupported version"),
    ("batch_id", "", "batch_id must be a non-empty string"),
    ("row_count", -1, "row_count must be a non-negative integer"),
    ("export", "../../etc/passwd.jsonl.gz", "export must be a file name"),
    ("sha256", "abc", "sha256 must be 64"),
])
def test_manifest_parser_names_the_bad_field(key: str, value: object, message: str) -> None:
    doc = manifest_for(ex.encode(['{"id": "t1"}']))
    doc[key] = value
    with pytest.raises(ex.ExportError, match=message):
        ex.parse_manifest(orjson.dumps(doc))


# ---------------------------------------------------------------- destination


def test_local_write_is_renamed_into_place_after_the_hook(tmp_path: Path) -> None:
    dest = Destination(tmp_path.as_uri())
    target = dest.path("a/b/file.json")
    seen = []
    dest.write(target, b"data", lambda: seen.append((Path(target).exists(), Path(target + ".tmp").exists())))
    assert seen == [(False, True)]  # the hook runs with the bytes written to .tmp, before the rename
    assert Path(target).read_bytes() == b"data" and not Path(target + ".tmp").exists()
    assert dest.url(target) == (tmp_path / "a/b/file.json").as_uri()
    dest.remove(target, dest.path("never/written"))
    assert not Path(target).exists()


def test_an_unknown_scheme_is_a_clear_error() -> None:
    with pytest.raises(DestinationError, match="archive destination 'nosuch://x'"):
        Destination("nosuch://x")


# ---------------------------------------------------------------- schedule, policies, CLI


def test_schedule_period_and_bad_expressions() -> None:
    assert schedule_period("0 2 * * *") == 86400.0
    assert schedule_period("* * * * * */15") == 15.0
    with pytest.raises(ValueError, match="'every day' is not a cron expression"):
        schedule_period("every day")


def test_run_on_schedule_runs_the_job_and_returns_when_stopped() -> None:
    calls = []

    async def main() -> None:
        stop = asyncio.Event()

        async def job() -> None:
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("a failed run does not end the schedule")
            if len(calls) == 3:
                stop.set()

        await run_on_schedule("* * * * * *", job, stop)

    asyncio.run(main())
    assert len(calls) == 3


def test_policy_selection() -> None:
    assert [p.name for p in policies.select(None)] == ["documents", "tasks", "invoices", "audit_logs"]
    assert [p.name for p in policies.select(["audit_logs", "tasks"])] == ["tasks", "audit_logs"]
    with pytest.raises(ValueError, match="unknown archive policy clients"):
        policies.select(["clients"])


def test_cli_parses_the_archive_command() -> None:
    args = build_parser().parse_args(["archive", "--dsn", "postgresql://x/cpa", "--to", "file:///a", "--policy",
                                      "tasks", "--policy", "invoices", "--org", "org_1", "--dry-run",
                                      "--batch-size", "50", "--redis", "redis://r", "--schedule", "0 2 * * *"])
    assert (args.policy, args.org, args.dry_run, args.batch_size, args.redis, args.schedule) == (
        ["tasks", "invoices"], "org_1", True, 50, "redis://r", "0 2 * * *")

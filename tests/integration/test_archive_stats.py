"""The archiver publishes its progress to Redis (`pgwatch-cpa archive --redis`) and the daemon's collector exports
it: last success per policy, rows, bytes, batches, failures; labels by policy only."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis

from pgwatch_cpa.collectors.redis.cpa_archive_stats import CpaArchiveStatsCollector
from pgwatch_cpa.config import settings_from_mapping
from pgwatch_cpa.cpa.archive import stats
from pgwatch_cpa.daemon.redis_poller import RedisPoller
from pgwatch_cpa.daemon.snapshot import SnapshotStore
from tests.integration.archive_data import PLANTED_DUE, conn_utc, fresh_database, plant

pytestmark = pytest.mark.integration


@pytest.fixture
def dsn(pg_server) -> str:
    return fresh_database(pg_server)


async def poll(url: str) -> SnapshotStore:
    settings = settings_from_mapping({"redis": [{"name": "cache", "url": url}]}, {}).redis[0]
    store = SnapshotStore()
    poller = RedisPoller("cache", 1.0, [CpaArchiveStatsCollector()], settings, store)
    await poller.open()
    try:
        await poller.poll_once()
    finally:
        await poller.close()
    return store


def values(store: SnapshotStore, name: str, **labels: str) -> list[float]:
    return [v for n, lab, v in store.samples() if n == name and all(lab.get(k) == x for k, x in labels.items())]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgwatch_cpa", "archive", *args], capture_output=True, text=True,
                          timeout=120)


async def test_cli_runs_publish_cumulative_progress_that_the_daemon_exports(dsn, redis_server, tmp_path):
    plant(dsn)
    redis.Redis.from_url(redis_server.url).delete(stats.KEY)
    dry = cli("--dsn", dsn, "--to", tmp_path.as_uri(), "--dry-run", "--redis", redis_server.url)
    assert dry.returncode == 0, dry.stderr
    assert "audit_logs" in dry.stdout and "10" in dry.stdout and not list(tmp_path.iterdir())
    assert values(await poll(redis_server.url), "cpa_archive_rows_archived_total") == [], "a dry run publishes nothing"

    with conn_utc(dsn) as conn:  # org_a's tasks fail (a fault planted by the test)
        conn.execute("""
            CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
                $$ BEGIN RAISE EXCEPTION 'planted fault'; END $$;
            CREATE TRIGGER refuse BEFORE UPDATE ON tasks FOR EACH ROW
                WHEN (OLD.organization_id = 'org_a') EXECUTE FUNCTION refuse();""")
    first = cli("--dsn", dsn, "--to", tmp_path.as_uri(), "--redis", redis_server.url, "--batch-size", "3")
    assert first.returncode == 1, first.stderr  # an organization failed
    assert "org_a" not in first.stdout + first.stderr  # its id stays in the database
    store = await poll(redis_server.url)
    for policy, ids in PLANTED_DUE.items():
        rows = len(ids) - (1 if policy == "tasks" else 0)
        assert values(store, "cpa_archive_rows_archived_total", policy=policy) == [float(rows)], policy
        assert values(store, "cpa_archive_schedule_period_seconds", policy=policy) == [86400.0]
        assert values(store, "cpa_archive_last_run_timestamp_seconds", policy=policy)
    assert values(store, "cpa_archive_failures_total", policy="tasks") == [1.0]
    assert values(store, "cpa_archive_last_success_timestamp_seconds", policy="tasks") == []  # never succeeded
    success = values(store, "cpa_archive_last_success_timestamp_seconds", policy="audit_logs")
    assert len(success) == 1
    assert values(store, "cpa_archive_bytes_archived_total", policy="audit_logs")[0] > 0
    assert values(store, "cpa_archive_bytes_archived_total", policy="invoices") == [0.0]  # marked in place
    assert values(store, "cpa_archive_invalid_snapshot") == [0.0]
    assert all(set(labels) <= {"policy", "target"} for name, labels, _ in store.samples()
               if name.startswith("cpa_archive_"))

    with conn_utc(dsn) as conn:
        conn.execute("DROP TRIGGER refuse ON tasks")
    second = cli("--dsn", dsn, "--to", tmp_path.as_uri(), "--redis", redis_server.url, "--policy", "tasks")
    assert second.returncode == 0, second.stderr
    store = await poll(redis_server.url)
    assert values(store, "cpa_archive_rows_archived_total", policy="tasks") == [2.0]  # cumulative across runs
    assert values(store, "cpa_archive_failures_total", policy="tasks") == [1.0]
    assert values(store, "cpa_archive_last_success_timestamp_seconds", policy="tasks")
    assert values(store, "cpa_archive_last_success_timestamp_seconds", policy="audit_logs") == success


async def test_an_invalid_snapshot_is_reported_not_exported(redis_server):
    redis.Redis.from_url(redis_server.url).set(stats.KEY, b'{"schema": "cpa-archive-stats", "version": 1}')
    store = await poll(redis_server.url)
    assert values(store, "cpa_archive_invalid_snapshot") == [1.0]
    assert values(store, "cpa_archive_rows_archived_total") == []
    redis.Redis.from_url(redis_server.url).delete(stats.KEY)


def test_cli_refuses_bad_input_with_a_clear_message(dsn, tmp_path):
    no_dest = cli("--dsn", dsn)
    assert no_dest.returncode == 1 and "--to URL is required" in no_dest.stderr
    bad_policy = cli("--dsn", dsn, "--to", tmp_path.as_uri(), "--policy", "clients")
    assert bad_policy.returncode == 1 and "unknown archive policy clients" in bad_policy.stderr
    bad_cron = cli("--dsn", dsn, "--to", tmp_path.as_uri(), "--schedule", "every day")
    assert bad_cron.returncode == 1 and "not a cron expression" in bad_cron.stderr
    bad_scheme = cli("--dsn", dsn, "--to", "nosuchscheme://x")
    assert bad_scheme.returncode == 1 and "archive destination" in bad_scheme.stderr


def test_the_built_in_schedule_runs_until_sigterm(dsn, redis_server, tmp_path):
    import signal
    import time

    plant(dsn)
    client = redis.Redis.from_url(redis_server.url)
    client.delete(stats.KEY)
    proc = subprocess.Popen([sys.executable, "-m", "pgwatch_cpa", "archive", "--dsn", dsn, "--to", tmp_path.as_uri(),
                             "--redis", redis_server.url, "--schedule", "* * * * * */2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        runs: list[float] = []
        while time.monotonic() < deadline and len(set(runs)) < 2:  # two scheduled runs published
            data = client.get(stats.KEY)
            audit_logs = stats.parse_snapshot(data)["policies"].get("audit_logs") if data else None
            if audit_logs:  # the last policy of a run
                runs.append(audit_logs["last_run_at"])
            time.sleep(0.2)
        snapshot = stats.parse_snapshot(client.get(stats.KEY))
        assert len(set(runs)) >= 2, runs
        assert snapshot["schedule_period_seconds"] == 2.0
        assert snapshot["policies"]["audit_logs"]["rows_archived"] == 10  # the first run archived, the next none
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert out.count("audit_logs") >= 2  # one table per run

"""`pgwatch-cpa report` end to end: a real process, a config file, real servers; every format, the diff, exit codes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import yaml

from pgwatch_cpa.cpa.cache import keys
from pgwatch_cpa.cpa.cache.service import CacheService
from pgwatch_cpa.report.model import SCHEMA_VERSION, report_from_json
from pgwatch_cpa.sandbox import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECRET = "N0tInAnyOutput"


def run_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgwatch_cpa", "report", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)


def write_config(tmp_path: Path, postgres: list[dict] | None = None, redis_targets: list[dict] | None = None) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"postgres": postgres or [], "redis": redis_targets or []}))
    return path


def unreachable_pg(name: str = "gone") -> dict:
    return {"name": name, "dsn": f"postgresql://monitor:{SECRET}@127.0.0.1:{free_port()}/cpa",
            "connect_timeout": "1s"}


@pytest.fixture
def redis_url(redis_server) -> str:
    """The module's Redis, emptied: every test publishes its own cache statistics."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


def cache_traffic(url: str, families: dict[str, tuple[int, int]], instance: str = "web-1") -> None:
    """Lookups through the real caching service, then its statistics published. family -> (cold, hot): ``cold``
    lookups of distinct keys (misses), then ``hot`` lookups of one key (a miss, then hits)."""

    async def run() -> None:
        service = await CacheService.create(url, app_instance=instance, stats_interval=60)

        async def loader() -> dict:
            return {"rows": 3}

        try:
            for family, (misses, hits) in families.items():
                key_of = {"client_list": lambda org: keys.client_list(org, {"status": "active"}),
                          "task_list": lambda org: keys.task_list(org, "user_1", {"status": "open"})}[family]
                for i in range(misses):
                    await service.get_or_load(key_of(f"org_miss_{i}"), loader)
                for _ in range(hits):
                    await service.get_or_load(key_of("org_hot"), loader)
            await service.publish_stats()
        finally:
            await service.close(unpublish=False)  # the snapshot stays live for 3 x 60 s

    asyncio.run(run())


def test_markdown_json_and_html_of_every_target(pg_server, redis_url, tmp_path):
    cache_traffic(redis_url, {"client_list": (150, 10)})  # 9 hits of 160 lookups: far below 90%
    config = write_config(tmp_path, [{"name": "main", "dsn": pg_server.dsn()}], [{"name": "cache", "url": redis_url}])

    md = run_cli("--config", str(config))
    assert md.returncode == 0, md.stderr
    assert "main" in md.stdout and "cache" in md.stdout
    assert "Application cache hit rate of client" in md.stdout  # Markdown escapes the underscore
    assert "Traceback" not in md.stderr

    out = tmp_path / "report.json"
    js = run_cli("--config", str(config), "--format", "json", "--output", str(out))
    assert js.returncode == 0, js.stderr
    assert js.stdout == ""
    doc = json.loads(out.read_text())
    assert doc["schema_version"] == SCHEMA_VERSION and doc["diff"] is None
    targets = {t["name"]: t for t in doc["targets"]}
    assert targets["main"]["kind"] == "postgres" and targets["main"]["error"] is None
    assert targets["main"]["status"] in ("ok", "warning", "critical")
    cache = targets["cache"]
    assert cache["kind"] == "redis" and cache["error"] is None and cache["status"] == "warning"
    assert cache["summary"]["app_instances"] == 1
    assert cache["summary"]["app_cache_requests"] == 160
    assert cache["summary"]["used_memory"] > 0 and cache["summary"]["maxmemory"] == 0
    findings = {f["id"]: f for f in cache["findings"]}
    hit_rate = findings["cache_hit_rate:cache:-:client_list"]
    assert hit_rate["evidence"]["requests"] == 160
    assert hit_rate["evidence"]["hit_ratio"] == pytest.approx(9 / 160)
    assert hit_rate["severity"] == "warning" and hit_rate["object"] == "client_list"
    # The sandbox runs without maxmemory, and the caching service uses it: an unbounded cache.
    memory = findings["redis_memory:cache:-:-"]
    assert "maxmemory" in memory["recommendation"] and "volatile-lru" in memory["recommendation"]
    assert [t.name for t in report_from_json(out.read_bytes()).targets] == ["main", "cache"]

    only = run_cli("--config", str(config), "--format", "json", "--target", "cache")
    assert only.returncode == 0, only.stderr
    assert [t["name"] for t in json.loads(only.stdout)["targets"]] == ["cache"]

    html_out = tmp_path / "report.html"
    html = run_cli("--config", str(config), "--format", "html", "--output", str(html_out), "--target", "cache")
    assert html.returncode == 0, html.stderr
    page = html_out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "client_list" in page
    assert "src=\"http" not in page and "href=\"http" not in page  # self-contained


def test_previous_adds_the_diff(redis_url, tmp_path):
    config = write_config(tmp_path, redis_targets=[{"name": "cache", "url": redis_url}])
    cache_traffic(redis_url, {"client_list": (150, 0)})
    last_week = tmp_path / "last-week.json"
    assert run_cli("--config", str(config), "--format", "json", "--output", str(last_week)).returncode == 0
    assert "cache_hit_rate:cache:-:client_list" in last_week.read_text()

    # This week (the instance restarted, so its counters did): client_list hits, task_list went cold.
    cache_traffic(redis_url, {"client_list": (0, 1500), "task_list": (120, 0)})
    now = run_cli("--config", str(config), "--format", "json", "--previous", str(last_week))
    assert now.returncode == 0, now.stderr
    diff = json.loads(now.stdout)["diff"]
    assert diff["previous_generated_at"] == json.loads(last_week.read_text())["generated_at"]
    assert diff["new"] == ["cache_hit_rate:cache:-:task_list"]
    assert diff["resolved"] == ["cache_hit_rate:cache:-:client_list"]

    md = run_cli("--config", str(config), "--previous", str(last_week))
    assert md.returncode == 0
    assert "Resolved (1)" in md.stdout and "cache\\_hit\\_rate:cache:-:client\\_list" in md.stdout


def test_no_readable_target_exits_1_and_the_report_says_which_and_why(tmp_path):
    config = write_config(tmp_path, [unreachable_pg()], [{"name": "cache", "url": f"redis://127.0.0.1:{free_port()}/0",
                                                          "timeout": "1s"}])
    out = tmp_path / "report.json"
    result = run_cli("--config", str(config), "--format", "json", "--output", str(out))
    assert result.returncode == 1, result.stderr
    doc = json.loads(out.read_text())
    for target in doc["targets"]:
        assert target["status"] == "unreachable"
        assert target["error"] and "\n" not in target["error"]
        assert target["findings"] == []
    assert {t["name"] for t in doc["targets"]} == {"gone", "cache"}
    assert "gone" in result.stderr and "Traceback" not in result.stderr
    assert SECRET not in out.read_text() + result.stderr + result.stdout

    md = run_cli("--config", str(config))
    assert md.returncode == 1
    assert "gone" in md.stdout and "unreachable" in md.stdout.lower()


def test_one_unreachable_target_is_named_and_the_rest_reported(redis_url, tmp_path):
    config = write_config(tmp_path, [unreachable_pg("archive")], [{"name": "cache", "url": redis_url}])
    result = run_cli("--config", str(config), "--format", "json")
    assert result.returncode == 0, result.stderr
    targets = {t["name"]: t for t in json.loads(result.stdout)["targets"]}
    assert targets["archive"]["status"] == "unreachable" and targets["archive"]["error"]
    assert targets["cache"]["error"] is None
    assert SECRET not in result.stdout + result.stderr


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_bad_input_exits_2_with_one_line_naming_the_file(tmp_path):
    config = write_config(tmp_path, [unreachable_pg("main")], [{"name": "cache", "url": "redis://127.0.0.1:1/0"}])

    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"schema_version": 1, "generated_at": "yesterday", "tar')
    line = one_line_error(run_cli("--config", str(config), "--previous", str(corrupt)))
    assert str(corrupt) in line and "not a valid report" in line

    other = tmp_path / "other.json"
    other.write_text(json.dumps({"schema_version": 2, "targets": []}))
    line = one_line_error(run_cli("--config", str(config), "--previous", str(other)))
    assert str(other) in line and "schema version 1" in line

    missing = tmp_path / "missing.json"
    line = one_line_error(run_cli("--config", str(config), "--previous", str(missing)))
    assert str(missing) in line and "cannot read" in line

    line = one_line_error(run_cli("--config", str(config), "--target", "nope"))
    assert "'nope'" in line and "main, cache" in line

    line = one_line_error(run_cli("--config", str(config), "--output", str(tmp_path / "no-dir" / "r.md")))
    assert "no-dir" in line

    bad = tmp_path / "bad.yaml"
    bad.write_text("postgres: [{name: main}]\nreport: {schedule: 'every monday'}\n")
    result = run_cli("--config", str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(bad) in result.stderr and "report.schedule" in result.stderr

    result = run_cli("--config", str(config), "--format", "pdf")
    assert result.returncode == 2 and "invalid choice" in result.stderr

"""Reloading the configuration of a running daemon: SIGHUP, and targets files (postgres_files) watched."""

from __future__ import annotations

import json
import os
import signal
import socket

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pgwatch_cpa.config import Settings, settings_from_mapping
from pgwatch_cpa.daemon.fleet import Fleet
from pgwatch_cpa.daemon.sharding import settings_for_shard
from pgwatch_cpa.daemon.snapshot import SnapshotStore

pytestmark = pytest.mark.integration


def pg_target(pg, name: str, **extra) -> dict:
    return {"name": name, "dsn": pg.dsn(), "connect_timeout": "2s", **extra}


def samples(metrics: str, name: str) -> dict[str, float]:
    """``name``'s samples by their target label."""
    return {s.labels.get("target", ""): s.value for family in text_string_to_metric_families(metrics)
            for s in family.samples if s.name == name}


def rewrite(daemon, config: dict) -> None:
    daemon.config_path.write_text(yaml.safe_dump({"listen": f"127.0.0.1:{daemon.port}", **config}))


def reloads(daemon, result: str) -> float | None:
    return daemon.sample("pgwatch_config_reloads_total", result=result)


def test_bad_config_is_refused_with_its_errors_and_the_daemon_keeps_serving(pg_server, daemon_factory):
    config = {"interval": "1s", "postgres": [pg_target(pg_server, "a"), pg_target(pg_server, "b")]}
    daemon = daemon_factory(config)
    daemon.wait_ready()
    assert reloads(daemon, "failure") == 0.0 and daemon.sample("pgwatch_config_last_reload_successful") == 1.0

    bad = {"interval": "0s", "postgres": [pg_target(pg_server, "a", statement_timeout="forever"),
                                          pg_target(pg_server, "c", colour="blue")]}
    rewrite(daemon, bad)
    os.kill(daemon.process.pid, signal.SIGHUP)
    daemon.wait_for(lambda: reloads(daemon, "failure") == 1.0, what="the refused reload counted")

    log = daemon.log()
    assert "SIGHUP: new configuration refused (3 problem(s)); the running configuration stays" in log
    for problem in ("interval: ", "postgres[0].statement_timeout: ", "postgres[1].colour: unknown key"):
        assert f"{daemon.config_path}: {problem}" in log, problem
    assert pg_server.password not in log
    assert daemon.process.poll() is None
    assert daemon.sample("pgwatch_config_last_reload_successful") == 0.0
    assert reloads(daemon, "success") == 0.0
    # The old targets are still polled: their attempt counters keep growing.
    before = samples(daemon.metrics(), "pgwatch_connection_attempts_total")
    assert set(before) == {"a", "b"}
    daemon.wait_for(lambda: all(samples(daemon.metrics(), "pgwatch_connection_attempts_total")[t] > before[t]
                                for t in ("a", "b")), what="the old targets still polled")
    assert daemon.get("/readyz")[0] == 200


def test_good_config_adds_and_removes_targets_in_the_same_process_keeping_the_others_state(
        pg_server, daemon_factory):
    config = {"interval": "1s", "postgres": [pg_target(pg_server, "kept"), pg_target(pg_server, "gone")]}
    daemon = daemon_factory(config)
    daemon.wait_ready()
    pid = daemon.process.pid
    daemon.wait_for(lambda: samples(daemon.metrics(), "pgwatch_connection_attempts_total")["kept"] >= 4,
                    what="a few cycles of the kept target")
    kept_before = samples(daemon.metrics(), "pgwatch_connection_attempts_total")["kept"]
    kept_warnings = daemon.log().count("target kept: collector")  # e.g. statements disabled: no extension

    rewrite(daemon, {"interval": "1s", "postgres": [pg_target(pg_server, "kept"), pg_target(pg_server, "new")]})
    os.kill(pid, signal.SIGHUP)
    daemon.wait_for(lambda: reloads(daemon, "success") == 1.0, what="the reload applied")

    daemon.wait_for(lambda: samples(daemon.metrics(), "pg_up").get("new") == 1.0, what="the added target up")
    metrics = daemon.metrics()
    assert set(samples(metrics, "pg_up")) == {"kept", "new"}  # the removed target's series are gone
    assert 'target="gone"' not in metrics
    attempts = samples(metrics, "pgwatch_connection_attempts_total")
    assert attempts["kept"] >= kept_before  # not reset: the same poller runs on
    daemon.wait_for(lambda: samples(daemon.metrics(), "pgwatch_connection_attempts_total")["kept"] > attempts["kept"],
                    what="the kept target still polled")
    assert daemon.log().count("target kept: collector") == kept_warnings  # its disabled collectors stay so
    assert daemon.process.poll() is None and daemon.process.pid == pid
    assert daemon.log().count("listening on") == 1  # never restarted
    assert "added postgres new; removed postgres gone; restarted (settings changed) none; 1 unchanged" in daemon.log()
    assert daemon.sample("pgwatch_shard_targets") == 2.0
    assert daemon.sample("pgwatch_config_last_reload_successful") == 1.0


def test_restart_only_setting_is_kept_with_a_warning(pg_server, daemon_factory):
    config = {"interval": "1s", "postgres": [pg_target(pg_server, "a")]}
    daemon = daemon_factory(config)
    daemon.wait_ready()
    daemon.config_path.write_text(yaml.safe_dump({"listen": "127.0.0.1:1", **config}))
    os.kill(daemon.process.pid, signal.SIGHUP)
    daemon.wait_for(lambda: reloads(daemon, "success") == 1.0, what="the reload applied")
    assert "reload: listen changed: this needs a restart" in daemon.log()
    assert daemon.get("/metrics")[0] == 200  # still on the address it started with


def test_targets_file_change_applies_and_a_broken_file_is_refused(pg_server, daemon_factory, tmp_path):
    targets_dir = tmp_path / "targets"
    targets_dir.mkdir()
    fleet_file = targets_dir / "fleet.json"
    fleet_file.write_text(json.dumps([pg_target(pg_server, "f1")]))
    config = {"interval": "1s", "target_files_check_interval": "1s", "postgres": [pg_target(pg_server, "inline")],
              "postgres_files": [str(targets_dir / "*.json")]}
    daemon = daemon_factory(config)
    daemon.wait_ready()
    assert set(samples(daemon.metrics(), "pg_up")) == {"inline", "f1"}

    fleet_file.write_text(json.dumps([pg_target(pg_server, "f1"), pg_target(pg_server, "f2")]))
    daemon.wait_for(lambda: samples(daemon.metrics(), "pg_up").get("f2") == 1.0, what="the file's new target up")
    assert "a targets file changed" in daemon.log()

    fleet_file.write_text(json.dumps([pg_target(pg_server, "f1"), {"name": "f3", "dsn": "not a dsn at all"}]))
    daemon.wait_for(lambda: reloads(daemon, "failure") == 1.0, what="the broken file refused")
    assert f"{fleet_file}[1].dsn: " in daemon.log()
    assert set(samples(daemon.metrics(), "pg_up")) == {"inline", "f1", "f2"}  # the previous targets stay

    fleet_file.write_text("[{name: f4, dsn: ")  # not even YAML
    daemon.wait_for(lambda: reloads(daemon, "failure") == 2.0, what="the unparsable file refused")
    assert f"{fleet_file}: line 2, column 1: invalid YAML" in daemon.log()
    assert set(samples(daemon.metrics(), "pg_up")) == {"inline", "f1", "f2"}


async def test_fleet_keeps_unchanged_pollers_and_restarts_changed_ones(pg_server):
    def settings(**extra_b) -> Settings:
        return settings_from_mapping({"interval": "1s", "postgres": [
            pg_target(pg_server, "same"), pg_target(pg_server, "changed", **extra_b),
            pg_target(pg_server, "removed")]}, {})

    first = settings()
    fleet = Fleet(first, SnapshotStore())
    await fleet.start()
    try:
        same, changed = fleet.pollers[("postgres", "same")], fleet.pollers[("postgres", "changed")]
        second = settings(statement_timeout="3s")
        second = second.model_copy(update={"postgres": second.postgres[:2]})
        change = await fleet.apply(second)
        assert (change.added, change.removed, change.restarted, change.kept) == (
            [], [("postgres", "removed")], [("postgres", "changed")], 1)
        assert fleet.pollers[("postgres", "same")] is same
        assert fleet.pollers[("postgres", "changed")] is not changed
        assert list(fleet.pollers) == [("postgres", "same"), ("postgres", "changed")]
        assert all(p.cycle_slots is fleet.cycle_slots for p in fleet.pollers.values()), "a rebuilt one shares them"
        assert all(key[0] != "removed" for key in fleet.store.results())
    finally:
        await fleet.stop()


def test_a_sharded_replica_applies_its_share_of_the_new_targets(pg_server, daemon_factory):
    def config(names: list[str]) -> dict:
        return {"interval": "1s", "postgres": [pg_target(pg_server, name) for name in names]}

    def share(names: list[str]) -> set[str]:
        mine = settings_for_shard(settings_from_mapping({**config(names), "shard": "1/2"}, {}))
        return {t.name for t in mine.postgres}

    before, after = [f"org-db-{i}" for i in range(6)], [f"org-db-{i}" for i in range(3, 12)]
    daemon = daemon_factory(config(before), "--shard", "1/2")
    daemon.wait_ready()
    assert set(samples(daemon.metrics(), "pg_up")) == share(before)

    rewrite(daemon, config(after))
    os.kill(daemon.process.pid, signal.SIGHUP)
    daemon.wait_for(lambda: reloads(daemon, "success") == 1.0, what="the reload applied")
    daemon.wait_for(lambda: set(samples(daemon.metrics(), "pg_up")) == share(after), what="the new share polled")
    assert share(after) != share(before)
    assert daemon.sample("pgwatch_shard_targets") == len(share(after))
    assert daemon.sample("pgwatch_shard_info", shard="1", shards="2") == 1.0


def test_alert_rules_reload_keeping_the_state_of_the_rules_that_remain(pg_server, daemon_factory, tmp_path):
    def rules(*named: tuple[str, str]) -> str:
        return yaml.safe_dump({"groups": [{"name": "reload", "interval": "1s", "rules": [
            {"alert": name, "expr": expr} for name, expr in named]}]})

    def active() -> dict[str, str]:
        body = json.loads(daemon.get("/alerts")[1])
        return {a["labels"]["alertname"]: a["activeAt"] for a in body["data"]["alerts"] if a["state"] == "firing"}

    rule_file = tmp_path / "rules.yml"
    rule_file.write_text(rules(("Up", "pg_up == 1"), ("Removed", "pg_up >= 1")))
    daemon = daemon_factory({"interval": "1s", "postgres": [pg_target(pg_server, "a")],
                             "alerting": {"rules": [str(rule_file)]}})
    daemon.wait_ready()
    firing = daemon.wait_for(lambda: (found := active()) and set(found) == {"Up", "Removed"} and found,
                             what="both rules firing")

    rule_file.write_text(rules(("Up", "pg_up == 1"), ("Added", "pg_up > 0")))
    os.kill(daemon.process.pid, signal.SIGHUP)
    daemon.wait_for(lambda: reloads(daemon, "success") == 1.0, what="the reload applied")
    after = daemon.wait_for(lambda: (found := active()) and "Added" in found and found, what="the new rule firing")
    assert set(after) == {"Up", "Added"}
    assert after["Up"] == firing["Up"]  # the same alert, not a new one: its state was kept

    rule_file.write_text(rules(("Broken", "pg_up ==")))
    os.kill(daemon.process.pid, signal.SIGHUP)
    daemon.wait_for(lambda: reloads(daemon, "failure") == 1.0, what="the broken rule file refused")
    assert f"alert rules: {rule_file}" in daemon.log()
    assert set(active()) == {"Up", "Added"}


def test_targets_files_named_by_a_reloaded_config_are_watched_from_then_on(pg_server, daemon_factory, tmp_path):
    config = {"interval": "1s", "target_files_check_interval": "1s", "postgres": [pg_target(pg_server, "inline")]}
    daemon = daemon_factory(config)
    daemon.wait_ready()
    fleet_file = tmp_path / "fleet.yml"
    fleet_file.write_text(yaml.safe_dump([pg_target(pg_server, "f1")]))
    rewrite(daemon, {**config, "postgres_files": ["fleet.yml"]})  # relative to the config file
    os.kill(daemon.process.pid, signal.SIGHUP)
    daemon.wait_for(lambda: samples(daemon.metrics(), "pg_up").get("f1") == 1.0, what="the file's target up")

    fleet_file.write_text(yaml.safe_dump([pg_target(pg_server, "f1"), pg_target(pg_server, "f2")]))
    daemon.wait_for(lambda: samples(daemon.metrics(), "pg_up").get("f2") == 1.0, what="the watched file's new target")
    assert daemon.log().count("a targets file changed: reloading") == 1  # the SIGHUP's own read was not re-done
    assert reloads(daemon, "success") == 2.0


def test_redis_targets_file_adds_and_removes_redis_targets(redis_server, daemon_factory, tmp_path):
    cache_file = tmp_path / "cache.json"
    cache_file.write_text(json.dumps([{"name": "cache-a", "url": redis_server.url}]))
    daemon = daemon_factory({"interval": "1s", "target_files_check_interval": "1s",
                             "redis_files": [str(cache_file)]})
    daemon.wait_ready()
    assert samples(daemon.metrics(), "redis_up") == {"cache-a": 1.0}

    cache_file.write_text(json.dumps([{"name": "cache-b", "url": redis_server.url}]))
    daemon.wait_for(lambda: samples(daemon.metrics(), "redis_up") == {"cache-b": 1.0}, what="a replaced by b")
    assert 'target="cache-a"' not in daemon.metrics()


def test_a_target_added_by_a_reload_is_listed_while_it_waits_but_readiness_stays(pg_server, daemon_factory):
    with socket.socket() as silent:  # accepts connections (in its backlog) and never answers: a hung server
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        hung = {"name": "hung", "dsn": f"postgresql://monitor@127.0.0.1:{silent.getsockname()[1]}/cpa",
                "interval": "60s", "statement_timeout": "1m", "connect_timeout": "1m"}  # its first poll: ~1 min
        config = {"interval": "1s", "postgres": [pg_target(pg_server, "a")]}
        daemon = daemon_factory(config)
        daemon.wait_ready()
        rewrite(daemon, {**config, "postgres": [*config["postgres"], hung]})
        os.kill(daemon.process.pid, signal.SIGHUP)
        daemon.wait_for(lambda: reloads(daemon, "success") == 1.0, what="the reload applied")
        status, body = daemon.get("/readyz")
        assert (status, json.loads(body)) == (200, {"ready": True, "waiting_for": ["hung"]})

"""Sharding: rendezvous hashing splits the targets over N replicas; a new replica takes about 1/(N+1) of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pgwatch_cpa.cli import main
from pgwatch_cpa.config import Settings, load_settings, settings_from_mapping
from pgwatch_cpa.config.shard import Shard
from pgwatch_cpa.daemon.sharding import settings_for_shard, shard_of, shard_sizes, shard_summary, target_key
from pgwatch_cpa.errors import ConfigError

KEYS = [target_key("postgres", f"org-db-{i:03d}") for i in range(300)]


def assignment(shards: int) -> dict[str, int]:
    return {key: shard_of(key, shards) for key in KEYS}


def test_each_target_is_watched_by_exactly_one_of_three_shards():
    owners = {key: [k for k in (1, 2, 3) if shard_of(key, 3) == k] for key in KEYS}
    assert all(len(found) == 1 for found in owners.values())
    sizes = Counter(found[0] for found in owners.values())
    assert set(sizes) == {1, 2, 3}
    assert all(70 <= size <= 130 for size in sizes.values()), sizes  # 100 each on average


def test_a_fourth_shard_takes_about_a_quarter_and_only_for_itself():
    before, after = assignment(3), assignment(4)
    moved = [key for key in KEYS if before[key] != after[key]]
    assert 0.15 <= len(moved) / len(KEYS) <= 0.35
    assert {after[key] for key in moved} == {4}


def test_one_shard_watches_everything():
    assert set(assignment(1).values()) == {1}


def test_the_assignment_is_the_same_in_another_process():
    """hash() of a str changes with each process's seed; every replica must compute the same split."""
    script = ("import json, sys\nfrom pgwatch_cpa.daemon.sharding import shard_of\n"
              "print(json.dumps({k: shard_of(k, 3) for k in json.load(sys.stdin)}))")
    out = subprocess.run([sys.executable, "-c", script], input=json.dumps(KEYS), capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout
    assert json.loads(out) == assignment(3)


def fleet(shard: str | None = None) -> Settings:
    raw = {"postgres": [{"name": f"db{i}", "dsn": f"postgresql://monitor@pg/db{i}"} for i in range(9)],
           "redis": [{"name": name, "url": "redis://cache:6379/0"} for name in ("cache", "db0", "db1")]}
    return settings_from_mapping({**raw, **({"shard": shard} if shard else {})}, {})


def test_the_shards_of_a_config_split_its_targets_between_them():
    shares = [settings_for_shard(fleet(f"{k}/3")) for k in (1, 2, 3)]
    for kind in ("postgres", "redis"):
        names = [t.name for share in shares for t in getattr(share, kind)]
        assert sorted(names) == sorted(t.name for t in getattr(fleet(), kind))  # each exactly once
    assert shard_sizes(fleet("1/3")) == [len(s.postgres) + len(s.redis) for s in shares]
    assert settings_for_shard(fleet()) == fleet()


def test_the_summary_names_the_targets_never_their_dsn():
    settings = fleet("2/3")
    mine = settings_for_shard(settings)
    summary = shard_summary(settings, mine)
    assert summary.startswith(f"shard 2/3 watches {len(mine.postgres) + len(mine.redis)} of 12 targets")
    assert all(f"postgres {t.name}" in summary for t in mine.postgres)
    assert "monitor@" not in summary and "redis://" not in summary
    assert shard_summary(settings, mine, limit=1).endswith(f" and {len(mine.postgres) + len(mine.redis) - 1} more")


def test_shard_from_file_and_environment():
    assert fleet().shard == Shard(1, 1)
    assert fleet("2/3").shard == Shard(2, 3)
    assert fleet("2/3").model_dump()["shard"] == "2/3"
    assert settings_from_mapping({"shard": "1/3"}, {"PGWATCH_SHARD": "3/4"}).shard == Shard(3, 4)


@pytest.mark.parametrize(("value", "message"), [
    ("4/3", "shard: '4/3': the shard number K must be between 1 and N (3)"),
    ("0/3", "shard: '0/3': the shard number K must be between 1 and N (3)"),
    ("1/0", "shard: '1/0': the number of shards N must be between 1 and 1000"),
    ("1/1001", "shard: '1/1001': the number of shards N must be between 1 and 1000"),
    ("2", "shard: expected K/N, this replica's number K of N replicas (e.g. \"2/3\"), got '2'"),
    (2, "shard: expected K/N, this replica's number K of N replicas (e.g. \"2/3\"), got 2"),
    ("1 / 3", "shard: expected K/N"),
    ("9" * 5000 + "/3", "shard: expected K/N"),
])
def test_a_bad_shard_is_refused_with_its_path(value, message):
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"shard": value}, {})
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(message)


def test_run_refuses_a_bad_shard_flag_before_starting(tmp_path: Path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("postgres: [{name: a, dsn: 'postgresql://monitor@pg/a'}]\n")
    assert main(["run", "--config", str(config), "--shard", "3/2"]) == 2
    assert "shard: '3/2': the shard number K must be between 1 and N (2)" in capsys.readouterr().err


def test_check_config_shows_the_split(tmp_path: Path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("shard: 2/3\npostgres:\n" + "".join(
        f"  - {{name: db{i}, dsn: 'postgresql://monitor:pw@pg/db{i}'}}\n" for i in range(9)))
    assert main(["check-config", str(config)]) == 0
    out = capsys.readouterr().out
    settings = load_settings(config, environ={})
    sizes = shard_sizes(settings)
    assert sum(sizes) == 9
    assert f"shard 2/3 watches {sizes[1]} of 9 targets" in out
    assert f"(shards 1..3: {', '.join(map(str, sizes))})" in out
    assert "pw@" not in out

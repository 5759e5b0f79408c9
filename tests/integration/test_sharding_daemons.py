"""Three real daemons sharding one config (--shard 1/3, 2/3, 3/3): each target is watched by exactly one."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgwatch_cpa.config import settings_from_mapping
from pgwatch_cpa.daemon.sharding import settings_for_shard

pytestmark = pytest.mark.integration

NAMES = [f"org-db-{i}" for i in range(9)]


def fleet_config(pg) -> dict:
    """Nine targets on the one sandbox server: different names (what is hashed), the same DSN."""
    return {"interval": "5s", "postgres": [{"name": name, "dsn": pg.dsn(), "connect_timeout": "2s"} for name in NAMES]}


def pg_up_by_target(metrics: str) -> dict[str, float]:
    return {s.labels["target"]: s.value for family in text_string_to_metric_families(metrics)
            for s in family.samples if s.name == "pg_up"}


def test_each_target_is_watched_by_exactly_one_of_three_replicas(pg_server, daemon_factory):
    config = fleet_config(pg_server)
    replicas = {k: daemon_factory(config, "--shard", f"{k}/3") for k in (1, 2, 3)}
    for replica in replicas.values():
        replica.wait_ready()  # every target of its shard polled once: its pg_up is there
    watched = {k: pg_up_by_target(replica.metrics()) for k, replica in replicas.items()}

    for name in NAMES:
        assert [k for k in replicas if name in watched[k]] in ([1], [2], [3]), (name, watched)
    assert all(value == 1.0 for up in watched.values() for value in up.values()), watched
    assert all(watched.values()), watched  # these nine names give every replica a share (4, 3, 2)

    # Each replica watches the share the hashing gives it, and says which one it is.
    for k, replica in replicas.items():
        share = settings_for_shard(settings_from_mapping({**config, "shard": f"{k}/3"}, {})).postgres
        assert sorted(watched[k]) == sorted(t.name for t in share)
        assert replica.sample("pgwatch_shard_info", shard=str(k), shards="3") == 1.0
        assert replica.sample("pgwatch_shard_targets") == len(share)
        assert f"shard {k}/3 watches {len(share)} of 9 targets" in replica.log()

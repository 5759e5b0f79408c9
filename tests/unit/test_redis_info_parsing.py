"""INFO, SLOWLOG and LATENCY parsing edge cases (no server: the collectors' pure functions on canned replies)."""

from __future__ import annotations

import pytest
from redis.exceptions import NoPermissionError, ResponseError

from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.collectors.redis.common import StickyTopN, is_forbidden, number, parse_fields, parse_info
from pgwatch_cpa.collectors.redis.redis_info import export_info
from pgwatch_cpa.collectors.redis.redis_latency import export_latency
from pgwatch_cpa.collectors.redis.redis_slowlog import export_slowlog

INFO_TEXT = (
    "# Server\r\nredis_version:7.10\r\nredis_mode:standalone\r\nexecutable:/usr/bin/redis-server\r\n"
    "listener0:name=tcp,bind=::1,bind=127.0.0.1,port=6379\r\n\r\n"
    "# Clients\r\nconnected_clients:7\r\nmaxclients:128\r\nblocked_clients:1\r\n"
    "# Memory\r\nused_memory:1048576\r\nmaxmemory:67108864\r\nmaxmemory_policy:allkeys-lru\r\n"
    "mem_fragmentation_ratio:1.25\r\nused_memory_peak_perc:100.18%\r\n"
    "# Persistence\r\nrdb_last_bgsave_status:err\r\nrdb_last_bgsave_time_sec:-1\r\naof_last_rewrite_time_sec:3\r\n"
    "# Stats\r\nkeyspace_hits:10\r\nkeyspace_misses:5\r\nrejected_connections:2\r\n"
    "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nmaster_repl_offset:1000\r\n"
    "slave0:ip=10.0.0.2,port=6380,state=online,offset=990,lag=1\r\n"
    "slave1:ip=fe80::1,port=6381,state=wait_bgsave,offset=0,lag=0\r\n"
    "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:0.250000\r\n"
    "# Commandstats\r\ncmdstat_get:calls=100,usec=200,usec_per_call=2.00,rejected_calls=1,failed_calls=0\r\n"
    "cmdstat_set:calls=50,usec=100,usec_per_call=2.00,rejected_calls=0,failed_calls=2\r\n"
    "cmdstat_host::calls=3,usec=9,usec_per_call=3.00,rejected_calls=0,failed_calls=0\r\n"
    "cmdstat_client|list:calls=1,usec=30,usec_per_call=30.00\r\n"
    "# Errorstats\r\nerrorstat_ERR:count=4\r\nerrorstat_WRONGTYPE:count=1\r\n"
    "# Latencystats\r\nlatency_percentiles_usec_get:p50=1.003,p99=2.007,p99.9=10.015\r\n"
    "# Keyspace\r\ndb0:keys=30,expires=10,avg_ttl=5000\r\ndb15:keys=2,expires=0,avg_ttl=0,subexpiry=0\r\n"
    "garbage line without colon\r\n:novalue-key\r\n"
)


def samples(out: MetricSet) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "target"))): s.value
            for family in out.families() for s in family.samples}


def exported(text: str = INFO_TEXT, top: int = 30) -> dict:
    out = MetricSet({"target": "t"})
    export_info(parse_info(text.encode()), out, StickyTopN(top), StickyTopN(10))
    return samples(out)


def test_parse_info_keeps_raw_values_and_skips_headers_and_garbage():
    info = parse_info(INFO_TEXT.encode())
    assert info["redis_version"] == "7.10"  # not the float 7.1
    assert info["listener0"] == "name=tcp,bind=::1,bind=127.0.0.1,port=6379"
    assert info["cmdstat_host:"] == "calls=3,usec=9,usec_per_call=3.00,rejected_calls=0,failed_calls=0"
    assert "garbage line without colon" not in info and "" not in info
    assert parse_info(b"") == {}


def test_parse_fields_and_number():
    assert parse_fields("ip=fe80::1,port=6381,flag,=x") == {"ip": "fe80::1", "port": "6381"}
    assert number("100.18%") == 100.18
    assert number("ok") is None and number("nan") is None and number(None) is None and number("1.2.3") is None


def test_export_info_core_metrics():
    m = exported()
    assert m[("redis_connected_clients", ())] == 7
    assert m[("redis_config_maxclients", ())] == 128
    assert m[("redis_memory_max_bytes", ())] == 64 * 2**20
    assert m[("redis_mem_fragmentation_ratio", ())] == 1.25
    assert m[("redis_rejected_connections_total", ())] == 2
    assert m[("redis_cpu_sys_seconds_total", ())] == 1.5
    assert m[("redis_rdb_last_bgsave_status", ())] == 0
    assert ("redis_rdb_last_bgsave_duration_seconds", ()) not in m  # -1: never saved
    assert m[("redis_aof_last_rewrite_duration_seconds", ())] == 3
    info = next(k for k in m if k[0] == "redis_instance_info")
    assert dict(info[1]) == {"redis_version": "7.10", "redis_mode": "standalone", "role": "master",
                             "server_name": "redis", "server_version": "7.10", "maxmemory_policy": "allkeys-lru"}


def test_export_info_keyspace_and_replicas():
    m = exported()
    assert m[("redis_db_keys", (("db", "db0"),))] == 30
    assert m[("redis_db_keys_expiring", (("db", "db0"),))] == 10
    assert m[("redis_db_avg_ttl_seconds", (("db", "db0"),))] == 5.0
    assert m[("redis_db_keys", (("db", "db15"),))] == 2
    replica = (("slave_ip", "10.0.0.2"), ("slave_port", "6380"), ("slave_state", "online"))
    assert m[("redis_connected_slave_lag_seconds", replica)] == 1
    assert m[("redis_connected_slave_repl_lag_bytes", replica)] == 10
    ipv6 = (("slave_ip", "fe80::1"), ("slave_port", "6381"), ("slave_state", "wait_bgsave"))
    assert m[("redis_connected_slave_offset_bytes", ipv6)] == 0


def test_commandstats_top_n_with_other_and_weird_names():
    m = exported(top=2)
    assert m[("redis_commands_total", (("cmd", "get"),))] == 100
    assert m[("redis_commands_total", (("cmd", "set"),))] == 50
    assert m[("redis_commands_total", (("cmd", "other"),))] == 4  # host: (3) + client|list (1)
    assert m[("redis_commands_duration_seconds_total", (("cmd", "get"),))] == 200e-6
    assert m[("redis_commands_failed_calls_total", (("cmd", "set"),))] == 2
    assert m[("redis_commands_latency_seconds", (("cmd", "get"), ("percentile", "99")))] == pytest.approx(2.007e-6)
    everything = exported(top=30)
    assert everything[("redis_commands_total", (("cmd", "host:"),))] == 3
    assert everything[("redis_commands_total", (("cmd", "client|list"),))] == 1
    assert ("redis_commands_total", (("cmd", "other"),)) not in everything
    assert everything[("redis_errors_total", (("err", "ERR"),))] == 4


def test_sticky_top_n_keeps_other_monotonic_until_a_reset():
    top = StickyTopN(2)
    assert top.split({"a": 10, "b": 5}) == (["a", "b"], 0)
    # c overtakes b, but the choice is sticky: other (c) only grows.
    assert top.split({"a": 11, "b": 5, "c": 50}) == (["a", "b"], 50)
    assert top.split({"a": 12, "b": 5, "c": 60, "d": 1}) == (["a", "b"], 61)
    # Totals shrink: restart or CONFIG RESETSTAT; choose again.
    assert top.split({"c": 3, "d": 2}) == (["c", "d"], 0)


def test_slowlog_never_reads_arguments():
    out = MetricSet({"target": "t"})
    secret = b"SSN 123-45-6789"
    entries = [[12, 1700000100, 25000, [b"SET", secret], b"127.0.0.1:5555", b"app"],
               [11, 1700000000, 90000, [b"GET", secret], b"127.0.0.1:5555", b""]]
    export_slowlog(2, entries, out)
    m = samples(out)
    assert m[("redis_slowlog_length", ())] == 2
    assert m[("redis_slowlog_last_id", ())] == 12
    assert m[("redis_slowlog_last_slow_execution_duration_seconds", ())] == 0.025
    assert m[("redis_slowlog_recent_max_duration_seconds", ())] == 0.09
    assert "123-45" not in repr(m)
    empty = MetricSet({"target": "t"})
    export_slowlog(0, [], empty)
    assert samples(empty)[("redis_slowlog_last_id", ())] == -1


def test_latency_latest():
    out = MetricSet({"target": "t"})
    export_latency([[b"command", 1700000000, 120, 250], [b"fork", 1700000001, 3, 3], [b"short"]], out)
    m = samples(out)
    assert m[("redis_latency_spike_duration_seconds", (("event_name", "command"),))] == 0.12
    assert m[("redis_latency_spike_max_duration_seconds", (("event_name", "command"),))] == 0.25
    assert m[("redis_latency_spike_last_timestamp_seconds", (("event_name", "fork"),))] == 1700000001


def test_forbidden_detection():
    assert is_forbidden(ResponseError("ERR unknown command 'SLOWLOG', with args beginning with: 'LEN'"))
    assert is_forbidden(ResponseError("ERR unknown subcommand 'latest'. Try LATENCY HELP."))
    assert is_forbidden(NoPermissionError("this user has no permissions to run the 'slowlog|len' command"))
    assert not is_forbidden(ResponseError("LOADING Redis is loading the dataset in memory"))
    assert not is_forbidden(ConnectionError("refused"))

"""Exact round-trips of pgwatch_cpa.cpa.cache.serializers and the stats snapshot format (no server)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgwatch_cpa.cpa.cache import serializers as ser
from pgwatch_cpa.cpa.cache import stats
from pgwatch_cpa.cpa.cache.metrics import CacheStats

decimals = st.decimals(allow_nan=False, allow_infinity=False)
aware = st.datetimes(timezones=st.timezones()) | st.datetimes(
    timezones=st.builds(dt.timezone, st.timedeltas(min_value=-dt.timedelta(hours=23),
                                                   max_value=dt.timedelta(hours=23))))
leaves = st.one_of(st.none(), st.booleans(), st.integers(-(2**80), 2**80), st.text(max_size=8), decimals,
                   st.datetimes(), aware, st.dates(), st.times(), st.uuids(),
                   st.floats(allow_nan=False))
documents = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=5), st.sampled_from(["$d", "$dt", "$o", "z", "f"])), inner,
                    max_size=3)), max_leaves=15)


def same(a: object, b: object) -> bool:
    """Equality that also compares types, Decimal exponents and tz/fold, which == ignores."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is not type(b):
        return False
    if isinstance(a, Decimal):
        return a.as_tuple() == b.as_tuple()
    if isinstance(a, dt.datetime | dt.time):
        return a == b and a.fold == b.fold and a.utcoffset() == b.utcoffset() and a.tzname() == b.tzname() \
            and a.replace(tzinfo=None) == b.replace(tzinfo=None)
    return a == b


@settings(max_examples=400)
@given(documents)
def test_values_round_trip_exactly(value: object) -> None:
    assert same(value, ser.loads(ser.dumps(value)))
    org, soft, back = ser.load_envelope(ser.dump_envelope("org_1", value, 12.5))
    assert (org, soft) == ("org_1", 12.5) and same(value, back)


@given(decimals)
def test_money_keeps_every_digit(d: Decimal) -> None:
    back = ser.loads(ser.dumps({"amount": d}))["amount"]
    assert str(back) == str(d) and back.as_tuple() == d.as_tuple()


def test_tagged_forms_are_readable_json() -> None:
    when = dt.datetime(2024, 11, 3, 1, 30, fold=1, tzinfo=ZoneInfo("America/New_York"))
    raw = orjson.loads(ser.dumps({"fee": Decimal("12.340"), "at": when, "due": dt.date(2025, 4, 15),
                                  "id": uuid.UUID(int=1)}))
    assert raw[1] == {"fee": {"$d": "12.340"}, "at": {"$dt": "2024-11-03T01:30:00-05:00", "z": "America/New_York",
                                                     "f": 1},
                      "due": {"$date": "2025-04-15"}, "id": {"$u": str(uuid.UUID(int=1))}}


def test_naive_and_aware_stay_apart() -> None:
    naive = dt.datetime(2024, 1, 1, 12, 0, 0, 123456)
    utc = naive.replace(tzinfo=dt.UTC)
    back_naive, back_utc = ser.loads(ser.dumps([naive, utc]))
    assert back_naive.tzinfo is None and back_naive == naive
    assert back_utc.utcoffset() == dt.timedelta(0) and back_utc == utc


def test_datetime_in_a_dst_gap_keeps_its_wall_clock() -> None:
    gap = dt.datetime(2024, 3, 10, 2, 30, tzinfo=ZoneInfo("America/New_York"))  # does not exist
    assert same(gap, ser.loads(ser.dumps(gap)))


def test_user_dicts_shaped_like_tags_are_not_decoded() -> None:
    for value in ({"$d": "1.5"}, {"$dt": "x", "z": 1}, {"$o": {"$d": "2"}}, {"$u": "not-a-uuid"}):
        assert ser.loads(ser.dumps(value)) == value


@pytest.mark.parametrize("value", [object(), {1, 2}, b"bytes", {1: "int key"}])
def test_unsupported_values_are_refused(value: object) -> None:
    with pytest.raises(ser.SerializationError):
        ser.dumps(value)


@pytest.mark.parametrize("data", [b"", b"not json", b"[1,2]", b'["org", 0, 0]', b'[5, 0, 0, 1]',
                                  b"\x80\x04\x95"])  # the last: a pickle header, never unpickled
def test_garbage_envelopes_are_errors(data: bytes) -> None:
    with pytest.raises(ser.SerializationError):
        ser.load_envelope(data)


# ---------------------------------------------------------------- stats snapshot


class _Pool:
    in_use, idle, max_connections, waits, exhausted = 2, 3, 10, 4, 1


def _snapshot() -> dict:
    cs = CacheStats()
    fam = cs.families["client_list"]
    fam.requests["hit"] = 7
    fam.latency.observe(0.0003)
    fam.latency.observe(2.0)
    fam.value_bytes.observe(1500)
    cs.invalidations["org"] = 2
    return stats.build_snapshot(stats=cs, pool=_Pool(), app_instance="web-1", pid=42, started_at=1000.0,
                                published_at=1005.0, interval=5.0, breaker_state="closed", breaker_opens=0,
                                maxmemory_policy="volatile-lru")


def test_snapshot_round_trips_through_parse() -> None:
    snap = _snapshot()
    parsed = stats.parse_snapshot(stats.dump_snapshot(snap))
    assert parsed == orjson.loads(stats.dump_snapshot(snap))
    fam = parsed["families"]["client_list"]
    assert fam["requests"] == {"hit": 7, "miss": 0, "stale": 0, "error": 0}
    assert fam["latency"]["count"] == 2 and fam["latency"]["buckets"][-1] == 2
    assert fam["latency"]["buckets"][2] == 1  # 0.0003 s falls in the 0.0005 bucket
    assert parsed["pool"] == {"in_use": 2, "idle": 3, "max": 10, "waits": 4, "exhausted": 1}
    assert set(parsed["families"]) >= {"session", "report_data", "dashboard_metrics"}


def test_parse_ignores_unknown_fields() -> None:
    snap = _snapshot() | {"future_field": [1, 2]}
    assert "future_field" not in stats.parse_snapshot(orjson.dumps(snap))


def _broken(path: list, value: object) -> bytes:
    snap = _snapshot()
    target = snap
    for p in path[:-1]:
        target = target[p]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return orjson.dumps(snap)


@pytest.mark.parametrize(("path", "value"), [
    (["version"], 2), (["schema"], "other"), (["app_instance"], "web 1"), (["app_instance"], KeyError),
    (["pool", "waits"], -1), (["pool", "max"], "10"), (["families", "client_list", "requests", "hit"], 1.5),
    (["families", "client_list", "latency", "buckets"], [1, 0]), (["breaker", "state"], "broken"),
    (["published_at"], float("inf")), (["interval_seconds"], 0), (["families"], []),
    (["families", "client_list", "latency", "count"], 3),
])
def test_parse_rejects_malformed_snapshots(path: list, value: object) -> None:
    with pytest.raises(stats.SnapshotError):
        stats.parse_snapshot(_broken(path, value))


def test_parse_rejects_non_json() -> None:
    for data in (b"", b"[]", b"{"):
        with pytest.raises(stats.SnapshotError):
            stats.parse_snapshot(data)


def test_instance_names_are_validated() -> None:
    assert stats.instance_key("web-1") == "cpa:stats:instance:web-1"
    with pytest.raises(ValueError):
        stats.instance_key("web:*")


def test_sub_second_utc_offsets_survive() -> None:
    # Found by hypothesis in CI: Python 3.11's fromisoformat drops the microseconds of an offset.
    import datetime as dt

    odd = dt.timezone(dt.timedelta(hours=-3, microseconds=5))
    for value in (dt.datetime(2000, 1, 1, tzinfo=odd), dt.time(1, 2, tzinfo=odd)):
        back = ser.loads(ser.dumps(value))
        assert back == value and back.utcoffset() == value.utcoffset()

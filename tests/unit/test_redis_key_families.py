"""The key-family matcher, pass bookkeeping and the key-family config (no server)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgwatch_cpa.collectors.redis.redis_key_families import OTHER, FamilyMatcher, Pass, finish, quantile
from pgwatch_cpa.config import DEFAULT_KEY_FAMILIES, settings_from_mapping
from pgwatch_cpa.cpa.cache import families as cache_families
from pgwatch_cpa.cpa.cache import keys
from pgwatch_cpa.errors import ConfigError

MATCHER = FamilyMatcher(DEFAULT_KEY_FAMILIES)


@pytest.mark.parametrize(("key", "family"), [
    (b"cpa:v1:d:org_1:up:3.4:u1", "user_profile"),
    (b"cpa:v1:d:~0a1b:cl:1.1:9f8e", "client_list"),
    (b"cpa:v1:d:org_1:rp:2.7:r1:abc", "report_data"),
    (b"cpa:v1:d:org_1:ss:1.1:s1", "session"),
    (b"cpa:v1:g:org_1", "cache_generation"),
    (b"cpa:v1:g:org_1:dm", "cache_generation"),
    (b"cpa:v1:l:org_1:rp:2.7:r1", "cache_lock"),
    (b"cpa:stats:instance:web-1", "cache_stats"),
    (b"client:42:metrics", "client_list"),
    (b"user:7:profile:org_1", "user_profile"),
    (b"dashboard:org_1:metrics", "dashboard_metrics"),
    (b"report:9:data", "report_data"),
    (b"qb:org_1:invoices", "quickbooks_data"),
    (b"cpa:v1:d:org_1:zz:1.1:x", OTHER),  # unknown family code
    (b"cpa:v1:d:org_1", OTHER),  # no family segment
    (b"clients:1", OTHER),  # prefix boundaries matter
    (b"", OTHER),
    (b"\xff\xfe binary", OTHER),
    ("client:str-key", "client_list"),  # decode_responses clients hand us str
])
def test_default_families(key, family):
    assert MATCHER.family(key) == family


def test_defaults_follow_the_caching_service_layout():
    """The defaults are written out in config.py (the daemon imports nothing from the app); keep them in step."""
    for family in cache_families.FAMILIES.values():
        key = keys.family_key(family, "org_1", "id_1").redis_key(3, 4)
        assert MATCHER.family(key) == family.name, key
        assert MATCHER.family(keys.family_gen_key("org_1", family)) == "cache_generation"


def test_most_specific_pattern_wins_whatever_the_order():
    matcher = FamilyMatcher({"broad": ["app:"], "narrow": ["app:*:hot:"], "literal": ["app:x:hot:y"]})
    assert matcher.family(b"app:1:hot:2") == "narrow"
    assert matcher.family(b"app:x:hot:y:1") == "literal"
    assert matcher.family(b"app:1:cold:2") == "broad"
    assert matcher.family(b"app:a:b:hot:1") == "broad"  # * is exactly one segment
    assert matcher.names == ["broad", "narrow", "literal", OTHER]


def test_regex_characters_in_patterns_are_literal():
    matcher = FamilyMatcher({"dots": ["a.b["]})
    assert matcher.family(b"a.b[1") == "dots"
    assert matcher.family(b"axb[1") == OTHER


def test_no_families_means_everything_is_other():
    assert FamilyMatcher({}).family(b"client:1") == OTHER


@given(st.binary(max_size=40))
def test_plain_prefix_matching_agrees_with_startswith(key):
    matcher = FamilyMatcher({"a": ["ab:"], "b": ["ab:c"], "c": ["x"]})
    expected = "b" if key.startswith(b"ab:c") else "a" if key.startswith(b"ab:") else "c" if key.startswith(
        b"x") else OTHER
    assert matcher.family(key) == expected


def test_finish_extrapolates_memory_and_ttl():
    p = Pass(started=100.0, cycles=3, keys_seen=1003)
    p.counts = {"a": 1000, OTHER: 3}
    p.memory = {"a": [100, 300]}
    p.ttls = {"a": [10.0, 20.0, 30.0, -1.0]}
    result = finish(p, ["a", "b", OTHER])
    assert result.counts == {"a": 1000, "b": 0, OTHER: 3}
    assert result.memory == {"a": 200_000.0, "b": 0.0}  # other: counted but not sampled -> no estimate
    assert result.no_ttl_ratio == {"a": 0.25}
    assert result.ttl_quantiles["a"] == {0.5: 20.0, 0.9: 30.0}
    assert quantile([1.0], 0.9) == 1.0 and quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0


def redis_target(**extra):
    return {"redis": [{"name": "c", "url": "redis://127.0.0.1:6379/0", **extra}]}


def test_key_family_config_defaults_and_overrides():
    settings = settings_from_mapping(redis_target(), {}).redis[0]
    assert settings.key_families["client_list"] == ["cpa:v1:d:*:cl:", "client:"]
    assert settings.key_scan_budget == pytest.approx(0.002)
    custom = settings_from_mapping(redis_target(key_families={"orders": ["shop:*:order:"]}, key_scan_budget="5ms"),
                                   {"PGWATCH_REDIS__C__KEY_SCAN_COUNT": "200"}).redis[0]
    assert custom.key_families == {"orders": ["shop:*:order:"]}
    assert custom.key_scan_budget == pytest.approx(0.005)
    assert custom.key_scan_count == 200


@pytest.mark.parametrize(("families", "message"), [
    ({"other": ["x:"]}, "reserved"),
    ({"a": ["x:"], "b": ["x:"]}, "listed under both"),
    ({"a": ["*"]}, "no literal characters"),
    ({"Bad-Name": ["x:"]}, "pattern"),
    ({"a": []}, "at least 1"),
])
def test_key_family_config_errors(families, message):
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(redis_target(key_families=families), {})
    assert any(message in problem and problem.startswith("redis[0].key_families") for problem in info.value.problems)


def test_scan_limits_are_bounded():
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(redis_target(key_scan_budget="1s", key_scan_count=5, key_memory_samples=-1,
                                           unknown_key=1), {})
    paths = sorted(problem.split(":")[0] for problem in info.value.problems)
    assert paths == ["redis[0].key_memory_samples", "redis[0].key_scan_budget", "redis[0].key_scan_count",
                     "redis[0].unknown_key"]

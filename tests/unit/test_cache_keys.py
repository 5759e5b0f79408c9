"""Key canonicalisation and tenant scoping of pgwatch_cpa.cpa.cache.keys (no server)."""

from __future__ import annotations

import json
import re
import uuid
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgwatch_cpa.cpa.cache import families, keys

KEY_SHAPE = re.compile(r"cpa:v1:d:[A-Za-z0-9_.~-]+:[a-z]{2}:\d+\.\d+:([A-Za-z0-9_.~-]+:)*([0-9a-f]{32}|-)")
HOSTILE = ["*", ":", "?", "[", "]", "\n", "\r", " ", "\\", "{", "}"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=12)
filters = st.dictionaries(st.text(max_size=10), json_values, max_size=6)
hostile_text = st.text(alphabet=st.sampled_from([*HOSTILE, "a", "b", "1", "_"]), min_size=1, max_size=12)


def strict_json(value: object) -> str:
    """Type-strict identity of a filter: True != 1, key order ignored."""
    return json.dumps(value, sort_keys=True)


@given(filters, st.randoms())
def test_equal_filters_in_any_order_give_equal_keys(f: dict, rnd) -> None:
    items = list(f.items())
    rnd.shuffle(items)
    assert keys.client_list("org_1", dict(items)) == keys.client_list("org_1", f)


@settings(max_examples=300)
@given(filters, filters)
def test_different_filters_never_collide(a: dict, b: dict) -> None:
    if strict_json(a) != strict_json(b) and (a or b):
        assert keys.client_list("org_1", a).suffix != keys.client_list("org_1", b).suffix


@given(st.dictionaries(hostile_text, st.one_of(hostile_text, st.lists(hostile_text, max_size=3)), min_size=1))
def test_hostile_filter_strings_never_appear_raw(f: dict) -> None:
    key = keys.invoice_list("org_1", f).redis_key(1, 2)
    assert KEY_SHAPE.fullmatch(key), key
    for ch in ("*", "?", "[", "\n", " "):
        assert ch not in key
    assert key.count(":") == 6  # cpa, v1, d, org, family, generations, hash: filters add no separator


@given(hostile_text, hostile_text)
def test_hostile_ids_are_encoded_and_distinct(org: str, user: str) -> None:
    key = keys.user_profile(org, user).redis_key(1, 1)
    assert KEY_SHAPE.fullmatch(key), key
    assert keys.user_profile(org, user) != keys.user_profile(org + "x", user)


def test_glob_like_org_cannot_alias_another_org() -> None:
    star, plain = keys.dashboard_metrics("org_*"), keys.dashboard_metrics("org_1")
    assert star.org != plain.org and star.org.startswith("~")
    assert "*" not in keys.org_data_pattern("org_*")[:-1]  # only the trailing glob of the admin pattern


def test_ids_are_raw_when_safe_and_hashed_otherwise() -> None:
    assert keys.encode_id("org_123") == "org_123"
    assert keys.encode_id(42) == "42"
    u = uuid.UUID(int=7)
    assert keys.encode_id(u) == str(u)
    assert re.fullmatch(r"~[0-9a-f]{32}", keys.encode_id("a:b"))
    assert keys.encode_id("~" + "0" * 32) != "~" + "0" * 32  # '~' itself is not raw-safe: no forgery


@pytest.mark.parametrize("org", [None, "", True, 1.5])
def test_org_id_is_required(org: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        keys.client_list(org, {})  # type: ignore[arg-type]


def test_every_builder_is_tenant_scoped() -> None:
    builders = [
        lambda o: keys.user_profile(o, "u1"), lambda o: keys.client_list(o, {"s": 1}),
        lambda o: keys.dashboard_metrics(o), lambda o: keys.document_list(o, "c1", {"t": "pdf"}),
        lambda o: keys.task_list(o, "u1"), lambda o: keys.invoice_list(o), lambda o: keys.quickbooks_data(o, "pl"),
        lambda o: keys.report_data(o, "r1", {"year": 2024}), lambda o: keys.session(o, "tok"),
    ]
    seen = set()
    for build in builders:
        a, b = build("org_a"), build("org_b")
        assert a.org_id == "org_a" and b.org_id == "org_b"
        assert a.redis_key(1, 1) != b.redis_key(1, 1)
        assert a.redis_key(1, 1).startswith("cpa:v1:d:org_a:")
        seen.add(a.family.code)
    assert seen == {f.code for f in families.FAMILIES.values()}


def test_session_token_is_never_in_the_key() -> None:
    key = keys.session("org_1", "s3cr3t-token")
    assert "s3cr3t" not in key.redis_key(1, 1)


def test_generations_are_part_of_the_key() -> None:
    key = keys.client_list("org_1")
    assert len({key.redis_key(1, 1), key.redis_key(2, 1), key.redis_key(1, 2)}) == 3


def test_type_normalisation() -> None:
    assert keys.filter_hash({"page": 1}) == keys.filter_hash({"page": 1.0}) == keys.filter_hash({"page": Decimal(1)})
    assert keys.filter_hash({"amount": Decimal("1.50")}) == keys.filter_hash({"amount": Decimal("1.5")})
    assert keys.filter_hash({"flag": True}) != keys.filter_hash({"flag": 1})
    assert keys.filter_hash({"ids": {3, 1, 2}}) == keys.filter_hash({"ids": frozenset({2, 3, 1})})
    assert keys.filter_hash({"x": (1, 2)}) == keys.filter_hash({"x": [1, 2]})
    assert keys.filter_hash(None) == keys.filter_hash({}) == "-"
    # a user dict shaped like a type tag is escaped, so it cannot alias the tagged value
    assert keys.filter_hash({"x": {"$f": "1.5"}}) != keys.filter_hash({"x": 1.5})
    with pytest.raises(TypeError):
        keys.filter_hash({"x": object()})


def test_ttl_classes_match_the_guide() -> None:
    f = families
    assert (f.SESSION.ttl, f.USER_PROFILE.ttl, f.CLIENT_LIST.ttl, f.DASHBOARD_METRICS.ttl, f.REPORT_DATA.ttl,
            f.QUICKBOOKS_DATA.ttl) == (1800, 600, 1800, 120, 7200, 300)
    assert (f.TTL.SHORT, f.TTL.MEDIUM, f.TTL.LONG) == (300, 900, 3600)
    assert f.REPORT_DATA.lock and f.DASHBOARD_METRICS.stale_grace > 0

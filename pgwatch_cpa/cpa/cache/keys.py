"""Tenant-scoped cache keys.

Layout (``v1`` is the value format version; bump it when serializers or this layout change):

    cpa:v1:d:<org>:<family code>:<org gen>.<family gen>:<id>...:<filter hash>   cached value
    cpa:v1:g:<org>                  org generation counter (no TTL)
    cpa:v1:g:<org>:<family code>    family generation counter (no TTL)
    cpa:v1:l:<value key suffix>     cross-process load lock

The organization id is a required argument of every builder, so a key cannot exist without its tenant. Ids are
used raw only when they match ``[A-Za-z0-9][A-Za-z0-9_.-]{0,127}`` (no ``:``, ``*``, ``?``, ``[``, whitespace);
anything else becomes ``~`` + a hash, and ``~`` is outside the raw alphabet, so the two forms never collide.
Filters are canonicalised (sorted keys, normalised types) and hashed, never interpolated.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any

import orjson

from pgwatch_cpa.cpa.cache import families as fam
from pgwatch_cpa.cpa.cache.families import Family

FORMAT_VERSION = "v1"
PREFIX = f"cpa:{FORMAT_VERSION}:"
DATA_PREFIX = PREFIX + "d:"
GEN_PREFIX = PREFIX + "g:"
LOCK_PREFIX = PREFIX + "l:"

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_HASH_BYTES = 16  # 128 bits: collisions are not a practical concern at any cache size


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=_HASH_BYTES).hexdigest()


def encode_id(value: str | int | uuid.UUID) -> str:
    """A key segment for an id: raw when safe, else ``~`` + hash (so ``:`` or ``*`` can never widen a key)."""
    if isinstance(value, bool) or not isinstance(value, str | int | uuid.UUID):
        raise TypeError(f"id must be str, int or UUID, not {type(value).__name__}")
    text = str(value)
    if not text:
        raise ValueError("id must not be empty")
    if _SAFE_ID.fullmatch(text):
        return text
    return "~" + _digest(text.encode("utf-8", "surrogatepass"))


# ---------------------------------------------------------------- filter canonicalisation


def canonical(value: Any) -> Any:
    """A JSON-able canonical form: equal filters give equal forms whatever their order or numeric type.

    Integral floats become ints (1.0 == 1), Decimals are normalised (1.0 == 1.00), sets are sorted, tuples
    become lists, a UUID becomes its string (equal to the same id given as a str), dates and datetimes become
    tagged objects. Bool stays distinct from int. Mappings need str keys.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return _int(int(value))
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return _int(int(value))
        return {"$f": repr(value)}  # orjson writes NaN/inf as null; repr keeps them distinct
    if isinstance(value, Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return _int(int(value))
        return {"$f": repr(float(value))} if not value.is_finite() else {"$n": str(value.normalize())}
    if isinstance(value, Enum):
        return canonical(value.value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"filter keys must be str, not {type(k).__name__}")
            # "$..." keys are escaped to "$$..." so a user dict can never look like a type tag
            out["$" + k if k.startswith("$") else k] = canonical(v)
        return out
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if isinstance(value, set | frozenset):
        items = [canonical(v) for v in value]
        return sorted(items, key=lambda item: orjson.dumps(item, option=orjson.OPT_SORT_KEYS))
    raise TypeError(f"unsupported filter value type {type(value).__name__}")


def _int(value: int) -> Any:
    # orjson writes 64-bit ints only; larger ones are tagged (never dropped or rounded)
    return value if -(2**63) <= value < 2**64 else {"$i": str(value)}


def filter_hash(filters: Mapping[str, Any] | None) -> str:
    """The hash of the canonical JSON of ``filters``; ``None`` and ``{}`` are the same (no filter)."""
    if not filters:
        return "-"
    return _digest(orjson.dumps(canonical(filters), option=orjson.OPT_SORT_KEYS))


# ---------------------------------------------------------------- keys


@dataclass(frozen=True, slots=True)
class CacheKey:
    """A logical key: family + tenant + the rest. The Redis key adds the generations at lookup time."""

    family: Family
    org_id: str  # raw org id, compared with the org id stored in every value
    org: str  # encoded org segment
    suffix: str  # ids and filter hash, already safe

    def redis_key(self, org_gen: int, family_gen: int) -> str:
        return f"{DATA_PREFIX}{self.org}:{self.family.code}:{org_gen}.{family_gen}:{self.suffix}"

    @property
    def org_gen_key(self) -> str:
        return GEN_PREFIX + self.org

    @property
    def family_gen_key(self) -> str:
        return GEN_PREFIX + self.org + ":" + self.family.code

    @property
    def ident(self) -> str:
        """Generation-free identity: the single-flight key."""
        return self.org + ":" + self.family.code + ":" + self.suffix


def org_gen_key(org_id: str) -> str:
    return GEN_PREFIX + encode_id(_org(org_id))


def family_gen_key(org_id: str, family: Family) -> str:
    return GEN_PREFIX + encode_id(_org(org_id)) + ":" + family.code


def org_data_pattern(org_id: str) -> str:
    """SCAN MATCH pattern for every value of one org (admin tool only; the org segment is glob-safe)."""
    return DATA_PREFIX + encode_id(_org(org_id)) + ":*"


def _org(org_id: Any) -> str:
    if not isinstance(org_id, str | int | uuid.UUID) or isinstance(org_id, bool) or str(org_id) == "":
        raise ValueError("organization id is required")
    return str(org_id)


def family_key(family: Family, org_id: str | int | uuid.UUID, *ids: str | int | uuid.UUID,
               filters: Mapping[str, Any] | None = None) -> CacheKey:
    """The generic builder: every part is encoded; filters are hashed."""
    org = _org(org_id)
    parts = [encode_id(i) for i in ids]
    parts.append(filter_hash(filters))
    return CacheKey(family, org, encode_id(org), ":".join(parts))


def user_profile(org_id: str, user_id: str) -> CacheKey:
    return family_key(fam.USER_PROFILE, org_id, user_id)


def client_list(org_id: str, filters: Mapping[str, Any] | None = None) -> CacheKey:
    return family_key(fam.CLIENT_LIST, org_id, filters=filters)


def dashboard_metrics(org_id: str) -> CacheKey:
    return family_key(fam.DASHBOARD_METRICS, org_id)


def document_list(org_id: str, client_id: str, filters: Mapping[str, Any] | None = None) -> CacheKey:
    return family_key(fam.DOCUMENT_LIST, org_id, client_id, filters=filters)


def task_list(org_id: str, assignee_id: str, filters: Mapping[str, Any] | None = None) -> CacheKey:
    return family_key(fam.TASK_LIST, org_id, assignee_id, filters=filters)


def invoice_list(org_id: str, filters: Mapping[str, Any] | None = None) -> CacheKey:
    return family_key(fam.INVOICE_LIST, org_id, filters=filters)


def quickbooks_data(org_id: str, data_type: str) -> CacheKey:
    return family_key(fam.QUICKBOOKS_DATA, org_id, data_type)


def report_data(org_id: str, report_id: str, params: Mapping[str, Any] | None = None) -> CacheKey:
    return family_key(fam.REPORT_DATA, org_id, report_id, filters=params)


def session(org_id: str, session_id: str) -> CacheKey:
    """Session ids are secrets: always hashed, so SCAN or MONITOR never shows a usable token."""
    if not session_id:
        raise ValueError("session id is required")
    org = _org(org_id)
    token = "~" + _digest(str(session_id).encode("utf-8", "surrogatepass"))
    return CacheKey(fam.SESSION, org, encode_id(org), token + ":-")

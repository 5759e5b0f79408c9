"""Value serialization: JSON via orjson with exact round-trips of the types money and dates need. Never pickle.

Types orjson would write lossily are tagged as small objects:

    Decimal   {"$d": "12.34"}                 str(Decimal) keeps sign, exponent and trailing zeros
    datetime  {"$dt": iso[, "z": zone][, "o": offset us][, "f": 1]}   naive or aware; ZoneInfo key, a sub-second
                                              offset and fold kept when present
    date      {"$date": "2024-04-15"}
    time      {"$tm": "09:30:00"[, "z": zone][, "f": 1]}
    UUID      {"$u": "..."}
    int       {"$i": "..."}                   only beyond 64 bits, which orjson rejects
    float     {"$fl": "nan"}                  only NaN and +-inf, which orjson would write as null
    a user dict of <= 3 keys that contains a tag key is wrapped as {"$o": {...}}, so data never reads as a tag

Tuples come back as lists and str/int subclasses (str Enums) as their base type; other tzinfo
implementations keep their offset but not their zone name. Anything else is a SerializationError.

Stored values are an envelope ``[org_id, soft_expiry, flags, payload]``: the org id is checked on every read,
soft_expiry (unix seconds, 0 = none) drives serve-stale, flags bit 0 says whether the payload holds tags (so an
untagged hit skips the decode walk).
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_TAGGED = 1


class SerializationError(ValueError):
    """A value cannot be stored (unsupported type) or a stored value cannot be read (corrupt, old format)."""


# ---------------------------------------------------------------- encode


def _enc_datetime(v: dt.datetime | dt.time, tag: str = "$dt") -> dict[str, Any]:
    out: dict[str, Any] = {tag: v.isoformat()}
    if isinstance(v.tzinfo, ZoneInfo) and v.tzinfo.key:
        out["z"] = v.tzinfo.key
    elif (offset := v.utcoffset()) is not None and offset.microseconds:
        out["o"] = offset // dt.timedelta(microseconds=1)  # Python 3.11's fromisoformat drops offset microseconds
    if v.fold:
        out["f"] = 1
    return out


def _enc_other(v: Any) -> Any:
    # order matters: datetime is a date subclass; bool was handled before int by the caller
    if isinstance(v, Decimal):
        return {"$d": str(v)}
    if isinstance(v, dt.datetime):
        return _enc_datetime(v)
    if isinstance(v, dt.date):
        return {"$date": v.isoformat()}
    if isinstance(v, dt.time):
        return _enc_datetime(v, "$tm")
    if isinstance(v, uuid.UUID):
        return {"$u": str(v)}
    if isinstance(v, int):
        return {"$i": str(int(v))} if not _INT_MIN <= v <= _INT_MAX else int(v)
    if isinstance(v, float):
        return _enc_float(float(v))
    if isinstance(v, str):
        return str(v)
    raise SerializationError(f"cannot cache a value of type {type(v).__name__}")


def _enc_float(v: float) -> Any:
    return v if math.isfinite(v) else {"$fl": repr(v)}


class _Encoder:
    __slots__ = ("tagged",)

    def __init__(self) -> None:
        self.tagged = False

    def enc(self, v: Any) -> Any:
        t = type(v)
        if v is None or t is str or t is bool:
            return v
        if t is int:
            if _INT_MIN <= v <= _INT_MAX:
                return v
        elif t is float:
            if math.isfinite(v):
                return v
        elif t is dict:
            return self._enc_dict(v)
        elif t is list or t is tuple:
            return [self.enc(x) for x in v]
        elif isinstance(v, dict):
            return self._enc_dict(v)
        elif isinstance(v, list | tuple):
            return [self.enc(x) for x in v]
        out = _enc_other(v)
        self.tagged = self.tagged or isinstance(out, dict)
        return out

    def _enc_dict(self, v: dict[Any, Any]) -> Any:
        out = {}
        for k, x in v.items():
            if type(k) is not str:
                if not isinstance(k, str):
                    raise SerializationError(f"dict keys must be str, not {type(k).__name__}")
                k = str(k)
            out[k] = self.enc(x)
        if len(out) <= 3 and not _TAG_KEYS.isdisjoint(out):
            self.tagged = True
            return {"$o": out}
        return out


def encode_value(value: Any) -> tuple[Any, bool]:
    """(JSON-able payload, whether it contains tags)."""
    encoder = _Encoder()
    payload = encoder.enc(value)
    return payload, encoder.tagged


def dumps(value: Any) -> bytes:
    """Serialize one value (tags included); see loads."""
    payload, tagged = encode_value(value)
    return orjson.dumps([int(tagged), payload])


# ---------------------------------------------------------------- decode


def _dec_datetime(v: dict[str, Any], tag: str = "$dt", cls: Any = dt.datetime) -> Any:
    # isoformat() writes the wall-clock fields as they are, so replacing the tzinfo restores them exactly
    # (even inside a DST gap, where converting the instant would move the wall time)
    out = cls.fromisoformat(v[tag])
    if "z" in v:
        out = out.replace(tzinfo=ZoneInfo(v["z"]))
    elif "o" in v:
        out = out.replace(tzinfo=dt.timezone(dt.timedelta(microseconds=v["o"])))
    return out.replace(fold=1) if v.get("f") else out


_DECODERS: dict[str, Any] = {
    "$d": lambda v: Decimal(v["$d"]),  # a dict of small functions: one lookup, no if-chain per tag
    "$dt": _dec_datetime,
    "$date": lambda v: dt.date.fromisoformat(v["$date"]),
    "$tm": lambda v: _dec_datetime(v, "$tm", dt.time),
    "$u": lambda v: uuid.UUID(v["$u"]),
    "$i": lambda v: int(v["$i"]),
    "$fl": lambda v: float(v["$fl"]),
    "$o": lambda v: {k: decode_value(x) for k, x in v["$o"].items()},
}
_TAG_KEYS = frozenset(_DECODERS)


def decode_value(v: Any) -> Any:
    """Undo the tags. Mutates ``v`` in place: it is fresh orjson output, so nobody else holds it."""
    t = type(v)
    if t is dict:
        if 0 < len(v) <= 3:
            decoder = _DECODERS.get(next(iter(v)))
            if decoder is not None:
                return decoder(v)
        for key, x in v.items():  # replacing values while iterating is fine: the key set does not change
            tx = type(x)
            if tx is dict or tx is list:
                v[key] = decode_value(x)
        return v
    if t is list:
        for i, x in enumerate(v):
            tx = type(x)
            if tx is dict or tx is list:
                v[i] = decode_value(x)
    return v


def loads(data: bytes) -> Any:
    try:
        tagged, payload = orjson.loads(data)
        return decode_value(payload) if tagged else payload
    except (orjson.JSONDecodeError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SerializationError(f"unreadable cached value: {exc}") from None


# ---------------------------------------------------------------- envelope


def dump_envelope(org_id: str, value: Any, soft_expiry: float = 0.0) -> bytes:
    payload, tagged = encode_value(value)
    return orjson.dumps([org_id, soft_expiry, _TAGGED if tagged else 0, payload])


def load_envelope(data: bytes | str) -> tuple[str, float, Any]:
    """(org_id, soft_expiry, value); SerializationError if the data is not a v1 envelope.

    ``data`` is a Redis reply: bytes from a client without decode_responses, str from one with it (orjson reads
    both the same way).
    """
    try:
        org_id, soft_expiry, flags, payload = orjson.loads(data)
        if type(org_id) is not str:
            raise TypeError("org id is not a string")
        return org_id, soft_expiry, decode_value(payload) if flags & _TAGGED else payload
    except (orjson.JSONDecodeError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SerializationError(f"unreadable cached value: {exc}") from None

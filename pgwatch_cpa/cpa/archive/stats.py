"""The archiver's progress as it publishes it to Redis, and its validating parser (the daemon's only view of it).

Where: one key, ``cpa:archive:stats``, the JSON snapshot below, written after every policy of every run. No TTL:
an archiver that stopped keeps its last success visible, which is what CpaArchivalStale watches. One archiver
runs at a time per database (an advisory lock), so a publisher reads the snapshot, adds its run and writes it back.

Snapshot schema, version 1 (counters are cumulative since the key was created; a smaller value means it was
reset, like a Prometheus counter reset):

    {
      "schema": "cpa-archive-stats",
      "version": 1,
      "published_at": 1732590042.5,            unix seconds
      "schedule_period_seconds": 86400.0,      the archiver's schedule period (daily when run once by cron)
      "policies": {
        "<policy>": {                          [a-z_]{1,32}, at most 16 policies
          "last_run_at": 1732590040.0 | null,      unix seconds, end of the last run
          "last_success_at": 1732590040.0 | null,  end of the last run in which every organization succeeded
          "rows_archived": 0, "bytes_archived": 0, "batches": 0,
          "failures": 0                            organizations whose run of this policy failed
        }, ...
      }
    }

Readers must ignore unknown fields (later minor additions) and reject another ``version``.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from pgwatch_cpa.cpa.snapshot_envelope import open_envelope

SCHEMA = "cpa-archive-stats"
VERSION = 1
KEY = "cpa:archive:stats"
MAX_POLICIES = 16
COUNTERS = ("rows_archived", "bytes_archived", "batches", "failures")
_POLICY = re.compile(r"[a-z_]{1,32}")


class SnapshotError(ValueError):
    """The bytes are not a valid version-1 archive snapshot; the message says which field."""


def empty_policy() -> dict[str, Any]:
    return {"last_run_at": None, "last_success_at": None, **dict.fromkeys(COUNTERS, 0)}


def build_snapshot(*, published_at: float, schedule_period_seconds: float,
                   policies: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"schema": SCHEMA, "version": VERSION, "published_at": published_at,
            "schedule_period_seconds": schedule_period_seconds, "policies": policies}


def dump_snapshot(snapshot: dict[str, Any]) -> bytes:
    return orjson.dumps(snapshot)


def parse_snapshot(data: bytes | str) -> dict[str, Any]:
    """Decode and validate a snapshot; returns exactly the schema's fields. Raises SnapshotError naming the first
    bad field; unknown extra fields are dropped, not rejected."""
    doc = open_envelope(data, SCHEMA, VERSION, SnapshotError)
    period = _number(doc, "schedule_period_seconds", "")
    if period <= 0:
        raise SnapshotError("schedule_period_seconds must be positive")
    policies = doc.get("policies")
    if not isinstance(policies, dict) or len(policies) > MAX_POLICIES:
        raise SnapshotError(f"policies must be an object of at most {MAX_POLICIES} policies")
    parsed = {}
    for name, entry in policies.items():
        if not _POLICY.fullmatch(name):
            raise SnapshotError(f"policies: name {name[:40]!r} must match {_POLICY.pattern}")
        parsed[name] = _policy(entry, f"policies.{name}")
    return build_snapshot(published_at=_number(doc, "published_at", ""), schedule_period_seconds=period,
                          policies=parsed)


def _policy(entry: object, path: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise SnapshotError(f"{path} must be an object")
    out: dict[str, Any] = {}
    for key in ("last_run_at", "last_success_at"):
        out[key] = None if entry.get(key) is None else _number(entry, key, path)
    for key in COUNTERS:
        value = entry.get(key)
        if type(value) is not int or value < 0:
            raise SnapshotError(f"{path}.{key} must be a non-negative integer")
        out[key] = value
    return out


def _number(doc: dict[str, Any], key: str, path: str) -> float:
    value = doc.get(key)
    if (type(value) is not int and type(value) is not float) or not math.isfinite(value) or value < 0:
        raise SnapshotError(f"{f'{path}.' if path else ''}{key} must be a non-negative number")
    return float(value)

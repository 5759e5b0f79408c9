"""Cache families: the guide's key families, each with its TTL class and stampede policy.

A family is the unit of per-family invalidation (one generation counter per org and family) and of metric
labels (a small fixed set, so labels stay bounded).
"""

from __future__ import annotations

from dataclasses import dataclass


class TTL:
    """TTL classes in seconds, from the guide's CACHE_TTL table and its "Cache Layers" list."""

    SHORT = 300  # real-time data
    MEDIUM = 900  # semi-static data
    LONG = 3600  # static data
    DASHBOARD = 120
    SESSION = 1800
    USER = 600
    CLIENT = 1800
    REPORTS = 7200
    QUICKBOOKS = 300


@dataclass(frozen=True, slots=True)
class Family:
    name: str  # metric label and snapshot key
    code: str  # short key segment; never changes once data is written under it
    ttl: int  # seconds; the hard TTL, or the soft one when stale_grace > 0
    lock: bool = False  # take a cross-process Redis lock on a miss (expensive loads)
    stale_grace: int = 0  # > 0: serve the stale value this long past ttl while one caller refreshes


USER_PROFILE = Family("user_profile", "up", TTL.USER)
CLIENT_LIST = Family("client_list", "cl", TTL.CLIENT)
DASHBOARD_METRICS = Family("dashboard_metrics", "dm", TTL.DASHBOARD, stale_grace=300)
DOCUMENT_LIST = Family("document_list", "dl", TTL.MEDIUM)
TASK_LIST = Family("task_list", "tl", TTL.SHORT)
INVOICE_LIST = Family("invoice_list", "il", TTL.MEDIUM)
QUICKBOOKS_DATA = Family("quickbooks_data", "qb", TTL.QUICKBOOKS)
REPORT_DATA = Family("report_data", "rp", TTL.REPORTS, lock=True)
SESSION = Family("session", "ss", TTL.SESSION)

FAMILIES: dict[str, Family] = {f.name: f for f in (
    USER_PROFILE, CLIENT_LIST, DASHBOARD_METRICS, DOCUMENT_LIST, TASK_LIST, INVOICE_LIST, QUICKBOOKS_DATA,
    REPORT_DATA, SESSION,
)}

assert len({f.code for f in FAMILIES.values()}) == len(FAMILIES), "family codes must be unique"

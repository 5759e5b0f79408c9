"""What the PostgreSQL collectors share: the base class, running a versioned query, number conversions, and
skipping (and counting) a row whose values cannot be exported."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pgwatch_cpa.collectors.base import Collector, CollectorDisabled, PgContext
from pgwatch_cpa.collectors.postgres.encoding import lossy
from pgwatch_cpa.collectors.postgres.sql import NoSqlForVersion, load

# Why a row was skipped (the reason label of pgwatch_rows_skipped_total).
INVALID_UTF8 = "invalid_utf8"  # a name or label value that is not valid UTF-8 (it decoded with U+FFFD)
UNCONVERTIBLE_TEXT = "unconvertible_text"  # the server could not convert a text to the database's encoding
ROWS_SKIPPED = "rows_skipped"  # the key of the skips in a collector's per-target state


@dataclass
class Skipped:
    """Rows a collector skipped for one reason since the daemon started, and the first one, for the log."""

    count: int = 0
    example: str = ""


def skip_rows(state: dict[str, Any], reason: str, example: str, count: int = 1) -> None:
    """Count rows skipped for ``reason`` in a collector's (or the poller's) per-target ``state``.

    The PostgreSQL poller exports the counts as ``pgwatch_rows_skipped_total{collector,reason}`` and logs the first
    ``example`` of each reason once per target.
    """
    entry = state.setdefault(ROWS_SKIPPED, {}).setdefault(reason, Skipped(example=example))
    entry.count += count


def exportable(ctx: PgContext, what: str, *values: Any) -> bool:
    """False (and the row counted as skipped) if a value the row is labelled with is not valid UTF-8.

    Such a value decoded with replacement characters: it is not the server's name, and two different names may
    decode to the same one, so it would make a wrong or duplicate series.
    """
    if not lossy(*values):
        return True
    shown = ", ".join(ascii(v) for v in values)
    skip_rows(ctx.state, INVALID_UTF8, f"{what} {shown} is not valid UTF-8")
    return False


class PgCollector(Collector):
    kind = "postgres"
    # True: the poller runs the collector once per polled database (ctx.database), and the collector labels
    # its samples with datname. False: once per target, on the DSN's database.
    per_database: ClassVar[bool] = False


async def fetch(ctx: PgContext, name: str, params: Mapping[str, Any] | None = None,
                schema: str | None = None) -> list[dict[str, Any]]:
    """Run the newest ``<name>_v*.sql`` that fits the server (and extensions); rows as dicts.

    A query that can never work here (no file for this version, missing privilege) raises CollectorDisabled.
    ``schema`` fills a ``{schema}`` placeholder with a quoted identifier (an extension's schema).
    """
    import psycopg
    from psycopg import sql
    from psycopg.rows import dict_row

    try:
        sql_file = load(name, ctx.server_version_num, ctx.extensions)
    except NoSqlForVersion as exc:
        raise CollectorDisabled(str(exc)) from None
    query: Any = sql_file.text
    if schema is not None:
        query = sql.SQL(query).format(schema=sql.Identifier(schema))
    try:
        async with ctx.conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            return await cur.fetchall()
    except psycopg.errors.InsufficientPrivilege as exc:
        raise CollectorDisabled(f"{sql_file.filename}: insufficient privilege ({_first_line(exc)}); "
                                "grant pg_monitor to the monitoring role") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def num(value: Any) -> float | None:
    """A database number as float (Decimal, int, float); None stays None."""
    return None if value is None else float(value)


def ms(value: Any) -> float | None:
    """Milliseconds (how PostgreSQL reports times) to seconds."""
    v = num(value)
    return None if v is None else v / 1000.0


def top_n_with_other(counts: Mapping[str, float], n: int, other: str = "other") -> dict[str, float]:
    """Keep the ``n`` largest entries, sum the rest into ``other`` (always present, so its series is stable).

    Ties are broken by name so the choice is stable across cycles. An entry that is itself named ``other``
    is folded into the rest.
    """
    ranked = sorted(((k, v) for k, v in counts.items() if k != other), key=lambda kv: (-kv[1], kv[0]))
    top = dict(ranked[:n])
    top[other] = sum(v for _k, v in ranked[n:]) + counts.get(other, 0.0)
    return top


# Units of pg_settings.unit -> factor to the base unit and the metric suffix.
_SETTING_UNITS: dict[str, tuple[float, str]] = {
    "B": (1, "_bytes"), "kB": (1024, "_bytes"), "8kB": (8192, "_bytes"), "16kB": (16384, "_bytes"),
    "32kB": (32768, "_bytes"), "MB": (1024**2, "_bytes"), "16MB": (16 * 1024**2, "_bytes"),
    "GB": (1024**3, "_bytes"), "TB": (1024**4, "_bytes"),
    "us": (1e-6, "_seconds"), "ms": (1e-3, "_seconds"), "s": (1, "_seconds"), "min": (60, "_seconds"),
    "h": (3600, "_seconds"), "d": (86400, "_seconds"),
}


def setting_metric(name: str, setting: str, unit: str | None, vartype: str) -> tuple[str, float] | None:
    """``pg_settings`` row -> (metric name, value in base units), or None for strings and enums.

    Memory becomes ``_bytes`` and times ``_seconds`` (postgres_exporter's names); -1 ("disabled") is kept as -1.
    """
    base = "pg_settings_" + re.sub(r"[^a-zA-Z0-9_]", "_", name)
    if vartype == "bool":
        return base, 1.0 if setting == "on" else 0.0
    if vartype not in ("integer", "real"):
        return None
    try:
        value = float(setting)
    except ValueError:
        return None
    if unit and unit in _SETTING_UNITS:
        factor, suffix = _SETTING_UNITS[unit]
        return base + suffix, value if value < 0 else value * factor
    return base, value

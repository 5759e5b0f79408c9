"""Custom SQL metrics: the queries of the ``custom_queries`` files (postgres_exporter's format, config.query_file),
one collector per query, protected like the built-in collectors.

- The query runs in a READ ONLY transaction with its own server-side ``statement_timeout`` (the query's
  ``timeout``, default the target's) and a client deadline 1 s later, with the monitoring role's privileges.
- Rows are read through a server-side cursor, at most ``max_rows`` + 1 of them: a longer result is cut at
  ``max_rows`` (never read whole), counted in ``pgwatch_custom_query_truncations_total`` and warned about once.
- A query bound to fail (syntax, missing table, column or privilege, a write) is disabled for the target after one
  WARNING (``pgwatch_collector_enabled{collector="custom:KEY"} 0``); a timeout fails only that run.
- Hostile values never fail the run: a NULL, non-numeric or non-finite value skips its sample, a label value
  that is not valid UTF-8 or longer than MAX_LABEL_LENGTH skips its row, a repeated label set its row; each is
  counted in ``pgwatch_rows_skipped_total{collector,reason}``. The log names the column, never the value.

A query without ``master: true`` runs on every polled database, and its samples get a ``datname`` label (unless
the query has a LABEL column of that name); with ``master: true`` it runs once, on the DSN's database.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

from pgwatch_cpa.collectors.base import Collector, CollectorDisabled, PgContext
from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.collectors.postgres.common import INVALID_UTF8, PgCollector, skip_rows
from pgwatch_cpa.collectors.postgres.encoding import LossyText, lossy
from pgwatch_cpa.config.query_file import Column, CustomQuery
from pgwatch_cpa.errors import CollectorError

log = logging.getLogger(__name__)

MAX_LABEL_LENGTH = 1024
DEADLINE_BACKSTOP = 1.0  # the client gives up this long after the server-side statement_timeout
# Why a value or row was skipped (the reason label of pgwatch_rows_skipped_total).
NULL_VALUE = "null_value"
NOT_A_NUMBER = "not_a_number"
NOT_FINITE = "not_finite"
LABEL_TOO_LONG = "label_too_long"
DUPLICATE_LABELS = "duplicate_labels"
_WHAT = {NULL_VALUE: "NULL", NOT_A_NUMBER: "not a number", NOT_FINITE: "not a finite number"}
# SQLSTATE classes of a query that will fail the same way every time: 42 (syntax error or access rule violation:
# missing table, column, function or privilege), 0A (feature not supported), 25006 (a write in a read-only run).
_BOUND_TO_FAIL = ("42", "0A", "25006")


class CustomQueryCollector(PgCollector):
    """Runs one custom query; :func:`custom_query_collectors` makes one subclass per query."""

    query: ClassVar[CustomQuery]

    async def collect(self, ctx: PgContext, out: MetricSet) -> None:
        q = self.query
        columns, rows, cut = await self._fetch(ctx)
        self._check_columns(ctx, columns)
        db_label = {"datname": ctx.database} if self.per_database and "datname" not in q.labels else {}
        seen: set[tuple[str, ...]] = set()
        exported = 0
        for row in rows:
            values = dict(zip(columns, row, strict=True))
            labels = self._labels(ctx, values, seen)
            if labels is None:
                continue
            exported += 1
            for column in q.values:
                self._sample(ctx, out, column, values[column.name], {**db_label, **labels})
        self._report_size(ctx, out, db_label, exported, cut)

    async def _fetch(self, ctx: PgContext) -> tuple[list[str], list[tuple[Any, ...]], bool]:
        """(column names, at most max_rows rows, whether the result was longer)."""
        import psycopg

        q = self.query
        timeout = q.timeout or ctx.settings.statement_timeout
        try:
            async with asyncio.timeout(timeout + DEADLINE_BACKSTOP), ctx.conn.transaction():
                await ctx.conn.execute("SET TRANSACTION READ ONLY")
                await ctx.conn.execute("SELECT pg_catalog.set_config('statement_timeout', %s, true)",
                                       (f"{max(1, round(timeout * 1000))}ms",))
                async with ctx.conn.cursor(name="pgwatch_custom_query") as cur:
                    await cur.execute(q.sql)
                    rows = await cur.fetchmany(q.max_rows + 1)
                    columns = [d.name for d in cur.description or ()]
        except psycopg.Error as exc:
            state = getattr(exc, "sqlstate", None) or ""
            if state.startswith(_BOUND_TO_FAIL):
                raise CollectorDisabled(f"{q.source}: {q.key}: {_first_line(exc)}") from None
            # Other messages may quote a value the query read (a data exception): only the kind is told.
            raise CollectorError(f"{q.source}: {q.key}: {type(exc).__name__} (SQLSTATE {state or 'none'})") from None
        return columns, rows[: q.max_rows], len(rows) > q.max_rows

    def _check_columns(self, ctx: PgContext, columns: Sequence[str]) -> None:
        q = self.query
        missing = [c.name for c in q.columns if c.name not in columns]
        if missing:
            raise CollectorDisabled(f"{q.source}: {q.key}: the result has no column {', '.join(missing)} (it has "
                                    f"{', '.join(columns) or 'none'})")
        extra = [c for c in columns if not any(c == d.name for d in q.columns)]
        if extra and not ctx.state.get("extra_columns_logged"):
            ctx.state["extra_columns_logged"] = True
            log.warning("target %s: custom query %s of %s: result columns %s are not described in metrics and are "
                        "ignored", ctx.target, q.key, q.source, ", ".join(extra))

    def _labels(self, ctx: PgContext, row: dict[str, Any], seen: set[tuple[str, ...]]) -> dict[str, str] | None:
        """The row's label values, or None (and the row counted as skipped) if they cannot be used."""
        q = self.query
        values = tuple(label_value(row[name]) for name in q.labels)
        if lossy(*values):
            skip_rows(ctx.state, INVALID_UTF8, f"custom query {q.key}: a label value is not valid UTF-8")
            return None
        if any(len(v) > MAX_LABEL_LENGTH for v in values):
            skip_rows(ctx.state, LABEL_TOO_LONG,
                      f"custom query {q.key}: a label value is longer than {MAX_LABEL_LENGTH} characters")
            return None
        if values in seen:
            skip_rows(ctx.state, DUPLICATE_LABELS, f"custom query {q.key}: two rows have the same label values")
            return None
        seen.add(values)
        return dict(zip(q.labels, values, strict=True))

    def _sample(self, ctx: PgContext, out: MetricSet, column: Column, raw: Any, labels: dict[str, str]) -> None:
        q = self.query
        value, reason = sample_value(raw)
        if value is None or reason is not None:
            reason = reason or NOT_A_NUMBER
            skip_rows(ctx.state, reason, f"custom query {q.key}: the value of column {column.name} is {_WHAT[reason]}")
            return
        name = q.metric_name(column)
        doc = column.description or f"Column {column.name} of custom query {q.key} ({q.source})."
        if column.usage == "COUNTER" and name.endswith("_total"):
            out.counter(name, doc, value, labels)
        elif column.usage == "COUNTER":
            out.untyped(name, doc, value, labels)  # promtool refuses a counter without _total
        else:
            out.gauge(name, doc, value, labels)

    def _report_size(self, ctx: PgContext, out: MetricSet, db_label: dict[str, str], exported: int,
                     cut: bool) -> None:
        q = self.query
        labels = {**db_label, "query": q.key}
        truncations = ctx.state.setdefault("truncations", {})
        key = db_label.get("datname", "")
        if cut:
            truncations[key] = truncations.get(key, 0) + 1
            if not ctx.state.get("truncation_logged"):
                ctx.state["truncation_logged"] = True
                log.warning("target %s: custom query %s of %s returned more than max_rows=%d rows; only the first "
                            "%d are exported (counted in pgwatch_custom_query_truncations_total, not logged "
                            "again)", ctx.target, q.key, q.source, q.max_rows, q.max_rows)
        out.gauge("pgwatch_custom_query_rows", "Rows of the custom query's last run that were exported.",
                  exported, labels)
        out.gauge("pgwatch_custom_query_max_rows", "Rows a custom query may export per run (max_rows).",
                  q.max_rows, labels)
        out.counter("pgwatch_custom_query_truncations_total",
                    "Runs of the custom query whose result was longer than max_rows and was cut.",
                    truncations.get(key, 0), labels)


def custom_query_collectors(queries: Sequence[CustomQuery]) -> list[Collector]:
    """One collector per query, named ``custom:KEY`` (its label in pgwatch_collector_*)."""
    return [type(f"CustomQuery_{q.key}", (CustomQueryCollector,),
                 {"name": f"custom:{q.key}", "per_database": not q.master, "default_interval": q.interval,
                  "query": q})() for q in queries]


def sample_value(value: Any) -> tuple[float | None, str | None]:
    """A database value as a sample value (postgres_exporter's conversions: numbers, booleans as 1/0, times
    as whole Unix seconds, numeric text; an interval as seconds, where postgres_exporter has NaN), or (None, why
    not)."""
    if value is None:
        return None, NULL_VALUE
    try:
        number = _number(value)
    except ValueError:  # text that is not a number
        return None, NOT_A_NUMBER
    except OverflowError:  # an integer beyond the float range
        return None, NOT_FINITE
    if number is None:
        return None, NOT_A_NUMBER
    return (number, None) if math.isfinite(number) else (None, NOT_FINITE)


def _number(value: Any) -> float | None:
    if isinstance(value, bool | int | float | Decimal):
        return float(value)
    if isinstance(value, datetime):  # whole seconds, as postgres_exporter (Go's time.Unix())
        return math.floor((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp())
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, str) and not lossy(value):
        return float(value)
    return None


def label_value(value: Any) -> str:
    """A database value as a label value (postgres_exporter's: NULL is "", times are Unix seconds)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return str(int((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()))
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return LossyText(value.decode("utf-8", errors="replace"))
    return value if isinstance(value, str) else str(value)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]

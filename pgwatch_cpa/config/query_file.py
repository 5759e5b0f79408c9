"""Custom SQL metrics: postgres_exporter's ``queries.yaml`` format (``--extend.query-path``), read strictly.

A file maps a metric namespace (the key) to one query::

    pg_database:
      query: "SELECT pg_database.datname, pg_database_size(pg_database.datname) as size FROM pg_database"
      master: true            # run once per target, on the DSN's database (default: on every polled database)
      cache_seconds: 30       # run at most every 30 s (postgres_exporter caches the result that long)
      interval: 1m            # ours: the same, in the config's duration grammar (the larger of the two wins)
      timeout: 2s             # ours: server-side statement_timeout of this query (default: the target's)
      max_rows: 1000          # ours: rows (label sets) kept per run; the rest is cut and counted
      metrics:
        - datname: {usage: LABEL, description: "Name of the database"}
        - size: {usage: GAUGE, description: "Disk space used by the database"}

Every GAUGE or COUNTER column becomes the metric ``<key>_<column>``, exactly as postgres_exporter names it,
labelled with the LABEL columns; DISCARD columns are read and dropped. MAPPEDMETRIC and DURATION, and
postgres_exporter's version filters (``runonserver``, ``pg_version``), are refused with the reason.

Names must pass ``promtool check metrics``: a metric or label name that would not is a load error naming it.
A COUNTER column whose name does not end in ``_total`` is exported untyped (promtool rejects a counter without
the suffix, and renaming it would break the user's dashboards); one that does is a counter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator

from pgwatch_cpa.config.base import Duration, StrictModel, between
from pgwatch_cpa.config.yamlfile import YamlFileError, read_yaml

MAX_QUERY_FILE_BYTES = 1024 * 1024
MAX_QUERIES_PER_FILE = 200
DEFAULT_MAX_ROWS = 1000
Usage = Literal["LABEL", "GAUGE", "COUNTER", "DISCARD"]
_REFUSED_USAGES = {
    "MAPPEDMETRIC": "MAPPEDMETRIC is not supported: map the text to a number in the query (CASE ... END)",
    "DURATION": "DURATION is not supported: return seconds as a number (EXTRACT(EPOCH FROM ...)) and use GAUGE",
}
_REFUSED_KEYS = {
    "runonserver": "runonserver is not supported: one file per server version band, listed on the targets "
                   "it fits",
    "pg_version": "pg_version is not supported: select the column on the server versions that have it",
    "metric_mapping": "metric_mapping belongs to MAPPEDMETRIC, which is not supported",
}
# promtool check metrics (client_golang's promlint): no colons (recording rules only), snake_case, no suffix
# reserved for histograms and summaries; label names must not start with "__" (reserved) or be le/quantile.
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_CAMEL = re.compile(r"[a-z][A-Z]")
_RESERVED_SUFFIXES = ("_bucket", "_count", "_sum")
_NON_BASE_UNITS = {
    **dict.fromkeys(("nanoseconds", "microseconds", "milliseconds", "minutes", "hours", "days", "weeks"), "seconds"),
    **dict.fromkeys(("kilobytes", "megabytes", "gigabytes", "terabytes", "petabytes", "kibibytes", "mebibytes",
                     "gibibytes", "tebibytes", "pebibytes"), "bytes"),
    "fahrenheit": "celsius", "kilometers": "meters", "miles": "meters", "feet": "meters", "inches": "meters",
}
_ABBREVIATED_UNITS = {"s", "ms", "us", "ns", "sec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d"}
RESERVED_LABELS = {"target", "le", "quantile"}  # target: every sample of ours carries the target's name


class QueryFileError(ValueError):
    """A query file cannot be used; the message names the file, the key and what is wrong."""


@dataclass(frozen=True)
class Column:
    name: str
    usage: Usage
    description: str


@dataclass(frozen=True)
class CustomQuery:
    """One query of a file, checked: its metric and label names are valid and promtool-clean."""

    source: str  # the file as the config names it
    key: str  # the metric namespace
    sql: str
    master: bool
    interval: float | None  # seconds between runs (cache_seconds or interval); None: the target's interval
    timeout: float | None  # server-side statement_timeout; None: the target's
    max_rows: int
    columns: tuple[Column, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.usage == "LABEL")

    @property
    def values(self) -> tuple[Column, ...]:
        """The columns that become metrics (GAUGE and COUNTER)."""
        return tuple(c for c in self.columns if c.usage in ("GAUGE", "COUNTER"))

    def metric_name(self, column: Column) -> str:
        return f"{self.key}_{column.name}"


@dataclass(frozen=True)
class QueryFile:
    source: str
    queries: tuple[CustomQuery, ...]

    def metric_names(self) -> dict[str, str]:
        """Every metric name the file exports -> the key that exports it."""
        return {q.metric_name(c): q.key for q in self.queries for c in q.values}


class _ColumnSpec(StrictModel):
    usage: str
    description: str = ""
    metric_mapping: Any = None
    pg_version: Any = None

    @field_validator("usage")
    @classmethod
    def _check_usage(cls, usage: str) -> str:
        if usage in _REFUSED_USAGES:
            raise ValueError(_REFUSED_USAGES[usage])
        if usage not in Usage.__args__:  # type: ignore[attr-defined]
            raise ValueError(f"unknown usage {usage!r}; use LABEL, GAUGE, COUNTER or DISCARD (upper case, as "
                             "postgres_exporter)")
        return usage

    @field_validator("metric_mapping", "pg_version")
    @classmethod
    def _refuse(cls, value: Any, info: Any) -> Any:
        if value is not None:
            raise ValueError(_REFUSED_KEYS[info.field_name])
        return value


class _QuerySpec(StrictModel):
    query: Annotated[str, Field(min_length=1, max_length=65536)]
    metrics: Annotated[list[dict[str, _ColumnSpec]], Field(min_length=1, max_length=200)]
    master: bool = False
    cache_seconds: Annotated[int, Field(ge=0, le=86400)] = 0
    runonserver: Any = None
    interval: Annotated[Duration, between("1s", "1d")] | None = None
    timeout: Annotated[Duration, between("100ms", "30s")] | None = None
    max_rows: Annotated[int, Field(ge=1, le=100_000)] = DEFAULT_MAX_ROWS

    @field_validator("runonserver")
    @classmethod
    def _refuse(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError(_REFUSED_KEYS["runonserver"])
        return value


def read_query_file(path: Path, source: str) -> QueryFile:
    """Read and check one file; QueryFileError lists every problem, each with the file and the key."""
    try:
        raw = read_yaml(path, MAX_QUERY_FILE_BYTES, "query file")
    except OSError as exc:
        raise QueryFileError(f"{source}: cannot read: {exc.strerror or exc}") from None
    except YamlFileError as exc:
        raise QueryFileError(f"{source}: {exc}") from None
    return parse_query_file(raw, source)


def parse_query_file(raw: Any, source: str) -> QueryFile:
    if not isinstance(raw, dict) or not raw:
        raise QueryFileError(f"{source}: must map metric namespaces to queries (postgres_exporter's "
                             "queries.yaml format)")
    if len(raw) > MAX_QUERIES_PER_FILE:
        raise QueryFileError(f"{source}: {len(raw)} queries; at most {MAX_QUERIES_PER_FILE} per file")
    problems: list[str] = []
    queries = []
    for key, spec in raw.items():
        try:
            queries.append(_query(source, key, spec))
        except _Problems as exc:
            problems += [f"{source}: {p}" for p in exc.problems]
    if problems:
        raise QueryFileError("; ".join(problems))
    return QueryFile(source, tuple(queries))


class _Problems(Exception):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems


def _query(source: str, key: Any, spec: Any) -> CustomQuery:
    if not isinstance(key, str) or not _NAME.match(key):
        raise _Problems([f"{key!r}: not a valid metric namespace (letters, digits and _, not starting with a "
                         "digit)"])
    try:
        parsed = _QuerySpec.model_validate(spec)
    except ValidationError as exc:
        raise _Problems([_format(key, err) for err in exc.errors()]) from None
    columns: list[Column] = []
    problems: list[str] = []
    for index, entry in enumerate(parsed.metrics):
        for name, col in entry.items():
            if any(c.name == name for c in columns):
                problems.append(f"{key}.metrics[{index}].{name}: column described twice")
                continue
            problem = _name_problem(key, name, col.usage)
            if problem:
                problems.append(f"{key}.metrics[{index}].{name}: {problem}")
            columns.append(Column(name, col.usage, col.description.strip()))  # type: ignore[arg-type]
    if not any(c.usage in ("GAUGE", "COUNTER") for c in columns):
        problems.append(f"{key}.metrics: no GAUGE or COUNTER column, so the query exports nothing")
    if problems:
        raise _Problems(problems)
    interval = max(parsed.interval or 0.0, float(parsed.cache_seconds)) or None
    # DECLARE ... CURSOR FOR takes one statement without its terminator
    sql = parsed.query.strip().rstrip(";").rstrip()
    return CustomQuery(source, key, sql, parsed.master, interval, parsed.timeout, parsed.max_rows,
                       tuple(columns))


def _name_problem(key: str, column: str, usage: str) -> str | None:
    """Why ``column`` would make a name ``promtool check metrics`` refuses, or None."""
    if not _NAME.match(column):
        return "not a valid column name for a metric or label (letters, digits and _, not starting with a digit)"
    if usage == "LABEL":
        if column.startswith("__") or column in RESERVED_LABELS:
            return f"label name {column!r} is reserved"
        return None
    if usage == "DISCARD":
        return None
    metric = f"{key}_{column}"
    words = metric.split("_")
    exported_type = "gauge" if usage == "GAUGE" else "untyped"  # a COUNTER is exported untyped (or as a counter)
    if _CAMEL.search(metric):
        return f"metric name {metric} is camelCase; promtool wants snake_case (alias the column)"
    if usage == "GAUGE" and metric.endswith(_RESERVED_SUFFIXES):
        return f"metric name {metric} ends in a suffix promtool reserves for histograms and summaries"
    for word in words:
        if word in _NON_BASE_UNITS:
            return f"metric name {metric}: promtool wants the base unit {_NON_BASE_UNITS[word]}, not {word}"
        if word in _ABBREVIATED_UNITS:
            return f"metric name {metric}: promtool refuses the abbreviated unit {word!r}"
    if exported_type in words:
        return f"metric name {metric} contains its type {exported_type!r}, which promtool refuses"
    return None


def _format(key: str, err: Any) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    return f"{key}{path}: {message}"

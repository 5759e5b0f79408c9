"""The report's JSON contract (schema version 1), the source of truth that Markdown and HTML are rendered from.

    {
      "schema_version": 1,
      "generated_at": "2026-11-30T09:00:00Z",
      "targets": [{
        "name": "main", "kind": "postgres" | "redis",
        "status": "ok" | "warning" | "critical" | "unreachable",
        "error": null | "why the target could not be read (secret-free)",
        "summary": {"total_queries": 1234, "slow_query_count": 2, "cache_hit_ratio": 0.99, ...},
        "findings": [{
          "id": "unused_index:main:cpa:public.idx_x",  stable: the same problem gets the same id next week
          "kind": "unused_index", "severity": "info" | "warning" | "critical",
          "target": "main", "database": "cpa" | null, "object": "public.idx_x" | null,
          "title": "one line for people",
          "evidence": {"idx_scan": 0, "size_bytes": 81920, ...},   the numbers it rests on
          "score": 81920.0,                            the size of the problem (bytes, rows, seconds...): larger is
                                                       worse; the diff calls a finding worse or better by it
          "recommendation": "DROP INDEX CONCURRENTLY public.idx_x;",   the exact SQL or setting
          "expected_effect": "reclaims 80 kB; one index less to maintain on every write"
        }]
      }],
      "diff": null | {"previous_generated_at": "...", "new": [id], "resolved": [id], "worse": [id], "better": [id]}
    }

Readers ignore unknown keys (later minor additions) and reject another ``schema_version``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from pgwatch_cpa.errors import PgwatchError

SCHEMA_VERSION = 1

Severity = Literal["info", "warning", "critical"]
Status = Literal["ok", "warning", "critical", "unreachable"]
Scalar = float | int | str | bool | None
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")


class ReportFormatError(PgwatchError):
    """A report file (``--previous``) is not a report of this schema."""


@dataclass(frozen=True)
class Finding:
    kind: str
    severity: Severity
    target: str
    database: str | None
    object: str | None
    title: str
    evidence: Mapping[str, Scalar]
    score: float
    recommendation: str
    expected_effect: str

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.target}:{self.database or '-'}:{self.object or '-'}"


@dataclass
class TargetReport:
    name: str
    kind: Literal["postgres", "redis"]
    summary: dict[str, Scalar] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None

    @property
    def status(self) -> Status:
        if self.error is not None:
            return "unreachable"
        worst = max((SEVERITIES.index(f.severity) for f in self.findings), default=-1)
        return "critical" if worst == 2 else "warning" if worst == 1 else "ok"


@dataclass(frozen=True)
class Diff:
    previous_generated_at: float
    new: list[str]
    resolved: list[str]
    worse: list[str]
    better: list[str]


@dataclass
class Report:
    generated_at: float
    targets: list[TargetReport]
    diff: Diff | None = None

    @property
    def findings(self) -> list[Finding]:
        return [f for t in self.targets for f in t.findings]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "generated_at": format_time(self.generated_at),
            "targets": [_target_dict(t) for t in self.targets],
            "diff": None if self.diff is None else {
                **asdict(self.diff), "previous_generated_at": format_time(self.diff.previous_generated_at)},
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def _target_dict(target: TargetReport) -> dict[str, Any]:
    return {"name": target.name, "kind": target.kind, "status": target.status, "error": target.error,
            "summary": {k: _finite(v) for k, v in target.summary.items()},
            "findings": [{"id": f.id, **asdict(f), "evidence": {k: _finite(v) for k, v in f.evidence.items()},
                          "score": _finite(f.score)} for f in target.findings]}


def _finite(value: Scalar) -> Scalar:
    """JSON has no NaN or infinity: they become null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def format_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def report_from_json(data: bytes | str, source: str = "report") -> Report:
    """Read a report written by ``to_json`` (e.g. last week's, for the diff); ReportFormatError if it is not one."""
    try:
        doc = orjson.loads(data)
        if not isinstance(doc, dict) or doc.get("schema_version") != SCHEMA_VERSION:
            raise ReportFormatError(f"{source}: not a pgwatch-cpa report of schema version {SCHEMA_VERSION}")
        diff = doc.get("diff")
        return Report(parse_time(doc["generated_at"]), [_target_from(t) for t in doc["targets"]],
                      None if diff is None else _diff_from(diff))
    except ReportFormatError:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ReportFormatError(f"{source}: not a valid report ({type(exc).__name__}: {exc})") from None


def _diff_from(doc: Mapping[str, Any]) -> Diff:
    return Diff(parse_time(doc["previous_generated_at"]), *(sorted(map(str, doc[k]))
                                                           for k in ("new", "resolved", "worse", "better")))


def _target_from(doc: Mapping[str, Any]) -> TargetReport:
    if doc["kind"] not in ("postgres", "redis"):
        raise ValueError(f"unknown target kind {doc['kind']!r}")
    for finding in doc["findings"]:
        if finding["severity"] not in SEVERITIES:
            raise ValueError(f"unknown severity {finding['severity']!r}")
    findings = [Finding(f["kind"], f["severity"], f["target"], f["database"], f["object"], f["title"],
                        dict(f["evidence"]), float(f["score"] if f["score"] is not None else math.nan),
                        f["recommendation"], f["expected_effect"]) for f in doc["findings"]]
    return TargetReport(doc["name"], doc["kind"], dict(doc["summary"]), findings, doc["error"])

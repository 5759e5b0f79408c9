"""The plain-text view of a report that the Markdown and HTML renderers share.

Everything in a report that came from a database (names, titles, errors, string values) is hostile data: it is
cleaned here first (control, bidi-override and surrogate characters replaced, over-long strings cut with an
ellipsis, so the output is valid UTF-8 and bounded), then escaped for the output format by each renderer.
How many targets, findings, evidence values and diff ids are shown is bounded too; the JSON keeps everything.
"""

from __future__ import annotations

import math
import re
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeGuard

from pgwatch_cpa.report.model import Finding, Report, TargetReport

MAX_NAME = 200  # names, ids, keys
MAX_TEXT = 1_000  # titles, errors, expected effects, string values
MAX_SQL = 4_000  # a recommendation
MAX_TARGETS = 100
MAX_FINDINGS = 100  # per target
MAX_TOTAL_FINDINGS = 500
MAX_EVIDENCE = 20  # per finding
MAX_SUMMARY = 30  # per target
MAX_DIFF_IDS = 100  # per list of the diff

ELLIPSIS = "\u2026"
SEVERITY_ORDER = ("critical", "warning", "info")
STATUS_ORDER = ("critical", "warning", "ok", "unreachable")
PREFERRED_SUMMARY = ("total_queries", "slow_query_count", "cache_hit_ratio", "connections", "size_bytes")
LABELS = {"total_queries": "Total queries", "slow_query_count": "Slow queries", "cache_hit_ratio": "Cache-hit ratio",
          "connections": "Connections", "size_bytes": "Size"}
DIFF_SECTIONS = (("new", "New"), ("resolved", "Resolved"), ("worse", "Worse"), ("better", "Better"))

_BREAKS = re.compile("[\t\n\r\x85\u2028\u2029]+")
_MULTILINE_BREAKS = re.compile("\r\n?|[\x85\u2028\u2029]")
# C0/C1 controls (tab and newline are handled above), bidi overrides and isolates, lone surrogates, non-characters
_BAD = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufffe\uffff]")
_SQL = re.compile(r"\s*(SELECT|WITH|CREATE|DROP|ALTER|VACUUM|ANALYZE|REINDEX|CLUSTER|SET|RESET|UPDATE|DELETE|INSERT"
                  r"|GRANT|REVOKE|COMMENT|EXPLAIN|CALL|DO|TRUNCATE|REFRESH|LOCK|SHOW|CHECKPOINT)\b", re.IGNORECASE)
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80


def clean(value: object, limit: int = MAX_TEXT, *, multiline: bool = False) -> str:
    """``value`` as printable text of at most ``limit`` characters (one line unless ``multiline``)."""
    text = value if isinstance(value, str) else "" if value is None else _REPR.repr(value)
    if len(text) > limit:
        text = text[: limit - 1] + ELLIPSIS
    text = _MULTILINE_BREAKS.sub("\n", text) if multiline else _BREAKS.sub(" ", text)
    return _BAD.sub("\ufffd", text)


def when(ts: float, fmt: str = "%Y-%m-%d %H:%M UTC") -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).strftime(fmt)
    except (OverflowError, OSError, ValueError, TypeError):
        return "unknown time"


def is_number(value: object) -> TypeGuard[int | float]:
    """A finite int or float (not a bool): what a chart can plot."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def human_bytes(n: float, signed: bool = False) -> str:
    sign = "-" if n < 0 else "+" if signed and n > 0 else ""
    size, unit = abs(float(n)), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            break
        size /= 1024
    return f"{sign}{size:.0f} B" if unit == "B" else f"{sign}{size:.1f} {unit}"


def human_seconds(s: float) -> str:
    for limit, divisor, unit in ((1, 0.001, "ms"), (120, 1, "s"), (7200, 60, "min"), (172800, 3600, "h")):
        if abs(s) < limit:
            return f"{s / divisor:.3g} {unit}"
    return f"{s / 86400:.1f} d"


def format_value(key: str, value: object, *, exact: bool = False) -> str:
    """A summary or evidence value for people: ratios as %, bytes and seconds in human units, n/a for unknown."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        if key.endswith(("_ratio", "_utilisation", "_utilization")):
            return f"{value * 100:.2f}%"
        if "bytes" in key or key.endswith("memory"):  # Redis's used_memory and maxmemory are bytes too
            text = human_bytes(value, signed="growth" in key)
            return f"{text} ({value:,} B)" if exact and isinstance(value, int) and abs(value) >= 1024 else text
        if key.endswith("_seconds"):
            return human_seconds(value)
        if isinstance(value, int):
            return clean(f"{value:,}", MAX_NAME)
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return clean(value)


def label(key: str) -> str:
    if key in LABELS:
        return LABELS[key]
    name = clean(key, MAX_NAME)
    for suffix in ("_bytes", "_seconds"):  # the value shows the unit
        name = name.removesuffix(suffix)
    name = name.replace("_", " ").strip() or name
    return name[:1].upper() + name[1:]


def summary_rows(summary: Mapping[str, object]) -> tuple[list[tuple[str, str]], int]:
    """(label, value) rows, the well-known metrics first, then growth, then the rest by name; and how many were cut."""
    def order(key: str) -> tuple[int, int, str]:
        known = PREFERRED_SUMMARY.index(key) if key in PREFERRED_SUMMARY else len(PREFERRED_SUMMARY)
        return (known, 0 if "growth" in key else 1, key)

    keys = sorted((str(k) for k in summary), key=order)
    return [(label(k), format_value(k, summary[k])) for k in keys[:MAX_SUMMARY]], max(0, len(keys) - MAX_SUMMARY)


def evidence_items(finding: Finding) -> tuple[list[tuple[str, str]], int]:
    items = sorted(finding.evidence.items(), key=lambda kv: str(kv[0]))  # by name, as the JSON stores them
    shown = [(clean(k, MAX_NAME), format_value(str(k), v, exact=True)) for k, v in items[:MAX_EVIDENCE]]
    return shown, max(0, len(items) - MAX_EVIDENCE)


def finding_meta(finding: Finding) -> list[tuple[str, str]]:
    meta = [("Object", finding.object), ("Database", finding.database), ("Kind", finding.kind)]
    return [(name, clean(value, MAX_NAME)) for name, value in meta if value is not None] + [
        ("Id", clean(finding.id, MAX_NAME * 2))]


def recommendation(finding: Finding) -> tuple[str, bool]:
    """The recommendation, and whether it is SQL (shown as a code block then, as text otherwise)."""
    text = str(finding.recommendation)
    sql = _SQL.match(text)  # an upper-case keyword, or any case but ending with ";" ("Set x in postgresql.conf")
    if sql and (sql.group(1).isupper() or text.rstrip().endswith(";")):
        return clean(text, MAX_SQL, multiline=True).strip("\n"), True
    return clean(text, MAX_SQL).strip(), False


def target_status(target: TargetReport) -> str:
    try:
        return target.status
    except ValueError:  # a severity this version does not know (a report read from JSON): flag it, do not crash
        return "critical" if any(f.severity == "critical" for f in target.findings) else "warning"


def _finding_order(finding: Finding) -> tuple[int, float, str]:
    score = finding.score
    return (0, -score, finding.id) if is_number(score) else (1, 0.0, finding.id)


@dataclass(frozen=True)
class TargetView:
    """One target as both renderers show it; every string is cleaned, none is escaped."""

    target: TargetReport
    name: str
    kind: str
    status: str
    error: str | None
    summary: list[tuple[str, str]]
    summary_hidden: int
    groups: list[tuple[str, list[Finding]]]  # severity (critical first) -> findings, worst first
    findings_hidden: int


def target_views(report: Report) -> tuple[list[TargetView], int]:
    """The targets shown (at most MAX_TARGETS, at most MAX_TOTAL_FINDINGS findings in all), and how many were cut."""
    views, budget = [], MAX_TOTAL_FINDINGS
    for target in report.targets[:MAX_TARGETS]:
        ranked = sorted(target.findings, key=_finding_order)
        shown = ranked[: max(0, min(MAX_FINDINGS, budget))]
        budget -= len(shown)
        severities = [*SEVERITY_ORDER, *sorted({clean(f.severity, MAX_NAME) for f in shown} - set(SEVERITY_ORDER))]
        groups = [(s, [f for f in shown if clean(f.severity, MAX_NAME) == s]) for s in severities]
        summary, summary_hidden = summary_rows(target.summary)
        views.append(TargetView(
            target, clean(target.name, MAX_NAME), clean(target.kind, MAX_NAME), target_status(target),
            None if target.error is None else clean(target.error), summary, summary_hidden,
            [(s, fs) for s, fs in groups if fs], len(ranked) - len(shown)))
    return views, max(0, len(report.targets) - MAX_TARGETS)


def overview(report: Report) -> str:
    statuses = [target_status(t) for t in report.targets]
    findings = report.findings
    by_status = ", ".join(f"{statuses.count(s)} {s}" for s in STATUS_ORDER if s in statuses)
    by_severity = ", ".join(f"{n} {s}" for s in SEVERITY_ORDER if (n := sum(f.severity == s for f in findings)))
    targets = f"{len(statuses)} target{'s' * (len(statuses) != 1)}" + (f" ({by_status})" if by_status else "")
    return f"{targets}; {len(findings)} finding{'s' * (len(findings) != 1)}" + (
        f" ({by_severity})" if by_severity else "")


def diff_sections(report: Report) -> list[tuple[str, list[tuple[str, str | None]], int]]:
    """(heading, [(id, title of the finding in this report, if there)], ids cut) for new/resolved/worse/better."""
    if report.diff is None:
        return []
    titles = {f.id: f.title for f in report.findings}
    sections = []
    for attr, heading in DIFF_SECTIONS:
        ids: Sequence[str] = getattr(report.diff, attr)
        shown = [(clean(i, MAX_NAME * 2), None if (t := titles.get(i)) is None else clean(t)) for i in
                 ids[:MAX_DIFF_IDS]]
        sections.append((heading, shown, max(0, len(ids) - MAX_DIFF_IDS)))
    return sections


# --- Markdown ---------------------------------------------------------------------------------------------------

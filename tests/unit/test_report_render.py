"""The weekly report, rendered for people and compared with last week's: diff, Markdown, HTML (issue 12)."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser

import pytest

from pgwatch_cpa.report.diff import diff_reports, with_diff
from pgwatch_cpa.report.html import render_html
from pgwatch_cpa.report.markdown import render_markdown
from pgwatch_cpa.report.model import Finding, Report, ReportFormatError, Scalar, TargetReport, report_from_json
from pgwatch_cpa.report.view import MAX_FINDINGS, MAX_SQL, MAX_TEXT

WEEK = 7 * 86400
NOW = 1_796_029_200.0  # 2026-11-30 09:00 UTC
SCRIPT = "<script>alert(1)</script>"


def finding(kind: str, severity: str = "warning", obj: str | None = "public.t", score: float = 100.0,
            target: str = "main", database: str | None = "cpa", title: str = "", recommendation: str = "",
            evidence: dict[str, Scalar] | None = None, effect: str = "less work") -> Finding:
    return Finding(kind, severity, target, database, obj, title or f"{kind} on {obj}",  # type: ignore[arg-type]
                   evidence if evidence is not None else {"score": score}, score,
                   recommendation or f"VACUUM {obj};", effect)


def report(*findings: Finding, at: float = NOW, summary: dict[str, Scalar] | None = None) -> Report:
    targets: dict[str, TargetReport] = {}
    for f in findings:
        targets.setdefault(f.target, TargetReport(f.target, "postgres", dict(summary or {}))).findings.append(f)
    return Report(at, list(targets.values()) or [TargetReport("main", "postgres", dict(summary or {}))])


def realistic_reports() -> tuple[Report, list[Report]]:
    """This week's report (with its diff against last week) and the three weeks before it, oldest first.

    Four targets: main (critical), reporting (warning), cache (Redis, warning), archive (unreachable); findings of
    several kinds, with SQL and non-SQL recommendations. Shared with tests/e2e/test_report_html_browser.py.
    """
    def main_findings(slow_score: float, dead_score: float, resolved: bool) -> list[Finding]:
        found = [
            finding("slow_query", "critical", "queryid 4012345678901", slow_score,
                    title="Task list query averages 1.8 s",
                    evidence={"calls": 12_000, "mean_seconds": 1.8, "total_seconds": slow_score,
                              "shared_blks_read": 5_400_000},
                    recommendation="CREATE INDEX CONCURRENTLY tasks_org_due_idx\n"
                                   "    ON public.tasks (organization_id, due_date) WHERE NOT done;",
                    effect="the task list reads a few index pages instead of scanning 2 M rows"),
            finding("unused_index", "warning", "public.documents_created_idx", 81920.0,
                    title="Index documents_created_idx was never used",
                    evidence={"idx_scan": 0, "size_bytes": 81920},
                    recommendation="DROP INDEX CONCURRENTLY public.documents_created_idx;",
                    effect="reclaims 80 kB; one index less to maintain on every write"),
            finding("dead_tuples", "warning", "public.invoices", dead_score,
                    title="invoices has 31% dead rows",
                    evidence={"n_dead_tup": int(dead_score), "dead_ratio": 0.31, "last_autovacuum_age_seconds": 9e5},
                    recommendation="ALTER TABLE public.invoices SET (autovacuum_vacuum_scale_factor = 0.02);",
                    effect="autovacuum runs before the table bloats"),
        ]
        if resolved:
            found.append(finding("invalid_index", "critical", "public.idx_old", 1.0, title="Invalid index idx_old",
                                 recommendation="DROP INDEX CONCURRENTLY public.idx_old;", effect="no broken index"))
        return found

    def week(i: int, current: bool) -> Report:
        main = TargetReport("main", "postgres", {
            "total_queries": 1_000_000 + 80_000 * i, "slow_query_count": 1 + i, "cache_hit_ratio": 0.995 - 0.002 * i,
            "connections": 12 + 2 * i, "size_bytes": 12 * 1024**3 + i * 512 * 1024**2,
            "size_growth_bytes": 512 * 1024**2})
        main.findings = main_findings(21600.0 if current else 10000.0, 2.5e6 if current else 3e6, not current)
        if current:
            main.findings.append(finding(
                "setting", "info", "idle_in_transaction_session_timeout", 0.0, database=None,
                title="Sessions may stay idle in transaction forever",
                evidence={"idle_in_transaction_session_timeout": "0"},
                recommendation="Set idle_in_transaction_session_timeout = '5min' in postgresql.conf and reload",
                effect="a forgotten transaction no longer holds locks and blocks vacuum"))
        reporting = TargetReport("reporting", "postgres", {
            "total_queries": 200_000 + 5_000 * i, "slow_query_count": 0, "cache_hit_ratio": 0.93 - 0.01 * i,
            "connections": 5, "size_bytes": 3 * 1024**3})
        if current:
            reporting.findings.append(finding(
                "cache_hit_ratio_low", "warning", None, 0.06, target="reporting", database="cpa_reporting",
                title="Buffer cache-hit ratio is 90%", evidence={"cache_hit_ratio": 0.90, "blks_read": 9_000_000},
                recommendation="Raise shared_buffers to 4GB (needs a restart)",
                effect="most reads served from memory again"))
        cache = TargetReport("cache", "redis", {
            "connections": 40 + i, "used_memory_bytes": 900 * 1024**2 + i * 20 * 1024**2,
            "keyspace_hit_ratio": 0.97, "evicted_keys": 1_500 * i})
        cache.findings.append(finding(
            "redis_evictions", "warning", None, 1500.0 * i, target="cache", database=None,
            title="Redis evicts keys at maxmemory", evidence={"evicted_keys": 1_500 * i, "maxmemory_bytes": 1024**3},
            recommendation="CONFIG SET maxmemory-policy volatile-lru",
            effect="generation counters (no TTL) are never evicted"))
        archive = TargetReport("archive", "postgres", error="connection refused (127.0.0.1:5433)") if current else \
            TargetReport("archive", "postgres", {"total_queries": 1000, "connections": 1, "size_bytes": 10**9})
        return Report(NOW - (3 - i) * WEEK, [main, reporting, cache, archive])

    history = [week(i, False) for i in range(3)]
    return with_diff(week(3, True), history[-1]), history


# --- diff --------------------------------------------------------------------------------------------------------


def test_diff_new_resolved_worse_better_sorted() -> None:
    previous = report(finding("b_kind", score=100), finding("gone", score=5), finding("a_worse", score=100),
                      finding("better", score=100), finding("same", score=100), at=NOW - WEEK)
    current = report(finding("same", score=105), finding("better", score=80), finding("z_new"), finding("a_new"),
                     finding("a_worse", score=150), finding("b_kind", score=111))
    diff = diff_reports(current, previous)
    assert diff.previous_generated_at == NOW - WEEK
    assert diff.new == ["a_new:main:cpa:public.t", "z_new:main:cpa:public.t"]
    assert diff.resolved == ["gone:main:cpa:public.t"]
    assert diff.worse == ["a_worse:main:cpa:public.t", "b_kind:main:cpa:public.t"]
    assert diff.better == ["better:main:cpa:public.t"]
    # the same findings in another order give the same diff
    shuffled = report(*reversed(current.findings))
    assert diff_reports(shuffled, report(*reversed(previous.findings), at=NOW - WEEK)) == diff


@pytest.mark.parametrize(("before", "after", "expected"), [
    (100.0, 110.0, "same"),  # exactly 10%: not a meaningful change
    (100.0, 110.5, "worse"),
    (100.0, 89.5, "better"),
    (100.0, 90.0, "same"),
    (0.0, 1.0, "worse"),
    (0.0, 0.0, "same"),
    (math.nan, 1e9, "same"),  # NaN (null in JSON) says nothing about the change
    (1e9, math.nan, "same"),
    (math.inf, 1.0, "same"),
])
def test_diff_margin_and_nan(before: float, after: float, expected: str) -> None:
    diff = diff_reports(report(finding("k", score=after)), report(finding("k", score=before)))
    assert (diff.new, diff.resolved) == ([], [])
    got = "worse" if diff.worse else "better" if diff.better else "same"
    assert got == expected
    assert not (diff.worse and diff.better)


def test_diff_custom_threshold_and_duplicate_ids() -> None:
    assert diff_reports(report(finding("k", score=105)), report(finding("k", score=100)), threshold=0.01).worse
    # one id twice in a report: its larger finite score counts, and it is listed once
    dup = report(finding("k", score=math.nan), finding("k", score=300))
    assert diff_reports(dup, report(finding("k", score=100))).worse == ["k:main:cpa:public.t"]


def test_with_diff_returns_a_copy() -> None:
    current, previous = report(finding("new")), report(finding("old"), at=NOW - WEEK)
    diffed = with_diff(current, previous)
    assert current.diff is None and diffed.diff == diff_reports(current, previous)
    assert diffed.targets == current.targets and diffed.generated_at == current.generated_at
    doc = diffed.to_dict()["diff"]
    assert doc["new"] == ["new:main:cpa:public.t"] and doc["previous_generated_at"] == "2026-11-23T09:00:00Z"


# --- Markdown ----------------------------------------------------------------------------------------------------


def test_markdown_sections() -> None:
    current, _ = realistic_reports()
    text = render_markdown(current)
    assert text.startswith("# Performance report, 2026-11-30 09:00 UTC\n")
    for heading in ("## main (postgres): critical", "## reporting (postgres): warning", "## cache (redis): warning",
                    "## archive (postgres): unreachable", "### Summary", "### Findings",
                    "## Changes since 2026-11-23 09:00 UTC", "### New (2)", "### Resolved (1)", "### Worse (2)",
                    "### Better (1)"):
        assert f"\n{heading}\n" in f"\n{text}", heading
    assert "Status: **unreachable**, connection refused (127.0.0.1:5433)" in text
    for row in ("| Total queries | 1,240,000 |", "| Slow queries | 4 |", "| Cache-hit ratio | 98.90% |",
                "| Connections | 18 |", "| Size | 13.5 GiB |", "| Size growth | +512.0 MiB |"):
        assert row in text, row
    main = text[text.index("## main"):text.index("## reporting")]
    assert main.index("#### Critical (1)") < main.index("#### Warning (2)") < main.index("#### Info (1)")
    assert "```sql\nCREATE INDEX CONCURRENTLY tasks\\_org\\_due\\_idx" not in text  # SQL is not escaped in code
    assert "```sql\nCREATE INDEX CONCURRENTLY tasks_org_due_idx\n    ON public.tasks" in text
    assert "- size\\_bytes: 80.0 KiB (81,920 B)" in text and "- mean\\_seconds: 1.8 s" in text
    assert "Recommendation: Raise shared\\_buffers to 4GB (needs a restart)" in text  # not SQL: inline
    assert "Recommendation: Set idle\\_in\\_transaction\\_session\\_timeout = '5min'" in text  # prose, not SQL
    assert "Expected effect: reclaims 80 kB; one index less to maintain on every write" in text
    assert "- slow\\_query:main:cpa:queryid 4012345678901: Task list query averages 1.8 s" in text  # worse
    assert "- invalid\\_index:main:cpa:public.idx\\_old\n" in text  # resolved: no title this week
    assert "Changes since" not in render_markdown(report(finding("k")))


def test_units_follow_the_key_names() -> None:
    summary: dict[str, Scalar] = {"used_memory": 3 * 1024**3, "maxmemory": 4 * 1024**3, "memory_utilisation": 0.75,
                                  "uptime_seconds": 90_000, "wal_bytes": 512, "maxmemory_policy": "noeviction",
                                  "hit_ratio": None, "replica": True, "load": 0.123456}
    text = render_markdown(report(summary=summary))
    for row in ("| Used memory | 3.0 GiB |", "| Maxmemory | 4.0 GiB |", "| Memory utilisation | 75.00% |",
                "| Uptime | 25 h |", "| Wal | 512 B |", "| Maxmemory policy | noeviction |", "| Hit ratio | n/a |",
                "| Replica | yes |", "| Load | 0.123 |"):
        assert row in text, row


def _cells(row: str) -> list[str]:
    """A GFM table row split on its unescaped pipes."""
    return re.split(r"(?<!\\)\|", row.strip())[1:-1]


def test_markdown_escapes_hostile_names() -> None:
    name = "evil|name`x` <b>bold</b> *star* [link](http://x) ![i](y) # &amp; $math$"
    hostile = TargetReport(name, "postgres", {"total_queries": 5, name: f"v|{SCRIPT}"}, [
        finding("k", obj=name, target=name, title=f"{name}\n# injected heading",
                evidence={name: "a|b"}, recommendation="DROP TABLE x;\n```\n<script>\n````")])
    text = render_markdown(Report(NOW, [hostile]))
    outside_code = text[:text.index("`````sql")]
    for raw in ("<b>", "<script>", "`x`", "*star*", "\n# injected"):
        assert raw not in outside_code, raw
    assert ("evil\\|name\\`x\\` \\<b\\>bold\\</b\\> \\*star\\* \\[link\\](http://x) !\\[i\\](y) "
            "\\# \\&amp; \\$math\\$") in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows and all(len(_cells(r)) == 2 for r in rows), rows
    # the SQL block cannot be closed by the backticks inside it: its fence is longer than any run in it
    assert "\n`````sql\nDROP TABLE x;\n```\n<script>\n````\n`````\n" in text


# --- HTML --------------------------------------------------------------------------------------------------------


class Page(HTMLParser):
    """Tags, attributes, text and heading texts of a page; checks that non-void elements are balanced."""

    VOID = {"meta", "br", "hr", "img", "input", "link", "wbr", "source", "area", "base", "col", "embed", "track"}

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []
        self.text: list[str] = []
        self.headings: list[str] = []
        self.stack: list[str] = []
        self.errors: list[str] = []
        self._heading: list[str] | None = None
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed {self.stack}")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(tag, k, v) for k, v in attrs]
        if tag not in self.VOID:
            self.stack.append(tag)
        if re.fullmatch("h[1-6]", tag):
            self._heading = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(tag, k, v) for k, v in attrs]

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()
        if re.fullmatch("h[1-6]", tag) and self._heading is not None:
            self.headings.append(" ".join("".join(self._heading).split()))
            self._heading = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._heading is not None:
            self._heading.append(data)


def assert_self_contained(page: str) -> Page:
    parsed = Page(page)
    assert not parsed.errors, parsed.errors
    assert "script" not in parsed.tags and "iframe" not in parsed.tags and "object" not in parsed.tags
    for tag, attr, value in parsed.attrs:
        assert not attr.startswith("on"), (tag, attr)
        if attr in {"src", "href", "xlink:href", "action", "srcset", "poster", "data"}:
            assert (value or "").startswith("#"), (tag, attr, value)
        assert "url(" not in (value or ""), (tag, attr)
    style = page[page.index("<style>"):page.index("</style>")]
    assert "url(" not in style and "@import" not in style and "@font-face" not in style
    return parsed


def test_html_sections_and_no_external_reference() -> None:
    current, history = realistic_reports()
    page = render_html(current, history)
    assert page.startswith("<!DOCTYPE html>") and "http://" not in page and "https://" not in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    parsed = assert_self_contained(page)
    assert parsed.headings[0] == "Performance report, 2026-11-30 09:00 UTC"
    for heading in ("main (postgres) critical", "archive (postgres) unreachable", "Summary", "Trends", "Findings",
                    "Critical (1)", "Warning (2)", "Info (1)", "Changes since 2026-11-23 09:00 UTC", "New (2)",
                    "Resolved (1)", "Worse (2)", "Better (1)", *(f.title for f in current.findings)):
        assert heading in parsed.headings, heading
    text = "".join(parsed.text)
    assert "connection refused (127.0.0.1:5433)" in text and "98.90%" in text and "+512.0 MiB" in text
    assert '<pre><code class="language-sql">DROP INDEX CONCURRENTLY public.documents_created_idx;</code></pre>' in page
    assert "<p>Recommendation: CONFIG SET maxmemory-policy volatile-lru</p>" in page


def test_html_escapes_script_in_names_and_evidence() -> None:
    hostile = TargetReport(SCRIPT, "postgres", {"total_queries": 1, SCRIPT: SCRIPT}, [
        finding("k", obj=SCRIPT, target=SCRIPT, database=SCRIPT, title=SCRIPT, effect=SCRIPT,
                evidence={SCRIPT: SCRIPT, "x": '"><img src=x onerror=alert(1)>'},
                recommendation=f"DROP TABLE {SCRIPT};")], error=None)
    down = TargetReport(f'"{SCRIPT}', "redis", error=SCRIPT)
    page = render_html(with_diff(Report(NOW, [hostile, down]), report(at=NOW - WEEK)))
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    parsed = assert_self_contained(page)
    assert parsed.tags.count("img") == 0
    text = "".join(parsed.text)
    assert text.count(SCRIPT) >= 10  # shown as text: names, evidence, title, error, diff id...
    assert '"><img src=x onerror=alert(1)>' in text


def _polylines(page: str) -> list[int]:
    return [len(m.split()) for m in re.findall(r'<polyline points="([^"]*)"', page)]


def test_html_charts_need_two_points() -> None:
    current, history = realistic_reports()
    assert "<svg" not in render_html(current) and "Trends" not in render_html(current)
    with_history = render_html(current, history)
    # main: 6 summary numbers; reporting: 5; cache: 4; archive is unreachable this week but has 3 earlier points
    assert _polylines(with_history) == [4] * 6 + [4] * 5 + [4] * 4 + [3] * 3
    assert with_history.count("<svg") == 18
    # one earlier report is enough for two points; the report itself in its history is not a second point
    assert _polylines(render_html(current, history[-1:])) == [2] * 15
    assert "<svg" not in render_html(current, [current])
    # a metric only one report has is not charted; booleans and strings are not numbers
    odd = Report(NOW - WEEK, [TargetReport("main", "postgres", {"total_queries": 5, "flag": True, "s": "x"})])
    page = render_html(Report(NOW, [TargetReport("main", "postgres", {"total_queries": 9, "flag": False,
                                                                       "s": "y", "only_now": 1})]), [odd])
    assert _polylines(page) == [2] and "Total queries" in page[page.index("<svg"):]


def test_round_trip_through_json_keeps_what_renders() -> None:
    current, history = realistic_reports()
    current.diff = None  # see test_round_trip_keeps_the_diff
    current.targets[0].summary["nan"] = math.nan
    current.targets[0].findings[0] = finding("nan_score", score=math.nan, evidence={"x": math.nan, "y": None})
    again = report_from_json(current.to_json())
    history_again = [report_from_json(h.to_json()) for h in history]
    assert render_markdown(again) == render_markdown(current)
    assert render_html(again, history_again) == render_html(current, history)
    assert "| Nan | n/a |" in render_markdown(again) and "- x: n/a" in render_markdown(again)


def test_round_trip_keeps_the_diff() -> None:
    current, _ = realistic_reports()
    assert render_markdown(report_from_json(current.to_json())) == render_markdown(current)


# --- hostile data ------------------------------------------------------------------------------------------------


def test_hostile_text_stays_valid_utf8_and_bounded() -> None:
    weird = "a\x00b\x07c\x1b[31md\ud800e\udfff\u202egnp.exe\x85\u2028f\r\ng\t" + "x" * 10_000_000
    big = TargetReport(weird, "postgres", {weird: weird, "size_bytes": 2**62}, [
        finding("k", obj=weird, target=weird, title=weird, evidence={weird: weird}, recommendation=weird,
                effect=weird) for _ in range(3)], error=None)
    hostile_report = with_diff(Report(NOW, [big]), report(finding("gone", obj=weird), at=NOW - WEEK))
    for out in (render_markdown(hostile_report), render_html(hostile_report, [hostile_report])):
        encoded = out.encode("utf-8")  # no lone surrogate survives
        assert len(encoded) < 200_000
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e\ud800-\udfff]", out)
        assert "\u2026" in out and "\ufffd" in out
        assert "x" * (MAX_SQL + 1) not in out and f"{'x' * (MAX_TEXT - 1)}\u2026" in out


def test_many_findings_are_cut_with_a_note() -> None:
    many = report(*(finding(f"k{i:04}", score=float(i)) for i in range(MAX_FINDINGS + 50)))
    text, page = render_markdown(many), render_html(many)
    assert "50 more findings not shown" in text and "50 more findings not shown" in page
    assert text.count("\n##### ") == MAX_FINDINGS
    assert "k0149 on public.t" in text and "k0000 on public.t" not in text  # the largest scores are kept


def test_unknown_severity_from_json_is_refused_with_its_name() -> None:
    doc = report(finding("k")).to_json().replace(b'"severity": "warning"', b'"severity": "fatal"')
    with pytest.raises(ReportFormatError, match="unknown severity 'fatal'"):
        report_from_json(doc, "last-week.json")

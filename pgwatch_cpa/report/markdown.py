"""The report as Markdown (GitHub-flavoured), from the shared view in ``view``."""

from __future__ import annotations

import re

from pgwatch_cpa.report.model import Finding, Report
from pgwatch_cpa.report.view import (
    TargetView,
    clean,
    diff_sections,
    evidence_items,
    finding_meta,
    overview,
    recommendation,
    target_views,
    when,
)

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&$#])")  # ( ) and ! mean something only after ] or before [


def md(text: str) -> str:
    """Cleaned text with the characters that Markdown (CommonMark and GFM tables) would interpret escaped."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def fence(text: str, info: str = "") -> str:
    """A fenced code block that ``text`` cannot close: the fence is longer than any run of backticks in it."""
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{info}\n{text}\n{ticks}"


def _finding_md(finding: Finding) -> list[str]:
    """The finding's lines, every block preceded by a blank line."""
    out = ["", f"##### {md(clean(finding.title))}", "",
           " \u00b7 ".join(f"{name}: {md(value)}" for name, value in finding_meta(finding))]
    evidence, hidden = evidence_items(finding)
    if evidence:
        out += ["", "Evidence:", "", *(f"- {md(k)}: {md(v)}" for k, v in evidence)]
        out += [f"- \u2026 {hidden} more"] if hidden else []
    text, sql = recommendation(finding)
    out += ["", "Recommendation:", "", fence(text, "sql")] if sql else ["", f"Recommendation: {md(text)}"]
    return [*out, "", f"Expected effect: {md(clean(finding.expected_effect))}"]


def _target_md(view: TargetView) -> list[str]:
    out = ["", f"## {md(view.name)} ({md(view.kind)}): {view.status}", "",
           f"Status: **{view.status}**" + ("" if view.error is None else f", {md(view.error)}"), "", "### Summary", ""]
    if view.summary:
        out += ["| Metric | Value |", "|---|---:|", *(f"| {md(k)} | {md(v)} |" for k, v in view.summary)]
        out += [f"| \u2026 | {view.summary_hidden} more |"] if view.summary_hidden else []
    else:
        out.append("No summary.")
    out += ["", "### Findings"] + ([] if view.groups else ["", "No findings."])
    for severity, findings in view.groups:
        out += ["", f"#### {md(severity.capitalize())} ({len(findings)})"]
        for finding in findings:
            out += _finding_md(finding)
    if view.findings_hidden:
        out += ["", f"_{view.findings_hidden} more findings not shown (see the JSON report)._"]
    return out


def render_markdown(report: Report) -> str:
    out = [f"# Performance report, {when(report.generated_at)}", "", md(overview(report))]
    views, targets_hidden = target_views(report)
    for view in views:
        out += _target_md(view)
    if targets_hidden:
        out += ["", f"_{targets_hidden} more targets not shown (see the JSON report)._"]
    if report.diff is not None:
        out += ["", f"## Changes since {when(report.diff.previous_generated_at)}"]
        for heading, ids, hidden in diff_sections(report):
            out += ["", f"### {heading} ({len(ids) + hidden})", ""]
            out += [f"- {md(i)}" + ("" if t is None else f": {md(t)}") for i, t in ids] or ["None."]
            out += [f"- \u2026 {hidden} more"] if hidden else []
    return "\n".join(out) + "\n"

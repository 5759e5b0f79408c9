"""The report as one self-contained HTML page: inline CSS and SVG, no script, nothing fetched, readable on a phone.

Same sections as the Markdown (``markdown.py`` holds the shared, cleaned view of the report), plus line charts of
each target's summary metrics over ``history`` and this report. Every value taken from the report is cleaned, then
``html.escape``d; a Content-Security-Policy forbids scripts and every fetch should a browser ever find one.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from pgwatch_cpa.report.charts import target_charts, timeline
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

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

STYLE = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#f6f8fa;--critical:#b42318;--warning:#b54708;
--ok:#067647;--info:#175cd3;--unreachable:#475467}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:60rem;margin:0 auto;padding:1rem}
h1,h2,h3,h4,h5,p,li,td,th,figcaption{overflow-wrap:anywhere}
h1{font-size:1.5rem;margin:.25rem 0}time{white-space:nowrap}
h2{font-size:1.25rem;margin:.5rem 0}
h3{font-size:1.05rem;margin:1rem 0 .4rem;border-bottom:1px solid var(--line)}
h4{font-size:1rem;margin:.75rem 0 .25rem}
h5{font-size:.95rem;margin:.5rem 0 .25rem}
section{background:#fff;border:1px solid var(--line);border-left:6px solid var(--unreachable);border-radius:6px;
padding:.5rem 1rem 1rem;margin:1rem 0}
section.critical{border-left-color:var(--critical)}section.warning{border-left-color:var(--warning)}
section.ok{border-left-color:var(--ok)}section.diff{border-left-color:var(--info)}
.badge{display:inline-block;padding:0 .55em;border-radius:1em;font-size:.8rem;font-weight:600;color:#fff;
background:var(--unreachable);vertical-align:middle}
.badge.critical{background:var(--critical)}.badge.warning{background:var(--warning)}.badge.ok{background:var(--ok)}
.badge.info{background:var(--info)}
.kind,.meta,.more,figcaption{color:var(--muted);font-size:.85rem}
.error{color:var(--critical)}
table{border-collapse:collapse;width:100%;max-width:32rem}
th,td{border-bottom:1px solid var(--line);padding:.2rem .5rem;text-align:left;vertical-align:top}
td.v,th.v{text-align:right;font-variant-numeric:tabular-nums}
article{border-top:1px solid var(--line);padding:.25rem 0 .5rem}
article.critical h5{color:var(--critical)}article.warning h5{color:var(--warning)}
pre{background:var(--bg);border:1px solid var(--line);border-radius:4px;padding:.5rem;margin:.25rem 0;
white-space:pre-wrap;overflow-wrap:anywhere;font-size:.85rem}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(15rem,1fr));gap:.75rem}
figure{margin:0}svg{width:100%;height:auto;display:block;background:var(--bg);border-radius:4px}
svg text{font-size:12px;fill:var(--fg)}svg .cv{font-weight:600}svg .cd{fill:var(--muted);font-size:11px}
svg .grid{stroke:var(--line);stroke-width:1}svg .line{fill:none;stroke:var(--info);stroke-width:2}
svg .dot{fill:var(--info)}
@media (max-width:40rem){body{font-size:14px}main{padding:.4rem}section{padding:.4rem .6rem .6rem}}
"""


def _e(text: str) -> str:
    return escape(text, quote=True)


def _table(rows: Sequence[tuple[str, str]], hidden: int, head: tuple[str, str]) -> str:
    body = "".join(f'<tr><td>{_e(k)}</td><td class="v">{_e(v)}</td></tr>' for k, v in rows)
    more = f'<tr><td class="more" colspan="2">\u2026 {hidden} more</td></tr>' if hidden else ""
    return (f'<table><thead><tr><th>{head[0]}</th><th class="v">{head[1]}</th></tr></thead>'
            f"<tbody>{body}{more}</tbody></table>")


def _finding(finding: Finding, severity: str) -> str:
    meta = " \u00b7 ".join(f"{name}: <code>{_e(value)}</code>" for name, value in finding_meta(finding))
    evidence, hidden = evidence_items(finding)
    text, sql = recommendation(finding)
    rec = (f'<p>Recommendation:</p><pre><code class="language-sql">{_e(text)}</code></pre>' if sql
           else f"<p>Recommendation: {_e(text)}</p>")
    return (f'<article class="finding {_e(severity)}"><h5>{_e(clean(finding.title))}</h5>'
            f'<p class="meta">{meta}</p>'
            + (_table(evidence, hidden, ("Evidence", "Value")) if evidence else "")
            + rec + f"<p>Expected effect: {_e(clean(finding.expected_effect))}</p></article>")


def _target(view: TargetView, index: int, charts: list[str]) -> str:
    status = _e(view.status)
    out = [f'<section class="target {status}" id="target-{index}">',
           f'<h2>{_e(view.name)} <span class="kind">({_e(view.kind)})</span> '
           f'<span class="badge {status}">{status}</span></h2>',
           f'<p class="status">Status: <strong>{status}</strong>'
           + ("" if view.error is None else f': <span class="error">{_e(view.error)}</span>') + "</p>",
           "<h3>Summary</h3>",
           _table(view.summary, view.summary_hidden, ("Metric", "Value")) if view.summary else "<p>No summary.</p>"]
    if charts:
        out += ["<h3>Trends</h3>", f'<div class="charts">{"".join(charts)}</div>']
    out.append("<h3>Findings</h3>")
    if not view.groups:
        out.append("<p>No findings.</p>")
    for severity, findings in view.groups:
        out.append(f"<h4>{_e(severity.capitalize())} ({len(findings)})</h4>")
        out += [_finding(f, severity) for f in findings]
    if view.findings_hidden:
        out.append(f'<p class="more">{view.findings_hidden} more findings not shown (see the JSON report).</p>')
    out.append("</section>")
    return "\n".join(out)


def _diff(report: Report) -> str:
    if report.diff is None:
        return ""
    out = ['<section class="diff" id="changes">',
           f"<h2>Changes since {_e(when(report.diff.previous_generated_at))}</h2>"]
    for heading, ids, hidden in diff_sections(report):
        out.append(f"<h3>{heading} ({len(ids) + hidden})</h3>")
        items = "".join(f"<li><code>{_e(i)}</code>" + ("" if t is None else f": {_e(t)}") + "</li>" for i, t in ids)
        more = f'<li class="more">\u2026 {hidden} more</li>' if hidden else ""
        out.append(f"<ul>{items}{more}</ul>" if items else "<p>None.</p>")
    out.append("</section>")
    return "\n".join(out)


def render_html(report: Report, history: Sequence[Report] = ()) -> str:
    """The page; ``history`` (earlier reports, any order) feeds the charts, which need two points at least."""
    title = f"Performance report, {when(report.generated_at)}"
    heading = f'Performance report, <time datetime="{_e(when(report.generated_at, "%Y-%m-%dT%H:%M:%SZ"))}">' \
              f"{_e(when(report.generated_at))}</time>"
    reports = timeline(report, history)
    views, targets_hidden = target_views(report)
    sections = [_target(v, i, target_charts(reports, v.target.name)) for i, v in enumerate(views, 1)]
    if targets_hidden:
        sections.append(f'<p class="more">{targets_hidden} more targets not shown (see the JSON report).</p>')
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{_e(title)}</title>",
        f"<style>{STYLE}</style></head>",
        "<body><main>",
        f'<header><h1>{heading}</h1><p class="overview">{_e(overview(report))}</p></header>',
        *sections,
        _diff(report),
        '<footer class="meta">Generated by pgwatch-cpa from the report\'s JSON, which is the source of truth.</footer>',
        "</main></body></html>",
        "",
    ])

"""Small inline-SVG line charts of a target's summary metrics over the weeks (no script, no external asset)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from pgwatch_cpa.report.model import Report
from pgwatch_cpa.report.view import PREFERRED_SUMMARY, format_value, is_number, label, when

MAX_POINTS = 104  # two years of weekly reports
MAX_CHARTS = 8  # per target
WIDTH, HEIGHT = 320, 140
LEFT, RIGHT, TOP, BOTTOM = 10.0, 310.0, 30.0, 112.0  # the plot area inside the view box


def timeline(current: Report, history: Sequence[Report]) -> list[Report]:
    """``history`` and ``current`` in time order, one report per timestamp (``current`` wins), the newest kept."""
    by_time: dict[float, Report] = {}
    for report in [*history, current]:
        if is_number(report.generated_at):
            by_time[float(report.generated_at)] = report
    return [by_time[ts] for ts in sorted(by_time)][-MAX_POINTS:]


def series(reports: Sequence[Report], target: str) -> dict[str, list[tuple[float, float]]]:
    """Summary key -> (time, value) for every report in which ``target`` has a finite number under that key."""
    found: dict[str, list[tuple[float, float]]] = {}
    for report in reports:
        summary = next((t.summary for t in report.targets if t.name == target), None)
        for key, value in (summary or {}).items():
            if is_number(value):
                found.setdefault(str(key), []).append((report.generated_at, float(value)))
    return found


def _order(key: str) -> tuple[int, int, str]:
    known = PREFERRED_SUMMARY.index(key) if key in PREFERRED_SUMMARY else len(PREFERRED_SUMMARY)
    return (known, 0 if "growth" in key else 1, key)


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def chart(key: str, points: Sequence[tuple[float, float]]) -> str:
    """One metric as an SVG figure; ``points`` are (time, value), in time order, at least two."""
    times, values = [t for t, _ in points], [v for _, v in points]
    low, high = min(values), max(values)
    half_spread = high / 2 - low / 2  # halves: the spread of finite floats cannot overflow
    span_t = times[-1] - times[0]

    def x(i: int) -> float:
        share = (times[i] - times[0]) / span_t if span_t > 0 else i / (len(times) - 1)
        return LEFT + share * (RIGHT - LEFT)

    def y(v: float) -> float:
        share = (v / 2 - low / 2) / half_spread if half_spread > 0 else 0.5
        return BOTTOM - share * (BOTTOM - TOP)

    xy = [(_fmt(x(i)), _fmt(y(v))) for i, v in enumerate(values)]
    name, first, last = escape(label(key)), points[0], points[-1]
    last_text = escape(format_value(key, last[1]))
    caption = (f"{name}: {escape(format_value(key, first[1]))} on {escape(when(first[0], '%Y-%m-%d'))}, "
               f"{last_text} on {escape(when(last[0], '%Y-%m-%d'))}; min {escape(format_value(key, low))}, "
               f"max {escape(format_value(key, high))}")
    dots = "".join(f'<circle cx="{cx}" cy="{cy}" r="2.5"/>' for cx, cy in xy)
    return (
        f'<figure class="chart"><svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{caption}">'
        f"<title>{caption}</title>"
        f'<text x="{_fmt(LEFT)}" y="18" class="ct">{name}</text>'
        f'<text x="{_fmt(RIGHT)}" y="18" text-anchor="end" class="cv">{last_text}</text>'
        f'<line x1="{_fmt(LEFT)}" y1="{_fmt(TOP)}" x2="{_fmt(RIGHT)}" y2="{_fmt(TOP)}" class="grid"/>'
        f'<line x1="{_fmt(LEFT)}" y1="{_fmt(BOTTOM)}" x2="{_fmt(RIGHT)}" y2="{_fmt(BOTTOM)}" class="grid"/>'
        f'<polyline points="{" ".join(f"{cx},{cy}" for cx, cy in xy)}" class="line"/>'
        f'<g class="dot">{dots}</g>'
        f'<text x="{_fmt(LEFT)}" y="{HEIGHT - 8}" class="cd">{escape(when(first[0], "%Y-%m-%d"))}</text>'
        f'<text x="{_fmt(RIGHT)}" y="{HEIGHT - 8}" text-anchor="end" class="cd">'
        f'{escape(when(last[0], "%Y-%m-%d"))}</text>'
        f"</svg><figcaption>min {escape(format_value(key, low))} \u00b7 max {escape(format_value(key, high))}"
        f"</figcaption></figure>"
    )


def target_charts(reports: Sequence[Report], target: str) -> list[str]:
    """The charts of ``target``'s numeric summary metrics that have at least two points, well-known metrics first."""
    found = series(reports, target)
    keys = sorted((k for k, pts in found.items() if len(pts) >= 2), key=_order)[:MAX_CHARTS]
    return [chart(k, found[k]) for k in keys]

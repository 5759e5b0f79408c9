"""This week's report against last week's: which findings are new, resolved, worse or better.

Findings are matched by their stable ``id``; a finding is worse (better) when its score rose (fell) by more than
``threshold`` relative to last week's score. A score that is NaN or infinite on either side (JSON stores it as
null) says nothing about the change, so such a finding is neither worse nor better.
"""

from __future__ import annotations

import dataclasses
import math

from pgwatch_cpa.report.model import Diff, Report

DEFAULT_THRESHOLD = 0.10  # a score must move by more than 10% of last week's value to count


def _scores(report: Report) -> dict[str, float]:
    """id -> score; should a report hold one id twice, the larger finite score speaks for it."""
    scores: dict[str, float] = {}
    for finding in report.findings:
        score = finding.score
        known = scores.get(finding.id)
        if known is None or (math.isfinite(score) and (not math.isfinite(known) or score > known)):
            scores[finding.id] = score
    return scores


def _change(current: float, previous: float, threshold: float) -> int:
    """+1 worse, -1 better, 0 no meaningful change (or not comparable)."""
    if not (math.isfinite(current) and math.isfinite(previous)):
        return 0
    delta = current - previous
    if previous == 0:
        return (delta > 0) - (delta < 0)
    relative = delta / abs(previous)
    return 1 if relative > threshold else -1 if relative < -threshold else 0


def diff_reports(current: Report, previous: Report, *, threshold: float = DEFAULT_THRESHOLD) -> Diff:
    """Compare ``current`` with ``previous``; every list of ids is sorted."""
    now, before = _scores(current), _scores(previous)
    changes = {fid: _change(now[fid], before[fid], threshold) for fid in now.keys() & before.keys()}
    return Diff(
        previous_generated_at=previous.generated_at,
        new=sorted(now.keys() - before.keys()),
        resolved=sorted(before.keys() - now.keys()),
        worse=sorted(fid for fid, change in changes.items() if change > 0),
        better=sorted(fid for fid, change in changes.items() if change < 0),
    )


def with_diff(current: Report, previous: Report, *, threshold: float = DEFAULT_THRESHOLD) -> Report:
    """A copy of ``current`` carrying its diff against ``previous`` (``current`` itself is left unchanged)."""
    return dataclasses.replace(current, diff=diff_reports(current, previous, threshold=threshold))

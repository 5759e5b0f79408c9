"""Parsing of human durations such as ``15s``, ``5m``, ``1h30m`` and ``250ms``."""

from __future__ import annotations

import re

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: object) -> float:
    """Seconds from a duration string or a plain non-negative number of seconds.

    Raises ValueError with a message meant for the user.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 15s, 5m or 1h30m")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("duration must not be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 15s, 5m or 1h30m")
    text = value.strip()
    if not text or not _matches_all(text):
        raise ValueError(f"invalid duration {value!r}: expected e.g. 500ms, 15s, 5m, 1h30m")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text))


def _matches_all(text: str) -> bool:
    return "".join(m.group(0) for m in _PART.finditer(text)) == text


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"

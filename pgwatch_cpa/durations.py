"""The config files' durations: ``15s``, ``5m``, ``1h30m``, ``250ms``, ``1.5s`` or a number of seconds.

Not Prometheus's grammar (integers only, ``y``/``w`` units): rule files use ``alerts.rules.parse_prometheus_duration``.
"""

from __future__ import annotations

import re

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_config_duration(value: object) -> float:
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


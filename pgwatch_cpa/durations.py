"""The config files' durations: ``15s``, ``5m``, ``1h30m``, ``250ms``, ``1.5s`` or a number of seconds.

Not Prometheus's grammar (integers only, ``y``/``w`` units): rule files use ``alerts.rules.parse_prometheus_duration``.
Every duration is finite and non-negative here; each setting adds its own bounds (``config.base.between``).
"""

from __future__ import annotations

import math
import re

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_MAX_TEXT = 64  # no legitimate duration is longer; a longer one is refused before any parsing
_EXPECTED = "expected a duration such as 15s, 5m or 1h30m"


def parse_config_duration(value: object) -> float:
    """Seconds from a duration string or a plain non-negative number of seconds.

    NaN, infinities, negative numbers and numbers too large for a float are refused. Raises ValueError with a
    message meant for the user.
    """
    if isinstance(value, bool):
        raise ValueError(_EXPECTED)
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError("duration is too large") from None
        return _checked(seconds)
    if not isinstance(value, str):
        raise ValueError(_EXPECTED)
    text = value.strip()
    if len(text) > _MAX_TEXT:
        raise ValueError(f"invalid duration {text[:_MAX_TEXT]!r}...: {_EXPECTED}")
    if not text or not _matches_all(text):
        raise ValueError(f"invalid duration {value!r}: expected e.g. 500ms, 15s, 5m, 1h30m")
    return _checked(sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text)))


def _checked(seconds: float) -> float:
    if math.isnan(seconds):
        raise ValueError("duration must be a number, not NaN")
    if math.isinf(seconds):
        raise ValueError("duration must be finite")
    if seconds < 0:
        raise ValueError("duration must not be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest config-grammar spelling of ``seconds`` (``1h``, ``1m30s``, ``500ms``, ``0.1ms``)."""
    if not math.isfinite(seconds):
        return str(seconds)
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds >= 1000 * 86400:
        return f"{seconds:g}s"
    out, rest = "", round(seconds, 3)
    for unit in ("d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if rest >= size:
            count = math.floor(rest / size)
            out, rest = out + f"{count}{unit}", rest - count * size
    rest = round(rest, 3)
    return out + (f"{rest:g}s" if rest else "")


def _matches_all(text: str) -> bool:
    return "".join(m.group(0) for m in _PART.finditer(text)) == text

"""The `report:` section of the config: when the daemon builds the performance report, where it keeps it, who
gets it. Off by default: without a schedule the daemon builds a report only when ``/report`` is asked for.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from pgwatch_cpa.config.base import StrictModel

# The aliases croniter knows, besides the five fields (minute hour day-of-month month day-of-week).
CRON_ALIASES = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
# Sizes as postgresql.conf writes them: kB, MB, GB, TB are 1024-based, like KiB, MiB, GiB, TiB.
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(value: Any) -> int:
    """Bytes from ``16GiB``, ``16GB`` (also 1024-based, as in postgresql.conf), ``512MB`` or a plain integer."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as 16GiB or a number of bytes")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError(f"invalid size {value!r}: use a number of bytes or a unit (kB, MB, GB, TB or KiB, "
                             "MiB, GiB, TiB; all 1024-based)")
        size = int(float(match[1]) * _UNITS[(match[2] or "b")[0].lower()])
    if size <= 0:
        raise ValueError("must be a positive size")
    return size


Size = Annotated[int, BeforeValidator(parse_size)]


def check_schedule(expr: str) -> str:
    """A cron expression of five fields (or an alias like @weekly) that croniter accepts."""
    from croniter import croniter

    text = " ".join(expr.split())
    if text.lower() not in CRON_ALIASES and len(text.split(" ")) != 5:
        raise ValueError(f"{expr!r} is not a cron expression of five fields (minute hour day-of-month month "
                         "day-of-week), e.g. '0 9 * * 1' for Mondays at 09:00")
    try:
        croniter(text)
    except (ValueError, KeyError) as exc:  # croniter's errors derive from ValueError
        raise ValueError(f"{expr!r} is not a valid cron expression: {exc}") from None
    return text


class ReportSettings(StrictModel):
    schedule: str | None = None  # cron syntax; None: no scheduled report
    timezone: str = "UTC"  # IANA name the schedule is read in
    directory: Path | None = None  # scheduled reports kept as report-<UTC time>.json
    keep: Annotated[int, Field(ge=1, le=1000)] = 12  # reports kept in `directory` (and as the HTML's history)
    receivers: list[str] = Field(default_factory=list)  # names of webhook receivers of the alerting section
    host_memory: Size | None = None  # the database host's memory, for the setting advice

    @field_validator("schedule")
    @classmethod
    def _check_schedule(cls, value: str | None) -> str | None:
        return value if value is None else check_schedule(value)

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}: use an IANA name such as UTC or Europe/Berlin") from None
        return value

    @field_validator("directory")
    @classmethod
    def _check_directory(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        # Like the rule files: a relative path is relative to the config file.
        base = (info.context or {}).get("base_dir") or Path.cwd()
        path = value if value.is_absolute() else Path(base) / value
        if not path.is_dir():
            raise ValueError(f"{path} is not an existing directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"{path} is not writable")
        return path

    @model_validator(mode="after")
    def _needs_schedule(self) -> ReportSettings:
        # Both only act on scheduled reports: without a schedule they would be silently ignored.
        if self.schedule is None and self.receivers:
            raise ValueError("receivers: reports are sent on a schedule only: set report.schedule")
        if self.schedule is None and self.directory is not None:
            raise ValueError("directory: only scheduled reports are saved: set report.schedule")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def receiver_problems(raw: dict[str, Any]) -> list[str]:
    """``report.receivers`` must name webhook receivers of ``alerting.receivers``; one problem per bad name, with
    its path. Checked on the raw config, like duplicate target names, so every bad entry is listed at once."""
    report, alerting = raw.get("report"), raw.get("alerting")
    names = report.get("receivers") if isinstance(report, dict) else None
    if not isinstance(names, list):
        return []
    declared = alerting.get("receivers") if isinstance(alerting, dict) else None
    # a malformed alerting.receivers (not a list, a name that is not a string) is pydantic's to report
    types = {r["name"]: r.get("type") for r in (declared if isinstance(declared, list) else [])
             if isinstance(r, dict) and isinstance(r.get("name"), str)}
    webhooks = sorted(str(n) for n, t in types.items() if t == "webhook")
    problems = []
    for index, name in enumerate(names):
        if not isinstance(name, str) or types.get(name) == "webhook":  # a non-string is pydantic's to report
            continue
        if name in types:
            why = f"receiver {name!r} is of type {types[name]!r}: reports go to webhook receivers only"
        else:
            why = f"no webhook receiver named {name!r} in alerting.receivers"
        known = f" (webhook receivers: {', '.join(webhooks)})" if webhooks else " (there is none)"
        problems.append(f"report.receivers[{index}]: {why}{known}")
    return problems

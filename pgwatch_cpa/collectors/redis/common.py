"""Helpers shared by the Redis collectors: raw commands, forbidden-command detection, INFO parsing.

Commands go through a pooled connection of the target's client without redis-py's response callbacks, so INFO
is parsed exactly once, by :func:`parse_info` (redis-py's parser turns ``redis_version:7.10`` into a float), and
SLOWLOG arguments (client data) are never decoded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_FORBIDDEN = re.compile(r"unknown command|unknown subcommand|noperm|no permissions|command is disabled|not allowed",
                        re.IGNORECASE)
_LABEL_SAFE = re.compile(r"[^A-Za-z0-9_.|:\-]")


async def raw_commands(client: Any, *commands: Sequence[Any]) -> list[Any]:
    """Send ``commands`` pipelined on one pooled connection; return each reply or the ResponseError it raised.

    Replies are not decoded (bytes) and skip redis-py's response callbacks. Connection errors and cancellation
    propagate, after dropping the connection so no half-read reply is left on it.
    """
    from redis.exceptions import ResponseError

    pool = client.connection_pool
    conn = await pool.get_connection()
    try:
        await conn.send_packed_command(conn.pack_commands(commands))
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await conn.read_response(disable_decoding=True))
            except ResponseError as exc:
                replies.append(exc)
        return replies
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)


async def raw_command(client: Any, *args: Any) -> Any:
    """One command as :func:`raw_commands`; a ResponseError is raised."""
    (reply,) = await raw_commands(client, args)
    if isinstance(reply, Exception):
        raise reply
    return reply


def is_forbidden(exc: BaseException) -> bool:
    """True if the server refuses the command for good: renamed, disabled or denied by an ACL."""
    # Imported here: a daemon with no Redis target never loads redis-py (about 6 MiB of RSS).
    from redis.exceptions import NoPermissionError, ResponseError

    return isinstance(exc, NoPermissionError) or (isinstance(exc, ResponseError) and bool(_FORBIDDEN.search(str(exc))))


def text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)


def label_value(value: str, limit: int = 64) -> str:
    """A bounded, printable label value for names chosen by the server (command and error names)."""
    return _LABEL_SAFE.sub("_", value)[:limit] or "_"


def parse_info(raw: bytes | str) -> dict[str, str]:
    """Parse an INFO reply into ``{field: raw value}``; section headers, blank and malformed lines are skipped.

    The value is everything after the first ``:``, so IPv6 addresses in values survive. The ``host:``
    pseudo-command's stats line (``cmdstat_host::calls=...``) keeps its name. A repeated field keeps the last value.
    """
    out: dict[str, str] = {}
    for line in text(raw).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("cmdstat_") and ":calls=" in line:
            key, _, value = line.partition(":calls=")
            value = "calls=" + value
        else:
            key, sep, value = line.partition(":")
            if not sep or not key:
                continue
        out[key] = value
    return out


def parse_fields(value: str) -> dict[str, str]:
    """``calls=2,usec=12,usec_per_call=6.00`` -> ``{"calls": "2", ...}``; items without ``=`` are skipped."""
    out: dict[str, str] = {}
    for item in value.split(","):
        key, sep, val = item.partition("=")
        if sep and key:
            out[key.strip()] = val.strip()
    return out


def number(value: str | None) -> float | None:
    """A finite float, or None for a missing or non-numeric value (``ok``, ``1.2.3``, ``nan``)."""
    if value is None:
        return None
    try:
        result = float(value.strip().rstrip("%"))
    except ValueError:
        return None
    return result if result == result and result not in (float("inf"), float("-inf")) else None


class StickyTopN:
    """Choose at most ``limit`` label values for a family of counters, stable across cycles.

    Once chosen, a value stays chosen, so the ``other`` rest only ever grows (a counter that shrinks would look
    like a reset to Prometheus). Values are admitted by size while there is room. A shrinking total means the
    server restarted or its stats were reset; then the choice is made afresh.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chosen: dict[str, None] = {}
        self._last_total = 0.0

    def split(self, values: dict[str, float]) -> tuple[list[str], float]:
        total = sum(values.values())
        if total < self._last_total:
            self.chosen.clear()
        self._last_total = total
        for name in sorted(values, key=lambda n: (-values[n], n)):
            if len(self.chosen) >= self.limit:
                break
            self.chosen.setdefault(name)
        members = [n for n in self.chosen if n in values]
        other = sum(v for n, v in values.items() if n not in self.chosen)
        return members, other


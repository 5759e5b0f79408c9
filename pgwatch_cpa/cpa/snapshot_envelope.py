"""What every statistics snapshot the application publishes shares: one JSON object naming its schema and version.

The cache service's (cpa/cache/stats.py) and the archiver's (cpa/archive/stats.py) snapshots open it the same way;
each then validates its own fields.
"""

from __future__ import annotations

from typing import Any

import orjson


def open_envelope(data: bytes | str, schema: str, version: int, error: type[ValueError]) -> dict[str, Any]:
    """The decoded object, if it is JSON, an object, of ``schema`` and exactly ``version``; else ``error``."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise error(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise error("snapshot is not an object")
    if doc.get("schema") != schema:
        raise error(f"schema is not {schema!r}")
    if doc.get("version") != version or type(doc.get("version")) is not int:
        raise error(f"unsupported version {doc.get('version')!r}")
    return doc

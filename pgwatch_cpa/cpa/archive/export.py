"""The export of a batch and its manifest.

Export ``<batch_id>.jsonl.gz``: gzip of one line per row, each line the row's ``to_jsonb(row)::text`` exactly as
PostgreSQL prints it (session TimeZone UTC), rows in id order. The manifest beside it,
``<batch_id>.manifest.json``, schema version 1:

    {
      "schema": "cpa-archive-manifest", "version": 1,
      "batch_id": "audit_logs-20261129T020000-1a2b3c4d5e6f",
      "policy": "audit_logs", "table": "audit_logs", "organization_id": "org_1",
      "export": "audit_logs-20261129T020000-1a2b3c4d5e6f.jsonl.gz",   name beside the manifest
      "row_count": 1000,
      "sha256": "<hex>",               of the uncompressed JSON lines
      "compressed_bytes": 41234,
      "created_at": "2026-11-29T02:00:00+00:00"
    }

Readers ignore unknown fields and refuse another version; the checksum and row count are verified on every
read-back (after the write, before a recovered batch is applied, before a restore).
"""

from __future__ import annotations

import gzip
import hashlib
import io
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

MANIFEST_SCHEMA = "cpa-archive-manifest"
MANIFEST_VERSION = 1
EXPORT_SUFFIX = ".jsonl.gz"
MANIFEST_SUFFIX = ".manifest.json"
_MAX_EXPORT_BYTES = 1 << 30  # a gzip bomb stops here (a batch is a few thousand rows)


class ExportError(ValueError):
    """An export or manifest that does not verify; the message says what differs."""


@dataclass(frozen=True)
class Export:
    lines: tuple[str, ...]  # one JSON text per row
    data: bytes  # the gzip bytes written
    sha256: str  # of the uncompressed lines

    @property
    def row_count(self) -> int:
        return len(self.lines)


def encode(lines: list[str]) -> Export:
    raw = _join(lines)
    # mtime=0: the same rows give the same bytes.
    return Export(tuple(lines), gzip.compress(raw, compresslevel=6, mtime=0), hashlib.sha256(raw).hexdigest())


def decode(data: bytes, manifest: dict[str, Any]) -> Export:
    """Decompress an export read back and check it against its manifest's row count and checksum."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
            raw = fh.read(_MAX_EXPORT_BYTES + 1)
    except (OSError, EOFError) as exc:
        raise ExportError(f"export of batch {manifest['batch_id']} is not gzip: {exc}") from None
    if len(raw) > _MAX_EXPORT_BYTES:
        raise ExportError(f"export of batch {manifest['batch_id']} is larger than {_MAX_EXPORT_BYTES} bytes")
    digest = hashlib.sha256(raw).hexdigest()
    if digest != manifest["sha256"]:
        raise ExportError(f"export of batch {manifest['batch_id']}: sha256 {digest[:12]}, manifest says "
                          f"{manifest['sha256'][:12]}")
    lines = raw.decode("utf-8").split("\n")[:-1] if raw else []
    if len(lines) != manifest["row_count"]:
        raise ExportError(f"export of batch {manifest['batch_id']}: {len(lines)} rows, manifest says "
                          f"{manifest['row_count']}")
    return Export(tuple(lines), data, digest)


def _join(lines: list[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode("utf-8")


# ---------------------------------------------------------------- manifest


def build_manifest(*, batch_id: str, policy: str, table: str, organization_id: str, export: Export,
                   created_at: datetime) -> dict[str, Any]:
    return {
        "schema": MANIFEST_SCHEMA, "version": MANIFEST_VERSION, "batch_id": batch_id, "policy": policy,
        "table": table, "organization_id": organization_id, "export": batch_id + EXPORT_SUFFIX,
        "row_count": export.row_count, "sha256": export.sha256, "compressed_bytes": len(export.data),
        "created_at": created_at.isoformat(),
    }


def dump_manifest(manifest: dict[str, Any]) -> bytes:
    return orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


def parse_manifest(data: bytes) -> dict[str, Any]:
    """Validate a manifest; raises ExportError naming the first bad field. Unknown fields are dropped."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ExportError(f"manifest is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != MANIFEST_SCHEMA:
        raise ExportError(f"manifest: schema is not {MANIFEST_SCHEMA!r}")
    if doc.get("version") != MANIFEST_VERSION or type(doc.get("version")) is not int:
        raise ExportError(f"manifest: unsupported version {doc.get('version')!r}")
    out: dict[str, Any] = {"schema": MANIFEST_SCHEMA, "version": MANIFEST_VERSION}
    for key in ("batch_id", "policy", "table", "organization_id", "export", "sha256", "created_at"):
        value = doc.get(key)
        if not isinstance(value, str) or not value or len(value) > 1000:
            raise ExportError(f"manifest: {key} must be a non-empty string")
        out[key] = value
    for key in ("row_count", "compressed_bytes"):
        value = doc.get(key)
        if type(value) is not int or value < 0:
            raise ExportError(f"manifest: {key} must be a non-negative integer")
        out[key] = value
    if "/" in out["export"] or not out["export"].endswith(EXPORT_SUFFIX):
        raise ExportError(f"manifest: export must be a file name ending in {EXPORT_SUFFIX}")
    if len(out["sha256"]) != 64 or any(c not in "0123456789abcdef" for c in out["sha256"]):
        raise ExportError("manifest: sha256 must be 64 lower-case hex digits")
    return out
